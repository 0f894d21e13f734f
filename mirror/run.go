package mirror

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"sync"
	"time"
)

// maxHeld bounds the removals held before their deletions are planned;
// beyond it a full pass plans them instead.
const maxHeld = 10000

// watcherRetry is how long the daemon waits before it tries again to watch
// a mapping whose watcher could not start (a missing root, say).
const watcherRetry = time.Minute

// holdWindow is how long a removal waits before its deletions are planned:
// long enough for the new name of a renamed file to settle and be copied.
func (m *Mirror) holdWindow() time.Duration { return m.opts.Settle + time.Second }

// workers is the running part shared by Run and Pass: the scheduler, the
// journal writer and the worker pool.
type workers struct {
	s        *sched
	wg       sync.WaitGroup
	jwClosed chan struct{}
	jwDone   chan struct{}
}

func (m *Mirror) startWorkers(ctx, opCtx context.Context) *workers {
	w := &workers{
		s:        newSched(m.opts.QueueSize, m.now),
		jwClosed: make(chan struct{}),
		jwDone:   make(chan struct{}),
	}
	jw := newJournalWriter(m.j)
	m.sched.Store(w.s)
	m.jw.Store(jw)
	go func() {
		defer close(w.jwDone)
		jw.run(w.jwClosed)
	}()
	for range m.opts.Workers {
		w.wg.Go(func() { m.worker(ctx, opCtx, w.s) })
	}
	return w
}

// stopWorkers closes the scheduler, waits for the workers (bounded by
// drain, after which cancel aborts running operations), then the journal
// writer.
func (w *workers) stop(drain time.Duration, cancel context.CancelFunc) {
	w.s.close()
	done := make(chan struct{})
	go func() {
		w.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(drain)
	select {
	case <-done:
	case <-t.C:
		cancel()
		<-done
	}
	t.Stop()
	close(w.jwClosed)
	<-w.jwDone
}

// Run is the daemon: a full pass per mapping at start-up and every
// `reconcile`, the fsnotify watchers, the uploads announced by Notify, the
// replay of pending operations, and the workers. It returns when ctx ends,
// after letting running operations finish for Options.DrainTimeout; what
// is left stays pending in the journal.
func (m *Mirror) Run(ctx context.Context) error {
	if !m.active.CompareAndSwap(false, true) {
		return errors.New("mirror: already running")
	}
	defer m.active.Store(false)
	stopCh := make(chan struct{})
	m.stop.Store(&stopCh)
	opCtx, cancelOps := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelOps()
	w := m.startWorkers(ctx, opCtx)

	m.running.Store(true)
	var wg sync.WaitGroup
	wg.Go(func() { m.dispatch(ctx) })
	for _, mp := range m.mappings {
		wg.Go(func() { m.runMapping(ctx, mp) })
	}
	<-ctx.Done()
	close(stopCh)
	m.running.Store(false)
	wg.Wait()
	m.log.Info("mirror stopping: letting running operations finish", "drain", m.opts.DrainTimeout)
	w.stop(m.opts.DrainTimeout, cancelOps)
	m.saveQueued(w.s)
	return nil
}

// saveQueued records in the journal the work that was queued but never
// started, so that the next start picks it up at once.
func (m *Mirror) saveQueued(s *sched) {
	if m.opts.DryRun {
		return
	}
	for {
		select {
		case ev := <-m.events:
			m.spill(ev)
			continue
		default:
		}
		break
	}
	byMapping := make(map[*mapping][]*task)
	for _, t := range s.queuedTasks() {
		for _, c := range t.paths() {
			if !c.pending {
				byMapping[c.mp] = append(byMapping[c.mp], c)
			}
		}
	}
	now := m.now().UnixNano()
	for mp, ts := range byMapping {
		err := m.j.update(mp.name, func(x *mtx) error {
			for _, t := range ts {
				op := opSync
				if t.kind == kindDelete {
					op = opDelete
				}
				if err := x.putPending(t.rel, pendingRecord{op: op, enqueued: now}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			mp.log.Error("could not record the queued work; the next start-up pass finds it", "err", err)
		}
	}
}

// dispatch routes the uploads Notify announced before Run took over.
func (m *Mirror) dispatch(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-m.events:
			m.route(ev)
		}
	}
}

// enqueue queues t, or records it in the journal when the queue is full.
func (m *Mirror) enqueue(t *task) {
	if m.sched.Load().add(t) {
		return
	}
	op := opSync
	if t.kind == kindDelete {
		op = opDelete
	}
	m.spillRel(t.mp, t.rel, op)
}

// runMapping runs a mapping's watcher, its passes and its events until ctx
// ends.
func (m *Mirror) runMapping(ctx context.Context, mp *mapping) {
	var wg sync.WaitGroup
	defer wg.Wait()
	changes := make(chan change, 256)
	wg.Go(func() { m.watch(ctx, mp, changes) })
	wg.Go(func() { m.passLoop(ctx, mp) })
	m.eventLoop(ctx, mp, changes)
}

// watch runs the mapping's watcher, starting it again when it cannot
// start (the reconcile passes cover the gap).
func (m *Mirror) watch(ctx context.Context, mp *mapping, changes chan<- change) {
	for {
		var src changeSource
		if m.testWatcher != nil {
			src = m.testWatcher(mp)
		} else {
			src = newWatcher(watcherConfig{
				Root: mp.root, Settle: m.opts.Settle, Exclude: mp.ex.excluded, OverflowAfter: m.opts.OverflowAfter,
			}, mp.log)
		}
		err := src.Run(ctx, changes)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			mp.log.Error("cannot watch the local tree: only passes find changes by other programs; trying again later",
				"path", mp.root, "err", err, "retry", watcherRetry)
		}
		if m.sleep(ctx, watcherRetry) != nil {
			return
		}
		if fi, err := os.Stat(mp.root); err == nil && fi.IsDir() {
			// changes made while nothing watched are found by a pass
			mp.requestRescan("")
		}
	}
}

// passLoop runs the mapping's passes (at start-up, every reconcile, when a
// rescan is requested) and the replays of the journal's pending operations.
func (m *Mirror) passLoop(ctx context.Context, mp *mapping) {
	m.abortUploads(ctx, mp)
	m.replay(ctx, mp)
	m.runPass(ctx, mp, "", triggerStartup, nil)
	replay := time.NewTicker(m.opts.ReplayEvery)
	defer replay.Stop()
	var tick <-chan time.Time
	if mp.cfg.Reconcile > 0 {
		t := time.NewTicker(mp.cfg.Reconcile)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			m.runPass(ctx, mp, "", triggerReconcile, nil)
		case <-replay.C:
			m.replay(ctx, mp)
		case <-mp.replayReq:
			m.replay(ctx, mp)
		case <-mp.rescanCh:
			for _, rel := range mp.takeRescans() {
				if ctx.Err() != nil {
					return
				}
				m.rescan(ctx, mp, rel)
			}
		}
	}
}

