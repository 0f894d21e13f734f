package mirror

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"
)

// smallFile is the size up to which a file is read into memory in one
// go, hashed and sent from there: one read, a seekable body for retries.
const smallFile = 1 << 20

// maxRequeues bounds how often a file that keeps changing during its
// upload is tried again before it counts as failed (until the next event
// or pass).
const maxRequeues = 20

// outKind is how a task ended.
type outKind int

const (
	outUnchanged outKind = iota // already mirrored
	outAdopted                  // the object was there: recorded, not uploaded
	outUploaded
	outCopied
	outDeleted
	outGone    // the file vanished before it could be read
	outSkipped // not a regular file
	outFailed
	outGuarded // a delete stopped by a deletion guard
	outMerged  // folded into another task of the same pass: not counted
	outCanceled
)

// outcome is a task's result.
type outcome struct {
	kind  outKind
	bytes int64
	src   string // outCopied: the old path
	err   error
	// commit is the journal change that completes the task; the journal
	// writer commits it together with others after the worker moved on,
	// and the task ends (its path is released) only then.
	commit func(*mtx) error
}

// errChanged says the file changed while it was read or sent.
var errChanged = errors.New("file changed during the upload")

// errFileGone says the file disappeared before it was read.
var errFileGone = errors.New("file disappeared")

// passRun collects the outcomes of one pass's tasks and lets the pass wait
// for them.
type passRun struct {
	mu          sync.Mutex
	outstanding int
	idle        chan struct{}
	sum         *MappingSummary
	copiedFrom  map[string]struct{}
	prog        *progress
	mp          *mapping
}

// maxRenames bounds the rename sources a pass remembers.
const maxRenames = 100000

func newPassRun(mp *mapping, sum *MappingSummary, prog *progress) *passRun {
	return &passRun{idle: make(chan struct{}, 1), sum: sum, copiedFrom: make(map[string]struct{}), prog: prog, mp: mp}
}

func (r *passRun) add() {
	r.mu.Lock()
	r.outstanding++
	r.mu.Unlock()
}

// finish counts t's outcome.
func (r *passRun) finish(t *task, o outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sum
	switch o.kind {
	case outUnchanged:
		s.Unchanged++
	case outAdopted:
		s.Unchanged++
		s.Adopted++
	case outUploaded:
		s.Uploaded++
		s.UploadedBytes += o.bytes
	case outCopied:
		s.Copied++
		if len(r.copiedFrom) < maxRenames {
			r.copiedFrom[o.src] = struct{}{}
		}
	case outDeleted:
		s.Deleted++
	case outFailed:
		s.Failed++
		if len(s.Failures) < maxFailures {
			s.Failures = append(s.Failures, fmt.Sprintf("%s: %v", r.mp.key(t.rel), o.err))
		}
	}
	if r.prog != nil {
		r.prog.done(o)
	}
	r.outstanding--
	if r.outstanding == 0 {
		signal(r.idle)
	}
}

// wait returns once every task added has finished, or ctx ended.
func (r *passRun) wait(ctx context.Context) error {
	for {
		r.mu.Lock()
		n := r.outstanding
		r.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.idle:
		}
	}
}

func (r *passRun) renamed(rel string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.copiedFrom[rel]
	return ok
}

// worker runs tasks until the scheduler closes or ctx ends; operations run
// on opCtx, which outlives ctx by the drain period.
func (m *Mirror) worker(ctx, opCtx context.Context, s *sched) {
	for {
		t, ok := s.next(ctx)
		if !ok {
			return
		}
		m.execute(opCtx, s, t)
	}
}

func (m *Mirror) execute(ctx context.Context, s *sched, t *task) {
	if t.kind == kindBatch {
		m.execBatch(ctx, s, t)
		return
	}
	var o outcome
	switch t.kind {
	case kindSync:
		o = m.execSync(ctx, t)
	case kindDelete:
		o = m.execDelete(ctx, t)
	}
	if errors.Is(o.err, errChanged) && o.kind == outFailed && t.requeues < maxRequeues && ctx.Err() == nil {
		t.requeues++
		t.mp.log.Debug("file changed during its upload: trying again after the settle period", "path", t.rel)
		s.later(t, m.opts.Settle)
		return
	}
	if o.commit == nil || m.opts.DryRun {
		m.finishTask(s, t, o)
		return
	}
	m.jw.Load().submit(t.mp.name, o.commit, func(err error) {
		if err != nil {
			o = failed(fmt.Errorf("journal: %w", err))
		}
		m.finishTask(s, t, o)
	})
}

