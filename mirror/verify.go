package mirror

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ftpgate/conf"
)

// Verify statuses, with their rclone-check symbols.
const (
	StatusSame            = "same"              // =
	StatusMissingInBucket = "missing_in_bucket" // -
	StatusMissingLocally  = "missing_locally"   // +
	StatusDiffers         = "differs"           // *
	StatusError           = "error"             // !
)

// Symbol is the rclone-check symbol of a status.
func Symbol(status string) string {
	switch status {
	case StatusSame:
		return "="
	case StatusMissingInBucket:
		return "-"
	case StatusMissingLocally:
		return "+"
	case StatusDiffers:
		return "*"
	default:
		return "!"
	}
}

// VerifyEntry is one key of a verify report. LocalSize and BucketSize are
// -1 on the side that lacks the key.
type VerifyEntry struct {
	Mapping    string `json:"mapping"`
	Key        string `json:"key"` // the object key (prefix included)
	Status     string `json:"status"`
	Reason     string `json:"reason,omitempty"` // differs: "size", "sha256" or "md5"; error: the error
	LocalSize  int64  `json:"local_size"`
	BucketSize int64  `json:"bucket_size"`
}

// VerifyResult is one mapping's verify. A value owned by the caller.
type VerifyResult struct {
	Mapping string `json:"mapping"`
	Bucket  string `json:"bucket"`
	Prefix  string `json:"prefix"`
	Local   string `json:"local"`

	Keys            int `json:"keys"` // keys compared (excluded ones not counted)
	Same            int `json:"same"`
	MissingInBucket int `json:"missing_in_bucket"`
	MissingLocally  int `json:"missing_locally"`
	Differ          int `json:"differ"`
	Errors          int `json:"errors"`

	Checksum  bool  `json:"checksum"`
	Compared  int   `json:"checksums_compared"` // same-size keys whose checksums were compared
	Unchecked int   `json:"checksums_unavailable"`
	Listed    bool  `json:"listed_metadata"` // the listing carried metadata (first --checksum run)
	Heads     int   `json:"heads"`           // objects whose metadata took a HEAD request
	FilesRead int   `json:"files_read"`      // local files read to hash them
	BytesRead int64 `json:"bytes_read"`

	Start time.Time     `json:"start"`
	End   time.Time     `json:"end"`
	Dur   time.Duration `json:"duration_ns"`
	Err   error         `json:"-"`
}

// Drift reports whether the two sides differ.
func (r VerifyResult) Drift() bool {
	return r.MissingInBucket+r.MissingLocally+r.Differ > 0
}

// VerifyOptions tunes a Verifier; the zero value compares sizes only.
type VerifyOptions struct {
	// Checksum compares the SHA-256 of same-size keys (or the MD5 against
	// a single-part ETag for objects without X-Amz-Meta-Sha256).
	Checksum bool
	// All reports keys that are the same too.
	All bool
	// Cache keeps local digests between runs; nil hashes every file
	// compared.
	Cache *HashCache
	// Progress receives a spinner on a terminal, else periodic log lines;
	// nil reports nothing.
	Progress io.Writer
	// Hashers is how many files are hashed at once. Default 4.
	Hashers int
}

const (
	defaultHashers = 4
	verifyWindow   = 256 // keys in flight between the merge and the report
	cacheBatch     = 1024
)

// Verifier compares the configured mappings' local trees with their
// buckets. It writes nothing but the hash cache. Create it with
// NewVerifier; Run is not safe for concurrent use.
type Verifier struct {
	store    objectStore
	stat     statStore // nil when the store cannot HEAD objects
	j        *Journal  // optional: records vouch for objects the mirror wrote
	opts     VerifyOptions
	mappings []*mapping
	log      *slog.Logger
	now      func() time.Time
}