// rescan passes over rel's subtree ("" = the whole mapping).
func (m *Mirror) rescan(ctx context.Context, mp *mapping, rel string) {
	if rel == "" {
		m.runPass(ctx, mp, "", triggerRescan, nil)
		return
	}
	fi, err := os.Lstat(mp.abs(rel))
	switch {
	case err == nil && fi.IsDir():
		m.runPass(ctx, mp, rel+"/", triggerRescan, nil)
	case err == nil && fi.Mode().IsRegular():
		m.enqueue(&task{mp: mp, kind: kindSync, rel: rel})
	case errors.Is(err, fs.ErrNotExist):
		// gone again: its removal is reported separately
	}
}

// eventLoop turns the watcher's changes into tasks: files at once,
// removals after the hold window, rescans through the pass loop. It never
// waits for room in the queue.
func (m *Mirror) eventLoop(ctx context.Context, mp *mapping, changes <-chan change) {
	held := make(map[string]time.Time)
	var holdC <-chan time.Time
	var holdT *time.Timer
	defer func() {
		if holdT != nil {
			holdT.Stop()
		}
	}()
	arm := func(d time.Duration) {
		if holdT == nil {
			holdT = time.NewTimer(d)
		} else {
			holdT.Reset(d)
		}
		holdC = holdT.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-changes:
			switch c.Kind {
			case changeFile:
				delete(held, c.Rel)
				m.enqueue(&task{mp: mp, kind: kindSync, rel: c.Rel})
			case changeRemoved:
				if len(held) >= maxHeld {
					clear(held)
					mp.requestRescan("")
					continue
				}
				held[c.Rel] = m.now()
				if holdC == nil {
					arm(m.holdWindow())
				}
			case changeRescan:
				mp.requestRescan(c.Rel)
			}
		case <-holdC:
			holdC = nil
			m.flushHeld(mp, held)
			if len(held) > 0 {
				arm(m.holdWindow() / 2)
			}
		}
	}
}

