package perms

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ftpgate/conf"
)

// workersTree builds a tree wide and deep enough for several workers to
// share: 24 directories of 3 subdirectories of 4 files, every fifth entry
// wrong in turn by mode, group or both, with an excluded directory, a
// nested policy, a symlink, a fifo, an entry that cannot be fixed and a
// mount point. It returns the tree and its policies.
func workersTree(t *testing.T) (string, []conf.Perms) {
	t.Helper()
	var ents []ent
	k := 0
	wrongOr := func(mode, wrongMode uint32) (uint32, int) {
		k++
		switch k % 15 {
		case 0:
			return wrongMode, gidFTP
		case 5:
			return mode, gidStaff
		case 10:
			return wrongMode, gidStaff
		}
		return mode, gidFTP
	}
	for i := range 24 {
		d := fmt.Sprintf("d%02d", i)
		m, g := wrongOr(0o2775, 0o755)
		ents = append(ents, dir(d, m, 0, g))
		for j := range 3 {
			s := fmt.Sprintf("%s/s%d", d, j)
			m, g := wrongOr(0o2775, 0o2755)
			ents = append(ents, dir(s, m, 0, g))
			for f := range 4 {
				m, g := wrongOr(0o664, 0o600)
				ents = append(ents, file(fmt.Sprintf("%s/f%d", s, f), m, 0, g))
			}
		}
	}
	ents = append(ents,
		dir("d03/cache", 0o700, 0, 0), // excluded, with what is in it
		file("d03/cache/x", 0o600, 0, 0),
		symlink("d04/s1/link", "/etc/passwd"),
		fifo("d05/pipe", 0o600),
		file("d06/frozen", 0o600, 0, gidFTP),
		dir("minio", 0o750, uidAlice, gidFTP), // nested policy: group
		dir("minio/a", 0o700, uidAlice, gidStaff),
		file("minio/a/obj", 0o644, uidBob, gidStaff), // mode and owner
		dir("d07/mnt", 0o755, 0, gidFTP),
	)
	root := newTree(t, ents...)
	setAttrs(t, root, 0o2775, 0, gidFTP)
	frozen := filepath.Join(root, "d06/frozen")
	freeze(t, frozen)
	mnt := filepath.Join(root, "d07/mnt")
	mountTmpfs(t, mnt)
	return root, []conf.Perms{
		pol(root, group(gidFTP), fileMode(0o664), dirMode(fs.ModeSetgid|0o775), exclude("cache")),
		pol(filepath.Join(root, "minio"), owner(uidAlice), group(gidStaff), fileMode(0o640), dirMode(0o750)),
	}
}

// findingKey is a Finding as the workers tests compare it: by its path
// relative to the tree, and its error as text.
type findingKey struct {
	rel        string
	dir        bool
	wrong      Wrong
	have, want Attrs
	fixed      bool
	err        string
}

// findingSet is the findings of a run keyed by relative path; it fails the
// test when a path is reported twice.
func findingSet(t *testing.T, root string, c *collector) map[string]findingKey {
	t.Helper()
	set := make(map[string]findingKey)
	for _, f := range c.findings {
		rel, err := filepath.Rel(root, f.Path)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := set[rel]; dup {
			t.Errorf("%s reported twice", rel)
		}
		k := findingKey{rel: rel, dir: f.Dir, wrong: f.Wrong, have: f.Have, want: f.Want, fixed: f.Fixed}
		if f.Err != nil {
			k.err = f.Err.Error()
		}
		set[rel] = k
	}
	return set
}