// finishTask releases t and reports its outcome.
func (m *Mirror) finishTask(s *sched, t *task, o outcome) {
	if o.kind == outDeleted {
		t.mp.objects.Add(-1)
	}
	t.mp.count(o)
	run := t.run
	s.done(t)
	if run != nil {
		run.finish(t, o)
	}
}

// retry runs fn until it succeeds, fails for good, or the attempts are
// spent; transient failures wait with exponential backoff and full jitter.
func (m *Mirror) retry(ctx context.Context, t *task, op, key string, fn func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		c := classify(err)
		if c == classCanceled || ctx.Err() != nil {
			return err
		}
		if c == classGone || c == classMismatch || errors.Is(err, errChanged) || errors.Is(err, errFileGone) ||
			errors.Is(err, errBatchUnsupported) {
			return err
		}
		t.mp.log.Warn("mirror op failed", "op", op, "key", key, "attempt", attempt, "err", err)
		if c != classRetry || attempt >= m.opts.MaxAttempts || m.stopping() {
			return err
		}
		if err := m.sleep(ctx, backoff(attempt, m.rnd)); err != nil {
			return err
		}
	}
}

func (m *Mirror) logOp(t *task, op, key string, bytes int64, start time.Time, extra ...any) {
	args := append([]any{"op", op, "key", key, "bytes", bytes, "dur", m.now().Sub(start)}, extra...)
	msg := "mirrored"
	if m.opts.DryRun {
		msg = "would mirror"
	}
	t.mp.log.Log(context.Background(), m.opLevel(t.mp), msg, args...)
}

// oneShotOpLines is how many operation lines a one-shot pass logs at INFO.
const oneShotOpLines = 1000

// opLevel is the level of an operation's log line: INFO, except in a
// one-shot run past its first oneShotOpLines lines, where a first sync of
// a million files would otherwise log a million lines: DEBUG then (the
// progress lines and the summary count the operations).
func (m *Mirror) opLevel(mp *mapping) slog.Level {
	if !m.oneShot.Load() {
		return slog.LevelInfo
	}
	n := m.opLines.Add(1)
	if n <= oneShotOpLines {
		return slog.LevelInfo
	}
	if n == oneShotOpLines+1 {
		mp.log.Info("further operations are logged at debug level; the progress lines and the summary count them",
			"after", oneShotOpLines)
	}
	return slog.LevelDebug
}

// writePending commits t's pending record, normally before its operation
// runs (see upload for the exception).
func (m *Mirror) writePending(t *task, op opKind) error {
	if t.pending || m.opts.DryRun {
		return nil
	}
	rel, now := t.rel, t.enqueued.UnixNano()
	err := m.jw.Load().do(t.mp.name, func(x *mtx) error {
		return x.putPending(rel, pendingRecord{op: op, enqueued: now})
	})
	if err == nil {
		t.pending = true
	}
	return err
}

// dropPending is the commit of a task with nothing (more) to do: its
// pending record goes, if it has one.
func dropPending(t *task) func(*mtx) error {
	if !t.pending {
		return nil
	}
	rel := t.rel
	return func(x *mtx) error { return x.deletePending(rel) }
}

// recordDone is the commit of a task that mirrored rel: its record, no
// pending operation.
func recordDone(rel string, rec fileRecord) func(*mtx) error {
	return func(x *mtx) error {
		if err := x.putFile(rel, rec); err != nil {
			return err
		}
		return x.deletePending(rel)
	}
}

func (m *Mirror) record(mp *mapping, rel string) (rec fileRecord, ok bool, err error) {
	err = m.j.view(mp.name, func(t *mtx) error {
		rec, ok, err = t.file(rel)
		return err
	})
	return rec, ok, err
}

func failed(err error) outcome { return outcome{kind: outFailed, err: err} }

