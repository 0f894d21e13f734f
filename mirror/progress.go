package mirror

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/dustin/go-humanize"

	"ftpgate/meter"
)

// progress reports a one-shot pass as it goes (see package meter). A nil
// *progress reports nothing; its methods are safe for concurrent use.
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

	m *meter.Meter
}

// newProgress starts reporting to w; nil when w is nil. every is the log
// interval, meter.LogEvery when 0.
func newProgress(w io.Writer, log *slog.Logger, every time.Duration) *progress {
	if w == nil {
		return nil
	}
	p := &progress{}
	p.m = meter.Start(w, log, "mirror progress", "mirror: starting", every, p.status)
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

func (p *progress) status() meter.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return meter.Status{
		Line: fmt.Sprintf("%s: %d files scanned, %d uploaded (%s), %d copied, %d deleted, %d failed",
			p.mapping, p.scanned, p.uploaded, humanize.IBytes(uint64(p.bytes)), p.copied, p.deleted, p.failed),
		Count: int64(p.finished),
		Args: []any{"mapping", p.mapping, "files", p.scanned, "uploaded", p.uploaded, "bytes", p.bytes,
			"copied", p.copied, "deleted", p.deleted, "failed", p.failed},
	}
}

// stop ends the reports.
func (p *progress) stop() {
	if p == nil {
		return
	}
	p.m.Stop()
}
