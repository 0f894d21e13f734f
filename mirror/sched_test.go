package mirror

import (
	"context"
	"testing"
	"time"
)

func TestSchedOnePerPathAndOrder(t *testing.T) {
	now := t0
	s := newSched(10, func() time.Time { return now })
	mp := &mapping{name: "m"}
	run := newPassRun(mp, &MappingSummary{}, nil)
	ctx := t.Context()

	passTask := &task{mp: mp, kind: kindSync, rel: "a", run: run}
	run.add()
	if err := s.addWait(ctx, passTask); err != nil {
		t.Fatal(err)
	}
	// fresh work goes first
	if !s.add(&task{mp: mp, kind: kindSync, rel: "b"}) {
		t.Fatal("add b")
	}
	// a second change of b merges into the queued task
	h := &uploadHint{size: 1}
	if !s.add(&task{mp: mp, kind: kindSync, rel: "b", hint: h}) {
		t.Fatal("add b again")
	}
	if d, _ := s.stats(mp); d != 2 {
		t.Fatalf("depth %d, want 2", d)
	}
	first, _ := s.next(ctx)
	if first.rel != "b" || first.hint != h {
		t.Fatalf("first task %q hint %v: want the fresh, merged b", first.rel, first.hint)
	}
	second, _ := s.next(ctx)
	if second != passTask {
		t.Fatalf("second task %q", second.rel)
	}

	// work on a running path waits as follow-up, and runs after it
	if !s.add(&task{mp: mp, kind: kindDelete, rel: "b"}) {
		t.Fatal("add delete b")
	}
	s.done(first)
	follow, _ := s.next(ctx)
	if follow.rel != "b" || follow.kind != kindDelete {
		t.Fatalf("follow-up %q kind %d", follow.rel, follow.kind)
	}

	// later: the task comes back when due, still owning its path
	s.later(passTask, time.Second)
	if !s.isActive(mp, "a") {
		t.Fatal("a released while delayed")
	}
	got := make(chan *task)
	go func() {
		x, _ := s.next(ctx)
		got <- x
	}()
	select {
	case x := <-got:
		t.Fatalf("delayed task %q handed out early", x.rel)
	case <-time.After(20 * time.Millisecond):
	}
	s.mu.Lock()
	now = now.Add(2 * time.Second)
	s.mu.Unlock()
	signal(s.wake)
	select {
	case x := <-got:
		if x != passTask {
			t.Fatalf("got %q", x.rel)
		}
	case <-time.After(testWait):
		t.Fatal("delayed task never came back")
	}
}

func TestSchedCapAndHighWater(t *testing.T) {
	s := newSched(4, time.Now)
	mp := &mapping{name: "m"}
	for _, r := range []string{"a", "b", "c", "d"} {
		if !s.add(&task{mp: mp, kind: kindSync, rel: r}) {
			t.Fatalf("add %s", r)
		}
	}
	if s.add(&task{mp: mp, kind: kindSync, rel: "e"}) {
		t.Fatal("add beyond the cap")
	}
	// merging never needs room
	if !s.add(&task{mp: mp, kind: kindSync, rel: "a"}) {
		t.Fatal("merge refused")
	}
	// a pass waits until the queue is below high water (2)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	added := make(chan error, 1)
	go func() {
		added <- s.addWait(ctx, &task{mp: mp, kind: kindSync, rel: "p", run: newPassRun(mp, &MappingSummary{}, nil)})
	}()
	select {
	case err := <-added:
		t.Fatalf("addWait returned %v above high water", err)
	case <-time.After(20 * time.Millisecond):
	}
	for range 3 {
		x, _ := s.next(ctx)
		s.done(x)
	}
	select {
	case err := <-added:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testWait):
		t.Fatal("addWait never got room")
	}
	s.close()
	if _, ok := s.next(ctx); ok {
		t.Fatal("next after close")
	}
	if len(s.queuedTasks()) != 2 {
		t.Fatalf("queued after close: %d", len(s.queuedTasks()))
	}
}

// A batch counts as many paths as it has files: a first sync of small
// files in batches holds at most the queue size of them in memory.
func TestSchedBatchesCountTheirPaths(t *testing.T) {
	s := newSched(8, time.Now) // high water 4 paths
	mp := &mapping{name: "m"}
	run := newPassRun(mp, &MappingSummary{}, nil)
	batch := func(names ...string) *task {
		b := &task{mp: mp, kind: kindBatch, rel: names[0]}
		for _, n := range names {
			b.children = append(b.children, &task{mp: mp, kind: kindSync, rel: n, run: run})
		}
		return b
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := s.addWait(ctx, batch("a", "b", "c")); err != nil {
		t.Fatal(err)
	}
	if err := s.addWait(ctx, batch("d", "e")); err != nil {
		t.Fatal(err)
	}
	if n := s.queued(); n != 5 {
		t.Fatalf("%d paths queued, want 5", n)
	}
	added := make(chan error, 1)
	go func() { added <- s.addWait(ctx, batch("f", "g")) }()
	select {
	case err := <-added:
		t.Fatalf("addWait returned %v with 5 paths queued, high water 4", err)
	case <-time.After(20 * time.Millisecond):
	}
	x, _ := s.next(ctx) // a, b, c leave the queue
	if x.kind != kindBatch || len(x.children) != 3 {
		t.Fatalf("first task: %+v", x)
	}
	select {
	case err := <-added:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testWait):
		t.Fatal("addWait never got room")
	}
	if n := s.queued(); n != 4 {
		t.Fatalf("%d paths queued, want 4", n)
	}
}