// execSync makes rel's object match the local file: nothing, a record of
// an object already there, a server-side copy for a rename, or an upload.
func (m *Mirror) execSync(ctx context.Context, t *task) outcome {
	mp := t.mp
	fi, err := os.Lstat(mp.abs(t.rel))
	if errors.Is(err, fs.ErrNotExist) {
		return outcome{kind: outGone, commit: dropPending(t)}
	}
	if err != nil {
		return failed(fmt.Errorf("stat %s: %w", mp.abs(t.rel), err))
	}
	if !fi.Mode().IsRegular() {
		return outcome{kind: outSkipped, commit: dropPending(t)}
	}
	st := statOf(fi)
	rec, has, err := m.record(mp, t.rel)
	if err != nil {
		return failed(err)
	}
	if has && t.force && rec.sameFile(st) {
		// the pass's listing may predate an upload that already happened,
		// or the store reports another ETag for the same content
		if etag, ok := m.objectIs(ctx, t, rec); ok {
			if etag == rec.etag {
				return outcome{kind: outUnchanged, commit: dropPending(t)}
			}
			rec.etag = etag
			return outcome{kind: outUnchanged, commit: recordDone(t.rel, rec)}
		}
	}
	var known *[32]byte
	if has && !t.force {
		if rec.sameFile(st) {
			return outcome{kind: outUnchanged, commit: dropPending(t)}
		}
		if rec.sameContentCandidate(st) {
			// only the ctime moved: a chmod, or an edit with the mtime
			// put back; the content decides
			sum, st2, err := hashFile(mp.abs(t.rel))
			if err != nil {
				return m.localErr(t, err)
			}
			if sum == rec.sha && st2.same(st) {
				rec.ctime = st.ctime
				return outcome{kind: outUnchanged, commit: recordDone(t.rel, rec)}
			}
			known = &sum
		}
	}
	if !has && t.adopt == nil && t.recover {
		// a crash may have come between the upload and its record
		t.adopt = &objectInfo{}
	}
	if !has && t.adopt != nil {
		if o, ok := m.tryAdopt(ctx, t, st); ok {
			return o
		}
	}
	if !has {
		if o, ok := m.tryRename(ctx, t, st); ok {
			return o
		}
	}
	return m.upload(ctx, t, known)
}

// objectIs reports whether the bucket holds the object rec describes: its
// ETag, or its size, X-Amz-Meta-Mtime and X-Amz-Meta-Sha256. It returns
// the object's ETag.
func (m *Mirror) objectIs(ctx context.Context, t *task, rec fileRecord) (string, bool) {
	ss, ok := m.store.(statStore)
	if !ok {
		return "", false
	}
	oi, err := ss.Stat(ctx, t.mp.cfg.Bucket, t.mp.key(t.rel))
	if err != nil || oi.size != rec.size {
		return "", false
	}
	same := (rec.etag != "" && oi.etag == rec.etag) ||
		(oi.hasSHA && oi.sha256 == rec.sha && oi.hasMtime && oi.mtime == rec.mtime)
	return oi.etag, same
}

// localErr turns an error reading the local file into an outcome.
func (m *Mirror) localErr(t *task, err error) outcome {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errFileGone) {
		return outcome{kind: outGone, commit: dropPending(t)}
	}
	return failed(err)
}

// tryAdopt records an object that is already in the bucket with the
// file's size and mtime, instead of uploading it again.
func (m *Mirror) tryAdopt(ctx context.Context, t *task, st fileStat) (outcome, bool) {
	mp := t.mp
	oi := *t.adopt
	if !oi.hasMeta { // a listing without metadata, or nothing known
		ss, ok := m.store.(statStore)
		if !ok {
			return outcome{}, false
		}
		key := mp.key(t.rel)
		err := m.retry(ctx, t, "stat", key, func(ctx context.Context) error {
			var err error
			oi, err = ss.Stat(ctx, mp.cfg.Bucket, key)
			return err
		})
		if err != nil {
			return outcome{}, false
		}
	}
	if oi.size != st.size || !oi.hasMtime || oi.mtime != st.mtime {
		return outcome{}, false
	}
	sum := oi.sha256
	if !oi.hasSHA {
		s, st2, err := hashFile(mp.abs(t.rel))
		if err != nil || !st2.same(st) {
			return outcome{}, false
		}
		sum = s
	}
	rec := fileRecord{size: st.size, mtime: st.mtime, ctime: st.ctime, inode: st.inode, sha: sum, etag: oi.etag}
	return outcome{kind: outAdopted, commit: recordDone(t.rel, rec)}, true
}

