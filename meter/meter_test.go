package meter

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for the meter's goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Off a terminal a Meter logs msg with the status's pairs every interval,
// and writes nothing to w itself.
func TestLogLines(t *testing.T) {
	var logs lockedBuffer
	var out bytes.Buffer
	calls := make(chan struct{}, 10)
	m := Start(&out, slog.New(slog.NewTextHandler(&logs, nil)), "job progress", "job: starting", 5*time.Millisecond, func() Status {
		select {
		case calls <- struct{}{}:
		default:
		}
		return Status{Line: "ignored off a terminal", Count: 7, Args: []any{"done", 7}}
	})
	for range 2 {
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatal("no report within 10 s")
		}
	}
	m.Stop()
	if n := strings.Count(logs.String(), `msg="job progress" done=7`); n < 1 {
		t.Fatalf("log lines:\n%s", logs.String())
	}
	if out.Len() != 0 {
		t.Fatalf("the meter wrote to a non-terminal: %q", out.String())
	}
}

// Without a writer there is no meter, and stopping it is safe.
func TestNil(t *testing.T) {
	m := Start(nil, slog.Default(), "x", "x", 0, func() Status { t.Fatal("status called"); return Status{} })
	if m != nil {
		t.Fatal("a meter without a writer")
	}
	m.Stop()
}
