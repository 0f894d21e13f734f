package perms

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"

	"ftpgate/meter"
)

// counters are the running totals of a run: written by the walk, read by
// the progress reporter. Safe for concurrent use.
type counters struct {
	checked, deviations, fixed, errors atomic.Int64
	excluded, leftAlone, vanished      atomic.Int64
	mounts                             atomic.Int64

	mu         sync.Mutex
	mountPaths []string
	tree       string
}

// mount counts a skipped mount point.
func (c *counters) mount(p string) {
	c.mounts.Add(1)
	c.mu.Lock()
	if len(c.mountPaths) < maxMounts {
		c.mountPaths = append(c.mountPaths, p)
	}
	c.mu.Unlock()
}

func (c *counters) setTree(p string) {
	c.mu.Lock()
	c.tree = p
	c.mu.Unlock()
}

// snapshot is the counts so far as a Result.
func (c *counters) snapshot() Result {
	var r Result
	c.fill(&r)
	return r
}

// fill copies the counts into r.
func (c *counters) fill(r *Result) {
	r.Checked = int(c.checked.Load())
	r.Deviations = int(c.deviations.Load())
	r.Fixed = int(c.fixed.Load())
	r.Errors = int(c.errors.Load())
	r.Excluded = int(c.excluded.Load())
	r.LeftAlone = int(c.leftAlone.Load())
	r.Vanished = int(c.vanished.Load())
	r.SkippedMounts = int(c.mounts.Load())
	c.mu.Lock()
	r.Mounts = append([]string(nil), c.mountPaths...)
	c.mu.Unlock()
}

// progress reports a run as it goes (see package meter). A nil *progress
// reports nothing.
type progress struct {
	mode Mode
	c    *counters
	m    *meter.Meter
}

// newProgress starts reporting to w; nil when w is nil.
func newProgress(w io.Writer, log *slog.Logger, every time.Duration, mode Mode, c *counters) *progress {
	if w == nil {
		return nil
	}
	p := &progress{mode: mode, c: c}
	p.m = meter.Start(w, log, "perms progress", "perms "+mode.String()+": starting", every, p.status)
	return p
}

func (p *progress) status() meter.Status {
	r := p.c.snapshot()
	p.c.mu.Lock()
	tree := p.c.tree
	p.c.mu.Unlock()
	return meter.Status{
		Line: fmt.Sprintf("perms %s %s: %s checked, %s deviations, %s fixed, %s errors",
			p.mode, tree, humanize.Comma(int64(r.Checked)), humanize.Comma(int64(r.Deviations)),
			humanize.Comma(int64(r.Fixed)), humanize.Comma(int64(r.Errors))),
		Count: int64(r.Checked),
		Args: []any{"mode", p.mode.String(), "path", tree, "checked", r.Checked,
			"deviations", r.Deviations, "fixed", r.Fixed, "errors", r.Errors},
	}
}

// stop ends the reports.
func (p *progress) stop() {
	if p == nil {
		return
	}
	p.m.Stop()
}