// NewVerifier builds a Verifier for cfg's mappings. j may be nil (the
// journal is held by a running daemon): its records then do not help.
func NewVerifier(cfg *conf.Config, store objectStore, j *Journal, opts VerifyOptions, log *slog.Logger) (*Verifier, error) {
	if store == nil {
		return nil, errors.New("verify: no object store")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Hashers <= 0 {
		opts.Hashers = defaultHashers
	}
	log = log.With("component", "verify")
	ss, _ := store.(statStore)
	return &Verifier{store: store, stat: ss, j: j, opts: opts, mappings: plainMappings(cfg, log), log: log, now: time.Now}, nil
}

// Run verifies the named mappings (all when none), calling emit for each
// differing key (each key with All) in key order, and returns one result
// per mapping. A mapping that could not be verified has its Err set; Run's
// error is for bad names and a cancelled ctx.
func (v *Verifier) Run(ctx context.Context, names []string, emit func(VerifyEntry)) ([]VerifyResult, error) {
	return eachMapping(ctx, v.mappings, names, "verify",
		func(mp *mapping) VerifyResult { return v.mapping(ctx, mp, emit) },
		func(r VerifyResult) ([]any, error) {
			return []any{"keys", r.Keys, "same", r.Same, "missing_in_bucket", r.MissingInBucket,
				"missing_locally", r.MissingLocally, "differ", r.Differ, "errors", r.Errors,
				"files_read", r.FilesRead, "bytes_read", r.BytesRead, "dur", r.Dur}, r.Err
		})
}

// vitem is one key on its way from the merge to the report.
type vitem struct {
	rel   string
	L     *localFile
	B     *objectInfo
	rec   *fileRecord // the journal's record, valid for L
	cache *digests    // the cache's entry for the key, if any

	wantSHA *[32]byte // the object's SHA-256, when known
	wantMD5 []byte    // the object's single-part MD5 ETag, when no SHA-256

	stat  bool          // the object's metadata needs a HEAD
	meta  bool          // B's metadata is known (listed with it, or HEADed)
	hash  bool          // L must be read
	done  chan struct{} // closed once the worker is through; nil when no work
	got   digests       // L's sums, when hashed
	nread int64
	err   error
}

// localSums are L's sums known without reading it: from the cache or the
// journal; ok is false when L must be read (for MD5, when needMD5).
func (it *vitem) localSums(needMD5 bool) (digests, bool) {
	if it.cache != nil && it.cache.valid(it.L.st) && (!needMD5 || it.cache.hasMD5) {
		return *it.cache, true
	}
	if !needMD5 && it.rec != nil {
		return digests{st: it.L.st, sha: it.rec.sha, local: true}, true
	}
	return digests{}, false
}

func (v *Verifier) mapping(ctx context.Context, mp *mapping, emit func(VerifyEntry)) (r VerifyResult) {
	r = VerifyResult{Mapping: mp.name, Bucket: mp.cfg.Bucket, Prefix: mp.prefix, Local: mp.root,
		Checksum: v.opts.Checksum, Start: v.now()}
	defer func() {
		r.End = v.now()
		r.Dur = r.End.Sub(r.Start)
	}()
	fi, err := os.Stat(mp.root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Err = fmt.Errorf("local root %s does not exist: nothing to compare", mp.root)
		return r
	case err != nil:
		r.Err = fmt.Errorf("local root: %w", err)
		return r
	case !fi.IsDir():
		r.Err = fmt.Errorf("local root %s is not a directory", mp.root)
		return r
	}

	var keys, drift atomic.Int64
	m := newMeter(v.opts.Progress, v.log, "verify progress", 0, func() (string, []any) {
		k, d := keys.Load(), drift.Load()
		return fmt.Sprintf("verify %s: %d keys, %d differ", mp.name, k, d),
			[]any{"mapping", mp.name, "keys", k, "drift", d}
	})
	defer m.Stop()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan *vitem)
	var wg sync.WaitGroup
	for range v.opts.Hashers {
		wg.Go(func() {
			for it := range jobs {
				v.work(ctx, mp, it)
				close(it.done)
			}
		})
	}
	defer func() {
		close(jobs)
		wg.Wait()
	}()

	var queue []*vitem
	var writes []hashWrite
	flushCache := func() {
		if v.opts.Cache == nil || len(writes) == 0 {
			return
		}
		if err := v.opts.Cache.apply(mp.name, writes); err != nil && r.Err == nil {
			r.Err = err
		}
		writes = writes[:0]
	}
	report := func(it *vitem) {
		if it.done != nil {
			<-it.done
		}
		e := v.decide(it, &r, mp)
		keys.Add(1)
		if e.Status != StatusSame {
			drift.Add(1)
		}
		if v.opts.Cache != nil && it.err == nil {
			if d, ok := it.cacheEntry(); ok {
				writes = append(writes, hashWrite{rel: it.rel, d: &d})
			}
		}
		if e.Status != StatusSame || v.opts.All {
			emit(e)
		}
		if len(writes) >= cacheBatch {
			flushCache()
		}
	}
	// drain reports the keys at the head of the queue that are ready, and
	// waits for the head while more than verifyWindow keys are in flight.
	drain := func() {
		for len(queue) > 0 {
			head := queue[0]
			if head.done != nil && len(queue) <= verifyWindow {
				select {
				case <-head.done:
				default:
					return
				}
			}
			report(head)
			queue = queue[1:]
		}
	}

	walk := newWalker(mp.root, "", mp.ex, nil)
	var files *journalStream
	if v.j != nil && v.opts.Checksum {
		files = v.j.stream(mp.name, bucketFiles, "")
	}
	var cached *hashStream
	if v.opts.Cache != nil && v.opts.Checksum {
		cached = v.opts.Cache.stream(mp.name, "")
	}
	// Metadata in the listing costs MinIO dearly: only when nothing is
	// cached. Later runs know each object's SHA-256 by its ETag, and HEAD
	// the objects whose ETag changed.
	withMeta := v.opts.Checksum && (v.opts.Cache == nil || v.opts.Cache.empty(mp.name) || v.stat == nil)
	r.Listed = withMeta
	next, stop := iter.Pull2(listOrdered(ctx, v.store, mp.cfg.Bucket, mp.prefix, withMeta))
	defer stop()
	var listErr error
	nextObj := func() (objectInfo, bool) {
		for {
			o, err, ok := next()
			if !ok {
				return objectInfo{}, false
			}
			if err != nil {
				listErr = err
				return objectInfo{}, false
			}
			rel, found := strings.CutPrefix(o.key, mp.prefix)
			if !found || rel == "" || strings.HasSuffix(rel, "/") || mp.ex.excludedPath(rel) {
				continue
			}
			o.key = rel
			return o, true
		}
	}
	nextFile := func() (kv, bool) {
		if files == nil {
			return kv{}, false
		}
		return files.next()
	}
	nextCached := func() (kv, bool) {
		if cached == nil {
			return kv{}, false
		}
		return cached.next()
	}

	l, lok := walk.next()
	b, bok := nextObj()
	f, fok := nextFile()
	c, cok := nextCached()
	for lok || bok {
		if err := ctx.Err(); err != nil {
			r.Err = err
			return r
		}
		k := l.rel
		if !lok || (bok && b.key < k) {
			k = b.key
		}
		it := &vitem{rel: k}
		if lok && l.rel == k {
			lc := l
			it.L = &lc
			l, lok = walk.next()
		}
		if bok && b.key == k {
			bc := b
			it.B = &bc
			b, bok = nextObj()
		}
		// the journal and the cache: entries before k have no local file
		for fok && f.k < k {
			f, fok = nextFile()
		}
		if fok && f.k == k && it.L != nil {
			if rec, err := decodeRecord(f.v); err == nil && rec.sameFile(it.L.st) {
				it.rec = &rec
			}
		}
		for cok && c.k < k {
			// every local file before k was merged already: this one is gone
			writes = append(writes, hashWrite{rel: c.k})
			c, cok = nextCached()
		}
		if cok && c.k == k {
			if d, ok := decodeDigests(c.v); ok {
				it.cache = &d
			}
			c, cok = nextCached()
		}
		v.prepare(it, withMeta)
		if it.hash || it.stat {
			it.done = make(chan struct{})
			select {
			case jobs <- it:
			case <-ctx.Done():
				close(it.done)
			}
		}
		queue = append(queue, it)
		drain()
	}
	for cok {
		writes = append(writes, hashWrite{rel: c.k})
		c, cok = nextCached()
	}
	for _, it := range queue {
		report(it)
	}
	queue = nil
	flushCache()
	switch {
	case listErr != nil:
		r.Err = listErr
	case walk.err() != nil:
		r.Err = walk.err()
	case files != nil && files.err != nil:
		r.Err = fmt.Errorf("read journal of %s: %w", mp.name, files.err)
	case cached != nil && cached.err != nil:
		r.Err = fmt.Errorf("read hash cache of %s: %w", mp.name, cached.err)
	}
	return r
}

