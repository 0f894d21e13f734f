package mirror

import (
	"context"
	"sync"
	"time"
)

// taskKind is what a task does.
type taskKind int

const (
	kindSync   taskKind = iota // make rel's object match the local file
	kindDelete                 // delete rel's object: the file is gone
	kindBatch                  // upload children in one batch request
)

// uploadHint is what the FTP server told about a completed upload.
type uploadHint struct {
	size  int64
	mtime int64
	sha   [32]byte
}

// task is one unit of work on one path (or a batch of paths). At most one
// task per path is queued or running: later work on a path merges into the
// queued task, or waits as follow-up of the running one.
type task struct {
	mp   *mapping
	kind taskKind
	rel  string

	hint    *uploadHint // from Notify
	force   bool        // the bucket lacks the object or has another: upload even if the journal matches
	adopt   *objectInfo // the bucket has an object and the journal no record: compare before uploading
	pending bool        // its pending record is committed
	recover bool        // replayed from the journal: the object may be there already

	children []*task // kindBatch
	parent   *task   // the batch this task belongs to

	enqueued  time.Time
	notBefore time.Time
	requeues  int
	weight    int // paths it counted for in the queue when pushed

	run *passRun // the pass waiting for this task, or nil

	// scheduler state, under sched.mu
	running bool
	next    *task // follow-up work queued while this one ran
}

// key identifies the path a task works on.
type taskKey struct {
	mp  *mapping
	rel string
}

// sched queues tasks for the workers: one entry per path, a hard cap (add
// fails beyond it: the caller records the work in the journal instead), a
// high-water mark for passes (addWait blocks above it), and delayed tasks.
// The cap and the mark count paths, a batch as many as it has files, so
// that what a pass holds in memory is bounded by the queue size.
// Work announced by Notify or the watcher goes first, ahead of passes and
// replays, so that a long pass does not delay a fresh upload.
type sched struct {
	mu      sync.Mutex
	urgent  fifo
	normal  fifo
	delayed []*task
	active  map[taskKey]*task
	paths   int // paths of the queued tasks (ready and delayed)
	cap     int
	high    int
	closed  bool
	wake    chan struct{} // a task is ready
	stop    chan struct{} // closed by close
	room    chan struct{} // the queue went below high water
	now     func() time.Time
}

func newSched(capacity int, now func() time.Time) *sched {
	return &sched{
		active: make(map[taskKey]*task),
		cap:    capacity,
		high:   max(capacity/2, 1),
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		room:   make(chan struct{}, 1),
		now:    now,
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// queued is the number of paths queued, not running.
func (s *sched) queued() int { return s.paths }

// fifo is a queue of tasks.
type fifo struct {
	items []*task
	head  int
}

func (f *fifo) len() int      { return len(f.items) - f.head }
func (f *fifo) push(t *task)  { f.items = append(f.items, t) }
func (f *fifo) rest() []*task { return f.items[f.head:] }

func (f *fifo) pop() *task {
	if f.head >= len(f.items) {
		return nil
	}
	t := f.items[f.head]
	f.items[f.head] = nil
	f.head++
	switch {
	case f.head == len(f.items):
		f.items, f.head = f.items[:0], 0
	case f.head > 1024 && f.head*2 > len(f.items):
		n := copy(f.items, f.items[f.head:])
		clear(f.items[n:])
		f.items, f.head = f.items[:n], 0
	}
	return t
}

// urgent reports whether t is fresh work (Notify, the watcher) rather than
// a pass's or a replay's.
func (t *task) urgent() bool { return t.run == nil && !t.recover }

func (s *sched) ready(t *task) {
	if t.urgent() {
		s.urgent.push(t)
	} else {
		s.normal.push(t)
	}
}

// add queues t, or merges it into the task already there for its path. It
// reports false when the queue is full or closed: t was not taken.
func (s *sched) add(t *task) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addLocked(t, s.cap)
}

func (s *sched) addLocked(t *task, limit int) bool {
	if s.closed {
		return false
	}
	if t.enqueued.IsZero() {
		t.enqueued = s.now()
	}
	if t.kind != kindBatch {
		if e := s.active[taskKey{t.mp, t.rel}]; e != nil {
			s.merge(e, t)
			return true
		}
	}
	if s.queued() >= limit {
		return false
	}
	if t.kind == kindBatch {
		keep := t.children[:0]
		for _, c := range t.children {
			if e := s.active[taskKey{c.mp, c.rel}]; e != nil {
				s.merge(e, c)
				continue
			}
			keep = append(keep, c)
		}
		t.children = keep
		if len(keep) == 0 {
			return true
		}
		for _, c := range t.children {
			c.parent = t
			s.active[taskKey{c.mp, c.rel}] = c
		}
	} else {
		s.active[taskKey{t.mp, t.rel}] = t
	}
	s.push(t)
	return true
}

func (s *sched) push(t *task) {
	t.weight = 1
	if t.kind == kindBatch {
		t.weight = len(t.children)
	}
	s.paths += t.weight
	if !t.notBefore.IsZero() && t.notBefore.After(s.now()) {
		s.delayed = append(s.delayed, t)
	} else {
		s.ready(t)
	}
	signal(s.wake)
}

// merge folds t into e, the task already there for the same path.
func (s *sched) merge(e, t *task) {
	if e.running || (e.parent != nil && e.parent.running) {
		if e.next == nil {
			e.next = t
			return
		}
		e = e.next
	} else if e.parent != nil && t.kind != kindSync {
		// a delete for a file queued in a batch: let the batch find it
		// gone, then run the delete
		if e.next == nil {
			e.next = t
			return
		}
		e = e.next
	}
	mergeInto(e, t)
}

func mergeInto(e, t *task) {
	if t.kind != e.kind && e.kind != kindBatch {
		e.kind = t.kind
	}
	e.force = e.force || t.force
	if t.hint != nil {
		e.hint = t.hint
	}
	if t.adopt != nil {
		e.adopt = t.adopt
	}
	switch {
	case t.run == nil:
	case e.run == nil:
		e.run = t.run
	default:
		// a pass already waits for this path
		t.run.finish(t, outcome{kind: outMerged})
	}
	e.pending = e.pending || t.pending
	e.recover = e.recover || t.recover
}

// addWait queues t like add, but waits while the queue is above its high
// water mark, so that a pass leaves room for uploads announced meanwhile.
func (s *sched) addWait(ctx context.Context, t *task) error {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return context.Canceled
		}
		if s.addLocked(t, s.high) {
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stop:
			return context.Canceled
		case <-s.room:
		}
	}
}