// tryRename looks for a journal record with the file's inode, size and
// mtime whose path no longer holds that file: the file was renamed, and
// its object is copied server-side instead of uploaded again. The old
// key's deletion is left to the removal of the old path.
func (m *Mirror) tryRename(ctx context.Context, t *task, st fileStat) (outcome, bool) {
	mp := t.mp
	if st.inode == 0 {
		return outcome{}, false
	}
	var cands []string
	var recs []fileRecord
	err := m.j.view(mp.name, func(x *mtx) error {
		for _, p := range x.byInode(st.inode) {
			if p == t.rel {
				continue
			}
			r, ok, err := x.file(p)
			if err != nil || !ok || r.size != st.size || r.mtime != st.mtime {
				continue
			}
			cands = append(cands, p)
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		return outcome{}, false
	}
	s := m.sched.Load()
	var sum *[32]byte
	for i, p := range cands {
		if fi, err := os.Lstat(mp.abs(p)); err == nil && statOf(fi).inode == st.inode {
			continue // a hard link: both paths exist
		}
		// an inode can be reused by a new file of the same size and
		// mtime: only the same content makes it a rename
		if sum == nil {
			if t.hint != nil && t.hint.size == st.size && t.hint.mtime == st.mtime {
				sum = &t.hint.sha
			} else {
				h, st2, err := hashFile(mp.abs(t.rel))
				if err != nil || !st2.same(st) {
					return outcome{}, false
				}
				sum = &h
			}
		}
		if *sum != recs[i].sha {
			continue
		}
		if !s.lockPath(t, p) {
			continue
		}
		o, ok := m.copyFrom(ctx, t, st, p, recs[i])
		s.unlockPath(mp, p)
		if ok {
			return o, true
		}
	}
	return outcome{}, false
}

func (m *Mirror) copyFrom(ctx context.Context, t *task, st fileStat, src string, rec fileRecord) (outcome, bool) {
	mp := t.mp
	start := m.now()
	from, to := mp.key(src), mp.key(t.rel)
	if m.opts.DryRun {
		m.logOp(t, "copy", to, st.size, start, "from", from)
		return outcome{kind: outCopied, bytes: st.size, src: src}, true
	}
	if err := m.writePending(t, opSync); err != nil {
		return failed(err), true
	}
	var etag string
	err := m.retry(ctx, t, "copy", to, func(ctx context.Context) error {
		var err error
		etag, err = m.store.Copy(ctx, mp.cfg.Bucket, from, to, rec.etag, st.size)
		return err
	})
	if err != nil {
		if classify(err) == classGone {
			mp.log.Debug("rename source gone from the bucket: uploading instead", "key", to, "from", from)
			return outcome{}, false
		}
		return failed(err), true
	}
	nrec := fileRecord{size: st.size, mtime: st.mtime, ctime: st.ctime, inode: st.inode, sha: rec.sha, etag: etag}
	m.logOp(t, "copy", to, st.size, start, "from", from)
	mp.objects.Add(1)
	mp.markRenamed(src)
	return outcome{kind: outCopied, bytes: st.size, src: src, commit: recordDone(t.rel, nrec)}, true
}

// upload sends the file. known is its SHA-256 when already computed.
func (m *Mirror) upload(ctx context.Context, t *task, known *[32]byte) outcome {
	mp := t.mp
	key := mp.key(t.rel)
	abs := mp.abs(t.rel)
	start := m.now()
	if m.opts.DryRun {
		fi, err := os.Lstat(abs)
		if err != nil {
			return m.localErr(t, err)
		}
		m.logOp(t, "put", key, fi.Size(), start)
		return outcome{kind: outUploaded, bytes: fi.Size()}
	}
	// An upload announced by Notify goes out at once: its pending record
	// is written only if it fails (for the replay). A crash before that
	// is covered by the start-up pass, which finds the file unrecorded.
	// Other uploads record their pending operation first.
	if t.hint == nil {
		if err := m.writePending(t, opSync); err != nil {
			return failed(err)
		}
	}
	var (
		etag string
		sum  [32]byte
		st   fileStat
	)
	err := m.retry(ctx, t, "put", key, func(ctx context.Context) error {
		f, err := os.Open(abs)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return errFileGone
			}
			return fmt.Errorf("open %s: %w", abs, err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("stat %s: %w", abs, err)
		}
		st = statOf(fi)
		if !st.mode.IsRegular() {
			return errFileGone
		}
		if st.size <= smallFile {
			buf := make([]byte, st.size)
			if _, err := io.ReadFull(f, buf); err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
					return errChanged
				}
				return fmt.Errorf("read %s: %w", abs, err)
			}
			if err := sameAfter(f, st); err != nil {
				return err
			}
			sum = sha256.Sum256(buf)
			etag, err = m.store.Put(ctx, mp.cfg.Bucket, key, bytes.NewReader(buf), st.size, objectMeta{mtime: st.mtime, sha256: sum})
			return err
		}
		switch {
		case known != nil:
			sum = *known
		case t.hint != nil && t.hint.size == st.size && t.hint.mtime == st.mtime:
			sum = t.hint.sha
		default:
			h := sha256.New()
			if _, err := io.Copy(h, io.NewSectionReader(f, 0, st.size)); err != nil {
				return fmt.Errorf("read %s: %w", abs, err)
			}
			h.Sum(sum[:0])
			if err := sameAfter(f, st); err != nil {
				return err
			}
		}
		etag, err = m.store.Put(ctx, mp.cfg.Bucket, key, io.NewSectionReader(f, 0, st.size), st.size, objectMeta{mtime: st.mtime, sha256: sum})
		if err != nil {
			return err
		}
		// a multipart upload is checked part by part against what was
		// read: a file that changed meanwhile was sent torn, so send it
		// again once it is quiet
		return sameAfter(f, st)
	})
	if err != nil {
		switch {
		case errors.Is(err, errFileGone):
			return outcome{kind: outGone, commit: dropPending(t)}
		case classify(err) == classMismatch:
			return failed(fmt.Errorf("%w: %v", errChanged, err))
		case errors.Is(err, errChanged):
			return failed(err) // sent again shortly, from memory
		}
		if perr := m.writePending(t, opSync); perr != nil {
			t.mp.log.Error("could not record a failed upload; the next full pass sends it", "path", t.rel, "err", perr)
		}
		return failed(err)
	}
	rec := fileRecord{size: st.size, mtime: st.mtime, ctime: st.ctime, inode: st.inode, sha: sum, etag: etag}
	m.logOp(t, "put", key, st.size, start)
	return outcome{kind: outUploaded, bytes: st.size, commit: recordDone(t.rel, rec)}
}

