package mirror

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Pass triggers, as MappingSummary.Trigger and the logs name them.
const (
	triggerStartup   = "start-up"
	triggerReconcile = "reconcile"
	triggerRescan    = "rescan"
	triggerOneShot   = "one-shot"
)

// Pass shapes.
const (
	batchMinFiles = 64      // a pass batches small new files once it found this many
	batchMaxFiles = 200     // files per batch: small batches keep every worker busy
	batchMaxBytes = 4 << 20 // bytes per batch
	batchFileMax  = 1 << 20 // files below this size go into batches
	outboxSize    = 2048    // paths whose pending records are committed together
	bookSize      = 1024    // journal clean-ups committed together
	maxPlan       = 100000  // deletion plan entries held; the rest waits for the next pass
)

// planItem is one entry of a pass's deletion plan: a key whose local file
// is gone.
type planItem struct {
	rel           string
	deleteObject  bool // delete the object (remove = true)
	tombstone     bool // record the local deletion (the object stays)
	dropRecord    bool
	dropTombstone bool // the object is gone too: nothing left to remember
	dropPending   bool
}

// passer is the state of one pass.
type passer struct {
	m      *Mirror
	mp     *mapping
	ctx    context.Context
	run    *passRun
	sum    *MappingSummary
	sub    string
	daemon bool
	prog   *progress
	s      *sched

	outbox      []*task
	outboxPaths int // paths of the tasks in outbox (a batch counts its files)
	book        []func(*mtx) error

	batchOK    bool
	batch      []*task
	batchBytes int64
	batchCands int

	plan          []planItem
	planObjects   int
	planTruncated bool
	newKeys       int64

	listed  int64
	listErr error
}

// runPass runs one pass over mp (sub "" = the whole mapping, else a
// subtree "dir/") and records it in the mapping's status.
func (m *Mirror) runPass(ctx context.Context, mp *mapping, sub, trigger string, prog *progress) MappingSummary {
	release := func() {}
	if sub == "" && m.opts.Lock != nil {
		r, err := m.opts.Lock(ctx, mp.root, "mirror pass "+mp.name)
		if err != nil {
			return MappingSummary{Name: mp.name, Bucket: mp.cfg.Bucket, Prefix: mp.prefix, Trigger: trigger, Err: err}
		}
		release = r
	}
	sum, start, end := m.timedPass(ctx, mp, sub, trigger, prog)
	release()
	if sub == "" && m.opts.PassDone != nil {
		m.opts.PassDone(sum, start, end)
	}
	return sum
}

// timedPass is runPass once the job lock is held; it returns when the
// pass started and ended too.
func (m *Mirror) timedPass(ctx context.Context, mp *mapping, sub, trigger string, prog *progress) (sum MappingSummary, start, end time.Time) {
	start = m.now()
	sum = MappingSummary{Name: mp.name, Bucket: mp.cfg.Bucket, Prefix: mp.prefix, Trigger: trigger}
	mp.passing.Store(true)
	mp.mu.Lock()
	mp.status.LastPassStart = start
	mp.mu.Unlock()
	if sub == "" {
		mp.log.Info("mirror pass started", "trigger", trigger, "subtree", sub)
	} else {
		mp.log.Debug("mirror pass started", "trigger", trigger, "subtree", sub)
	}

	sum.Err = m.pass(ctx, mp, sub, trigger, &sum, prog)

	end = m.now()
	sum.Duration = end.Sub(start)
	mp.passing.Store(false)
	mp.mu.Lock()
	mp.status.LastPassEnd = end
	mp.status.LastPassResult = sum.result()
	switch {
	case sum.Err != nil:
		mp.status.LastPassError = sum.Err.Error()
	case sum.Guard != nil:
		mp.status.LastPassError = sum.Guard.Error()
	case len(sum.Failures) > 0:
		mp.status.LastPassError = sum.Failures[0]
	default:
		mp.status.LastPassError = ""
	}
	mp.mu.Unlock()
	args := []any{"trigger", trigger, "subtree", sub, "result", sum.result(),
		"uploaded", sum.Uploaded, "bytes", sum.UploadedBytes, "copied", sum.Copied, "deleted", sum.Deleted,
		"unchanged", sum.Unchanged, "failed", sum.Failed, "planned_deletions", sum.Planned,
		"files", sum.Scanned, "dur", sum.Duration}
	if sum.Guard != nil {
		args = append(args, "guard", sum.Guard.Guard)
	}
	if sum.Err != nil {
		args = append(args, "err", sum.Err)
		mp.log.Error("mirror pass", args...)
	} else {
		mp.log.Info("mirror pass", args...)
	}
	return sum, start, end
}

