package storage

import "sync"

// dirID names a directory by device and inode, so that two jails reaching
// it by different paths share its fsyncs, and a directory renamed or
// replaced meanwhile is never mistaken for another.
type dirID struct{ dev, ino uint64 }

// dirSyncer makes directory entries durable with group commit: an fsync of
// a directory covers every rename done in it before the fsync started, so
// uploads that finish together in one directory share fsyncs instead of
// queueing one each behind the disk. It is safe for concurrent use; the
// zero value is ready.
type dirSyncer struct {
	mu   sync.Mutex
	dirs map[dirID]*dirSync // directories with an fsync running or wanted
}

// dirSync is one directory's fsyncs: the one running, and the one that
// will start when it ends, which later arrivals join.
type dirSync struct {
	running, next *syncRun
}

// syncRun is one fsync, shared by everyone who joined it before it started.
type syncRun struct {
	started bool
	done    chan struct{} // closed once err is set
	err     error
}

// sync returns once an fsync of the directory id that started after the
// call has succeeded, or with that fsync's error. The caller must have made
// its change in the directory before calling; fsync is how it fsyncs the
// directory, used if the caller leads the fsync.
func (s *dirSyncer) sync(id dirID, fsync func() error) error {
	s.mu.Lock()
	if s.dirs == nil {
		s.dirs = map[dirID]*dirSync{}
	}
	ds := s.dirs[id]
	if ds == nil {
		ds = &dirSync{}
		s.dirs[id] = ds
	}
	run := ds.running
	switch {
	case run == nil:
		// Idle: this fsync starts now and serves whoever joins it below.
		run = &syncRun{started: true, done: make(chan struct{})}
		ds.running = run
	case !run.started:
		// Its leader is about to start it, after our change: join it.
		s.mu.Unlock()
		<-run.done
		return run.err
	case ds.next != nil:
		// The running fsync may have started before our change: wait
		// for the one after it, which someone already leads.
		run = ds.next
		s.mu.Unlock()
		<-run.done
		return run.err
	default:
		// Lead the fsync after the running one.
		prev := run
		run = &syncRun{done: make(chan struct{})}
		ds.next = run
		s.mu.Unlock()
		<-prev.done
		s.mu.Lock()
		run.started = true
	}
	s.mu.Unlock()
	err := fsync()
	s.mu.Lock()
	run.err = err
	ds.running, ds.next = ds.next, nil
	if ds.running == nil {
		delete(s.dirs, id)
	}
	s.mu.Unlock()
	close(run.done)
	return err
}
