package perms

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"ftpgate/conf"
)

// TestWrongAttributes: each kind of deviation is reported by Check,
// changed by Fix to exactly what the policy wants, and gone afterwards.
func TestWrongAttributes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		e     ent
		pol   []func(*conf.Perms)
		wrong Wrong
		after Attrs
	}{
		{"file mode", file("a", 0o644, 0, 0), []func(*conf.Perms){fileMode(0o664)}, WrongMode, Attrs{0o664, 0, 0}},
		{"file group", file("a", 0o664, 0, gidStaff), []func(*conf.Perms){group(gidFTP)}, WrongGroup, Attrs{0o664, 0, gidFTP}},
		{"file owner", file("a", 0o664, uidBob, 0), []func(*conf.Perms){owner(uidAlice)}, WrongOwner, Attrs{0o664, uidAlice, 0}},
		{"file all three", file("a", 0o600, uidBob, gidStaff), []func(*conf.Perms){owner(uidAlice), group(gidFTP), fileMode(0o640)},
			WrongMode | WrongOwner | WrongGroup, Attrs{0o640, uidAlice, gidFTP}},
		{"setuid file, wrong group: chown clears setuid, chmod sets the mode", file("a", 0o4755, 0, gidStaff),
			[]func(*conf.Perms){group(gidFTP), fileMode(0o755)}, WrongMode | WrongGroup, Attrs{0o755, 0, gidFTP}},
		{"dir mode", dir("d", 0o755, 0, 0), []func(*conf.Perms){dirMode(0o750)}, WrongMode, Attrs{0o750, 0, 0}},
		{"setgid missing on a dir", dir("d", 0o775, 0, gidFTP), []func(*conf.Perms){dirMode(fs.ModeSetgid | 0o775)}, WrongMode, Attrs{0o2775, 0, gidFTP}},
		{"setgid extra on a dir", dir("d", 0o2775, 0, gidFTP), []func(*conf.Perms){dirMode(0o775)}, WrongMode, Attrs{0o775, 0, gidFTP}},
		{"setgid dir with a wrong group keeps setgid", dir("d", 0o2775, 0, gidStaff),
			[]func(*conf.Perms){group(gidFTP), dirMode(fs.ModeSetgid | 0o775)}, WrongGroup, Attrs{0o2775, 0, gidFTP}},
		{"sticky dir", dir("d", 0o777, 0, 0), []func(*conf.Perms){dirMode(fs.ModeSticky | 0o777)}, WrongMode, Attrs{0o1777, 0, 0}},
		{"dir owner", dir("d", 0o755, uidBob, 0), []func(*conf.Perms){owner(uidAlice)}, WrongOwner, Attrs{0o755, uidAlice, 0}},
		{"file_mode does not apply to dirs", dir("d", 0o755, 0, 0), []func(*conf.Perms){fileMode(0o644)}, 0, Attrs{0o755, 0, 0}},
		{"dir_mode does not apply to files", file("a", 0o600, 0, 0), []func(*conf.Perms){dirMode(0o755)}, 0, Attrs{0o600, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := newTree(t, tc.e)
			// The root itself satisfies every policy of the table.
			setAttrs(t, root, 0o755, 0, 0)
			p0 := pol(root, tc.pol...)
			if p0.HasDirMode {
				setAttrs(t, root, modeBits(p0.DirMode), 0, 0)
			}
			if p0.UID >= 0 || p0.GID >= 0 {
				if err := os.Chown(root, p0.UID, p0.GID); err != nil {
					t.Fatal(err)
				}
			}
			n := newNormaliser(t, Options{}, p0)
			p := filepath.Join(root, tc.e.rel)
			before := lstat(t, p)

			res, c := check(t, n)
			wantDev := 0
			if tc.wrong != 0 {
				wantDev = 1
			}
			wantCounts(t, "check", res, counts{Checked: 2, Deviations: wantDev})
			if tc.wrong != 0 {
				f, ok := c.byPath()[p]
				if !ok || f.Wrong != tc.wrong || f.Have != before.Attrs || f.Fixed || f.Err != nil || f.Dir != (tc.e.kind == 'd') {
					t.Fatalf("check findings %+v, want one for %s with Wrong %b and Have %+v", c.findings, p, tc.wrong, before.Attrs)
				}
			}
			if got := lstat(t, p); got != before {
				t.Fatalf("check changed %s: %+v -> %+v", p, before, got)
			}

			res, c = fix(t, n, false)
			wantCounts(t, "fix", res, counts{Checked: 2, Deviations: wantDev, Fixed: wantDev})
			if tc.wrong != 0 && (len(c.findings) != 1 || !c.findings[0].Fixed) {
				t.Errorf("fix findings %+v, want one fixed", c.findings)
			}
			if got := lstat(t, p).Attrs; got != tc.after {
				t.Errorf("after fix %s has %+v, want %+v", p, got, tc.after)
			}
			if got := lstat(t, p).ino; got != before.ino {
				t.Errorf("fix replaced %s (inode %d -> %d)", p, before.ino, got)
			}

			res, _ = check(t, n)
			wantCounts(t, "check after fix", res, counts{Checked: 2})
		})
	}
}