func (m *Mirror) pass(ctx context.Context, mp *mapping, sub, trigger string, sum *MappingSummary, prog *progress) error {
	rs, g, err := m.checkRoot(mp)
	if err != nil {
		return err
	}
	if g != nil {
		sum.Guard = g
		m.logGuard(mp, g)
		return nil
	}
	if err := m.prepareRoot(mp, sub, &rs); err != nil {
		return err
	}
	s := m.sched.Load()
	p := &passer{
		m: m, mp: mp, ctx: ctx, sum: sum, sub: sub, prog: prog, s: s,
		run:    newPassRun(mp, sum, prog),
		daemon: trigger != triggerOneShot,
	}
	if _, ok := m.store.(batchStore); ok && !m.batchOff.Load() {
		p.batchOK = true
	}
	walk := newWalker(mp.root, sub, mp.ex, m.testOpenDir)
	files := m.j.stream(mp.name, bucketFiles, sub)
	tombs := m.j.stream(mp.name, bucketTombstones, sub)
	pend := m.j.stream(mp.name, bucketPending, sub)
	// metadata in the listing only when there is no journal to go by
	nextObj, stopList := m.listBucket(ctx, mp, sub, rs.empty)
	defer stopList()

	l, lok := walk.next()
	f, fok := files.next()
	tb, tok := tombs.next()
	pe, pok := pend.next()
	b, bok := p.nextObject(nextObj)
	for {
		var k string
		have := false
		for _, c := range []struct {
			ok  bool
			key string
		}{{lok, l.rel}, {fok, f.k}, {tok, tb.k}, {pok, pe.k}, {bok, b.key}} {
			if c.ok && (!have || c.key < k) {
				k, have = c.key, true
			}
		}
		if !have {
			break
		}
		if err := ctx.Err(); err != nil {
			p.abandon()
			return err
		}
		var (
			L      *localFile
			F, P   *kv
			T      bool
			B      *objectInfo
			lc, bc = l, b
			fc, pc = f, pe
		)
		if lok && l.rel == k {
			L = &lc
			l, lok = walk.next()
		}
		if fok && f.k == k {
			F = &fc
			f, fok = files.next()
		}
		if tok && tb.k == k {
			T = true
			tb, tok = tombs.next()
		}
		if pok && pe.k == k {
			P = &pc
			pe, pok = pend.next()
		}
		if bok && b.key == k {
			B = &bc
			b, bok = p.nextObject(nextObj)
		}
		var err error
		if L != nil {
			err = p.decideLocal(k, L, F, P, T, B)
		} else {
			err = p.decideMissing(k, F, P, T, B)
		}
		if err != nil {
			p.abandon()
			return err
		}
	}
	for _, st := range []*journalStream{files, tombs, pend} {
		if st.err != nil {
			p.abandon()
			return fmt.Errorf("read journal of %s: %w", mp.name, st.err)
		}
	}
	if err := p.endBatches(); err != nil {
		return err
	}
	if err := p.flush(); err != nil {
		return err
	}
	if err := p.run.wait(ctx); err != nil {
		return err
	}
	return p.deletions(rs, walk.err())
}