// prepare works out what a same-size key needs compared, and whether the
// local file must be read or the object HEADed for it.
func (v *Verifier) prepare(it *vitem, listedMeta bool) {
	if !v.opts.Checksum || it.L == nil || it.B == nil || it.L.st.size != it.B.size {
		return
	}
	switch {
	case it.B.hasSHA:
		s := it.B.sha256
		it.wantSHA = &s
	case it.rec != nil && it.rec.etag != "" && it.rec.etag == it.B.etag:
		s := it.rec.sha // the object the mirror wrote from this very file
		it.wantSHA = &s
	case it.cache != nil && it.cache.objETag != "" && it.cache.objETag == it.B.etag && !it.cache.objNoSHA:
		s := it.cache.objSHA // seen by an earlier run with this ETag
		it.wantSHA = &s
	case it.cache != nil && it.cache.objETag != "" && it.cache.objETag == it.B.etag:
		it.wantMD5, _ = md5ETag(it.B.etag) // known to carry no SHA-256
	case !listedMeta && v.stat != nil:
		it.stat = true
		return
	default:
		it.meta = listedMeta
		it.wantMD5, _ = md5ETag(it.B.etag)
	}
	it.needHash()
}

// needHash sets hash when the comparison needs sums of L not known yet.
func (it *vitem) needHash() {
	switch {
	case it.wantSHA != nil:
		_, ok := it.localSums(false)
		it.hash = !ok
	case it.wantMD5 != nil:
		_, ok := it.localSums(true)
		it.hash = !ok
	}
}