// TestFixedTree: a tree with every kind of deviation, fixed in one run, then
// clean; the root directory counts too.
func TestFixedTree(t *testing.T) {
	t.Parallel()
	root := newTree(t,
		dir("up", 0o755, 0, gidStaff),
		file("up/a.txt", 0o644, 0, gidFTP),
		file("up/b.txt", 0o664, uidBob, gidFTP),
		dir("up/sub", 0o2775, 0, gidFTP),
		file("up/sub/c.txt", 0o664, 0, gidFTP),
	)
	setAttrs(t, root, 0o775, 0, gidFTP)
	n := newNormaliser(t, Options{}, pol(root, owner(0), group(gidFTP), fileMode(0o664), dirMode(fs.ModeSetgid|0o775)))
	res, c := check(t, n)
	wantCounts(t, "check", res, counts{Checked: 6, Deviations: 4})
	if got, want := c.paths(), under(root, "", "up", "up/a.txt", "up/b.txt"); !slices.Equal(got, want) {
		t.Errorf("check reported %q, want %q", got, want)
	}
	if !slices.Equal(res.Trees, []string{root}) || res.Mode != ModeCheck || res.OK() {
		t.Errorf("result %+v", res)
	}
	res, _ = fix(t, n, false)
	wantCounts(t, "fix", res, counts{Checked: 6, Deviations: 4, Fixed: 4})
	if !res.OK() || res.Duration <= 0 || res.End.Before(res.Start) {
		t.Errorf("fix result %+v", res)
	}
	res, _ = check(t, n)
	wantCounts(t, "check after fix", res, counts{Checked: 6})
	if !res.OK() {
		t.Errorf("check after fix: %+v", res)
	}
}

// TestNestedPolicies: the most specific policy governs its subtree
// entirely (nothing inherited), and every entry is checked exactly once.
func TestNestedPolicies(t *testing.T) {
	t.Parallel()
	root := newTree(t,
		file("a.txt", 0o600, 0, 0), // parent: wrong mode and group
		dir("minio", 0o700, uidAlice, 0),
		dir("minio/data", 0o755, uidAlice, 0), // nested: wrong mode
		file("minio/data/obj", 0o600, uidBob, 0),
		dir("minio/deep", 0o700, uidAlice, 0),
		dir("minio/deep/pool", 0o777, 0, 0), // innermost: right
		file("minio/deep/pool/x", 0o600, 0, 0),
		dir("ftp", 0o2775, 0, gidFTP),
		file("ftp/b.txt", 0o664, 0, gidFTP),
	)
	setAttrs(t, root, 0o2775, 0, gidFTP)
	parent := pol(root, group(gidFTP), fileMode(0o664), dirMode(fs.ModeSetgid|0o775))
	// The nested policy sets owner and dir_mode only: its files keep any
	// mode and group, its directories any group.
	nested := pol(filepath.Join(root, "minio"), owner(uidAlice), dirMode(0o700))
	innermost := pol(filepath.Join(root, "minio/deep/pool"), dirMode(0o777))
	n := newNormaliser(t, Options{}, nested, innermost, parent) // any order

	res, c := check(t, n)
	wantCounts(t, "check", res, counts{Checked: 10, Deviations: 3})
	if got, want := c.paths(), under(root, "a.txt", "minio/data", "minio/data/obj"); !slices.Equal(got, want) {
		t.Errorf("check reported %q, want %q", got, want)
	}
	f := c.byPath()[filepath.Join(root, "minio/data")]
	if f.Wrong != WrongMode || f.Want.Mode != 0o700 {
		t.Errorf("minio/data: %+v, want a mode deviation against 0700 (the nested policy)", f)
	}
	if f := c.byPath()[filepath.Join(root, "minio/data/obj")]; f.Wrong != WrongOwner {
		t.Errorf("minio/data/obj: %+v, want only the owner wrong", f)
	}
	wantTrees := []string{root, filepath.Join(root, "minio"), filepath.Join(root, "minio/deep/pool")}
	if !slices.Equal(res.Trees, wantTrees) {
		t.Errorf("trees %q, want %q", res.Trees, wantTrees)
	}

	// A path inside the nested policy is governed by it; a path above it
	// brings the nested walks along.
	res, c = check(t, n, filepath.Join(root, "minio/data"))
	wantCounts(t, "check minio/data", res, counts{Checked: 2, Deviations: 2})
	res, _ = check(t, n, filepath.Join(root, "minio"))
	wantCounts(t, "check minio", res, counts{Checked: 6, Deviations: 2})
	if want := []string{filepath.Join(root, "minio"), filepath.Join(root, "minio/deep/pool")}; !slices.Equal(res.Trees, want) {
		t.Errorf("trees of check minio: %q, want %q", res.Trees, want)
	}

	res, _ = fix(t, n, false)
	wantCounts(t, "fix", res, counts{Checked: 10, Deviations: 3, Fixed: 3})
	if got := lstat(t, filepath.Join(root, "minio/data/obj")).Attrs; got != (Attrs{0o600, uidAlice, 0}) {
		t.Errorf("minio/data/obj after fix: %+v; the parent's file_mode and group must not apply", got)
	}
	if got := lstat(t, filepath.Join(root, "a.txt")).Attrs; got != (Attrs{0o664, 0, gidFTP}) {
		t.Errorf("a.txt after fix: %+v", got)
	}
	if got := lstat(t, filepath.Join(root, "minio/deep/pool")).Attrs; got != (Attrs{0o777, 0, 0}) {
		t.Errorf("innermost root after fix: %+v", got)
	}
}