// serialRun runs a check or fix with a report function that takes no
// lock, as Report does, and fails the test when it is called by two
// workers at once (the race detector sees it too). It returns the result
// and the findings as a set.
func serialRun(t *testing.T, root string, run func(report func(Finding)) (Result, error)) (Result, map[string]findingKey) {
	t.Helper()
	var inFlight atomic.Int32
	c := &collector{}
	res, err := run(func(f Finding) {
		if inFlight.Add(1) != 1 {
			t.Errorf("report called by two workers at once (%s)", f.Path)
		}
		c.findings = append(c.findings, f)
		runtime.Gosched()
		inFlight.Add(-1)
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, findingSet(t, root, c)
}

// attrsTree is every entry's attributes below root, by relative path.
func attrsTree(t *testing.T, root string) map[string]Attrs {
	t.Helper()
	m := make(map[string]Attrs)
	for rel, st := range snapshotTree(t, root) {
		m[rel] = st.Attrs
	}
	return m
}

// TestWorkersSameResult: the same tree checked, fixed and checked again
// with one worker and with four gives the same counts, the same findings
// (as a set: their order differs) and the same tree, every worker thread
// at idle I/O priority.
func TestWorkersSameResult(t *testing.T) {
	t.Parallel()
	type run struct {
		root                       string
		check, fix, after          Result
		checkSet, fixSet, afterSet map[string]findingKey
		tree                       map[string]Attrs
		threads                    int
	}
	runs := make(map[int]*run)
	for _, workers := range []int{1, 4} {
		root, policies := workersTree(t)
		var mu sync.Mutex
		r := &run{root: root}
		var classes []int
		onThread := func() {
			class, err := ioClass()
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			classes = append(classes, class)
			mu.Unlock()
		}
		n := newNormaliser(t, Options{Workers: workers, hooks: hooks{onThread: onThread}}, policies...)
		r.check, r.checkSet = serialRun(t, root, func(report func(Finding)) (Result, error) {
			return n.Check(testContext(t), nil, report)
		})
		r.fix, r.fixSet = serialRun(t, root, func(report func(Finding)) (Result, error) {
			return n.Fix(testContext(t), nil, false, report)
		})
		r.after, r.afterSet = serialRun(t, root, func(report func(Finding)) (Result, error) {
			return n.Check(testContext(t), nil, report)
		})
		r.tree = attrsTree(t, root)
		mu.Lock()
		// Three runs of two trees each (the tree and its nested policy).
		if want := 3 * 2 * workers; len(classes) != want {
			t.Errorf("workers %d: %d worker threads started, want %d", workers, len(classes), want)
		}
		for _, class := range classes {
			if class != ioprioClassIdle {
				t.Errorf("workers %d: a worker thread has I/O class %d, want %d (idle)", workers, class, ioprioClassIdle)
			}
		}
		mu.Unlock()
		runs[workers] = r
	}
	one, four := runs[1], runs[4]
	// 1 + 24 + 72 + 288 entries, frozen, and minio's three are checked;
	// every fifth of the 384 below the top is wrong (76), frozen (which
	// cannot be fixed) and minio's three too.
	want := counts{Checked: 389, Deviations: 80, Excluded: 1, LeftAlone: 2, SkippedMounts: 1}
	wantCounts(t, "check, 1 worker", one.check, want)
	want.Fixed, want.Errors = 79, 1
	wantCounts(t, "fix, 1 worker", one.fix, want)
	wantCounts(t, "check after fix, 1 worker", one.after, counts{Checked: 389, Deviations: 1, Excluded: 1, LeftAlone: 2, SkippedMounts: 1})
	for _, c := range []struct {
		what        string
		got, want   Result
		gotF, wantF map[string]findingKey
	}{
		{"check", four.check, one.check, four.checkSet, one.checkSet},
		{"fix", four.fix, one.fix, four.fixSet, one.fixSet},
		{"check after fix", four.after, one.after, four.afterSet, one.afterSet},
	} {
		if countsOf(c.got) != countsOf(c.want) {
			t.Errorf("%s: 4 workers counted %+v, 1 worker %+v", c.what, countsOf(c.got), countsOf(c.want))
		}
		if !maps.Equal(c.gotF, c.wantF) {
			t.Errorf("%s: 4 workers found\n%s1 worker found\n%s", c.what, listFindings(c.gotF), listFindings(c.wantF))
		}
		if rel := func(r Result, root string) []string {
			var out []string
			for _, m := range r.Mounts {
				p, _ := filepath.Rel(root, m)
				out = append(out, p)
			}
			return out
		}; !slices.Equal(rel(c.got, four.root), rel(c.want, one.root)) {
			t.Errorf("%s: mounts %q with 4 workers, %q with 1", c.what, c.got.Mounts, c.want.Mounts)
		}
	}
	if !maps.Equal(four.tree, one.tree) {
		t.Errorf("the trees differ after fix:\n4 workers %v\n1 worker  %v", four.tree, one.tree)
	}
}

// listFindings prints a finding set, one per line in path order.
func listFindings(set map[string]findingKey) string {
	var b strings.Builder
	for _, rel := range slices.Sorted(maps.Keys(set)) {
		fmt.Fprintf(&b, "  %+v\n", set[rel])
	}
	return b.String()
}

// TestWorkersShareTheWork: a worker hands the subdirectories it finds to
// the others. The first worker holds on the top directory's second entry
// until another thread has read a directory it handed off.
func TestWorkersShareTheWork(t *testing.T) {
	t.Parallel()
	root, policies := workersTree(t)
	var mu sync.Mutex
	readers := map[int]bool{}
	topReader := 0
	topDirsOpened := 0
	otherRead := make(chan struct{})
	closed := false
	gate := func() {
		mu.Lock()
		wait := gettid() == topReader && topDirsOpened > 0 && !closed
		mu.Unlock()
		if !wait {
			return
		}
		select {
		case <-otherRead:
		case <-time.After(10 * time.Second):
			t.Error("no other worker read a handed-off directory within 10s")
			mu.Lock()
			closed = true // wait once
			mu.Unlock()
		}
	}
	h := hooks{
		afterRead: func(d string) {
			tid := gettid()
			mu.Lock()
			defer mu.Unlock()
			readers[tid] = true
			if d == root && topReader == 0 {
				topReader = tid
			}
			if tid != topReader && !closed {
				closed = true
				close(otherRead)
			}
		},
		beforeOpen: func(p string) {
			if filepath.Dir(p) == root {
				mu.Lock()
				topDirsOpened++
				mu.Unlock()
			}
		},
		beforeStat: func(p string) {
			if filepath.Dir(p) == root {
				gate()
			}
		},
	}
	n := newNormaliser(t, Options{Workers: 4, hooks: h}, policies...)
	res, _ := fix(t, n, false)
	wantCounts(t, "fix", res, counts{Checked: 389, Deviations: 80, Fixed: 79, Errors: 1, Excluded: 1, LeftAlone: 2, SkippedMounts: 1})
	mu.Lock()
	defer mu.Unlock()
	if len(readers) < 2 {
		t.Errorf("directories read by %d threads, want several", len(readers))
	}
}

func gettid() int { return unix.Gettid() }

// TestWorkersShareTheRate: the workers of a walk take their operations
// from one limiter, one per directory read and per change, as one worker
// does; a refusal ends every worker.
func TestWorkersShareTheRate(t *testing.T) {
	t.Parallel()
	root, policies := workersTree(t)
	var mu sync.Mutex
	reads := 0
	var lims []*fakeLimiter
	opts := Options{
		Workers: 4,
		newLimiter: func(float64) limiter {
			mu.Lock()
			defer mu.Unlock()
			l := &fakeLimiter{}
			lims = append(lims, l)
			return l
		},
		hooks: hooks{afterRead: func(string) {
			mu.Lock()
			reads++
			mu.Unlock()
		}},
	}
	policies[0].Rate = 1000
	n := newNormaliser(t, opts, policies[0])
	res, _ := fix(t, n, false)
	// Without the nested policy, minio is walked (and fixed) under the
	// top one: minio, minio/a, and obj (mode) deviate from it.
	wantCounts(t, "fix", res, counts{Checked: 389, Deviations: 80, Fixed: 79, Errors: 1, Excluded: 1, LeftAlone: 2, SkippedMounts: 1})
	if len(lims) != 1 {
		t.Fatalf("%d limiters made, want one for the walk", len(lims))
	}
	if got, want := lims[0].waits, reads+res.Fixed+res.Errors; got != want {
		t.Errorf("limiter waited %d times, want %d directory reads + %d changes tried", got, reads, res.Fixed+res.Errors)
	}

	opts.newLimiter = func(float64) limiter { return &fakeLimiter{failAfter: 30} }
	n = newNormaliser(t, opts, policies[0])
	before := attrsTree(t, root)
	if _, err := n.Check(t.Context(), nil, nil); !errors.Is(err, errLimiterRefused) {
		t.Errorf("Check with a refusing limiter = %v, want its error", err)
	}
	if after := attrsTree(t, root); !maps.Equal(before, after) {
		t.Error("a check changed the tree")
	}
}

// TestWorkersCancel: a walk cancelled in the middle ends with the
// context's error, every worker and every descriptor gone; the next run
// fixes everything. Not parallel: it counts descriptors and goroutines.
func TestWorkersCancel(t *testing.T) {
	_, policies := workersTree(t)
	fdsBefore, goBefore := openFDs(t), runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var mu sync.Mutex
	stats := 0
	h := hooks{beforeStat: func(string) {
		mu.Lock()
		defer mu.Unlock()
		if stats++; stats == 60 {
			cancel()
		}
	}}
	n := newNormaliser(t, Options{Workers: 4, hooks: h}, policies...)
	res, err := n.Fix(ctx, nil, false, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Fix cancelled = %v, want context.Canceled", err)
	}
	if res.Checked >= 389 {
		t.Errorf("a cancelled fix checked %d entries, the whole tree", res.Checked)
	}
	if after := openFDs(t); after > fdsBefore {
		t.Errorf("open descriptors %d before the walk, %d after: a cancelled walk leaks", fdsBefore, after)
	}
	// A worker has signalled its end just before its goroutine (and
	// locked thread) is torn down: give that a moment.
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goBefore; runtime.Gosched() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines %d before the walk, %d after:\n%s", goBefore, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			break
		}
	}

	n = newNormaliser(t, Options{Workers: 4}, policies...)
	fix(t, n, false)
	res, _ = check(t, n)
	wantCounts(t, "check after a full fix", res, counts{Checked: 389, Deviations: 1, Excluded: 1, LeftAlone: 2, SkippedMounts: 1})
}