// prepareRoot creates the sentinel in the first pass of a mapping (the
// journal says none was made; it may already hold records of uploads the
// FTP server announced before that pass), and records the root's device
// when none is recorded.
func (m *Mirror) prepareRoot(mp *mapping, sub string, rs *rootState) error {
	if m.opts.DryRun {
		return nil
	}
	if sub == "" && !rs.sentinelMade {
		if err := writeSentinel(mp); err != nil {
			return err
		}
		rs.sentinel, rs.sentinelMade = true, true
		if err := m.j.update(mp.name, func(t *mtx) error {
			if err := t.setMeta(metaSentinel, []byte{1}); err != nil {
				return err
			}
			return t.setDevice(rs.dev)
		}); err != nil {
			return fmt.Errorf("journal %s: %w", mp.name, err)
		}
		rs.hasDev, rs.recordedDev = true, rs.dev
		return nil
	}
	if !rs.hasDev {
		if err := m.j.update(mp.name, func(t *mtx) error { return t.setDevice(rs.dev) }); err != nil {
			return fmt.Errorf("journal %s: %w", mp.name, err)
		}
		rs.hasDev, rs.recordedDev = true, rs.dev
	}
	return nil
}

// writeSentinel creates the sentinel in the mapping's local root, unless
// it is there.
func writeSentinel(mp *mapping) error {
	p := filepath.Join(mp.root, SentinelName)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	switch {
	case errors.Is(err, fs.ErrExist):
		return nil
	case err != nil:
		return fmt.Errorf("create sentinel %s: %w", p, err)
	}
	_, err = f.WriteString(sentinelText)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create sentinel %s: %w", p, err)
	}
	mp.log.Info("created the local root's sentinel", "path", p)
	return nil
}

// nextObject returns the next object of the listing relative to the
// mapping's prefix, skipping directory markers. A listing error ends the
// listing and is kept for the guard.
func (p *passer) nextObject(next func() (objectInfo, error, bool)) (objectInfo, bool) {
	for {
		o, err, ok := next()
		if !ok {
			return objectInfo{}, false
		}
		if err != nil {
			p.listErr = err
			return objectInfo{}, false
		}
		rel, found := strings.CutPrefix(o.key, p.mp.prefix)
		if !found || rel == "" || strings.HasSuffix(rel, "/") {
			continue
		}
		p.listed++
		o.key = rel
		return o, true
	}
}

// decideLocal handles a key with a local file.
func (p *passer) decideLocal(k string, L *localFile, F, P *kv, T bool, B *objectInfo) error {
	p.sum.Scanned++
	if p.prog != nil {
		p.prog.scan()
	}
	var rec fileRecord
	has := false
	if F != nil {
		r, err := decodeRecord(F.v)
		if err != nil {
			p.mp.log.Warn("journal record unreadable: treated as missing", "path", k, "err", err)
		} else {
			rec, has = r, true
		}
	}
	bKnown := B != nil
	bUnknown := !bKnown && p.listErr != nil
	bOK := has && (bUnknown || (bKnown && B.size == rec.size && (rec.etag == "" || B.etag == rec.etag)))
	if has && rec.sameFile(L.st) && bOK {
		p.sum.Unchanged++
		if p.prog != nil {
			p.prog.done(outcome{kind: outUnchanged})
		}
		if bKnown && rec.etag == "" {
			rec.etag = B.etag
			r := rec
			p.bookkeep(func(t *mtx) error { return t.putFile(k, r) })
		}
		if P != nil {
			p.bookkeep(func(t *mtx) error { return t.deletePending(k) })
		}
		if T {
			p.bookkeep(func(t *mtx) error { return t.deleteTombstone(k) })
		}
		return nil
	}
	t := &task{mp: p.mp, kind: kindSync, rel: k, run: p.run, pending: P != nil}
	if p.daemon {
		// a file changed within the settle period may still be being
		// written: send it once it has been quiet that long
		if quiet := time.Unix(0, max(L.st.mtime, L.st.ctime)).Add(p.m.opts.Settle); quiet.After(p.m.now()) {
			t.notBefore = quiet
		}
	}
	switch {
	case bKnown && has && !bOK:
		t.force = true // the bucket holds another object
	case !bKnown && !bUnknown:
		t.force = true // the bucket lacks it
		p.newKeys++
	}
	if !has && bKnown {
		o := *B
		t.adopt = &o
	}
	if !has && !bKnown && !bUnknown && p.batchOK && L.st.size < batchFileMax && t.notBefore.IsZero() {
		return p.addBatch(t, L.st.size)
	}
	return p.emit(t)
}