// TestExclude: patterns match base names and relative paths as the
// mirror's do; an excluded directory is not entered.
func TestExclude(t *testing.T) {
	t.Parallel()
	root := newTree(t,
		dir("cache", 0o700, 0, 0), // excluded by base name, with its subtree
		file("cache/x", 0o600, 0, 0),
		dir("cache/deeper", 0o700, 0, 0),
		file("a.tmp", 0o600, 0, 0), // excluded by *.tmp
		dir("docs", 0o755, 0, 0),
		file("docs/skip.txt", 0o600, 0, 0), // excluded by its relative path
		file("docs/keep.txt", 0o600, 0, 0), // reported
		dir("docs/cache", 0o700, 0, 0),     // base name matches at any depth
		file("docs/cache/y", 0o600, 0, 0),
	)
	n := newNormaliser(t, Options{}, pol(root, fileMode(0o644), dirMode(0o755), exclude("cache", "*.tmp", "docs/skip.txt")))
	res, c := check(t, n)
	wantCounts(t, "check", res, counts{Checked: 3, Deviations: 1, Excluded: 4})
	if got, want := c.paths(), under(root, "docs/keep.txt"); !slices.Equal(got, want) {
		t.Errorf("check reported %q, want %q", got, want)
	}
	before := snapshotTree(t, filepath.Join(root, "cache"))
	fix(t, n, false)
	if after := snapshotTree(t, filepath.Join(root, "cache")); !mapsEqual(before, after) {
		t.Errorf("fix changed the excluded subtree:\n%v\n%v", before, after)
	}
	if got := lstat(t, filepath.Join(root, "a.tmp")).Mode; got != 0o600 {
		t.Errorf("excluded a.tmp has mode %04o", got)
	}

	for _, p := range []string{"cache", "cache/deeper", "a.tmp", "docs/cache/y"} {
		if _, err := n.Check(t.Context(), []string{filepath.Join(root, p)}, nil); !errors.Is(err, ErrExcluded) {
			t.Errorf("Check(%s) = %v, want ErrExcluded", p, err)
		}
	}
}

