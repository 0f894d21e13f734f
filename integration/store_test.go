package integration

// The S3 side of the mirror tests: real MinIO and versitygw servers
// started from the binaries `make test` installs, buckets, object checks,
// a fault-injecting proxy, and the [s3]/[[mirror]] part of the config.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Store kinds: the names of the binaries as well.
const (
	storeMinIO     = "minio"
	storeVersityGW = "versitygw"
)

const (
	storeStartTimeout = 60 * time.Second // process start until the S3 API answers
	s3CallTimeout     = 30 * time.Second // one S3 call of the test's own client
	mirrorTimeout     = 30 * time.Second // a local change until its object state is right
	pollEvery         = 25 * time.Millisecond
)

// s3Store is one S3 server process run by the harness. Its methods are safe
// for concurrent use by parallel tests.
type s3Store struct {
	kind      string
	endpoint  string // host:port of the S3 API
	accessKey string
	secretKey string
	dir       string // data directory (and the server's log file)
	client    *minio.Client

	cmd    *exec.Cmd
	exited chan struct{}
	logf   *os.File
	paused atomic.Bool
}

// storeBinary finds the server binary of a store kind: $FTPGATE_BIN_DIR,
// then the repository's bin/ (where `make` installs it), then $PATH. A
// missing binary is the caller's failure, never a skip.
func storeBinary(kind string) (string, error) {
	var tried []string
	if d := os.Getenv("FTPGATE_BIN_DIR"); d != "" {
		tried = append(tried, filepath.Join(d, kind))
	}
	if abs, err := filepath.Abs(filepath.Join("..", "bin", kind)); err == nil {
		tried = append(tried, abs)
	}
	for _, p := range tried {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(kind); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s binary not found in %s or $PATH (run `make deps deps-s3`)", kind, strings.Join(tried, ", "))
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startStore starts a store of the given kind on a fresh data directory and
// waits until its S3 API answers. The caller owns it and must stop it.
func startStore(kind string) (*s3Store, error) {
	bin, err := storeBinary(kind)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ftpgate-it-"+kind+"-")
	if err != nil {
		return nil, err
	}
	st := &s3Store{kind: kind, dir: dir, accessKey: "itadmin" + randHex(3), secretKey: "it-secret-" + randHex(12),
		exited: make(chan struct{})}
	// A port can be taken between freePort and the server's bind: retry.
	var lastErr error
	for range 3 {
		if lastErr = st.launch(bin); lastErr == nil {
			return st, nil
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func (st *s3Store) launch(bin string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	st.endpoint = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	data := filepath.Join(st.dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	var args []string
	env := os.Environ()
	switch st.kind {
	case storeMinIO:
		args = []string{"server", "--quiet", "--address", st.endpoint, "--console-address", "127.0.0.1:0", data}
		env = append(env, "MINIO_ROOT_USER="+st.accessKey, "MINIO_ROOT_PASSWORD="+st.secretKey, "MINIO_BROWSER=off")
	case storeVersityGW:
		args = []string{"--access", st.accessKey, "--secret", st.secretKey, "--port", st.endpoint, "--quiet", "posix", data}
	default:
		return fmt.Errorf("unknown store kind %q", st.kind)
	}
	logf, err := os.Create(filepath.Join(st.dir, "server.log"))
	if err != nil {
		return err
	}
	st.logf = logf
	st.exited = make(chan struct{})
	st.cmd = exec.Command(bin, args...)
	st.cmd.Env = env
	st.cmd.Stdout, st.cmd.Stderr = logf, logf
	if err := st.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		_ = st.cmd.Wait()
		close(st.exited)
	}()

	st.client, err = minio.New(st.endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(st.accessKey, st.secretKey, ""),
		Secure: false,
		// The harness checks states; it must not wait out the client's
		// retries behind a paused or dead server.
		MaxRetries: 1,
	})
	if err != nil {
		st.stop()
		return err
	}
	deadline := time.Now().Add(storeStartTimeout)
	for {
		err := st.ready()
		if err == nil {
			return nil
		}
		select {
		case <-st.exited:
			return fmt.Errorf("%s exited during start-up:\n%s", st.kind, st.logTail())
		default:
		}
		if time.Now().After(deadline) {
			st.stop()
			return fmt.Errorf("%s on %s not ready within %v: %v\n%s", st.kind, st.endpoint, storeStartTimeout, err, st.logTail())
		}
		time.Sleep(50 * time.Millisecond) // poll interval of a bounded poll
	}
}

// ready reports whether the S3 API serves an authenticated request.
func (st *s3Store) ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if st.kind == storeMinIO {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+st.endpoint+"/minio/health/live", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("health/live: %s", resp.Status)
		}
	}
	_, err := st.client.ListBuckets(ctx)
	return err
}

func (st *s3Store) logTail() string {
	b, _ := os.ReadFile(filepath.Join(st.dir, "server.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// stop kills the server (a stopped one too) and waits for it.
func (st *s3Store) stop() {
	if st.cmd != nil && st.cmd.Process != nil {
		_ = st.cmd.Process.Kill()
		select {
		case <-st.exited:
		case <-time.After(exitTimeout):
			fmt.Fprintf(os.Stderr, "integration: %s (pid %d) did not exit after SIGKILL\n", st.kind, st.cmd.Process.Pid)
		}
	}
	if st.logf != nil {
		st.logf.Close()
	}
}

// pause stops the server process with SIGSTOP: connections are accepted by
// the kernel but nothing answers. resume undoes it; the test's cleanup
// resumes a store that is still paused.
func (st *s3Store) pause(t *testing.T) {
	t.Helper()
	if err := st.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %s: %v", st.kind, err)
	}
	if st.paused.CompareAndSwap(false, true) {
		t.Cleanup(func() {
			if st.paused.Load() {
				_ = st.cmd.Process.Signal(syscall.SIGCONT)
			}
		})
	}
}

func (st *s3Store) resume(t *testing.T) {
	t.Helper()
	if err := st.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT %s: %v", st.kind, err)
	}
	st.paused.Store(false)
}

// ---------------------------------------------------------------------------
// Shared stores: one server per kind per package run, started on first use
// and stopped by TestMain.

var sharedStores struct {
	mu     sync.Mutex
	stores map[string]*s3Store
	errs   map[string]error
}

// sharedStore returns the package's store of this kind, starting it on the
// first call. Tests that share it must use their own buckets and must not
// pause or stop it.
func sharedStore(t *testing.T, kind string) *s3Store {
	t.Helper()
	sharedStores.mu.Lock()
	defer sharedStores.mu.Unlock()
	if st := sharedStores.stores[kind]; st != nil {
		return st
	}
	if err := sharedStores.errs[kind]; err != nil {
		t.Fatalf("shared %s: %v", kind, err)
	}
	if sharedStores.stores == nil {
		sharedStores.stores, sharedStores.errs = map[string]*s3Store{}, map[string]error{}
	}
	st, err := startStore(kind)
	if err != nil {
		sharedStores.errs[kind] = err
		t.Fatalf("start shared %s: %v", kind, err)
	}
	sharedStores.stores[kind] = st
	return st
}

// stopSharedStores stops every shared store and removes its data.
func stopSharedStores() {
	sharedStores.mu.Lock()
	defer sharedStores.mu.Unlock()
	for _, st := range sharedStores.stores {
		st.stop()
		os.RemoveAll(st.dir)
	}
	sharedStores.stores = nil
}

// privateStore starts a store that only this test uses (it may pause it);
// it is stopped when the test ends.
func privateStore(t *testing.T, kind string) *s3Store {
	t.Helper()
	st, err := startStore(kind)
	if err != nil {
		t.Fatalf("start %s: %v", kind, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", kind, st.logTail())
		}
		st.stop()
		os.RemoveAll(st.dir)
	})
	return st
}

// ---------------------------------------------------------------------------
// Buckets and objects

func s3ctx(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), s3CallTimeout)
}

