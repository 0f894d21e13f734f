// Package meter reports a long job as it goes: on a terminal a spinner
// whose description is the job's status line, elsewhere (a pipe, a log
// file, the journal) a structured log line every few seconds. The
// one-shot mirror pass, the pull, the verify and the permission
// normaliser all report this way.
package meter

import (
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Report intervals.
const (
	// BarEvery is how often a terminal's status line is redrawn.
	BarEvery = 200 * time.Millisecond
	// LogEvery is the default interval of the log lines.
	LogEvery = 5 * time.Second
)

// Status is what a Meter shows: the terminal's line, a count for the
// bar (what has been done so far), and the log line's key-value pairs.
type Status struct {
	Line  string
	Count int64
	Args  []any
}

// Meter is one job's reporter. A nil *Meter reports nothing; Stop is safe
// on it.
type Meter struct {
	bar    *progressbar.ProgressBar
	log    *slog.Logger
	msg    string
	status func() Status
	quit   chan struct{}
	wg     sync.WaitGroup
}

// Start reports status to w until Stop; nil when w is nil. On a terminal
// w shows "start" until the first report; elsewhere log gets msg with the
// status's pairs every interval (LogEvery when 0). status is called from
// the meter's goroutine and must be safe for that.
func Start(w io.Writer, log *slog.Logger, msg, start string, every time.Duration, status func() Status) *Meter {
	if w == nil {
		return nil
	}
	m := &Meter{log: log, msg: msg, status: status, quit: make(chan struct{})}
	if every <= 0 {
		every = LogEvery
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		m.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetSpinnerChangeInterval(0),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetDescription(start),
		)
		every = BarEvery
	}
	m.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-m.quit:
				return
			case <-t.C:
				m.report()
			}
		}
	})
	return m
}

func (m *Meter) report() {
	s := m.status()
	if m.bar != nil {
		m.bar.Describe(s.Line)
		_ = m.bar.Set64(s.Count)
		return
	}
	m.log.Info(m.msg, s.Args...)
}

// Stop ends the reports and clears the terminal's line.
func (m *Meter) Stop() {
	if m == nil {
		return
	}
	close(m.quit)
	m.wg.Wait()
	if m.bar != nil {
		_ = m.bar.Finish()
	}
}