func mapsEqual(a, b map[string]entryStat) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestPaths: paths outside every policy are refused; overlapping paths are
// walked once; a path may be a file.
func TestPaths(t *testing.T) {
	t.Parallel()
	root := newTree(t,
		dir("d", 0o755, 0, 0),
		file("d/a", 0o600, 0, 0),
		file("d/b", 0o600, 0, 0),
	)
	n := newNormaliser(t, Options{}, pol(root, fileMode(0o644), dirMode(0o755)))
	for _, p := range []string{filepath.Dir(root), "/", root + "x", filepath.Join(filepath.Dir(root), "other")} {
		if _, err := n.Check(t.Context(), []string{p}, nil); !errors.Is(err, ErrNoPolicy) {
			t.Errorf("Check(%s) = %v, want ErrNoPolicy", p, err)
		}
	}
	if _, err := n.Fix(t.Context(), []string{filepath.Join(root, "d"), "/nowhere"}, false, nil); !errors.Is(err, ErrNoPolicy) {
		t.Errorf("Fix with one path outside = %v, want ErrNoPolicy", err)
	}
	if got := lstat(t, filepath.Join(root, "d/a")).Mode; got != 0o600 {
		t.Errorf("a refused run changed d/a: %04o", got)
	}

	res, c := check(t, n, filepath.Join(root, "d/a"))
	wantCounts(t, "check d/a", res, counts{Checked: 1, Deviations: 1})
	if got := c.paths(); !slices.Equal(got, under(root, "d/a")) {
		t.Errorf("check d/a reported %q", got)
	}
	res, _ = check(t, n, filepath.Join(root, "d/b"), filepath.Join(root, "d"), filepath.Join(root, "d", "..", "d", "a"))
	wantCounts(t, "overlapping paths", res, counts{Checked: 3, Deviations: 2})
	if !slices.Equal(res.Trees, under(root, "d")) {
		t.Errorf("overlapping paths walked %q", res.Trees)
	}
	res, _ = fix(t, n, false, filepath.Join(root, "d/b"))
	wantCounts(t, "fix d/b", res, counts{Checked: 1, Deviations: 1, Fixed: 1})
	if got := lstat(t, filepath.Join(root, "d/a")).Mode; got != 0o600 {
		t.Errorf("fix of d/b changed d/a: %04o", got)
	}

	// A path under a symlink is not followed.
	if err := os.Symlink(filepath.Join(root, "d"), filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	res, c = check(t, n, filepath.Join(root, "link/a"))
	if res.Errors != 1 || len(c.findings) != 1 || !errors.Is(c.findings[0].Err, unix.ENOTDIR) && !errors.Is(c.findings[0].Err, unix.ELOOP) {
		t.Errorf("check through a symlink: %+v %+v, want one error (not followed)", res, c.findings)
	}
}

// TestMissingRoot: a policy whose path is missing (a disk that did not
// mount) is an error of the run, not a silent success.
func TestMissingRoot(t *testing.T) {
	t.Parallel()
	root := newTree(t)
	missing := filepath.Join(root, "gone")
	n := newNormaliser(t, Options{}, pol(missing, fileMode(0o644)))
	res, c := check(t, n)
	wantCounts(t, "check", res, counts{Errors: 1})
	if len(c.findings) != 1 || !errors.Is(c.findings[0].Err, fs.ErrNotExist) || c.findings[0].Path != missing {
		t.Errorf("findings %+v, want one not-exist error for %s", c.findings, missing)
	}
	if res.OK() {
		t.Error("a run with an error is OK")
	}
}

// TestSymlinksAndSpecialFiles: symlinks are never followed or changed, nor
// their targets, outside the tree or inside; fifos are never opened.
func TestSymlinksAndSpecialFiles(t *testing.T) {
	t.Parallel()
	for _, noDType := range []bool{false, true} {
		t.Run(fmt.Sprintf("noDType=%v", noDType), func(t *testing.T) {
			t.Parallel()
			testSymlinksAndSpecialFiles(t, noDType)
		})
	}
}

func testSymlinksAndSpecialFiles(t *testing.T, noDType bool) {
	outside := newTree(t,
		file("secret", 0o600, uidBob, gidStaff),
		dir("outdir", 0o700, uidBob, gidStaff),
		file("outdir/f", 0o600, uidBob, gidStaff),
	)
	root := newTree(t,
		file("inside", 0o600, 0, 0),
		symlink("to-secret", filepath.Join(outside, "secret")),
		symlink("to-outdir", filepath.Join(outside, "outdir")),
		symlink("to-inside", "inside"),
		symlink("dangling", "/nonexistent/x"),
		fifo("pipe", 0o600),
	)
	setAttrs(t, root, 0o755, uidAlice, gidFTP)
	waitClockTick(t, filepath.Dir(outside), latestCtime(t, outside))
	beforeOut := snapshotTree(t, outside)
	beforeLinks := snapshotTree(t, root)

	n := newNormaliser(t, Options{hooks: hooks{noDType: noDType}}, pol(root, owner(uidAlice), group(gidFTP), fileMode(0o644), dirMode(0o755)))
	res, c := fix(t, n, false)
	wantCounts(t, "fix", res, counts{Checked: 2, Deviations: 1, Fixed: 1, LeftAlone: 5})
	if got := c.paths(); !slices.Equal(got, under(root, "inside")) {
		t.Errorf("fix reported %q, want only inside", got)
	}
	if after := snapshotTree(t, outside); !mapsEqual(beforeOut, after) {
		t.Errorf("the symlink targets outside changed:\nbefore %v\nafter  %v", beforeOut, after)
	}
	afterLinks := snapshotTree(t, root)
	for _, rel := range []string{"to-secret", "to-outdir", "to-inside", "dangling", "pipe"} {
		if afterLinks[rel] != beforeLinks[rel] {
			t.Errorf("%s changed: %+v -> %+v", rel, beforeLinks[rel], afterLinks[rel])
		}
	}
	if got := afterLinks["inside"].Attrs; got != (Attrs{0o644, uidAlice, gidFTP}) {
		t.Errorf("inside after fix: %+v", got)
	}
}

// TestOtherFilesystemNotEntered: a tmpfs mounted inside the tree is counted
// as a skipped mount; nothing in it, nor its root, is checked or changed.
func TestOtherFilesystemNotEntered(t *testing.T) {
	t.Parallel()
	root := newTree(t,
		dir("mnt", 0o755, 0, 0),
		file("a", 0o600, 0, 0),
	)
	mnt := filepath.Join(root, "mnt")
	mountTmpfs(t, mnt)
	build(t, mnt, dir("d", 0o700, uidBob, 0), file("d/x", 0o600, uidBob, 0), file("y", 0o600, 0, 0))
	before := snapshotTree(t, mnt)

	n := newNormaliser(t, Options{}, pol(root, owner(0), fileMode(0o644), dirMode(0o755)))
	res, c := check(t, n)
	wantCounts(t, "check", res, counts{Checked: 2, Deviations: 1, SkippedMounts: 1})
	if !slices.Equal(res.Mounts, []string{mnt}) {
		t.Errorf("mounts %q, want %q", res.Mounts, []string{mnt})
	}
	res, c = fix(t, n, false)
	wantCounts(t, "fix", res, counts{Checked: 2, Deviations: 1, Fixed: 1, SkippedMounts: 1})
	for _, f := range c.findings {
		if hasPrefixAny(f.Path, mnt) {
			t.Errorf("finding inside the other filesystem: %+v", f)
		}
	}
	if after := snapshotTree(t, mnt); !mapsEqual(before, after) {
		t.Errorf("fix changed the other filesystem:\nbefore %v\nafter  %v", before, after)
	}
	// Started inside the mount point, the walk does not enter it either.
	res, _ = check(t, n, filepath.Join(mnt, "d"))
	wantCounts(t, "check inside the mount", res, counts{SkippedMounts: 1})
}

// TestVanishingEntries: entries removed between the directory read and the
// stat, or between the stat and the open, are skipped silently; an entry
// replaced by another between the stat and the open is not touched.
func TestVanishingEntries(t *testing.T) {
	t.Parallel()
	root := newTree(t,
		file("gone-before-stat", 0o600, 0, 0),
		dir("dir-gone-before-stat", 0o700, 0, 0),
		file("dir-gone-before-stat/x", 0o600, 0, 0),
		file("gone-before-open", 0o600, 0, 0),
		dir("dir-gone-before-open", 0o755, 0, 0),
		file("replaced", 0o600, 0, 0),
		file("stays", 0o600, 0, 0),
	)
	// The replacement waits outside the tree, on the same filesystem.
	replacement := filepath.Join(filepath.Dir(root), "replacement")
	build(t, filepath.Dir(root), file("replacement", 0o600, uidBob, 0))
	replacementIno := lstat(t, replacement).ino
	rm := func(p string) {
		if err := os.RemoveAll(p); err != nil {
			t.Error(err)
		}
	}
	var opened []string // by the walk's goroutine; read after the run
	opts := Options{hooks: hooks{
		beforeStat: func(p string) {
			switch filepath.Base(p) {
			case "gone-before-stat", "dir-gone-before-stat":
				rm(p)
			}
		},
		beforeOpen: func(p string) {
			opened = append(opened, filepath.Base(p))
			switch filepath.Base(p) {
			case "gone-before-open", "dir-gone-before-open":
				rm(p)
			case "replaced":
				// Another file takes the name: same path, another inode.
				if err := os.Rename(replacement, p); err != nil {
					t.Error(err)
				}
			}
		},
	}}
	n := newNormaliser(t, opts, pol(root, fileMode(0o644), dirMode(0o755)))
	res, c := fix(t, n, false)
	// root and stays are checked; stays is fixed; five entries vanish.
	wantCounts(t, "fix", res, counts{Checked: 2, Deviations: 1, Fixed: 1, Vanished: 5})
	for _, f := range c.findings {
		if f.Err != nil {
			t.Errorf("error finding for a vanishing entry: %+v", f)
		}
	}
	if got := lstat(t, filepath.Join(root, "stays")).Mode; got != 0o644 {
		t.Errorf("stays: mode %04o after fix, want 0644 (the walk must go on)", got)
	}
	st := lstat(t, filepath.Join(root, "replaced"))
	if st.ino != replacementIno {
		t.Fatalf("fixture: replaced has inode %d, want the replacement's %d", st.ino, replacementIno)
	}
	if st.Attrs != (Attrs{0o600, uidBob, 0}) {
		t.Errorf("the replacement file was changed to %+v: the walk changed an entry it had not seen", st.Attrs)
	}
	if !slices.Contains(opened, "dir-gone-before-open") {
		t.Errorf("beforeOpen never ran for the directory: %q", opened)
	}
}

// TestPermissionErrorsDoNotStop: an unreadable directory is reported with
// its error and the walk goes on. The walk's own thread runs with a
// filesystem uid that is not root (so that EACCES is real); the thread
// ends with the walk.
func TestPermissionErrorsDoNotStop(t *testing.T) {
	t.Parallel()
	root := newTree(t,
		dir("locked", 0o700, 0, 0),
		file("locked/wrong", 0o666, 0, 0),
		file("mine", 0o600, uidAlice, 0),
		dir("open", 0o700, uidAlice, 0),
		file("open/mine2", 0o600, uidAlice, 0),
	)
	setAttrs(t, root, 0o700, uidAlice, 0)
	// uidAlice must reach the tree through t.TempDir's 0700 directories.
	for d := filepath.Dir(root); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	onThread := func() {
		if err := unix.Setfsuid(uidAlice); err != nil {
			panic(err)
		}
	}
	n := newNormaliser(t, Options{hooks: hooks{onThread: onThread}}, pol(root, fileMode(0o640), dirMode(0o700)))
	res, c := fix(t, n, false)
	wantCounts(t, "fix", res, counts{Checked: 5, Deviations: 2, Fixed: 2, Errors: 1})
	f, ok := c.byPath()[filepath.Join(root, "locked")]
	if !ok || !errors.Is(f.Err, unix.EACCES) || !f.Dir {
		t.Errorf("locked: %+v, want a directory finding with EACCES", f)
	}
	for _, p := range []string{"mine", "open/mine2"} {
		if got := lstat(t, filepath.Join(root, p)).Mode; got != 0o640 {
			t.Errorf("%s: mode %04o, want 0640", p, got)
		}
	}
	if got := lstat(t, filepath.Join(root, "locked/wrong")).Mode; got != 0o666 {
		t.Errorf("locked/wrong changed to %04o", got)
	}
	if res.OK() {
		t.Error("a fix with an error is OK")
	}
	// This goroutine's thread is untouched: root may still read it.
	if _, err := os.ReadDir(filepath.Join(root, "locked")); err != nil {
		t.Errorf("the test's thread lost root's access: %v", err)
	}
}

// TestFixFailureIsReported: an entry that cannot be changed (immutable)
// is an error finding with what it should be; the others are fixed.
func TestFixFailureIsReported(t *testing.T) {
	t.Parallel()
	root := newTree(t,
		file("frozen", 0o600, 0, 0),
		file("other", 0o600, 0, 0),
	)
	frozen := filepath.Join(root, "frozen")
	freeze(t, frozen)
	n := newNormaliser(t, Options{}, pol(root, fileMode(0o644), dirMode(0o755)))
	res, c := fix(t, n, false)
	wantCounts(t, "fix", res, counts{Checked: 3, Deviations: 2, Fixed: 1, Errors: 1})
	f := c.byPath()[frozen]
	if !errors.Is(f.Err, unix.EPERM) || f.Fixed || f.Wrong != WrongMode || f.Want.Mode != 0o644 {
		t.Errorf("frozen: %+v, want an EPERM fchmod error with the wanted mode", f)
	}
	if got := lstat(t, filepath.Join(root, "other")).Mode; got != 0o644 {
		t.Errorf("other: %04o", got)
	}
}

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h.
const fsImmutableFL = 0x10

// setImmutable sets or clears the immutable attribute (chattr +i), which
// even root cannot chmod through.
func setImmutable(t *testing.T, p string, on bool) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatalf("FS_IOC_GETFLAGS %s: %v", p, err)
	}
	if on {
		flags |= fsImmutableFL
	} else {
		flags &^= fsImmutableFL
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags)); err != nil {
		t.Fatalf("FS_IOC_SETFLAGS %s: %v", p, err)
	}
}

