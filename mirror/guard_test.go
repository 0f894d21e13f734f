package mirror

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"ftpgate/conf"
)

// Every guard trips on its condition: no deletion at all, the guard in the
// summary and the status, one ERROR line; uploads still happen when the
// root is usable.
func TestGuardsTrip(t *testing.T) {
	for _, tc := range []struct {
		guard   string
		edit    func(*conf.Mirror)
		setup   func(t *testing.T, h *harness)
		uploads bool // the pass still uploads the new file
	}{
		{
			guard: GuardRootMissing,
			setup: func(t *testing.T, h *harness) {
				if err := os.RemoveAll(h.root); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			guard: GuardRootNotDir,
			setup: func(t *testing.T, h *harness) {
				if err := os.RemoveAll(h.root); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(h.root, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			guard:   GuardSentinelMissing,
			uploads: true,
			setup: func(t *testing.T, h *harness) {
				if err := os.Remove(filepath.Join(h.root, SentinelName)); err != nil {
					t.Fatal(err)
				}
				h.remove(t, "f01")
			},
		},
		{
			guard:   GuardDeviceChanged,
			uploads: true,
			setup: func(t *testing.T, h *harness) {
				if err := h.j.update("m", func(x *mtx) error { return x.setDevice(12345) }); err != nil {
					t.Fatal(err)
				}
				h.remove(t, "f01")
			},
		},
		{
			guard:   GuardMaxDelete,
			uploads: true,
			edit:    func(m *conf.Mirror) { m.MaxDelete = 2; m.MaxDeleteRatio = 1 },
			setup: func(t *testing.T, h *harness) {
				for _, n := range []string{"f01", "f02", "f03"} {
					h.remove(t, n)
				}
			},
		},
		{
			guard:   GuardMaxDeleteRatio,
			uploads: true,
			edit:    func(m *conf.Mirror) { m.MaxDeleteRatio = 0.3 },
			setup: func(t *testing.T, h *harness) {
				for i := 1; i <= ratioFloor+1; i++ {
					h.remove(t, fmt.Sprintf("f%02d", i))
				}
			},
		},
		{
			guard:   GuardListingErrors,
			uploads: true,
			setup: func(t *testing.T, h *harness) {
				h.fake.listErr = &storeError{class: classRetry, err: errors.New("connection reset")}
				h.remove(t, "f01")
			},
		},
	} {
		t.Run(tc.guard, func(t *testing.T) {
			h := newHarness(t, Options{}, tc.edit)
			for i := 1; i <= 30; i++ {
				h.write(fmt.Sprintf("f%02d", i), "x", t0)
			}
			if s := h.pass(); s.Uploaded != 30 {
				t.Fatalf("setup pass: %+v", s)
			}
			before := h.fake.keys(testBucket)
			tc.setup(t, h)
			if tc.uploads {
				h.write("new", "n", t0)
			}
			s := h.pass()
			if s.Guard == nil || s.Guard.Guard != tc.guard {
				t.Fatalf("guard: %+v\n%s", s.Guard, h.logs)
			}
			if s.OK() {
				t.Fatal("summary OK with a guard")
			}
			if _, _, d := h.fake.counts(); d != 0 {
				t.Fatalf("%d deletions despite the guard", d)
			}
			got := h.fake.keys(testBucket)
			want := before
			if tc.uploads {
				want = append(slices.Clone(before), "pre/new")
				slices.Sort(want)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("bucket %q, want %q", got, want)
			}
			if n := h.logs.count(`level=ERROR msg="deletion guard" component=mirror mapping=m guard=` + s.Guard.Guard); n != 1 {
				t.Fatalf("want one ERROR line, got %d:\n%s", n, h.logs)
			}
			st := h.m.Status()[0]
			if st.Guard == nil || st.Guard.Guard != s.Guard.Guard || st.LastPassResult != "guard" {
				t.Fatalf("status: %+v", st)
			}
			// the journal still knows the deleted files: a later pass, once
			// the cause is gone, deletes them
			if tc.guard != GuardRootMissing && tc.guard != GuardRootNotDir {
				if _, ok := h.recordOf("f01"); !ok && tc.guard != GuardMaxDeleteRatio {
					t.Fatal("record of f01 dropped despite the guard")
				}
			}
		})
	}
}

func (h *harness) remove(t *testing.T, rel string) {
	t.Helper()
	if err := os.Remove(h.abs(rel)); err != nil {
		t.Fatal(err)
	}
}

func TestGuardLocalWalkError(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	h.write("d/x", "x", t0)
	h.write("y", "y", t0)
	h.pass()
	h.m.testOpenDir = func(name string) (*os.File, error) {
		if filepath.Base(name) == "d" {
			return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrPermission}
		}
		return os.Open(name)
	}
	s := h.pass()
	if s.Guard == nil || s.Guard.Guard != GuardListingErrors || s.Planned != 1 {
		t.Fatalf("pass: %+v", s)
	}
	if _, _, d := h.fake.counts(); d != 0 {
		t.Fatal("deleted despite an unreadable directory")
	}
}

// --allow-deletes N lets the count guards pass for at most N deletions,
// never the root guards.
func TestAllowDeletes(t *testing.T) {
	h := newHarness(t, Options{}, func(m *conf.Mirror) { m.MaxDelete = 1 })
	for i := range 5 {
		h.write(fmt.Sprintf("f%d", i), "x", t0)
	}
	h.pass()
	for i := range 3 {
		h.remove(t, fmt.Sprintf("f%d", i))
	}
	if s := h.pass(); s.Guard == nil || s.Guard.Guard != GuardMaxDelete || s.Planned != 3 {
		t.Fatalf("without allow: %+v", s)
	}
	if !strings.Contains(h.m.Status()[0].Guard.Msg, "--allow-deletes 3") {
		t.Fatalf("guard message: %q", h.m.Status()[0].Guard.Msg)
	}
	h.opts.AllowDeletes = 2
	h.open()
	if s := h.pass(); s.Guard == nil {
		t.Fatalf("allow 2 for 3 deletions: %+v", s)
	}
	h.opts.AllowDeletes = 3
	h.open()
	s := h.pass()
	if s.Guard != nil || s.Deleted != 3 {
		t.Fatalf("allow 3: %+v", s)
	}
	if got := h.fake.keys(testBucket); len(got) != 2 {
		t.Fatalf("keys %q", got)
	}
	if st := h.m.Status()[0]; st.Guard != nil {
		t.Fatalf("guard not cleared: %+v", st.Guard)
	}
	// tombstones for the pull
	err := h.j.view("m", func(x *mtx) error {
		if _, ok := x.tombstone("f0"); !ok {
			return errors.New("no tombstone for f0")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// the sentinel guard is not lifted by --allow-deletes
	h.remove(t, "f3")
	h.remove(t, SentinelName)
	if s := h.pass(); s.Guard == nil || s.Guard.Guard != GuardSentinelMissing {
		t.Fatalf("sentinel with allow: %+v", s)
	}
}

// remove = false: a local deletion leaves the object, drops the record and
// leaves a tombstone; no guard is involved.
func TestRemoveFalseKeepsObjects(t *testing.T) {
	h := newHarness(t, Options{}, func(m *conf.Mirror) { m.Remove = false; m.MaxDelete = 0 })
	h.write("a", "a", t0)
	h.write("b", "b", t0)
	h.pass()
	h.remove(t, "a")
	s := h.pass()
	if s.Guard != nil || s.Deleted != 0 || !s.OK() {
		t.Fatalf("pass: %+v", s)
	}
	if _, ok := h.object("a"); !ok {
		t.Fatal("object deleted with remove = false")
	}
	if _, ok := h.recordOf("a"); ok {
		t.Fatal("record kept")
	}
	err := h.j.view("m", func(x *mtx) error {
		if _, ok := x.tombstone("a"); !ok {
			return errors.New("no tombstone")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A device change with nothing to delete records the new device.
func TestDeviceChangeWithoutDeletions(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	h.write("a", "a", t0)
	h.pass()
	if err := h.j.update("m", func(x *mtx) error { return x.setDevice(12345) }); err != nil {
		t.Fatal(err)
	}
	if s := h.pass(); s.Guard != nil {
		t.Fatalf("guard with nothing to delete: %+v", s.Guard)
	}
	var dev uint64
	if err := h.j.view("m", func(x *mtx) error { dev, _ = x.device(); return nil }); err != nil {
		t.Fatal(err)
	}
	if dev == 12345 {
		t.Fatal("new device not recorded")
	}
}

func TestCountGuard(t *testing.T) {
	mp := &mapping{name: "m", cfg: conf.Mirror{MaxDelete: 100, MaxDeleteRatio: 0.2}}
	for _, tc := range []struct {
		name    string
		n       int
		objects int64
		allow   int
		want    string
	}{
		{"none", 0, 0, -1, ""},
		{"under", 20, 1000, -1, ""},
		{"max", 101, 10000, -1, GuardMaxDelete},
		{"ratio", 30, 100, -1, GuardMaxDeleteRatio},
		{"ratio-floor", ratioFloor, 20, -1, ""},
		{"ratio-above-floor", ratioFloor + 1, 20, -1, GuardMaxDeleteRatio},
		{"allowed", 101, 101, 101, ""},
		{"allow-too-small", 102, 102, 101, GuardMaxDelete},
		{"max-delete-zero", 1, 100, -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mp := mp
			if tc.name == "max-delete-zero" {
				mp = &mapping{name: "m", cfg: conf.Mirror{MaxDelete: 0, MaxDeleteRatio: 1}}
				tc.want = GuardMaxDelete
			}
			g := countGuard(mp, tc.n, tc.objects, tc.allow)
			got := ""
			if g != nil {
				got = g.Guard
			}
			if got != tc.want {
				t.Fatalf("countGuard(%d of %d, allow %d) = %q, want %q", tc.n, tc.objects, tc.allow, got, tc.want)
			}
		})
	}
}