// newBucket creates an empty bucket with a fresh name.
func (st *s3Store) newBucket(t *testing.T) string {
	t.Helper()
	name := "it-" + randHex(8)
	ctx, cancel := s3ctx(t)
	defer cancel()
	if err := st.client.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("%s: make bucket %s: %v", st.kind, name, err)
	}
	return name
}

// objState is what the tests compare to tell whether an object was written
// again: a re-PUT of the same bytes keeps the ETag but not LastModified.
type objState struct {
	Size         int64
	ETag         string
	LastModified time.Time
}

func (o objState) String() string {
	return fmt.Sprintf("size=%d etag=%s mod=%s", o.Size, o.ETag, o.LastModified.Format(time.RFC3339Nano))
}

// snapshot lists the bucket: key -> state.
func (st *s3Store) snapshot(t *testing.T, bucket string) map[string]objState {
	t.Helper()
	m, err := st.trySnapshot(t.Context(), bucket)
	if err != nil {
		t.Fatalf("%s: list %s: %v", st.kind, bucket, err)
	}
	return m
}

func (st *s3Store) trySnapshot(ctx context.Context, bucket string) (map[string]objState, error) {
	ctx, cancel := context.WithTimeout(ctx, s3CallTimeout)
	defer cancel()
	m := map[string]objState{}
	for o := range st.client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			return nil, o.Err
		}
		m[o.Key] = objState{Size: o.Size, ETag: strings.Trim(o.ETag, `"`), LastModified: o.LastModified}
	}
	return m, nil
}

