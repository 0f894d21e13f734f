package job

import (
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