// sameAfter checks that the open file still is what st describes.
func sameAfter(f *os.File, st fileStat) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	if !statOf(fi).same(st) {
		return errChanged
	}
	return nil
}

// hashFile reads p and returns its SHA-256 and its stat before the read,
// errChanged when it changed during the read.
func hashFile(p string) ([32]byte, fileStat, error) {
	var sum [32]byte
	f, err := os.Open(p)
	if err != nil {
		return sum, fileStat{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return sum, fileStat{}, err
	}
	st := statOf(fi)
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, st, fmt.Errorf("read %s: %w", p, err)
	}
	h.Sum(sum[:0])
	if err := sameAfter(f, st); err != nil {
		return sum, st, err
	}
	return sum, st, nil
}

// execDelete deletes the object of a file removed locally, unless the
// file is back or the root no longer looks like the mirrored tree.
func (m *Mirror) execDelete(ctx context.Context, t *task) outcome {
	mp := t.mp
	if _, err := os.Lstat(mp.abs(t.rel)); err == nil {
		// back again: mirror what is there
		t.kind = kindSync
		return m.execSync(ctx, t)
	}
	if g := m.rootGuard(mp); g != nil {
		m.logGuard(mp, g)
		return outcome{kind: outGuarded, commit: dropPending(t)}
	}
	key := mp.key(t.rel)
	start := m.now()
	if m.opts.DryRun {
		m.logOp(t, "delete", key, 0, start)
		return outcome{kind: outDeleted}
	}
	if err := m.writePending(t, opDelete); err != nil {
		return failed(err)
	}
	err := m.retry(ctx, t, "delete", key, func(ctx context.Context) error {
		return m.store.Delete(ctx, mp.cfg.Bucket, key)
	})
	if err != nil {
		return failed(err)
	}
	rel, now := t.rel, m.now().UnixNano()
	mp.forgetRenamed(t.rel)
	m.logOp(t, "delete", key, 0, start)
	return outcome{kind: outDeleted, commit: func(x *mtx) error {
		if err := x.deleteFile(rel); err != nil {
			return err
		}
		if err := x.deletePending(rel); err != nil {
			return err
		}
		return x.putTombstone(rel, now)
	}}
}