// keys are the sorted keys of a snapshot.
func keys(m map[string]objState) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// diffSnapshots describes how after differs from before, "" when equal.
func diffSnapshots(before, after map[string]objState) string {
	var d []string
	for _, k := range keys(before) {
		if a, ok := after[k]; !ok {
			d = append(d, "deleted "+k)
		} else if a != before[k] {
			d = append(d, fmt.Sprintf("changed %s: %v -> %v", k, before[k], a))
		}
	}
	for _, k := range keys(after) {
		if _, ok := before[k]; !ok {
			d = append(d, "added "+k)
		}
	}
	return strings.Join(d, "\n")
}

// object is an object's bytes and response headers.
type object struct {
	data   []byte
	header http.Header
	info   minio.ObjectInfo
}

// getObject fetches an object; a missing one is (nil, nil).
func (st *s3Store) getObject(ctx context.Context, bucket, key string) (*object, error) {
	ctx, cancel := context.WithTimeout(ctx, s3CallTimeout)
	defer cancel()
	r, err := st.client.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	info, err := r.Stat()
	if err != nil {
		if isNoSuchKey(err) {
			return nil, nil
		}
		return nil, err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return &object{data: b, header: info.Metadata, info: info}, nil
}

func isNoSuchKey(err error) bool {
	var er minio.ErrorResponse
	return errors.As(err, &er) && (er.Code == minio.NoSuchKey || er.StatusCode == http.StatusNotFound)
}

// tryPut writes an object directly, past the mirror.
func (st *s3Store) tryPut(ctx context.Context, bucket, key string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s3CallTimeout)
	defer cancel()
	_, err := st.client.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	if err != nil {
		return fmt.Errorf("%s: put %s/%s: %w", st.kind, bucket, key, err)
	}
	return nil
}

// eventually polls cond until it reports true or timeout passes; then it
// fails the test with cond's last description of what is still wrong.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, timeout, why)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: test context done: %s", what, why)
		case <-time.After(pollEvery): // poll interval of a bounded poll
		}
	}
}

// want is the expected content of one object, taken from its local file.
type want struct {
	key   string
	data  []byte
	mtime time.Time
}

// localWant reads a local file: its bytes and mtime become the object's
// expected bytes and metadata under key.
func localWant(t *testing.T, path, key string) want {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return want{key: key, data: mustRead(t, path), mtime: fi.ModTime()}
}

