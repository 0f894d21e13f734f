package perms

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
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

// Progress report intervals.
const (
	barEvery = 200 * time.Millisecond
	logEvery = 5 * time.Second
)

// progress reports a run as it goes: a progress bar on a terminal, else a
// log line every few seconds. A nil *progress reports nothing.
type progress struct {
	mode Mode
	c    *counters
	bar  *progressbar.ProgressBar
	log  *slog.Logger
	quit chan struct{}
	wg   sync.WaitGroup
}

// newProgress starts reporting to w; nil when w is nil.
func newProgress(w io.Writer, log *slog.Logger, every time.Duration, mode Mode, c *counters) *progress {
	if w == nil {
		return nil
	}
	p := &progress{mode: mode, c: c, log: log, quit: make(chan struct{})}
	if every <= 0 {
		every = logEvery
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetSpinnerChangeInterval(0),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetDescription("perms "+mode.String()+": starting"),
		)
		every = barEvery
	}
	p.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				return
			case <-t.C:
				p.report()
			}
		}
	})
	return p
}

func (p *progress) report() {
	r := p.c.snapshot()
	p.c.mu.Lock()
	tree := p.c.tree
	p.c.mu.Unlock()
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("perms %s %s: %s checked, %s deviations, %s fixed, %s errors",
			p.mode, tree, humanize.Comma(int64(r.Checked)), humanize.Comma(int64(r.Deviations)),
			humanize.Comma(int64(r.Fixed)), humanize.Comma(int64(r.Errors))))
		_ = p.bar.Set(r.Checked)
		return
	}
	p.log.Info("perms progress", "mode", p.mode.String(), "path", tree, "checked", r.Checked,
		"deviations", r.Deviations, "fixed", r.Fixed, "errors", r.Errors)
}

// stop ends the reports.
func (p *progress) stop() {
	if p == nil {
		return
	}
	close(p.quit)
	p.wg.Wait()
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
