package mirror

import (
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// meter reports a pull or a verify as it goes: a spinner with a status
// line on a terminal, else a log line every 5 seconds. A nil *meter
// reports nothing.
type meter struct {
	bar    *progressbar.ProgressBar
	log    *slog.Logger
	msg    string
	status func() (line string, args []any)
	quit   chan struct{}
	wg     sync.WaitGroup
}

// newMeter starts reporting status to w (nil: no reports). msg is the log
// line's message; status is called from the meter's goroutine and must be
// safe for that.
func newMeter(w io.Writer, log *slog.Logger, msg string, every time.Duration, status func() (string, []any)) *meter {
	if w == nil {
		return nil
	}
	m := &meter{log: log, msg: msg, status: status, quit: make(chan struct{})}
	if every <= 0 {
		every = logEvery
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		m.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetSpinnerChangeInterval(0),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetDescription(msg+": starting"),
		)
		every = barEvery
	}
	m.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-m.quit:
				return
			case <-t.C:
				line, args := m.status()
				if m.bar != nil {
					m.bar.Describe(line)
					_ = m.bar.Add(1)
				} else {
					m.log.Info(m.msg, args...)
				}
			}
		}
	})
	return m
}

// stop ends the reports.
func (m *meter) stop() {
	if m == nil {
		return
	}
	close(m.quit)
	m.wg.Wait()
	if m.bar != nil {
		_ = m.bar.Finish()
	}
}