// checkObject compares an object with what its local file says: bytes,
// X-Amz-Meta-Sha256 and X-Amz-Meta-Mtime (rclone's decimal seconds, within
// a second of the file's mtime). "" means all is well.
func checkObject(o *object, w want) string {
	if o == nil {
		return "missing"
	}
	if !bytes.Equal(o.data, w.data) {
		return fmt.Sprintf("content differs: %d bytes sha256 %s, want %d bytes sha256 %s",
			len(o.data), sha256Hex(o.data), len(w.data), sha256Hex(w.data))
	}
	if got, wantSum := o.header.Get("X-Amz-Meta-Sha256"), sha256Hex(w.data); got != wantSum {
		return fmt.Sprintf("X-Amz-Meta-Sha256 %q, want %q", got, wantSum)
	}
	ms := o.header.Get("X-Amz-Meta-Mtime")
	sec, err := strconv.ParseFloat(ms, 64)
	if err != nil {
		return fmt.Sprintf("X-Amz-Meta-Mtime %q: not decimal seconds: %v", ms, err)
	}
	if d := sec - float64(w.mtime.UnixNano())/1e9; d > 1 || d < -1 {
		return fmt.Sprintf("X-Amz-Meta-Mtime %q is %.3fs away from the file's mtime %s", ms, d, w.mtime.Format(time.RFC3339Nano))
	}
	return ""
}

// waitObjects waits until every object of ws is in the bucket with its
// bytes and metadata.
func (st *s3Store) waitObjects(t *testing.T, bucket string, timeout time.Duration, ws ...want) {
	t.Helper()
	done := make([]bool, len(ws))
	eventually(t, timeout, fmt.Sprintf("%s: %d objects in %s", st.kind, len(ws), bucket), func() (bool, string) {
		var bad []string
		for i, w := range ws {
			if done[i] {
				continue
			}
			o, err := st.getObject(t.Context(), bucket, w.key)
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %v", w.key, err))
				continue
			}
			if why := checkObject(o, w); why != "" {
				bad = append(bad, w.key+": "+why)
				continue
			}
			done[i] = true
		}
		if len(bad) > 5 {
			bad = append(bad[:5], fmt.Sprintf("... and %d more", len(bad)-5))
		}
		return len(bad) == 0, strings.Join(bad, "; ")
	})
}

// waitGone waits until none of the keys is in the bucket.
func (st *s3Store) waitGone(t *testing.T, bucket string, timeout time.Duration, ks ...string) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%s: %d objects removed from %s", st.kind, len(ks), bucket), func() (bool, string) {
		m, err := st.trySnapshot(t.Context(), bucket)
		if err != nil {
			return false, err.Error()
		}
		var still []string
		for _, k := range ks {
			if _, ok := m[k]; ok {
				still = append(still, k)
			}
		}
		return len(still) == 0, "still there: " + strings.Join(still, ", ")
	})
}

// ---------------------------------------------------------------------------
// Fault injection

// faultProxy is an HTTP reverse proxy in front of a store. It passes the
// client's Host header on, so SigV4 signatures stay valid, and can refuse
// the continuation pages of object listings: a listing that starts well and
// then fails, which must stop every deletion of the pass.
type faultProxy struct {
	addr          string
	failContinued atomic.Bool
	refused       atomic.Int64
	// stallGets makes object GETs send their headers and first bytes,
	// then hang until the client goes away: a download caught half-way.
	stallGets atomic.Bool
}

// stallBody yields the first n bytes of a response body, then blocks until
// the request's context ends.
type stallBody struct {
	io.ReadCloser
	n    int
	done <-chan struct{}
}

func (b *stallBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		<-b.done
		return 0, io.ErrUnexpectedEOF
	}
	n, err := b.ReadCloser.Read(p[:min(len(p), b.n)])
	b.n -= n
	return n, err
}

