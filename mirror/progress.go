package mirror

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Progress report intervals.
const (
	barEvery = 200 * time.Millisecond
	logEvery = 5 * time.Second
)

// progress reports a one-shot pass as it goes: a progress bar on a
// terminal, else a log line every 5 seconds. A nil *progress reports
// nothing; its methods are safe for concurrent use.
type progress struct {
	mu       sync.Mutex
	mapping  string
	scanned  int
	finished int
	uploaded int
	bytes    int64
	copied   int
	deleted  int
	failed   int

	bar  *progressbar.ProgressBar
	log  *slog.Logger
	quit chan struct{}
	wg   sync.WaitGroup
}

// newProgress starts reporting to w; nil when w is nil. every is the log
// interval, logEvery when 0.
func newProgress(w io.Writer, log *slog.Logger, every time.Duration) *progress {
	if w == nil {
		return nil
	}
	p := &progress{log: log, quit: make(chan struct{})}
	if every <= 0 {
		every = logEvery
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetSpinnerChangeInterval(0),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetDescription("mirror: starting"),
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

func (p *progress) setMapping(name string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.mapping = name
	p.mu.Unlock()
}

func (p *progress) scan() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.scanned++
	p.mu.Unlock()
}

func (p *progress) done(o outcome) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finished++
	switch o.kind {
	case outUploaded:
		p.uploaded++
		p.bytes += o.bytes
	case outCopied:
		p.copied++
	case outDeleted:
		p.deleted++
	case outFailed:
		p.failed++
	}
}

func (p *progress) report() {
	p.mu.Lock()
	line := fmt.Sprintf("%s: %d files scanned, %d uploaded (%s), %d copied, %d deleted, %d failed",
		p.mapping, p.scanned, p.uploaded, humanize.IBytes(uint64(p.bytes)), p.copied, p.deleted, p.failed)
	args := []any{"mapping", p.mapping, "files", p.scanned, "uploaded", p.uploaded, "bytes", p.bytes,
		"copied", p.copied, "deleted", p.deleted, "failed", p.failed}
	finished := p.finished
	p.mu.Unlock()
	if p.bar != nil {
		p.bar.Describe(line)
		_ = p.bar.Set(finished)
		return
	}
	p.log.Info("mirror progress", args...)
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
