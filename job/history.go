package job

import (
	"slices"
	"sync"
	"time"
)

// Kinds of job.
const (
	KindMirror = "mirror" // a full mirror pass of a mapping
	KindPull   = "pull"   // a reverse pull of a mapping
	KindVerify = "verify" // a drift verification of a mapping
	KindPerms  = "perms"  // a permission fix of a policy tree
)

// Record is one finished run of a job.
type Record struct {
	Kind   string           `json:"kind"`
	Name   string           `json:"name"` // mapping name or policy path
	Start  time.Time        `json:"start"`
	End    time.Time        `json:"end"`
	Counts map[string]int64 `json:"counts,omitempty"`
	Err    string           `json:"error,omitempty"`
}

// Duration is how long the run took.
func (r Record) Duration() time.Duration { return r.End.Sub(r.Start) }

// historyDefault is how many runs a History keeps when NewHistory is given
// no size.
const historyDefault = 100

// History keeps the last runs of every job, oldest first, and the last run
// of each (kind, name). It is safe for concurrent use.
type History struct {
	mu   sync.Mutex
	max  int
	recs []Record
	last map[[2]string]Record
}

// NewHistory returns a History keeping the last n runs (100 when n <= 0).
func NewHistory(n int) *History {
	if n <= 0 {
		n = historyDefault
	}
	return &History{max: n, last: make(map[[2]string]Record)}
}

// Add records a finished run.
func (h *History) Add(r Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.recs) == h.max {
		h.recs = slices.Delete(h.recs, 0, 1)
	}
	h.recs = append(h.recs, r)
	h.last[[2]string{r.Kind, r.Name}] = r
}

// Records returns a copy of the kept runs, oldest first.
func (h *History) Records() []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.recs)
}

// Last returns the last run of kind for name.
func (h *History) Last(kind, name string) (Record, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.last[[2]string{kind, name}]
	return r, ok
}
