package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

func TestBackoff(t *testing.T) {
	top := func(n int64) int64 { return n - 1 }
	for _, tc := range []struct {
		attempt int
		want    time.Duration
	}{
		{1, 500*time.Millisecond - 1},
		{2, time.Second - 1},
		{3, 2*time.Second - 1},
		{8, time.Minute - 1},
		{50, time.Minute - 1},
	} {
		if got := backoff(tc.attempt, top); got != tc.want {
			t.Errorf("backoff(%d) = %v, want %v", tc.attempt, got, tc.want)
		}
	}
	if got := backoff(5, func(int64) int64 { return 0 }); got != 0 {
		t.Errorf("full jitter can be 0, got %v", got)
	}
}

func TestClassify(t *testing.T) {
	s3 := func(code string, status int) error {
		return fmt.Errorf("put: %w", classifyS3(minio.ErrorResponse{Code: code, StatusCode: status}))
	}
	for _, tc := range []struct {
		name string
		err  error
		want errClass
	}{
		{"slowdown", s3("SlowDown", 503), classRetry},
		{"internal", s3("InternalError", 500), classRetry},
		{"5xx-any", s3("Whatever", 502), classRetry},
		{"access-denied", s3("AccessDenied", 403), classFatal},
		{"no-bucket", s3("NoSuchBucket", 404), classFatal},
		{"no-key", s3("NoSuchKey", 404), classGone},
		{"precondition", s3("PreconditionFailed", 412), classGone},
		{"bad-digest", s3("BadDigest", 400), classMismatch},
		{"checksum-mismatch", s3("XAmzContentChecksumMismatch", 400), classMismatch},
		{"refused", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), classRetry},
		{"net-op", &net.OpError{Op: "dial", Err: errors.New("x")}, classRetry},
		{"eof", io.ErrUnexpectedEOF, classRetry},
		{"timeout", context.DeadlineExceeded, classRetry},
		{"canceled", fmt.Errorf("x: %w", context.Canceled), classCanceled},
		{"local", errors.New("permission denied"), classFatal},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("%s: classify = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// sleeps records the backoff waits of a harness.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) hook(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func TestRetries(t *testing.T) {
	transient := &storeError{class: classRetry, err: errors.New("503 SlowDown")}
	denied := &storeError{class: classFatal, err: errors.New("403 AccessDenied")}
	for _, tc := range []struct {
		name       string
		putErr     func(key string, attempt int) error
		wantPuts   int // attempts on the key
		wantFailed int
		wantSleeps []time.Duration
	}{
		{
			name: "transient-then-ok",
			putErr: func(_ string, n int) error {
				if n <= 2 {
					return transient
				}
				return nil
			},
			wantPuts: 3, wantSleeps: []time.Duration{500*time.Millisecond - 1, time.Second - 1},
		},
		{
			name:     "fatal",
			putErr:   func(string, int) error { return denied },
			wantPuts: 1, wantFailed: 1,
		},
		{
			name:     "exhausted",
			putErr:   func(string, int) error { return transient },
			wantPuts: 4, wantFailed: 1,
			wantSleeps: []time.Duration{500*time.Millisecond - 1, time.Second - 1, 2*time.Second - 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{MaxAttempts: 4, Workers: 1}, nil)
			h.write("f", "data", t0)
			h.fake.putErr = tc.putErr
			var sl sleeps
			h.m.sleep = sl.hook
			h.m.rnd = func(n int64) int64 { return n - 1 }
			s := h.pass()
			if got := h.fake.attempt["pre/f"]; got != tc.wantPuts {
				t.Fatalf("%d attempts, want %d\n%s", got, tc.wantPuts, h.logs)
			}
			if s.Failed != tc.wantFailed || s.OK() != (tc.wantFailed == 0) {
				t.Fatalf("summary: %+v", s)
			}
			if !slices.Equal(sl.d, tc.wantSleeps) {
				t.Fatalf("sleeps %v, want %v", sl.d, tc.wantSleeps)
			}
			warns := h.logs.count(`level=WARN msg="mirror op failed" component=mirror mapping=m op=put key=pre/f attempt=`)
			if warns != tc.wantPuts-1+tc.wantFailed {
				t.Fatalf("%d WARN lines, want %d:\n%s", warns, tc.wantPuts-1+tc.wantFailed, h.logs)
			}
			if tc.wantFailed == 0 {
				return
			}
			// a failed operation stays pending; the next pass sends it
			if p := h.pendingIn(); !slices.Equal(p, []string{"f"}) {
				t.Fatalf("pending %q", p)
			}
			if st := h.m.Status()[0]; st.LastPassResult != "failed" || st.Failed != 1 || !strings.Contains(st.LastPassError, "pre/f") {
				t.Fatalf("status: %+v", st)
			}
			h.fake.putErr = nil
			if s := h.pass(); s.Uploaded != 1 || !s.OK() {
				t.Fatalf("next pass: %+v", s)
			}
			if p := h.pendingIn(); len(p) != 0 {
				t.Fatalf("pending after success %q", p)
			}
		})
	}
}

// A file that changes while it is sent is sent again once quiet.
func TestChangedDuringUpload(t *testing.T) {
	h := newHarness(t, Options{Workers: 1}, nil)
	h.write("f", "first", t0)
	h.fake.putErr = func(key string, n int) error {
		if n == 1 {
			h.write("f", "second!", t0.Add(time.Minute))
			return &storeError{class: classMismatch, err: errors.New("XAmzContentChecksumMismatch")}
		}
		return nil
	}
	s := h.pass()
	if s.Uploaded != 1 || s.Failed != 0 {
		t.Fatalf("pass: %+v\n%s", s, h.logs)
	}
	if o, _ := h.object("f"); string(o.data) != "second!" || o.meta.mtime != t0.Add(time.Minute).UnixNano() {
		t.Fatalf("object %q %+v", o.data, o.meta)
	}
}

func TestS3StoreClassifiesHTTPStatus(t *testing.T) {
	// minio-go reports some failures with a status and no code
	err := classifyS3(minio.ErrorResponse{StatusCode: http.StatusServiceUnavailable})
	if classify(err) != classRetry {
		t.Fatalf("503 without code: %v", classify(err))
	}
}