// TestCorrectEntriesKeepCtime: fix touches only what is wrong; a dry run
// touches nothing.
func TestCorrectEntriesKeepCtime(t *testing.T) {
	t.Parallel()
	root := newTree(t,
		dir("d", 0o2775, 0, gidFTP),
		file("d/right", 0o664, 0, gidFTP),
		file("d/wrong", 0o644, 0, gidFTP),
		dir("d/e", 0o2775, 0, gidFTP),
		file("d/e/right2", 0o664, 0, gidFTP),
	)
	setAttrs(t, root, 0o2775, 0, gidFTP)
	waitClockTick(t, filepath.Dir(root), latestCtime(t, root))
	before := snapshotTree(t, root)
	n := newNormaliser(t, Options{}, pol(root, group(gidFTP), fileMode(0o664), dirMode(fs.ModeSetgid|0o775)))

	res, c := fix(t, n, true)
	wantCounts(t, "dry run", res, counts{Checked: 6, Deviations: 1})
	if len(c.findings) != 1 || c.findings[0].Fixed {
		t.Errorf("dry run findings %+v", c.findings)
	}
	if after := snapshotTree(t, root); !mapsEqual(before, after) {
		t.Fatalf("a dry run changed the tree")
	}

	res, _ = fix(t, n, false)
	wantCounts(t, "fix", res, counts{Checked: 6, Deviations: 1, Fixed: 1})
	after := snapshotTree(t, root)
	for rel, b := range before {
		a := after[rel]
		if rel == "d/wrong" {
			if a.ctime == b.ctime {
				t.Errorf("d/wrong was fixed but kept its ctime: the test cannot tell")
			}
			continue
		}
		if a != b {
			t.Errorf("%s was right and changed: %+v -> %+v", rel, b, a)
		}
	}
}