// decideMissing handles a key with no local file: the deletion plan.
func (p *passer) decideMissing(k string, F, P *kv, T bool, B *objectInfo) error {
	if p.mp.ex.excludedPath(k) {
		// excluded (perhaps since recently): forget it, leave the object
		if F != nil {
			p.bookkeep(func(t *mtx) error { return t.deleteFile(k) })
		}
		if P != nil {
			p.bookkeep(func(t *mtx) error { return t.deletePending(k) })
		}
		return nil
	}
	it := planItem{rel: k, dropPending: P != nil}
	has := F != nil
	switch {
	case B != nil && p.mp.cfg.Remove && (has || T || p.mp.cfg.Pull == ""):
		// with a pull schedule, an object the mirror never knew came
		// from the bucket's side: the pull fetches it; only a local
		// deletion of a known file removes an object
		it.deleteObject = true
	case B != nil:
		it.tombstone, it.dropRecord = has, has
	case has || T:
		// the object is gone as well (or its state unknown after a
		// listing error: then the guard stops the plan)
		it.dropRecord, it.dropTombstone = has, T
	}
	if it == (planItem{rel: k}) {
		return nil
	}
	if it.deleteObject {
		p.planObjects++
	}
	if len(p.plan) >= maxPlan {
		p.planTruncated = true
		return nil
	}
	p.plan = append(p.plan, it)
	return nil
}

func (p *passer) bookkeep(fn func(*mtx) error) {
	if p.m.opts.DryRun {
		return
	}
	p.book = append(p.book, fn)
	if len(p.book) >= bookSize {
		p.flushBook()
	}
}

