package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	watchSettle = 50 * time.Millisecond
	// watchWaitLimit bounds every wait for a change; generous for -race on a
	// loaded machine, never reached when things work.
	watchWaitLimit = 10 * time.Second
)

// watchLogBuffer collects log output from the watcher's goroutine.
type watchLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *watchLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *watchLogBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

type watchHarness struct {
	t        *testing.T
	root     string
	out      chan change
	logs     *watchLogBuffer
	done     chan error
	cancel   context.CancelFunc
	barriers int
}

// startWatcher runs a watcher on cfg.Root (a new temporary directory if
// empty) and waits until it is ready. setup, if not nil, runs on the root
// before the watcher starts.
func startWatcher(t *testing.T, cfg watcherConfig, addHook func(string) error, setup func(root string)) *watchHarness {
	t.Helper()
	if cfg.Root == "" {
		cfg.Root = t.TempDir()
	}
	if cfg.Settle == 0 {
		cfg.Settle = watchSettle
	}
	if setup != nil {
		setup(cfg.Root)
	}
	logs := &watchLogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w := newWatcher(cfg, log)
	w.addHook = addHook
	ctx, cancel := context.WithCancel(context.Background())
	h := &watchHarness{t: t, root: cfg.Root, out: make(chan change), logs: logs, done: make(chan error, 1), cancel: cancel}
	go func() { h.done <- w.Run(ctx, h.out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(watchWaitLimit):
			t.Error("Run did not return after cancel")
		}
	})
	select {
	case <-w.Ready():
	case err := <-h.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(watchWaitLimit):
		t.Fatal("watcher not ready")
	}
	return h
}

// waitFor reads changes until one satisfies ok and returns all it read,
// that one last.
func (h *watchHarness) waitFor(what string, ok func(change) bool) []change {
	h.t.Helper()
	var seen []change
	deadline := time.After(watchWaitLimit)
	for {
		select {
		case c := <-h.out:
			seen = append(seen, c)
			if ok(c) {
				return seen
			}
		case err := <-h.done:
			h.t.Fatalf("Run returned %v while waiting for %s; seen %v", err, what, seen)
		case <-deadline:
			h.t.Fatalf("no %s within %v; seen %v", what, watchWaitLimit, seen)
		}
	}
}

func (h *watchHarness) waitChange(want change) []change {
	h.t.Helper()
	return h.waitFor(want.String(), func(c change) bool { return c == want })
}

// barrier creates a new file in the root and waits for it to be reported.
// Events are handled in order and earlier files settle earlier, so whatever
// the watcher reports about changes made before the barrier comes before it.
// It returns those changes.
func (h *watchHarness) barrier() []change {
	h.t.Helper()
	h.barriers++
	name := fmt.Sprintf("zz-barrier-%d", h.barriers)
	watchPut(h.t, filepath.Join(h.root, name), "b")
	seen := h.waitChange(change{Rel: name, Kind: changeFile})
	return seen[:len(seen)-1]
}

func watchPut(t *testing.T, name, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func watchAppend(t *testing.T, name, data string) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
}

func watchNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// sameChangeSets compares two lists of changes, ignoring order.
func sameChangeSets(got, want []change) bool {
	cmp := func(a, b change) int {
		if c := strings.Compare(a.Rel, b.Rel); c != 0 {
			return c
		}
		return int(a.Kind) - int(b.Kind)
	}
	got, want = slices.Clone(got), slices.Clone(want)
	slices.SortFunc(got, cmp)
	slices.SortFunc(want, cmp)
	return slices.Equal(got, want)
}

// coveredBy reports whether seen tells the mirror to look at the file rel:
// the file itself, or a rescan of a directory above it.
func coveredBy(rel string, seen []change) bool {
	for _, c := range seen {
		switch c.Kind {
		case changeFile:
			if c.Rel == rel {
				return true
			}
		case changeRescan:
			if c.Rel == "" || strings.HasPrefix(rel, c.Rel+"/") {
				return true
			}
		}
	}
	return false
}

func TestWatchFileSettles(t *testing.T) {
	t.Parallel()
	h := startWatcher(t, watcherConfig{}, nil, nil)
	start := time.Now()
	watchPut(t, filepath.Join(h.root, "a.txt"), "hello")
	h.waitChange(change{Rel: "a.txt", Kind: changeFile})
	if d := time.Since(start); d < watchSettle {
		t.Errorf("reported after %v, before the settle period %v", d, watchSettle)
	}
	if seen := h.barrier(); len(seen) != 0 {
		t.Errorf("more changes after the first: %v", seen)
	}
}