// TestRateLimit: a policy's rate paces directory reads and changes, one
// operation each; rate 0 means no limiter.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	root := newTree(t,
		dir("a", 0o755, 0, 0),
		file("a/1", 0o600, 0, 0),
		file("a/2", 0o644, 0, 0),
		dir("b", 0o700, 0, 0),
		file("b/3", 0o600, 0, 0),
	)
	var mu sync.Mutex
	reads := 0
	var lims []*fakeLimiter
	var rates []float64
	opts := Options{
		newLimiter: func(perSec float64) limiter {
			mu.Lock()
			defer mu.Unlock()
			rates = append(rates, perSec)
			l := &fakeLimiter{}
			lims = append(lims, l)
			return l
		},
		hooks: hooks{afterRead: func(string) { mu.Lock(); reads++; mu.Unlock() }},
	}
	n := newNormaliser(t, opts, pol(root, fileMode(0o644), dirMode(0o755), rateOf(25)))
	res, _ := fix(t, n, false)
	wantCounts(t, "fix", res, counts{Checked: 6, Deviations: 3, Fixed: 3})
	if len(lims) != 1 || !slices.Equal(rates, []float64{25}) {
		t.Fatalf("limiters made for rates %v, want one for 25", rates)
	}
	if reads < 6 { // three directories, each read to its end
		t.Fatalf("%d directory reads counted, want at least 6", reads)
	}
	if got, want := lims[0].waits, reads+res.Fixed; got != want {
		t.Errorf("limiter waited %d times, want %d directory reads + %d changes", got, reads, res.Fixed)
	}

	// A refusal (a context deadline the pace would outlast) ends the run.
	setAttrs(t, filepath.Join(root, "a/1"), 0o600, 0, 0)
	opts.newLimiter = func(float64) limiter { return &fakeLimiter{failAfter: 1} }
	n = newNormaliser(t, opts, pol(root, fileMode(0o644), dirMode(0o755), rateOf(25)))
	if _, err := n.Fix(t.Context(), nil, false, nil); !errors.Is(err, errLimiterRefused) {
		t.Errorf("Fix with a refusing limiter = %v, want its error", err)
	}
	if got := lstat(t, filepath.Join(root, "a/1")).Mode; got != 0o600 {
		t.Errorf("a/1 changed after the limiter refused: %04o", got)
	}

	// Unlimited: no limiter at all.
	called := false
	opts.newLimiter = func(float64) limiter { called = true; return &fakeLimiter{} }
	n = newNormaliser(t, opts, pol(root, fileMode(0o644)))
	fix(t, n, false)
	if called {
		t.Error("rate 0 made a limiter")
	}

	// The production limiter: the configured rate, a tenth of a second of
	// burst.
	l, ok := newRateLimiter(250).(*rate.Limiter)
	if !ok || l.Limit() != 250 || l.Burst() != 25 {
		t.Errorf("newRateLimiter(250) = %T %v", l, l)
	}
	if l := newRateLimiter(0.5).(*rate.Limiter); l.Burst() != 1 {
		t.Errorf("newRateLimiter(0.5) burst %d, want 1", l.Burst())
	}
}

