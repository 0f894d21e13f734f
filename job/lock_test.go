package job

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tryLock reports whether tree can be locked within a short wait.
func tryLock(t *testing.T, l *Locker, tree string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	release, err := l.Lock(ctx, tree, "probe")
	if errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if err != nil {
		t.Fatalf("Lock(%s): %v", tree, err)
	}
	release()
	return true
}

func TestLockOverlap(t *testing.T) {
	state := t.TempDir()
	base := t.TempDir()
	l, err := NewLocker(state)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		held    string
		asked   string
		blocked bool
	}{
		{"same tree", "a/b", "a/b", true},
		{"ancestor held", "a", "a/b/c", true},
		{"descendant held", "a/b/c", "a", true},
		{"sibling", "a/b", "a/c", false},
		{"prefix but not ancestor", "a/b", "a/bc", false},
		{"disjoint", "x", "y/z", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release, err := l.Lock(context.Background(), filepath.Join(base, tt.held), "holder "+tt.name)
			if err != nil {
				t.Fatal(err)
			}
			got := !tryLock(t, l, filepath.Join(base, tt.asked))
			release()
			if got != tt.blocked {
				t.Errorf("%s held, %s blocked = %v, want %v", tt.held, tt.asked, got, tt.blocked)
			}
			if !tryLock(t, l, filepath.Join(base, tt.asked)) {
				t.Errorf("%s still blocked after release", tt.asked)
			}
		})
	}
}

func TestLockWaitsThenRuns(t *testing.T) {
	base := t.TempDir()
	l, err := NewLocker(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan string, 1)
	l.Waiting = func(tree, heldBy string) { waiting <- heldBy }
	release, err := l.Lock(context.Background(), base, "mirror pass m1")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		r, err := l.Lock(context.Background(), filepath.Join(base, "sub"), "perms fix")
		if err == nil {
			r()
		}
		got <- err
	}()
	select {
	case h := <-waiting:
		if !strings.Contains(h, "mirror pass m1") {
			t.Errorf("waiter told holder %q, want it to name the mirror pass", h)
		}
	case err := <-got:
		t.Fatalf("second lock returned (%v) while the first was held", err)
	}
	release()
	release() // idempotent
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter did not get the lock after release")
	}
}

func TestLockContextEnds(t *testing.T) {
	base := t.TempDir()
	l, err := NewLocker(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	release, err := l.Lock(context.Background(), base, "first")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Lock(ctx, base, "second"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestLockSymlinkSpelling(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	l, err := NewLocker(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	release, err := l.Lock(context.Background(), filepath.Join(link, "x"), "via link")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if tryLock(t, l, real) {
		t.Error("the real path was lockable while a path through a symlink to it was held")
	}
}

// TestLockAcrossProcesses holds a lock in a child process (this test
// binary re-run) and checks the parent waits for it.
func TestLockAcrossProcesses(t *testing.T) {
	if tree := os.Getenv("JOB_TEST_HOLD"); tree != "" {
		l, err := NewLocker(os.Getenv("JOB_TEST_STATE"))
		if err != nil {
			os.Exit(3)
		}
		if _, err := l.Lock(context.Background(), tree, "child"); err != nil {
			os.Exit(4)
		}
		os.Stdout.WriteString("held\n")
		_, _ = os.Stdin.Read(make([]byte, 1)) // hold until the parent closes stdin
		os.Exit(0)
	}
	state, tree := t.TempDir(), t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockAcrossProcesses$")
	cmd.Env = append(os.Environ(), "JOB_TEST_HOLD="+tree, "JOB_TEST_STATE="+state)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := stdout.Read(buf); err != nil || string(buf) != "held\n" {
		t.Fatalf("child did not take the lock: %q %v", buf, err)
	}
	l, err := NewLocker(state)
	if err != nil {
		t.Fatal(err)
	}
	if tryLock(t, l, filepath.Join(tree, "inner")) {
		t.Fatal("lock taken while another process held an ancestor")
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if !tryLock(t, l, filepath.Join(tree, "inner")) {
		t.Fatal("lock not free after the other process ended")
	}
}
