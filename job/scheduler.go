package job

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Scheduler runs functions on cron schedules (five fields, or descriptors
// such as "@daily" and "@every 1h") while Run runs. A run still going
// when its next time comes is skipped, not stacked. Add before Run.
type Scheduler struct {
	c   *cron.Cron
	log *slog.Logger

	mu  sync.Mutex
	ctx context.Context // Run's, while it runs
	wg  sync.WaitGroup
}

// NewScheduler returns a Scheduler in the local time zone.
func NewScheduler(log *slog.Logger) *Scheduler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Scheduler{log: log}
	s.c = cron.New(cron.WithLocation(time.Local), cron.WithChain(cron.SkipIfStillRunning(cronLogger{log})))
	return s
}

// Add runs fn on spec, as what (for the log). fn gets Run's context and
// must return once it ends.
func (s *Scheduler) Add(spec, what string, fn func(ctx context.Context)) error {
	_, err := s.c.AddFunc(spec, func() {
		s.mu.Lock()
		ctx := s.ctx
		if ctx == nil || ctx.Err() != nil {
			s.mu.Unlock()
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		defer s.wg.Done()
		s.log.Debug("scheduled job starts", "job", what)
		fn(ctx)
	})
	if err != nil {
		return fmt.Errorf("schedule %s: %q: %w", what, spec, err)
	}
	return nil
}

// Len is the number of scheduled functions.
func (s *Scheduler) Len() int { return len(s.c.Entries()) }

// Run runs the schedules until ctx ends, then waits for the running
// functions to return.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	s.c.Start()
	<-ctx.Done()
	<-s.c.Stop().Done() // cron waits for the functions it started
	s.wg.Wait()
	return nil
}

// Track runs fn as a job of kind on name and adds its record to h:
// start, end, the counts fn returns and its error.
func (h *History) Track(kind, name string, fn func() (map[string]int64, error)) error {
	r := Record{Kind: kind, Name: name, Start: time.Now()}
	counts, err := fn()
	r.End, r.Counts = time.Now(), counts
	if err != nil {
		r.Err = err.Error()
	}
	h.Add(r)
	return err
}

// cronLogger passes cron's messages to slog.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) { l.log.Debug("cron: "+msg, kv...) }
func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error("cron: "+msg, append(kv, "err", err)...)
}