// TestIdleIOPriority: the walk runs on a thread of the idle I/O class.
func TestIdleIOPriority(t *testing.T) {
	t.Parallel()
	root := newTree(t, file("a", 0o644, 0, 0))
	class := -1
	var classErr error
	onThread := func() { class, classErr = ioClass() }
	n := newNormaliser(t, Options{hooks: hooks{onThread: onThread}}, pol(root, fileMode(0o644)))
	check(t, n)
	if classErr != nil || class != ioprioClassIdle {
		t.Errorf("walk thread I/O class %d (%v), want %d (idle)", class, classErr, ioprioClassIdle)
	}
}

// TestLockPerTree: Fix takes the lock on each tree, one at a time, before
// changing anything; Check and dry runs never lock; a lock error stops the
// run before any change.
func TestLockPerTree(t *testing.T) {
	t.Parallel()
	root := newTree(t,
		file("a", 0o600, 0, 0),
		dir("nested", 0o755, 0, 0),
		file("nested/b", 0o600, 0, 0),
	)
	var mu sync.Mutex
	var locked []string
	held := 0
	lockErr := error(nil)
	opts := Options{Lock: func(ctx context.Context, tree, holder string) (func(), error) {
		mu.Lock()
		defer mu.Unlock()
		if lockErr != nil {
			return nil, lockErr
		}
		if holder != "perms fix "+tree {
			t.Errorf("lock of %s by %q", tree, holder)
		}
		if held != 0 {
			t.Errorf("lock of %s taken while another is held", tree)
		}
		held++
		locked = append(locked, tree)
		return func() { mu.Lock(); held--; mu.Unlock() }, nil
	}}
	n := newNormaliser(t, opts, pol(root, fileMode(0o644)), pol(filepath.Join(root, "nested"), fileMode(0o640)))
	check(t, n)
	fix(t, n, true)
	if len(locked) != 0 {
		t.Fatalf("check or dry run took locks: %q", locked)
	}
	fix(t, n, false)
	if want := []string{root, filepath.Join(root, "nested")}; !slices.Equal(locked, want) || held != 0 {
		t.Errorf("locked %q (held %d at the end), want %q each released", locked, held, want)
	}

	setAttrs(t, filepath.Join(root, "a"), 0o600, 0, 0)
	lockErr = context.Canceled
	if _, err := n.Fix(t.Context(), nil, false, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Fix with a failing lock = %v, want its error", err)
	}
	if got := lstat(t, filepath.Join(root, "a")).Mode; got != 0o600 {
		t.Errorf("a changed without the lock: %04o", got)
	}
}

