package mirror

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"ftpgate/conf"
)

// chanSource is a watcher fed by the test.
type chanSource struct{ ch chan change }

func (c chanSource) Run(ctx context.Context, out chan<- change) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case x := <-c.ch:
			select {
			case out <- x:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// daemon runs h's Mirror with a test watcher until the test ends, after
// its start-up pass.
func (h *harness) daemon() chan change {
	h.t.Helper()
	ch := make(chan change)
	h.m.testWatcher = func(*mapping) changeSource { return chanSource{ch: ch} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.m.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("Run: %v", err)
			}
		case <-time.After(testWait):
			h.t.Error("Run did not return")
		}
	})
	waitUntil(h.t, "the start-up pass", func() bool { return !h.m.Status()[0].LastPassEnd.IsZero() })
	return ch
}

func (h *harness) waitObject(rel string, present bool) {
	h.t.Helper()
	waitUntil(h.t, fmt.Sprintf("object %s present=%v", rel, present), func() bool {
		_, ok := h.object(rel)
		return ok == present
	})
}

func TestRunEvents(t *testing.T) {
	h := newHarness(t, Options{}, func(m *conf.Mirror) { m.MaxDelete = 1 })
	h.write("a", "aaa", t0)
	h.write("d/1", "1", t0)
	h.write("d/2", "2", t0)
	h.write("d/3", "3", t0)
	ch := h.daemon()
	if got := h.fake.keys(testBucket); len(got) != 4 {
		t.Fatalf("start-up pass: %q", got)
	}

	// a file written by another program, after its settle period
	h.write("new", "new", time.Time{})
	ch <- change{Rel: "new", Kind: changeFile}
	h.waitObject("new", true)

	// a removal, after the hold window
	h.remove(t, "new")
	ch <- change{Rel: "new", Kind: changeRemoved}
	h.waitObject("new", false)

	// a file rename: copy, then delete, no upload
	puts, copies, _ := h.fake.counts()
	if err := os.Rename(h.abs("a"), h.abs("b")); err != nil {
		t.Fatal(err)
	}
	ch <- change{Rel: "a", Kind: changeRemoved}
	ch <- change{Rel: "b", Kind: changeFile}
	h.waitObject("a", false)
	h.waitObject("b", true)

	// a directory rename: the removal and a rescan of the new place; three
	// deletions pass max_delete = 1 since their objects were copied
	if err := os.Rename(h.abs("d"), h.abs("e")); err != nil {
		t.Fatal(err)
	}
	ch <- change{Rel: "d", Kind: changeRemoved}
	ch <- change{Rel: "e", Kind: changeRescan}
	waitUntil(t, "the directory rename", func() bool {
		return slices.Equal(h.fake.keys(testBucket), []string{"pre/b", "pre/e/1", "pre/e/2", "pre/e/3"})
	})
	p, c, _ := h.fake.counts()
	if p != puts || c != copies+4 {
		t.Fatalf("renames: %d PUTs, %d copies; want 0 and 4", p-puts, c-copies)
	}
	if g := h.m.Status()[0].Guard; g != nil {
		t.Fatalf("guard tripped by renames: %+v", g)
	}
	waitUntil(t, "an empty queue", func() bool { return h.m.Status()[0].QueueDepth == 0 })
	if p := h.pendingIn(); len(p) != 0 {
		t.Fatalf("pending %q", p)
	}
}

// Event-driven deletions obey the guards too.
func TestRunRemovalGuard(t *testing.T) {
	h := newHarness(t, Options{}, func(m *conf.Mirror) { m.MaxDelete = 2 })
	for i := range 5 {
		h.write(fmt.Sprintf("d/%d", i), "x", t0)
	}
	ch := h.daemon()
	if err := os.RemoveAll(h.abs("d")); err != nil {
		t.Fatal(err)
	}
	ch <- change{Rel: "d", Kind: changeRemoved}
	waitUntil(t, "the guard", func() bool { return h.m.Status()[0].Guard != nil })
	if g := h.m.Status()[0].Guard; g.Guard != GuardMaxDelete {
		t.Fatalf("guard %+v", g)
	}
	if _, _, d := h.fake.counts(); d != 0 {
		t.Fatalf("%d deletions", d)
	}
}

func TestRunNotify(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	ch := h.daemon()
	h.write("up/file.bin", "uploaded by FTP", t0)
	sum := sha256.Sum256([]byte("uploaded by FTP"))
	h.m.Notify(h.abs("up/file.bin"), 15, sum, t0)
	h.m.Notify("/elsewhere/file", 1, sum, t0) // no mapping: ignored
	h.waitObject("up/file.bin", true)
	o, _ := h.object("up/file.bin")
	if o.meta.sha256 != sum || o.meta.mtime != t0.UnixNano() {
		t.Fatalf("metadata %+v", o.meta)
	}
	waitUntil(t, "the journal record", func() bool {
		rec, ok := h.recordOf("up/file.bin")
		return ok && rec.sha == sum && len(h.pendingIn()) == 0
	})
	// the watcher sees the same file settle: nothing more is sent
	puts, _, _ := h.fake.counts()
	ch <- change{Rel: "up/file.bin", Kind: changeFile}
	h.write("marker", "m", t0)
	ch <- change{Rel: "marker", Kind: changeFile}
	h.waitObject("marker", true)
	waitUntil(t, "an empty queue", func() bool { return h.m.Status()[0].QueueDepth == 0 })
	if p, _, _ := h.fake.counts(); p != puts+1 {
		t.Fatalf("%d PUTs after the watcher's event, want 1 (the marker)", p-puts)
	}
}