func TestWatchCoalescesWrites(t *testing.T) {
	t.Parallel()
	// A longer settle period so that 1000 writes surely fit in it.
	h := startWatcher(t, watcherConfig{Settle: 300 * time.Millisecond}, nil, nil)
	f, err := os.Create(filepath.Join(h.root, "big.bin"))
	watchNoErr(t, err)
	for i := range 1000 {
		if _, err := fmt.Fprintf(f, "line %d\n", i); err != nil {
			t.Fatal(err)
		}
	}
	watchNoErr(t, f.Chmod(0o600))
	watchNoErr(t, f.Close())
	seen := h.barrier()
	if want := []change{{Rel: "big.bin", Kind: changeFile}}; !sameChangeSets(seen, want) {
		t.Errorf("got %v, want %v", seen, want)
	}
}

func TestWatchFileOps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(t *testing.T, root, outside string)
		act   func(t *testing.T, root, outside string)
		want  []change
	}{
		{
			name: "create",
			act:  func(t *testing.T, root, _ string) { watchPut(t, filepath.Join(root, "new.txt"), "x") },
			want: []change{{Rel: "new.txt", Kind: changeFile}},
		},
		{
			name:  "append to existing file",
			setup: func(t *testing.T, root, _ string) { watchPut(t, filepath.Join(root, "d", "old.txt"), "x") },
			act:   func(t *testing.T, root, _ string) { watchAppend(t, filepath.Join(root, "d", "old.txt"), "y") },
			want:  []change{{Rel: "d/old.txt", Kind: changeFile}},
		},
		{
			name:  "chmod",
			setup: func(t *testing.T, root, _ string) { watchPut(t, filepath.Join(root, "f"), "x") },
			act:   func(t *testing.T, root, _ string) { watchNoErr(t, os.Chmod(filepath.Join(root, "f"), 0o600)) },
			want:  []change{{Rel: "f", Kind: changeFile}},
		},
		{
			name:  "mtime",
			setup: func(t *testing.T, root, _ string) { watchPut(t, filepath.Join(root, "f"), "x") },
			act: func(t *testing.T, root, _ string) {
				old := time.Now().Add(-time.Hour)
				watchNoErr(t, os.Chtimes(filepath.Join(root, "f"), old, old))
			},
			want: []change{{Rel: "f", Kind: changeFile}},
		},
		{
			name:  "delete",
			setup: func(t *testing.T, root, _ string) { watchPut(t, filepath.Join(root, "d", "gone.txt"), "x") },
			act:   func(t *testing.T, root, _ string) { watchNoErr(t, os.Remove(filepath.Join(root, "d", "gone.txt"))) },
			want:  []change{{Rel: "d/gone.txt", Kind: changeRemoved}},
		},
		{
			name: "deleted before it settled",
			act: func(t *testing.T, root, _ string) {
				watchPut(t, filepath.Join(root, "brief"), "x")
				watchNoErr(t, os.Remove(filepath.Join(root, "brief")))
			},
			want: []change{{Rel: "brief", Kind: changeRemoved}},
		},
		{
			name:  "rename",
			setup: func(t *testing.T, root, _ string) { watchPut(t, filepath.Join(root, "a"), "x") },
			act: func(t *testing.T, root, _ string) {
				watchNoErr(t, os.Rename(filepath.Join(root, "a"), filepath.Join(root, "b")))
			},
			want: []change{{Rel: "a", Kind: changeRemoved}, {Rel: "b", Kind: changeFile}},
		},
		{
			name:  "move in",
			setup: func(t *testing.T, _, outside string) { watchPut(t, filepath.Join(outside, "in"), "x") },
			act: func(t *testing.T, root, outside string) {
				watchNoErr(t, os.Rename(filepath.Join(outside, "in"), filepath.Join(root, "in")))
			},
			want: []change{{Rel: "in", Kind: changeFile}},
		},
		{
			name:  "move out",
			setup: func(t *testing.T, root, _ string) { watchPut(t, filepath.Join(root, "out"), "x") },
			act: func(t *testing.T, root, outside string) {
				watchNoErr(t, os.Rename(filepath.Join(root, "out"), filepath.Join(outside, "out")))
			},
			want: []change{{Rel: "out", Kind: changeRemoved}},
		},
		{
			name: "symlinks are not reported nor followed",
			setup: func(t *testing.T, root, outside string) {
				watchPut(t, filepath.Join(outside, "target", "f"), "x")
				watchNoErr(t, os.Symlink(filepath.Join(outside, "target"), filepath.Join(root, "linkdir")))
			},
			act: func(t *testing.T, root, outside string) {
				watchNoErr(t, os.Symlink(filepath.Join(outside, "target", "f"), filepath.Join(root, "linkfile")))
				watchAppend(t, filepath.Join(outside, "target", "f"), "y")
				watchPut(t, filepath.Join(root, "linkdir", "g"), "x") // lands outside
			},
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			outside := t.TempDir()
			h := startWatcher(t, watcherConfig{}, nil, func(root string) {
				if tt.setup != nil {
					tt.setup(t, root, outside)
				}
			})
			tt.act(t, h.root, outside)
			if seen := h.barrier(); !sameChangeSets(seen, tt.want) {
				t.Errorf("got %v, want %v", seen, tt.want)
			}
		})
	}
}

