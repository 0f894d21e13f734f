package mirror

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ftpgate/conf"
)

// testWait bounds every wait in these tests: generous for -race on a
// loaded machine, never reached when things work.
const testWait = 20 * time.Second

// fakeObject is one object of a fakeStore.
type fakeObject struct {
	data []byte
	meta objectMeta
	etag string
}

// fakeStore is an in-memory objectStore with hooks and counters.
type fakeStore struct {
	mu      sync.Mutex
	objects map[string]fakeObject // bucket/key
	puts    int
	copies  int
	deletes int
	lists   int
	stats   int
	batches int
	attempt map[string]int // put attempts per key

	// hooks, set before use
	putErr   func(key string, attempt int) error // error to return for this attempt
	listErr  error                               // returned after the first object
	block    chan struct{}                       // when set, Put waits for it to close
	noMeta   bool                                // List never returns metadata
	noPages  bool                                // ListPage unsupported: passes use List
	pages    []pageQuery                         // ListPage calls
	noBatch  bool                                // PutBatch says unsupported
	putStart chan string                         // told of every Put, when set
}

func newFakeStore() *fakeStore {
	return &fakeStore{objects: make(map[string]fakeObject), attempt: make(map[string]int)}
}

var (
	_ objectStore = (*fakeStore)(nil)
	_ statStore   = (*fakeStore)(nil)
	_ batchStore  = (*fakeStore)(nil)
	_ pageLister  = (*fakeStore)(nil)
)

func etagOf(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

func (f *fakeStore) Put(ctx context.Context, bucket, key string, body io.Reader, size int64, meta objectMeta) (string, error) {
	if f.putStart != nil {
		f.putStart <- key
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	f.mu.Lock()
	f.attempt[key]++
	n := f.attempt[key]
	hook := f.putErr
	f.mu.Unlock()
	if hook != nil {
		if err := hook(key, n); err != nil {
			return "", err
		}
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	if int64(len(data)) != size {
		return "", fmt.Errorf("fake put %s: %d bytes, want %d", key, len(data), size)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.puts++
	e := etagOf(data)
	f.objects[bucket+"/"+key] = fakeObject{data: data, meta: meta, etag: e}
	return e, nil
}

func (f *fakeStore) Copy(ctx context.Context, bucket, src, dst, matchETag string, size int64) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objects[bucket+"/"+src]
	if !ok || (matchETag != "" && o.etag != matchETag) {
		return "", &storeError{class: classGone, err: fmt.Errorf("fake copy %s: no such key", src)}
	}
	f.copies++
	f.objects[bucket+"/"+dst] = o
	return o.etag, nil
}

func (f *fakeStore) Delete(ctx context.Context, bucket, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes++
	delete(f.objects, bucket+"/"+key)
	return nil
}

func (f *fakeStore) List(ctx context.Context, bucket, prefix string, withMeta bool) iter.Seq2[objectInfo, error] {
	f.mu.Lock()
	f.lists++
	infos := f.sortedLocked(bucket, prefix, withMeta)
	listErr := f.listErr
	f.mu.Unlock()
	return func(yield func(objectInfo, error) bool) {
		for i, oi := range infos {
			if listErr != nil && i == 1 {
				yield(objectInfo{}, listErr)
				return
			}
			if !yield(oi, nil) {
				return
			}
		}
	}
}

// sortedLocked is the objects under prefix in key order.
func (f *fakeStore) sortedLocked(bucket, prefix string, withMeta bool) []objectInfo {
	var keys []string
	for k := range f.objects {
		if rest, ok := strings.CutPrefix(k, bucket+"/"); ok && strings.HasPrefix(rest, prefix) {
			keys = append(keys, rest)
		}
	}
	slices.Sort(keys)
	infos := make([]objectInfo, 0, len(keys))
	for _, k := range keys {
		o := f.objects[bucket+"/"+k]
		oi := objectInfo{key: k, size: int64(len(o.data)), etag: o.etag}
		if withMeta && !f.noMeta {
			oi.setMeta(map[string]string{"Mtime": formatMtime(o.meta.mtime), "Sha256": hex.EncodeToString(o.meta.sha256[:])})
		}
		infos = append(infos, oi)
	}
	return infos
}

func (f *fakeStore) pagesSupported() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.noPages
}

// ListPage is List one page at a time; its continuation token is the last
// key returned. With listErr set, the first page holds the first object
// only and every other page fails, as List fails after the first object.
func (f *fakeStore) ListPage(ctx context.Context, bucket string, q pageQuery) (listPage, error) {
	f.mu.Lock()
	f.pages = append(f.pages, q)
	listErr := f.listErr
	all := f.sortedLocked(bucket, q.prefix, q.withMeta)
	f.mu.Unlock()
	if q.token != "" && q.startAfter != "" {
		return listPage{}, fmt.Errorf("fake list page: token and start-after together")
	}
	after := q.startAfter
	if q.token != "" {
		after = strings.TrimPrefix(q.token, "token:")
	}
	size := q.maxKeys
	if size <= 0 {
		size = 1000
	}
	i, _ := slices.BinarySearchFunc(all, after, func(o objectInfo, k string) int { return strings.Compare(o.key, k) })
	if i < len(all) && all[i].key == after {
		i++
	}
	if listErr != nil {
		if i > 0 {
			return listPage{}, listErr
		}
		size = 1
	}
	end := min(i+size, len(all))
	p := listPage{objects: all[i:end]}
	if end < len(all) {
		p.next = "token:" + all[end-1].key
	}
	return p, nil
}

func (f *fakeStore) Stat(ctx context.Context, bucket, key string) (objectInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats++
	o, ok := f.objects[bucket+"/"+key]
	if !ok {
		return objectInfo{}, &storeError{class: classGone, err: fmt.Errorf("fake stat %s: no such key", key)}
	}
	oi := objectInfo{key: key, size: int64(len(o.data)), etag: o.etag}
	oi.setMeta(map[string]string{"Mtime": formatMtime(o.meta.mtime), "Sha256": hex.EncodeToString(o.meta.sha256[:])})
	return oi, nil
}

func (f *fakeStore) PutBatch(ctx context.Context, bucket string, objs []batchObject) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noBatch {
		return errBatchUnsupported
	}
	f.batches++
	for _, o := range objs {
		f.objects[bucket+"/"+o.key] = fakeObject{data: bytes.Clone(o.data), meta: o.meta, etag: etagOf(o.data)}
	}
	return nil
}

func (f *fakeStore) get(bucket, key string) (fakeObject, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objects[bucket+"/"+key]
	return o, ok
}

func (f *fakeStore) keys(bucket string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.objects {
		if rest, ok := strings.CutPrefix(k, bucket+"/"); ok {
			out = append(out, rest)
		}
	}
	slices.Sort(out)
	return out
}

func (f *fakeStore) counts() (puts, copies, deletes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.puts, f.copies, f.deletes
}

// onlyStore hides a store's optional interfaces (stat, batch).
type onlyStore struct{ objectStore }

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) count(s string) int { return strings.Count(b.String(), s) }