// next waits for a ready task and marks it running; ok is false once the
// scheduler is closed or ctx ends.
func (s *sched) next(ctx context.Context) (*task, bool) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, false
		}
		now := s.now()
		var wait time.Duration = -1
		keep := s.delayed[:0]
		for _, d := range s.delayed {
			if !d.notBefore.After(now) {
				s.ready(d)
				continue
			}
			if w := d.notBefore.Sub(now); wait < 0 || w < wait {
				wait = w
			}
			keep = append(keep, d)
		}
		clear(s.delayed[len(keep):])
		s.delayed = keep
		t := s.urgent.pop()
		if t == nil {
			t = s.normal.pop()
		}
		if t != nil {
			s.paths -= t.weight
			t.running = true
			more := s.urgent.len()+s.normal.len() > 0
			below := s.queued() < s.high
			s.mu.Unlock()
			if more {
				signal(s.wake)
			}
			if below {
				signal(s.room)
			}
			return t, true
		}
		s.mu.Unlock()
		var timer <-chan time.Time
		var tm *time.Timer
		if wait >= 0 {
			tm = time.NewTimer(wait)
			timer = tm.C
		}
		select {
		case <-ctx.Done():
		case <-s.stop:
		case <-s.wake:
		case <-timer:
		}
		if tm != nil {
			tm.Stop()
		}
		if ctx.Err() != nil {
			return nil, false
		}
	}
}

// done releases t (and its batch children), and queues the follow-up work
// that arrived while it ran.
func (s *sched) done(t *task) {
	s.mu.Lock()
	var follow []*task
	release := func(x *task) {
		if s.active[taskKey{x.mp, x.rel}] == x {
			delete(s.active, taskKey{x.mp, x.rel})
		}
		if x.next != nil {
			follow = append(follow, x.next)
			x.next = nil
		}
	}
	if t.kind == kindBatch {
		for _, c := range t.children {
			release(c)
		}
	} else {
		release(t)
	}
	for _, f := range follow {
		// follow-up work is never dropped for lack of room: it was
		// already accepted
		s.addLocked(f, int(^uint(0)>>1))
	}
	s.mu.Unlock()
	signal(s.room)
}

// later puts a running task back for another run after d, keeping its
// place as the path's task (used when a file changed while uploading).
func (s *sched) later(t *task, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t.running = false
	t.notBefore = s.now().Add(d)
	if t.next != nil {
		mergeInto(t, t.next)
		t.next = nil
	}
	if s.closed {
		return
	}
	s.push(t)
}

// close stops handing out tasks; queued ones are dropped (their pending
// records stay in the journal).
func (s *sched) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
}

// stats returns the number of tasks queued or running for mp and the
// enqueue time of the oldest.
func (s *sched) stats(mp *mapping) (depth int, oldest time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.active {
		if k.mp != mp {
			continue
		}
		depth++
		if oldest.IsZero() || t.enqueued.Before(oldest) {
			oldest = t.enqueued
		}
	}
	return depth, oldest
}

// isActive reports whether a task for rel is queued or running.
func (s *sched) isActive(mp *mapping, rel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[taskKey{mp, rel}] != nil
}

// lockPath claims rel for a running task that also works on it (the source
// of a copy), so that a delete of it waits. It fails when rel is busy.
func (s *sched) lockPath(owner *task, rel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := taskKey{owner.mp, rel}
	if s.active[k] != nil {
		return false
	}
	s.active[k] = &task{mp: owner.mp, rel: rel, kind: kindSync, running: true, enqueued: s.now()}
	return true
}

// unlockPath releases a lockPath claim, queuing what waited for it.
func (s *sched) unlockPath(mp *mapping, rel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := taskKey{mp, rel}
	t := s.active[k]
	if t == nil {
		return
	}
	delete(s.active, k)
	if t.next != nil {
		s.addLocked(t.next, int(^uint(0)>>1))
	}
}

// unbatch takes rest out of running batch t and queues each as a task of
// its own (their place as their path's task is kept).
func (s *sched) unbatch(t *task, rest []*task) {
	if len(rest) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[*task]bool, len(rest))
	for _, c := range rest {
		out[c] = true
		c.parent = nil
		c.running = false
		c.kind = kindSync
		if c.next != nil {
			mergeInto(c, c.next)
			c.next = nil
		}
		s.push(c)
	}
	keep := t.children[:0]
	for _, c := range t.children {
		if !out[c] {
			keep = append(keep, c)
		}
	}
	t.children = keep
}

// queuedTasks returns the tasks still queued (not running), for saving.
func (s *sched) queuedTasks() []*task {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*task, 0, s.urgent.len()+s.normal.len()+len(s.delayed))
	out = append(out, s.urgent.rest()...)
	out = append(out, s.normal.rest()...)
	return append(out, s.delayed...)
}