func TestWatchNewNestedDirs(t *testing.T) {
	t.Parallel()
	h := startWatcher(t, watcherConfig{}, nil, nil)
	var files []string
	for i := range 10 {
		dir := filepath.Join(h.root, fmt.Sprintf("t%d", i), "a", "b", "c", "d")
		watchNoErr(t, os.MkdirAll(dir, 0o755))
		watchPut(t, filepath.Join(dir, "f"), "x")
		files = append(files, fmt.Sprintf("t%d/a/b/c/d/f", i))
	}
	seen := h.barrier()
	for _, f := range files {
		if !coveredBy(f, seen) {
			t.Errorf("%s not reported: %v", f, seen)
		}
	}
	// Every new directory is watched: later writes are seen as they are.
	for _, f := range files {
		watchAppend(t, filepath.Join(h.root, filepath.FromSlash(f)), "y")
	}
	seen = h.barrier()
	for _, f := range files {
		if !slices.Contains(seen, change{Rel: f, Kind: changeFile}) {
			t.Errorf("write to %s not reported: %v", f, seen)
		}
	}
}

func TestWatchMoveTreeIn(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	watchPut(t, filepath.Join(outside, "tree", "sub", "deep", "old.txt"), "x")
	h := startWatcher(t, watcherConfig{}, nil, nil)

	watchNoErr(t, os.Rename(filepath.Join(outside, "tree"), filepath.Join(h.root, "in")))
	if seen := h.barrier(); !sameChangeSets(seen, []change{{Rel: "in", Kind: changeRescan}}) {
		t.Errorf("after moving a tree in: %v, want one rescan of in", seen)
	}

	watchPut(t, filepath.Join(h.root, "in", "sub", "deep", "new.txt"), "x")
	watchNoErr(t, os.Mkdir(filepath.Join(h.root, "in", "sub", "deep", "more"), 0o755))
	watchPut(t, filepath.Join(h.root, "in", "sub", "deep", "more", "f"), "x")
	seen := h.barrier()
	for _, f := range []string{"in/sub/deep/new.txt", "in/sub/deep/more/f"} {
		if !coveredBy(f, seen) {
			t.Errorf("%s not reported: %v", f, seen)
		}
	}
}

func TestWatchRenameDir(t *testing.T) {
	t.Parallel()
	h := startWatcher(t, watcherConfig{}, nil, func(root string) {
		watchPut(t, filepath.Join(root, "d", "sub", "x"), "x")
	})

	watchNoErr(t, os.Rename(filepath.Join(h.root, "d"), filepath.Join(h.root, "e")))
	want := []change{{Rel: "d", Kind: changeRemoved}, {Rel: "e", Kind: changeRescan}}
	if seen := h.barrier(); !sameChangeSets(seen, want) {
		t.Errorf("after the rename: %v, want %v", seen, want)
	}

	// Writes under the new name carry the new name, also in subdirectories
	// whose watches predate the rename.
	watchPut(t, filepath.Join(h.root, "e", "sub", "y"), "y")
	watchAppend(t, filepath.Join(h.root, "e", "sub", "x"), "y")
	watchPut(t, filepath.Join(h.root, "e", "z"), "z")
	want = []change{{Rel: "e/sub/y", Kind: changeFile}, {Rel: "e/sub/x", Kind: changeFile}, {Rel: "e/z", Kind: changeFile}}
	if seen := h.barrier(); !sameChangeSets(seen, want) {
		t.Errorf("writes after the rename: %v, want %v", seen, want)
	}

	// A new directory with the old name is a different one.
	watchNoErr(t, os.Mkdir(filepath.Join(h.root, "d"), 0o755))
	h.waitChange(change{Rel: "d", Kind: changeRescan})
	watchPut(t, filepath.Join(h.root, "d", "n"), "n")
	watchPut(t, filepath.Join(h.root, "e", "sub", "w"), "w")
	want = []change{{Rel: "d/n", Kind: changeFile}, {Rel: "e/sub/w", Kind: changeFile}}
	if seen := h.barrier(); !sameChangeSets(seen, want) {
		t.Errorf("after recreating the old name: %v, want %v", seen, want)
	}
}