func (p *passer) flushBook() {
	if len(p.book) == 0 {
		return
	}
	fns := p.book
	p.book = nil
	err := p.m.j.update(p.mp.name, func(t *mtx) error {
		for _, fn := range fns {
			if err := fn(t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		p.mp.log.Warn("journal clean-up failed; the next pass retries it", "err", err)
	}
}

// addBatch collects a small new file for a batch upload.
func (p *passer) addBatch(t *task, size int64) error {
	if p.m.batchOff.Load() {
		p.batchOK = false
		for _, c := range p.batch {
			if err := p.emit(c); err != nil {
				return err
			}
		}
		p.batch, p.batchBytes = nil, 0
		return p.emit(t)
	}
	p.batchCands++
	p.batch = append(p.batch, t)
	p.batchBytes += size
	if p.batchCands < batchMinFiles {
		return nil
	}
	if len(p.batch) >= batchMaxFiles || p.batchBytes >= batchMaxBytes {
		return p.emitBatch()
	}
	return nil
}

func (p *passer) emitBatch() error {
	if len(p.batch) == 0 {
		return nil
	}
	bt := &task{mp: p.mp, kind: kindBatch, rel: p.batch[0].rel, children: p.batch}
	p.batch, p.batchBytes = nil, 0
	return p.emit(bt)
}

// endBatches sends what is left: a batch when the pass found enough small
// new files, else single uploads.
func (p *passer) endBatches() error {
	if p.batchCands >= batchMinFiles {
		return p.emitBatch()
	}
	for _, c := range p.batch {
		if err := p.emit(c); err != nil {
			return err
		}
	}
	p.batch = nil
	return nil
}

// emit queues t; the outbox commits the pending records of a group of
// tasks in one transaction before they are handed to the workers.
func (p *passer) emit(t *task) error {
	p.outbox = append(p.outbox, t)
	p.outboxPaths++
	if t.kind == kindBatch {
		p.outboxPaths += len(t.children) - 1
	}
	if p.outboxPaths >= outboxSize {
		return p.flush()
	}
	return nil
}

// flush commits the outbox's pending records and queues its tasks.
func (p *passer) flush() error {
	p.flushBook()
	if len(p.outbox) == 0 {
		return nil
	}
	box := p.outbox
	p.outbox, p.outboxPaths = nil, 0
	if !p.m.opts.DryRun {
		now := p.m.now().UnixNano()
		err := p.m.j.update(p.mp.name, func(x *mtx) error {
			for _, t := range box {
				for _, c := range t.paths() {
					if c.pending {
						continue
					}
					op := opSync
					if c.kind == kindDelete {
						op = opDelete
					}
					if err := x.putPending(c.rel, pendingRecord{op: op, enqueued: now}); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("journal %s: %w", p.mp.name, err)
		}
		for _, t := range box {
			for _, c := range t.paths() {
				c.pending = true
			}
		}
	}
	for i, t := range box {
		for _, c := range t.paths() {
			if c.run != nil {
				p.run.add()
			}
		}
		if err := p.s.addWait(p.ctx, t); err != nil {
			for _, r := range box[i:] {
				for _, c := range r.paths() {
					if c.run != nil {
						p.run.finish(c, outcome{kind: outCanceled})
					}
				}
			}
			return err
		}
	}
	return nil
}

// abandon drops what a pass had not queued yet.
func (p *passer) abandon() {
	p.outbox, p.outboxPaths, p.batch, p.book = nil, 0, nil, nil
}

// paths is the tasks that each stand for one path: t, or a batch's
// children.
func (t *task) paths() []*task {
	if t.kind == kindBatch {
		return t.children
	}
	return []*task{t}
}

// deletions checks the guards against the plan and, when none trips, runs
// it: object deletions through the workers, the rest in the journal.
func (p *passer) deletions(rs rootState, walkErr error) error {
	m, mp := p.m, p.mp
	planned := p.planObjects - countRenamed(p)
	p.sum.Planned = planned
	objects := p.listed
	if p.sub != "" {
		objects = mp.objects.Load()
	}
	hasPlan := len(p.plan) > 0 || p.planTruncated
	var g *GuardError
	switch {
	case walkErr != nil || p.listErr != nil:
		err := walkErr
		if err == nil {
			err = p.listErr
		}
		g = &GuardError{mp.name, GuardListingErrors, fmt.Sprintf("the pass's listing was incomplete: %v", err)}
	case !hasPlan:
	case !rs.sentinel:
		g = sentinelGuard(mp)
	case rs.devChanged():
		g = deviceGuard(mp, rs)
	default:
		g = countGuard(mp, planned, objects, m.opts.AllowDeletes)
	}
	if g != nil {
		p.sum.Guard = g
		m.logGuard(mp, g)
		return nil
	}
	if !hasPlan && !m.opts.DryRun {
		if !rs.sentinel {
			mp.log.Warn("the local root has no sentinel: deletions will be refused until it is back",
				"path", filepath.Join(mp.root, SentinelName))
		} else if rs.devChanged() {
			if err := m.j.update(mp.name, func(t *mtx) error { return t.setDevice(rs.dev) }); err != nil {
				return fmt.Errorf("journal %s: %w", mp.name, err)
			}
			mp.log.Info("the local root is on a new device; recorded", "device", rs.dev, "was", rs.recordedDev)
		}
	}
	if p.planTruncated {
		mp.log.Warn("deletion plan too long for one pass: the rest waits for the next", "planned", p.planObjects, "now", len(p.plan))
	}
	now := m.now().UnixNano()
	for _, it := range p.plan {
		it := it
		if it.deleteObject {
			t := &task{mp: mp, kind: kindDelete, rel: it.rel, run: p.run, pending: false}
			if err := p.emit(t); err != nil {
				return err
			}
			continue
		}
		p.bookkeep(func(t *mtx) error {
			if it.dropRecord {
				if err := t.deleteFile(it.rel); err != nil {
					return err
				}
			}
			if it.tombstone {
				if err := t.putTombstone(it.rel, now); err != nil {
					return err
				}
			}
			if it.dropTombstone {
				if err := t.deleteTombstone(it.rel); err != nil {
					return err
				}
			}
			if it.dropPending {
				return t.deletePending(it.rel)
			}
			return nil
		})
	}
	if err := p.flush(); err != nil {
		return err
	}
	if err := p.run.wait(p.ctx); err != nil {
		return err
	}
	if p.sub == "" {
		mp.setGuard(nil)
		mp.objects.Store(p.listed + p.newKeys - int64(p.sum.Deleted))
	}
	return nil
}

func countRenamed(p *passer) int {
	n := 0
	for _, it := range p.plan {
		if it.deleteObject && (p.run.renamed(it.rel) || p.mp.wasRenamed(it.rel)) {
			n++
		}
	}
	return n
}