func startFaultProxy(t *testing.T, st *s3Store) *faultProxy {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: st.endpoint}
	fp := &faultProxy{}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
	}, ModifyResponse: func(resp *http.Response) error {
		r := resp.Request
		if fp.stallGets.Load() && r.Method == http.MethodGet && resp.StatusCode == http.StatusOK &&
			strings.Contains(strings.Trim(r.URL.Path, "/"), "/") {
			resp.Body = &stallBody{ReadCloser: resp.Body, n: 4096, done: r.Context().Done()}
		}
		return nil
	}}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fp.failContinued.Load() && isContinuedListing(r) {
			fp.refused.Add(1)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
				`<Error><Code>AccessDenied</Code><Message>Access Denied (injected by the test proxy)</Message><Resource>%s</Resource><RequestId>it</RequestId></Error>`,
				r.URL.Path)
			return
		}
		rp.ServeHTTP(w, r)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	fp.addr = l.Addr().String()
	return fp
}

// isContinuedListing tells a second or later page of a bucket listing
// (V2 continuation-token, V1 marker, versions key-marker) on a path-style
// bucket URL.
func isContinuedListing(r *http.Request) bool {
	if r.Method != http.MethodGet || strings.Contains(strings.Trim(r.URL.Path, "/"), "/") {
		return false
	}
	q := r.URL.Query()
	if q.Has("uploads") {
		return false
	}
	return q.Get("continuation-token") != "" || q.Get("marker") != "" || q.Get("key-marker") != ""
}

// ---------------------------------------------------------------------------
// Configuration: [s3] and [[mirror]]

// testS3 is the [s3] section.
type testS3 struct {
	Endpoint      string
	AccessKey     string
	SecretKeyFile string
}

// testMirror is one [[mirror]] mapping.
type testMirror struct {
	Name           string
	Local          string
	Bucket         string
	Prefix         string
	Remove         bool
	Pull           string // cron schedule of the reverse pull; "" = never
	Reconcile      string
	Exclude        []string
	MaxDelete      int
	MaxDeleteRatio float64
}

func (c *testConfig) renderMirror(b *strings.Builder) {
	q := tomlString
	if c.S3 != nil {
		fmt.Fprintf(b, "\n[s3]\nendpoint = %s\nsecure = false\naccess_key = %s\nsecret_key_file = %s\n",
			q(c.S3.Endpoint), q(c.S3.AccessKey), q(c.S3.SecretKeyFile))
	}
	for _, m := range c.Mirrors {
		fmt.Fprintf(b, "\n[[mirror]]\nname = %s\nlocal = %s\nbucket = %s\nprefix = %s\n", q(m.Name), q(m.Local), q(m.Bucket), q(m.Prefix))
		fmt.Fprintf(b, "remove = %t\npull = %s\nreconcile = %s\n", m.Remove, q(m.Pull), q(m.Reconcile))
		ex := make([]string, len(m.Exclude))
		for i, e := range m.Exclude {
			ex[i] = q(e)
		}
		fmt.Fprintf(b, "exclude = [%s]\n", strings.Join(ex, ", "))
		fmt.Fprintf(b, "max_delete = %d\nmax_delete_ratio = %s\n", m.MaxDelete, strconv.FormatFloat(m.MaxDeleteRatio, 'f', -1, 64))
	}
}

// useStore points the config's [s3] section at endpoint ("" = the store's
// own) with the store's credentials; the secret goes into a file next to
// the config.
func (c *testConfig) useStore(t *testing.T, st *s3Store, endpoint string) {
	t.Helper()
	if endpoint == "" {
		endpoint = st.endpoint
	}
	secret := filepath.Join(filepath.Dir(c.Root), "s3.secret")
	if err := os.WriteFile(secret, []byte(st.secretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.S3 = &testS3{Endpoint: endpoint, AccessKey: st.accessKey, SecretKeyFile: secret}
}

// addMirror adds a mapping with the tests' defaults: remove on, a reconcile
// far beyond any test, *.tmp excluded, and deletion guards that only the
// guard tests tighten.
func (c *testConfig) addMirror(name, local, bucket, prefix string) *testMirror {
	m := &testMirror{Name: name, Local: local, Bucket: bucket, Prefix: prefix, Remove: true,
		Reconcile: "1h", Exclude: []string{"*.tmp"}, MaxDelete: 100000, MaxDeleteRatio: 1}
	c.Mirrors = append(c.Mirrors, m)
	return m
}