func TestWatchDirGoesAway(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		act  func(t *testing.T, root, outside string)
	}{
		{"move out", func(t *testing.T, root, outside string) {
			watchNoErr(t, os.Rename(filepath.Join(root, "d"), filepath.Join(outside, "d")))
		}},
		{"remove", func(t *testing.T, root, _ string) {
			watchNoErr(t, os.RemoveAll(filepath.Join(root, "d")))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			outside := t.TempDir()
			h := startWatcher(t, watcherConfig{}, nil, func(root string) {
				watchPut(t, filepath.Join(root, "d", "sub", "x"), "x")
			})
			tt.act(t, h.root, outside)
			h.waitChange(change{Rel: "d", Kind: changeRemoved})
			// Nothing is reported from the old watches, moved out or not.
			if _, err := os.Stat(filepath.Join(outside, "d")); err == nil {
				watchPut(t, filepath.Join(outside, "d", "sub", "y"), "y")
				watchNoErr(t, os.Remove(filepath.Join(outside, "d", "sub", "x")))
				watchNoErr(t, os.Mkdir(filepath.Join(outside, "d", "sub", "z"), 0o755))
			}
			if seen := h.barrier(); len(seen) != 0 {
				t.Errorf("unexpected changes %v", seen)
			}
		})
	}
}

func TestWatchExclude(t *testing.T) {
	t.Parallel()
	exclude := func(rel string, isDir bool) bool {
		base := filepath.Base(rel)
		return strings.HasPrefix(base, ".ftpgate-part-") || strings.HasSuffix(base, ".tmp") ||
			(isDir && (rel == "skip" || rel == "later"))
	}
	h := startWatcher(t, watcherConfig{Exclude: exclude}, nil, func(root string) {
		watchPut(t, filepath.Join(root, "skip", "old"), "x")
		watchPut(t, filepath.Join(root, "skip", "sub", "old"), "x")
	})
	watchPut(t, filepath.Join(h.root, "skip", "new"), "x")
	watchPut(t, filepath.Join(h.root, "skip", "sub", "new"), "x")
	watchAppend(t, filepath.Join(h.root, "skip", "old"), "y")
	watchPut(t, filepath.Join(h.root, "a.tmp"), "x")
	watchPut(t, filepath.Join(h.root, "later", "f"), "x")
	watchNoErr(t, os.Mkdir(filepath.Join(h.root, "later", "g"), 0o755))
	part := filepath.Join(h.root, "up", ".ftpgate-part-123")
	watchPut(t, part, "x")
	for range 100 {
		watchAppend(t, part, "more")
	}
	watchNoErr(t, os.Rename(part, filepath.Join(h.root, "up", "file.bin")))
	watchNoErr(t, os.Remove(filepath.Join(h.root, "a.tmp")))
	watchNoErr(t, os.RemoveAll(filepath.Join(h.root, "skip")))
	watchNoErr(t, os.RemoveAll(filepath.Join(h.root, "later")))

	seen := h.barrier()
	want := []change{{Rel: "up", Kind: changeRescan}}
	if !coveredBy("up/file.bin", seen) {
		t.Errorf("up/file.bin not reported: %v", seen)
	}
	seen = slices.DeleteFunc(seen, func(c change) bool { return c == change{Rel: "up/file.bin", Kind: changeFile} })
	if !sameChangeSets(seen, want) {
		t.Errorf("got %v, want %v", seen, want)
	}
}