// harness is a Mirror on temporary directories and a fake store.
type harness struct {
	t     *testing.T
	root  string // the mapping's local root
	state string
	cfg   *conf.Config
	store objectStore
	fake  *fakeStore
	j     *Journal
	m     *Mirror
	logs  *logBuffer
	opts  Options
}

const testBucket = "bucket"

// newHarness makes a mapping "m" of a new local root to testBucket with
// prefix "pre/", remove = true, and a Mirror on it. edit may change the
// mapping before the Mirror is built.
func newHarness(t *testing.T, opts Options, edit func(*conf.Mirror)) *harness {
	t.Helper()
	h := &harness{t: t, fake: newFakeStore(), logs: &logBuffer{}, opts: opts}
	h.store = h.fake
	base := t.TempDir()
	h.root = filepath.Join(base, "tree")
	h.state = filepath.Join(base, "state")
	for _, d := range []string{h.root, h.state} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mc := conf.Mirror{
		Name: "m", Local: h.root, Bucket: testBucket, Prefix: "pre/", Remove: true,
		Reconcile: time.Hour, MaxDelete: 1000, MaxDeleteRatio: 0.5,
	}
	if edit != nil {
		edit(&mc)
	}
	h.cfg = &conf.Config{Storage: conf.Storage{StateDir: h.state}, Mirrors: []conf.Mirror{mc}}
	h.open()
	return h
}

// open (re)opens the journal and builds a new Mirror, as a restart does.
func (h *harness) open() {
	h.t.Helper()
	if h.j != nil {
		if err := h.j.Close(); err != nil {
			h.t.Fatal(err)
		}
	}
	j, err := OpenJournal(h.state)
	if err != nil {
		h.t.Fatal(err)
	}
	h.j = j
	h.t.Cleanup(func() { _ = j.Close() })
	if h.opts.AllowDeletes == 0 {
		h.opts.AllowDeletes = -1
	}
	if h.opts.Settle == 0 {
		h.opts.Settle = 50 * time.Millisecond
	}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := New(h.cfg, h.store, j, h.opts, log)
	if err != nil {
		h.t.Fatal(err)
	}
	m.sleep = func(ctx context.Context, d time.Duration) error { return ctx.Err() }
	h.m = m
}

// write creates rel with data and sets its mtime (zero: leave it).
func (h *harness) write(rel, data string, mtime time.Time) {
	h.t.Helper()
	p := filepath.Join(h.root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		h.t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *harness) abs(rel string) string { return filepath.Join(h.root, filepath.FromSlash(rel)) }

// pass runs a one-shot pass and returns the mapping's summary.
func (h *harness) pass() MappingSummary {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	s, err := h.m.Pass(ctx, nil)
	if err != nil {
		h.t.Fatalf("pass: %v\nlog:\n%s", err, h.logs)
	}
	if len(s.Mappings) != 1 {
		h.t.Fatalf("pass: %d mappings", len(s.Mappings))
	}
	return s.Mappings[0]
}

// object returns the object of rel under the mapping's prefix.
func (h *harness) object(rel string) (fakeObject, bool) {
	return h.fake.get(testBucket, "pre/"+rel)
}

// waitUntil polls cond until it holds or testWait passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pendingIn lists the journal's pending paths of mapping "m".
func (h *harness) pendingIn() []string {
	var out []string
	st := h.j.stream("m", bucketPending, "")
	for {
		e, ok := st.next()
		if !ok {
			break
		}
		out = append(out, e.k)
	}
	if st.err != nil {
		h.t.Fatal(st.err)
	}
	return out
}

func (h *harness) recordOf(rel string) (fileRecord, bool) {
	h.t.Helper()
	var rec fileRecord
	var ok bool
	err := h.j.view("m", func(t *mtx) error {
		var err error
		rec, ok, err = t.file(rel)
		return err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return rec, ok
}

func (b *logBuffer) contains(s string) bool { return strings.Contains(b.String(), s) }
