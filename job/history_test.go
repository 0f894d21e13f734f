package job

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestHistory(t *testing.T) {
	h := NewHistory(3)
	t0 := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	for i := range 5 {
		h.Add(Record{Kind: KindPull, Name: fmt.Sprint("m", i%2), Start: t0.Add(time.Duration(i) * time.Minute), End: t0.Add(time.Duration(i)*time.Minute + time.Second)})
	}
	recs := h.Records()
	if len(recs) != 3 || recs[0].Name != "m0" || !recs[0].Start.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("Records = %+v, want the last 3, oldest first", recs)
	}
	last, ok := h.Last(KindPull, "m1")
	if !ok || !last.Start.Equal(t0.Add(3*time.Minute)) || last.Duration() != time.Second {
		t.Fatalf("Last(pull, m1) = %+v, %v", last, ok)
	}
	if _, ok := h.Last(KindPerms, "m1"); ok {
		t.Fatal("Last found a kind never added")
	}
}

func TestSchedulerRunsAndStops(t *testing.T) {
	s := NewScheduler(nil)
	ran := make(chan struct{}, 10)
	stopped := make(chan struct{})
	if err := s.Add("@every 1s", "tick", func(ctx context.Context) {
		ran <- struct{}{}
		<-ctx.Done() // a long job: Run must wait for it
		close(stopped)
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("not a schedule", "bad", func(context.Context) {}); err == nil {
		t.Error("Add accepted a bad schedule")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("the job did not run")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	select {
	case <-stopped:
	default:
		t.Fatal("Run returned before the running job")
	}
}

func TestTrack(t *testing.T) {
	h := NewHistory(0)
	err := h.Track(KindVerify, "m1", func() (map[string]int64, error) {
		return map[string]int64{"keys": 3}, errors.New("boom")
	})
	r, ok := h.Last(KindVerify, "m1")
	if err == nil || !ok || r.Err != "boom" || r.Counts["keys"] != 3 || r.End.Before(r.Start) {
		t.Fatalf("Track: err %v, record %+v", err, r)
	}
}
