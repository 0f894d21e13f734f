package storage

import (
	"errors"
	"sync"
	"testing"
	"testing/synctest"
)

// TestDirSyncer checks the group commit: callers arriving while an fsync
// runs share the next one, which starts only after they arrived, and get
// its error.
func TestDirSyncer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var s dirSyncer
		id := dirID{dev: 1, ino: 2}
		fsyncs := 0
		release := make(chan error)
		blocking := func() error {
			fsyncs++ // only one runs at a time per directory
			return <-release
		}

		// The first caller runs an fsync at once.
		first := make(chan error)
		go func() { first <- s.sync(id, blocking) }()
		synctest.Wait()

		// Callers arriving meanwhile wait for a second fsync, shared by
		// all; none returns while the first runs.
		const waiters = 5
		var wg sync.WaitGroup
		errs := make(chan error, waiters)
		for range waiters {
			wg.Go(func() { errs <- s.sync(id, blocking) })
		}
		synctest.Wait()
		if len(errs) != 0 || fsyncs != 1 {
			t.Fatalf("%d waiters returned, %d fsyncs while the first ran", len(errs), fsyncs)
		}
		release <- nil
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		// The second fsync fails: every waiter it served sees the error.
		synctest.Wait()
		errDisk := errors.New("disk on fire")
		release <- errDisk
		wg.Wait()
		close(errs)
		for err := range errs {
			if !errors.Is(err, errDisk) {
				t.Fatalf("waiter got %v, want %v", err, errDisk)
			}
		}
		if fsyncs != 2 {
			t.Fatalf("%d fsyncs for %d callers, want 2", fsyncs, waiters+1)
		}
		// Idle directories are forgotten; another directory has its own.
		if len(s.dirs) != 0 {
			t.Fatalf("%d directories still tracked", len(s.dirs))
		}
		if err := s.sync(dirID{dev: 1, ino: 3}, func() error { fsyncs++; return nil }); err != nil || fsyncs != 3 {
			t.Fatalf("idle sync: %v, %d fsyncs", err, fsyncs)
		}
	})
}