// work is a worker's part of a key: the object's metadata by HEAD, then
// the local file's sums.
func (v *Verifier) work(ctx context.Context, mp *mapping, it *vitem) {
	if it.stat {
		oi, err := v.stat.Stat(ctx, mp.cfg.Bucket, mp.key(it.rel))
		if classify(err) == classGone {
			it.B = nil // deleted since the listing
			return
		}
		if err != nil {
			it.err = err
			return
		}
		switch {
		case oi.etag != it.B.etag || oi.size != it.B.size:
			// replaced since the listing: compare with what is there now
			it.B = &oi
			if oi.size != it.L.st.size {
				return
			}
			fallthrough
		default:
			it.meta = true
			if oi.hasSHA {
				s := oi.sha256
				it.wantSHA = &s
			} else {
				it.wantMD5, _ = md5ETag(oi.etag)
			}
		}
		it.needHash()
	}
	if it.hash {
		it.got, it.nread, it.err = hashLocal(mp.abs(it.rel))
	}
}

// cacheEntry is what the cache should hold for the key after this run;
// ok is false when that is what it holds already (or nothing is known).
func (it *vitem) cacheEntry() (digests, bool) {
	if it.L == nil {
		return digests{}, false
	}
	var d digests
	switch {
	case it.hash:
		d = it.got
	default:
		known, ok := it.localSums(false)
		if !ok {
			return digests{}, false
		}
		d = known
	}
	switch {
	case it.B == nil:
	case it.wantSHA != nil:
		d.objETag, d.objSHA = it.B.etag, *it.wantSHA
	case it.meta:
		d.objETag, d.objNoSHA = it.B.etag, true
	case it.cache != nil:
		d.objETag, d.objSHA, d.objNoSHA = it.cache.objETag, it.cache.objSHA, it.cache.objNoSHA
	}
	if it.cache != nil && string(it.cache.encode()) == string(d.encode()) {
		return digests{}, false
	}
	return d, true
}

// decide turns a prepared (and hashed) key into its report entry and
// counts it.
func (v *Verifier) decide(it *vitem, r *VerifyResult, mp *mapping) VerifyEntry {
	e := VerifyEntry{Mapping: mp.name, Key: mp.key(it.rel), LocalSize: -1, BucketSize: -1}
	if it.L != nil {
		e.LocalSize = it.L.st.size
	}
	if it.B != nil {
		e.BucketSize = it.B.size
	}
	r.Keys++
	switch {
	case it.B == nil:
		e.Status = StatusMissingInBucket
		r.MissingInBucket++
		return e
	case it.L == nil:
		e.Status = StatusMissingLocally
		r.MissingLocally++
		return e
	case it.L.st.size != it.B.size: // also an object replaced after the listing, seen by its HEAD
		e.Status, e.Reason = StatusDiffers, "size"
		r.Differ++
		return e
	}
	e.Status = StatusSame
	if !v.opts.Checksum {
		r.Same++
		return e
	}
	if it.stat && it.err == nil {
		r.Heads++
	}
	if it.done != nil {
		switch {
		case errors.Is(it.err, fs.ErrNotExist) || errors.Is(it.err, errFileGone):
			// deleted since the walk: missing in the bucket's eyes no more
			e.Status, e.LocalSize = StatusMissingLocally, -1
			r.MissingLocally++
			return e
		case it.err != nil:
			e.Status, e.Reason = StatusError, it.err.Error()
			r.Errors++
			return e
		}
		if it.hash {
			r.FilesRead++
			r.BytesRead += it.nread
		}
	}
	local := it.got
	if !it.hash {
		local, _ = it.localSums(it.wantSHA == nil)
	}
	switch {
	case it.wantSHA != nil:
		r.Compared++
		if local.sha != *it.wantSHA {
			e.Status, e.Reason = StatusDiffers, "sha256"
		}
	case it.wantMD5 != nil:
		r.Compared++
		if string(local.md5[:]) != string(it.wantMD5) {
			e.Status, e.Reason = StatusDiffers, "md5"
		}
	default:
		r.Unchecked++ // a multipart object from another tool, without SHA-256
	}
	if e.Status == StatusSame {
		r.Same++
	} else {
		r.Differ++
	}
	return e
}

// md5ETag returns the MD5 a single-part upload's ETag is; ok is false for
// multipart ETags ("…-N") and anything else.
func md5ETag(etag string) ([]byte, bool) {
	etag = strings.Trim(etag, `"`)
	if len(etag) != 32 {
		return nil, false
	}
	b, err := hex.DecodeString(etag)
	return b, err == nil
}