// flushHeld plans the deletions of the removals whose hold window is over:
// every journal record at or under a removed path whose file is gone. The
// root and count guards apply as in a pass. Nothing is done while a pass
// runs or is requested: a pass plans deletions itself, after its copies.
func (m *Mirror) flushHeld(mp *mapping, held map[string]time.Time) {
	if len(held) == 0 || mp.passing.Load() || mp.rescanPending() {
		return
	}
	now := m.now()
	var gone []string
	for rel, at := range held {
		if now.Sub(at) < m.holdWindow() {
			continue
		}
		delete(held, rel)
		for _, prefix := range []string{rel, rel + "/"} {
			st := m.j.stream(mp.name, bucketFiles, prefix)
			for {
				e, ok := st.next()
				if !ok {
					break
				}
				if prefix == rel && e.k != rel {
					break
				}
				if _, err := os.Lstat(mp.abs(e.k)); errors.Is(err, fs.ErrNotExist) {
					gone = append(gone, e.k)
				}
				if len(gone) > maxPlan {
					mp.requestRescan("")
					return
				}
			}
			if st.err != nil {
				mp.log.Warn("journal read failed: the next pass plans these deletions", "path", rel, "err", st.err)
				mp.requestRescan("")
				return
			}
		}
	}
	if len(gone) == 0 {
		return
	}
	if g := m.rootGuard(mp); g != nil {
		m.logGuard(mp, g)
		return
	}
	if !mp.cfg.Remove {
		m.forget(mp, gone)
		return
	}
	n := 0
	for _, rel := range gone {
		if !mp.wasRenamed(rel) {
			n++
		}
	}
	if g := countGuard(mp, n, mp.objects.Load(), m.opts.AllowDeletes); g != nil {
		m.logGuard(mp, g)
		return
	}
	for _, rel := range gone {
		m.enqueue(&task{mp: mp, kind: kindDelete, rel: rel})
	}
}

// forget records local deletions that leave their objects in place
// (remove = false): tombstones for the reverse pull, records dropped.
func (m *Mirror) forget(mp *mapping, rels []string) {
	if m.opts.DryRun {
		return
	}
	now := m.now().UnixNano()
	err := m.j.update(mp.name, func(t *mtx) error {
		for _, rel := range rels {
			if err := t.deleteFile(rel); err != nil {
				return err
			}
			if err := t.putTombstone(rel, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		mp.log.Warn("journal update failed; the next pass retries it", "err", err)
	}
}

// replay queues the mapping's pending operations that are not queued yet,
// waiting for room in the queue.
func (m *Mirror) replay(ctx context.Context, mp *mapping) {
	s := m.sched.Load()
	st := m.j.stream(mp.name, bucketPending, "")
	n := 0
	for {
		e, ok := st.next()
		if !ok {
			break
		}
		pr, err := decodePending(e.v)
		if err != nil || s.isActive(mp, e.k) {
			continue
		}
		kind := kindSync
		if pr.op == opDelete {
			kind = kindDelete
		}
		t := &task{mp: mp, kind: kind, rel: e.k, pending: true, recover: true, enqueued: time.Unix(0, pr.enqueued)}
		if s.addWait(ctx, t) != nil {
			return
		}
		n++
	}
	if st.err != nil {
		mp.log.Warn("journal read failed", "err", st.err)
	}
	if n > 0 {
		mp.log.Info("replaying pending operations from the journal", "count", n)
	}
}

// Pass is the one-shot `ftpgate mirror`: a full pass over each named
// mapping (all when names is empty), waiting for every operation. Failed
// operations and tripped guards are in the Summary; the error is for what
// kept the passes from running (an unknown mapping, a canceled ctx).
func (m *Mirror) Pass(ctx context.Context, names []string) (Summary, error) {
	mps, err := pick(m.mappings, names)
	if err != nil {
		return Summary{}, err
	}
	if !m.active.CompareAndSwap(false, true) {
		return Summary{}, errors.New("mirror: already running")
	}
	defer m.active.Store(false)
	stopCh := make(chan struct{})
	m.stop.Store(&stopCh)
	defer close(stopCh)
	m.oneShot.Store(true)
	defer m.oneShot.Store(false)
	m.opLines.Store(0)
	start := m.now()
	w := m.startWorkers(ctx, ctx)
	prog := newProgress(m.opts.Progress, m.log, m.testProgressEvery)
	sum := Summary{DryRun: m.opts.DryRun}
	for _, mp := range mps {
		prog.setMapping(mp.name)
		sum.Mappings = append(sum.Mappings, m.runPass(ctx, mp, "", triggerOneShot, prog))
		if ctx.Err() != nil {
			break
		}
		m.abortUploads(ctx, mp)
	}
	prog.stop()
	w.stop(0, func() {})
	sum.Duration = m.now().Sub(start)
	return sum, ctx.Err()
}

// abortUploads aborts the multipart uploads a killed ftpgate left under
// the mapping's prefix (the journal lock says no other ftpgate runs).
func (m *Mirror) abortUploads(ctx context.Context, mp *mapping) {
	a, ok := m.store.(uploadsAborter)
	if !ok || m.opts.DryRun {
		return
	}
	n, err := a.AbortUploads(ctx, mp.cfg.Bucket, mp.prefix)
	if err != nil {
		mp.log.Warn("could not abort leftover multipart uploads", "bucket", mp.cfg.Bucket, "err", err)
	}
	if n > 0 {
		mp.log.Info("aborted leftover multipart uploads", "bucket", mp.cfg.Bucket, "count", n)
	}
}