// execBatch uploads a batch of small new files in one request; on a store
// that cannot, or on failure, its files go back to the queue one by one.
func (m *Mirror) execBatch(ctx context.Context, s *sched, t *task) {
	mp := t.mp
	start := m.now()
	type item struct {
		c   *task
		st  fileStat
		obj batchObject
		md5 string
	}
	var items []item
	var rest []*task // children to send one by one
	var size int64
	for _, c := range t.children {
		data, st, err := readSmall(mp.abs(c.rel))
		if err != nil {
			rest = append(rest, c)
			continue
		}
		sum := sha256.Sum256(data)
		m5 := md5.Sum(data)
		items = append(items, item{c: c, st: st, md5: hex.EncodeToString(m5[:]),
			obj: batchObject{key: mp.key(c.rel), data: data, meta: objectMeta{mtime: st.mtime, sha256: sum}}})
		size += st.size
	}
	finish := func(ok []item, o func(item) outcome) {
		for _, it := range ok {
			oc := o(it)
			it.c.mp.count(oc)
			if it.c.run != nil {
				it.c.run.finish(it.c, oc)
			}
		}
	}
	if m.opts.DryRun {
		if len(items) > 0 {
			m.logBatch(mp, items[0].obj.key, items[len(items)-1].obj.key, len(items), size, start)
		}
		s.unbatch(t, rest)
		finish(items, func(it item) outcome { return outcome{kind: outUploaded, bytes: it.st.size} })
		s.done(t)
		return
	}
	objs := make([]batchObject, len(items))
	for i, it := range items {
		objs[i] = it.obj
	}
	bs, _ := m.store.(batchStore)
	var err error
	if bs == nil {
		err = errBatchUnsupported
	} else {
		err = m.retry(ctx, t, "put", fmt.Sprintf("%s(batch of %d)", mp.prefix, len(objs)), func(ctx context.Context) error {
			return bs.PutBatch(ctx, mp.cfg.Bucket, objs)
		})
	}
	if err != nil {
		if errors.Is(err, errBatchUnsupported) {
			if !m.batchOff.Swap(true) {
				mp.log.Info("the store does not take batch uploads: single PUTs from now on", "err", err)
			}
		} else {
			mp.log.Warn("batch upload failed: sending its files one by one", "err", err)
		}
		for _, it := range items {
			rest = append(rest, it.c)
		}
		s.unbatch(t, rest)
		s.done(t)
		return
	}
	if m.oneShot.Load() {
		if len(items) > 0 {
			m.logBatch(mp, items[0].obj.key, items[len(items)-1].obj.key, len(items), size, start)
		}
	} else {
		// the daemon says what it did per object, as for single PUTs
		dur := m.now().Sub(start)
		for _, it := range items {
			mp.log.Info("mirrored", "op", "put", "key", it.obj.key, "bytes", it.st.size, "dur", dur, "batch", len(items))
		}
	}
	mp.objects.Add(int64(len(items)))
	s.unbatch(t, rest)
	commit := func(x *mtx) error {
		for _, it := range items {
			// MinIO's ETag of a single-part object is its MD5; should the
			// store say otherwise, the next pass checks the metadata and
			// records the store's ETag
			rec := fileRecord{size: it.st.size, mtime: it.st.mtime, ctime: it.st.ctime, inode: it.st.inode,
				sha: it.obj.meta.sha256, etag: it.md5}
			if err := recordDone(it.c.rel, rec)(x); err != nil {
				return err
			}
		}
		return nil
	}
	m.jw.Load().submit(mp.name, commit, func(err error) {
		finish(items, func(it item) outcome {
			if err != nil {
				return failed(fmt.Errorf("journal: %w", err))
			}
			return outcome{kind: outUploaded, bytes: it.st.size}
		})
		s.done(t)
	})
}

// logBatch writes the line of one batch upload: its first and last keys,
// how many objects and bytes.
func (m *Mirror) logBatch(mp *mapping, first, last string, n int, bytes int64, start time.Time) {
	msg := "mirrored batch"
	if m.opts.DryRun {
		msg = "would mirror batch"
	}
	mp.log.Log(context.Background(), m.opLevel(mp), msg,
		"op", "put", "batch", n, "bytes", bytes, "first", first, "last", last, "dur", m.now().Sub(start))
}

// readSmall reads a small file whole, checking it did not change meanwhile.
func readSmall(p string) ([]byte, fileStat, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fileStat{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileStat{}, err
	}
	st := statOf(fi)
	if !st.mode.IsRegular() || st.size > smallFile {
		return nil, st, errChanged
	}
	buf := make([]byte, st.size)
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, st, errChanged
	}
	if err := sameAfter(f, st); err != nil {
		return nil, st, err
	}
	return buf, st, nil
}