// TestBigDirectoryInChunks: a directory larger than the read buffer is
// read in several chunks, every entry checked once.
func TestBigDirectoryInChunks(t *testing.T) {
	t.Parallel()
	root := newTree(t, dir("big", 0o755, 0, 0))
	const files = 2000
	long := strings.Repeat("x", 100)
	for i := range files {
		if err := os.WriteFile(filepath.Join(root, "big", fmt.Sprintf("%s-%04d", long, i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "big", long+"-1234"), 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	reads := map[string]int{}
	n := newNormaliser(t, Options{hooks: hooks{afterRead: func(d string) { mu.Lock(); reads[d]++; mu.Unlock() }}},
		pol(root, fileMode(0o644), dirMode(0o755)))
	res, c := check(t, n)
	wantCounts(t, "check", res, counts{Checked: files + 2, Deviations: 1})
	if got := c.paths(); !slices.Equal(got, under(root, "big/"+long+"-1234")) {
		t.Errorf("reported %q", got)
	}
	// 2000 records of ~130 bytes do not fit one 32 KiB read.
	if r := reads[filepath.Join(root, "big")]; r < 1+files*120/dirBufSize {
		t.Errorf("big read in %d getdents calls, want several chunks", r)
	}
}

// TestDeepTree: one open directory per level, closed on the way up.
// Not parallel: it counts the process's open descriptors.
func TestDeepTree(t *testing.T) {
	root := newTree(t)
	var ents []ent
	rel := ""
	for i := range 60 {
		rel = filepath.Join(rel, fmt.Sprintf("d%d", i))
		ents = append(ents, dir(rel, 0o755, 0, 0), file(rel+"/f", 0o600, 0, 0))
	}
	build(t, root, ents...)
	fdsBefore := openFDs(t)
	n := newNormaliser(t, Options{}, pol(root, fileMode(0o644), dirMode(0o755)))
	res, _ := fix(t, n, false)
	wantCounts(t, "fix", res, counts{Checked: 121, Deviations: 60, Fixed: 60})
	if after := openFDs(t); after > fdsBefore+2 {
		t.Errorf("open descriptors %d before the walk, %d after: the walk leaks", fdsBefore, after)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestCancel: a cancelled context ends the run with its error.
func TestCancel(t *testing.T) {
	t.Parallel()
	root := newTree(t, file("a", 0o600, 0, 0))
	n := newNormaliser(t, Options{}, pol(root, fileMode(0o644)))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := n.Fix(ctx, nil, false, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Fix(cancelled) = %v", err)
	}
	if got := lstat(t, filepath.Join(root, "a")).Mode; got != 0o600 {
		t.Errorf("a cancelled fix changed a: %04o", got)
	}
}

// TestNewRejects: policies conf would never produce.
func TestNewRejects(t *testing.T) {
	t.Parallel()
	for _, ps := range [][]conf.Perms{
		{pol("relative", fileMode(0o644))},
		{pol("/srv/x/", fileMode(0o644))},
		{pol("/srv/x", fileMode(0o644)), pol("/srv/x", dirMode(0o755))},
		{pol("/srv/x", rateOf(-1))},
	} {
		if _, err := New(ps, Options{}, nil); err == nil {
			t.Errorf("New(%+v) accepted", ps)
		}
	}
}

// TestPathsBelowSlash: a policy on "/" builds paths without a double
// slash, and finds its nested policies.
func TestPathsBelowSlash(t *testing.T) {
	t.Parallel()
	root := newTree(t, file("a", 0o600, 0, 0))
	n := newNormaliser(t, Options{}, pol("/", dirMode(0o755)), pol(root, fileMode(0o644)))
	res, c := check(t, n, root)
	wantCounts(t, "check", res, counts{Checked: 2, Deviations: 1})
	if got := c.paths(); !slices.Equal(got, under(root, "a")) {
		t.Errorf("reported %q", got)
	}
	if got, want := joinPath("/", "etc"), "/etc"; got != want {
		t.Errorf("joinPath = %q", got)
	}
	if rel := relPath("/", "/srv/x"); rel != "srv/x" {
		t.Errorf("relPath = %q", rel)
	}
}

// TestProgressLogLines: without a terminal, a run reports its progress
// in log lines while it walks.
func TestProgressLogLines(t *testing.T) {
	t.Parallel()
	root := newTree(t, file("a", 0o600, 0, 0), file("b", 0o644, 0, 0))
	var mu sync.Mutex
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(b)
	}), nil))
	logged := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), "msg=\"perms progress\"")
	}
	// The walk holds on its first entry until a progress line came.
	waited := false
	opts := Options{Progress: io.Discard, ProgressEvery: time.Millisecond, hooks: hooks{beforeStat: func(string) {
		if waited {
			return
		}
		waited = true
		deadline := time.Now().Add(5 * time.Second)
		for !logged() && time.Now().Before(deadline) {
			runtime.Gosched()
		}
	}}}
	n, err := New([]conf.Perms{pol(root, fileMode(0o644))}, opts, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Check(t.Context(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if !logged() {
		t.Errorf("no progress line in the log:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "msg=\"perms tree\"") {
		t.Errorf("no line for the tree:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