func TestWatchOverflowHook(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(t *testing.T, root string)
		// act's first event is the one the hook drops.
		act   func(t *testing.T, root string)
		after []string // files to write afterwards, that must be reported as such
	}{
		{
			name:  "new directory",
			act:   func(t *testing.T, root string) { watchNoErr(t, os.Mkdir(filepath.Join(root, "n"), 0o755)) },
			after: []string{"n/f"},
		},
		{
			name:  "renamed directory",
			setup: func(t *testing.T, root string) { watchPut(t, filepath.Join(root, "d", "sub", "x"), "x") },
			act: func(t *testing.T, root string) {
				watchNoErr(t, os.Rename(filepath.Join(root, "d"), filepath.Join(root, "e")))
			},
			after: []string{"e/sub/y", "e/z"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := startWatcher(t, watcherConfig{OverflowAfter: 1}, nil, func(root string) {
				if tt.setup != nil {
					tt.setup(t, root)
				}
			})
			tt.act(t, h.root)
			h.waitChange(change{Kind: changeRescan})
			if n := h.logs.count(`level=WARN msg="watch overflow, full rescan"`); n != 1 {
				t.Errorf("%d overflow log lines, want 1:\n%s", n, h.logs.buf.String())
			}
			for _, f := range tt.after {
				watchPut(t, filepath.Join(h.root, filepath.FromSlash(f)), "x")
			}
			seen := h.barrier()
			for _, f := range tt.after {
				if !slices.Contains(seen, change{Rel: f, Kind: changeFile}) {
					t.Errorf("%s not reported after the overflow: %v", f, seen)
				}
			}
			for _, c := range seen {
				if c.Kind != changeRemoved && !slices.Contains(tt.after, c.Rel) {
					t.Errorf("unexpected change %v", c)
				}
			}
		})
	}
}

func TestWatchLimit(t *testing.T) {
	t.Parallel()
	var adds atomic.Int32
	hook := func(string) error {
		if adds.Add(1) > 2 {
			return syscall.ENOSPC
		}
		return nil
	}
	h := startWatcher(t, watcherConfig{}, hook, func(root string) {
		for _, d := range []string{"a", "b", "c"} {
			watchNoErr(t, os.Mkdir(filepath.Join(root, d), 0o755))
		}
	})
	h.waitChange(change{Kind: changeRescan})

	// It keeps running with the watches it has.
	watchPut(t, filepath.Join(h.root, "f"), "x")
	h.waitChange(change{Rel: "f", Kind: changeFile})
	// A new directory it cannot watch is still rescanned.
	watchNoErr(t, os.Mkdir(filepath.Join(h.root, "n"), 0o755))
	h.waitChange(change{Rel: "n", Kind: changeRescan})
	h.barrier()
	if n := h.logs.count(`level=WARN msg="watch limit reached, full rescan"`); n != 1 {
		t.Errorf("%d watch limit log lines, want 1:\n%s", n, h.logs.buf.String())
	}
}

func TestWatchRootRemoved(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "root")
	watchNoErr(t, os.Mkdir(root, 0o755))
	h := startWatcher(t, watcherConfig{Root: root}, nil, func(root string) {
		watchPut(t, filepath.Join(root, "d", "f"), "x")
	})
	watchNoErr(t, os.RemoveAll(root))
	seen := h.waitChange(change{Kind: changeRescan})
	for _, c := range seen {
		if c.Kind == changeRemoved && c.Rel == "" {
			t.Errorf("root reported as removed: %v", seen)
		}
	}
	if n := h.logs.count(`level=WARN msg="mirror root removed or renamed, full rescan"`); n != 1 {
		t.Errorf("%d root log lines, want 1:\n%s", n, h.logs.buf.String())
	}
}

func TestWatchRootMissing(t *testing.T) {
	t.Parallel()
	w := newWatcher(watcherConfig{Root: filepath.Join(t.TempDir(), "missing")}, nil)
	err := w.Run(t.Context(), make(chan change))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Run = %v, want an error wrapping ErrNotExist", err)
	}
	select {
	case <-w.Ready():
		t.Error("Ready closed though Run failed")
	default:
	}
}

func TestWatchCancelWhileBlocked(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	w := newWatcher(watcherConfig{Root: root, Settle: time.Millisecond}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, make(chan change)) }() // nobody reads
	select {
	case <-w.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	for i := range 50 {
		watchPut(t, filepath.Join(root, fmt.Sprintf("d%d", i%5), fmt.Sprintf("f%d", i)), "x")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of cancel")
	}
}