// Notify never blocks, even with the store hanging and the queue full: the
// overflow goes to the journal and is sent once the store is back.
func TestNotifyNeverBlocks(t *testing.T) {
	h := newHarness(t, Options{QueueSize: 50, Workers: 2}, nil)
	h.fake.block = make(chan struct{})
	h.daemon()
	const n = eventBuffer + 300
	for i := range n {
		h.write(fmt.Sprintf("f/%05d", i), "x", t0)
	}
	var worst time.Duration
	start := time.Now()
	for i := range n {
		t1 := time.Now()
		h.m.Notify(h.abs(fmt.Sprintf("f/%05d", i)), 1, sha256.Sum256([]byte("x")), t0)
		worst = max(worst, time.Since(t1))
	}
	total := time.Since(start)
	t.Logf("%d Notify calls in %v, slowest %v", n, total, worst)
	if worst > 2*time.Second {
		t.Fatalf("a Notify call took %v with the store hanging", worst)
	}
	waitUntil(t, "spilled work in the journal", func() bool { return len(h.pendingIn()) > 0 })
	if !h.logs.contains(`msg="mirror queue full: change recorded in the journal"`) {
		t.Fatal("no log line for the spill")
	}
	close(h.fake.block)
	waitUntil(t, "every upload", func() bool { return len(h.fake.keys(testBucket)) == n })
	waitUntil(t, "an empty journal queue", func() bool { return len(h.pendingIn()) == 0 })
}

// After a crash the journal's pending operations are replayed at start,
// and nothing unchanged is sent again.
func TestCrashRecovery(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	for i := range 10 {
		h.write(fmt.Sprintf("old/%d", i), "old", t0)
	}
	h.write("doomed", "d", t0)
	h.pass()
	puts, _, _ := h.fake.counts()

	// the state a kill -9 leaves: uploads announced and recorded as
	// pending but never sent, a deletion planned but not done
	h.write("new/1", "n1", t0)
	h.write("new/2", "n2", t0)
	h.remove(t, "doomed")
	// and one whose upload made it before the kill, its record did not
	h.write("new/3", "n3", t0)
	if _, err := h.fake.Put(t.Context(), testBucket, "pre/new/3", strings.NewReader("n3"), 2,
		objectMeta{mtime: t0.UnixNano(), sha256: sha256.Sum256([]byte("n3"))}); err != nil {
		t.Fatal(err)
	}
	puts++
	now := time.Now().UnixNano()
	err := h.j.update("m", func(x *mtx) error {
		for _, p := range []string{"new/1", "new/2", "new/3"} {
			if err := x.putPending(p, pendingRecord{op: opSync, enqueued: now}); err != nil {
				return err
			}
		}
		return x.putPending("doomed", pendingRecord{op: opDelete, enqueued: now})
	})
	if err != nil {
		t.Fatal(err)
	}
	h.open() // restart
	h.daemon()
	waitUntil(t, "the replay", func() bool {
		_, d := h.object("doomed")
		_, n1 := h.object("new/1")
		_, n2 := h.object("new/2")
		return !d && n1 && n2
	})
	waitUntil(t, "an empty journal queue", func() bool { return len(h.pendingIn()) == 0 })
	if p, _, _ := h.fake.counts(); p != puts+2 {
		t.Fatalf("%d PUTs after the restart, want 2", p-puts)
	}
	if _, ok := h.recordOf("new/3"); !ok {
		t.Fatal("new/3 not recorded")
	}
	waitUntil(t, "an empty journal queue", func() bool { return len(h.pendingIn()) == 0 })
}

// Shutdown lets running operations finish within the drain period and
// leaves queued work pending in the journal.
func TestRunDrainsAndKeepsQueue(t *testing.T) {
	h := newHarness(t, Options{Workers: 1, DrainTimeout: 50 * time.Millisecond}, nil)
	h.fake.block = make(chan struct{})
	h.fake.putStart = make(chan string, 100)
	ch := make(chan change)
	h.m.testWatcher = func(*mapping) changeSource { return chanSource{ch: ch} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.m.Run(ctx) }()
	waitUntil(t, "the start-up pass", func() bool { return !h.m.Status()[0].LastPassEnd.IsZero() })
	for i := range 3 {
		h.write(fmt.Sprintf("f%d", i), "x", t0)
		h.m.Notify(h.abs(fmt.Sprintf("f%d", i)), 1, sha256.Sum256([]byte("x")), t0)
	}
	<-h.fake.putStart // one upload hangs in the store
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testWait):
		t.Fatal("Run did not return after the drain period")
	}
	if p := h.pendingIn(); len(p) != 3 {
		t.Fatalf("pending after shutdown %q, want all three", p)
	}
}

// An announced upload is sent without a pending record; if it fails, the
// record is written and the replay sends it once the store is back.
func TestNotifyFailureIsReplayed(t *testing.T) {
	h := newHarness(t, Options{ReplayEvery: 20 * time.Millisecond, MaxAttempts: 2}, nil)
	var fail atomic.Bool
	fail.Store(true)
	h.fake.putErr = func(string, int) error {
		if fail.Load() {
			return &storeError{class: classRetry, err: errors.New("503 ServiceUnavailable")}
		}
		return nil
	}
	h.daemon()
	h.write("up.bin", "payload", t0)
	h.m.Notify(h.abs("up.bin"), 7, sha256.Sum256([]byte("payload")), t0)
	// The failure is counted once the journal has its record: the
	// status catches up just after the record is visible.
	waitUntil(t, "the failed upload in the journal and the status", func() bool {
		return slices.Equal(h.pendingIn(), []string{"up.bin"}) && h.m.Status()[0].Failed > 0
	})
	fail.Store(false)
	h.waitObject("up.bin", true)
	waitUntil(t, "an empty journal queue", func() bool { return len(h.pendingIn()) == 0 })
}
