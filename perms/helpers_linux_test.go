package perms

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ftpgate/conf"
)

// IDs the tests give entries; none needs to exist in /etc/passwd.
const (
	uidAlice = 4242
	uidBob   = 4343
	gidFTP   = 4243
	gidStaff = 4344
)

// requireRoot fails the test when it cannot chown and mount: these tests
// run as root, here and in CI. They are never skipped.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the perms tests chown entries and mount filesystems: run them as root (CI does)")
	}
}

// ent is one entry of a test tree.
type ent struct {
	rel  string
	kind byte // 'f' file, 'd' directory, 'l' symlink to link, 'p' fifo
	mode uint32
	uid  int
	gid  int
	link string
}

func file(rel string, mode uint32, uid, gid int) ent {
	return ent{rel: rel, kind: 'f', mode: mode, uid: uid, gid: gid}
}

func dir(rel string, mode uint32, uid, gid int) ent {
	return ent{rel: rel, kind: 'd', mode: mode, uid: uid, gid: gid}
}

func symlink(rel, target string) ent { return ent{rel: rel, kind: 'l', link: target} }

func fifo(rel string, mode uint32) ent { return ent{rel: rel, kind: 'p', mode: mode} }

// newTree makes a directory for a tree (mode 0755, root:root) and the
// entries in order (parents first).
func newTree(t *testing.T, ents ...ent) string {
	t.Helper()
	requireRoot(t)
	root := filepath.Join(t.TempDir(), "tree")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	build(t, root, ents...)
	return root
}

func build(t *testing.T, root string, ents ...ent) {
	t.Helper()
	for _, e := range ents {
		p := filepath.Join(root, e.rel)
		var err error
		switch e.kind {
		case 'f':
			err = os.WriteFile(p, []byte(e.rel), 0o600)
		case 'd':
			err = os.Mkdir(p, 0o700)
		case 'l':
			err = os.Symlink(e.link, p)
		case 'p':
			err = unix.Mkfifo(p, e.mode)
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.kind == 'f' || e.kind == 'd' {
			setAttrs(t, p, e.mode, e.uid, e.gid)
		}
	}
}

// setAttrs gives p exactly these attributes (chown first: it clears setgid).
func setAttrs(t *testing.T, p string, mode uint32, uid, gid int) {
	t.Helper()
	if err := os.Lchown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// entryStat is what the tests compare of an entry (lstat: symlinks themselves).
type entryStat struct {
	Attrs
	ctime unix.Timespec
	ino   uint64
}

func lstat(t *testing.T, p string) entryStat {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return entryStat{Attrs: Attrs{Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid)}, ctime: st.Ctim, ino: st.Ino}
}

// policy is a [[perms]] that sets what the options give; UID and GID -1
// unless set.
func pol(path string, set ...func(*conf.Perms)) conf.Perms {
	p := conf.Perms{Path: path, UID: -1, GID: -1}
	for _, s := range set {
		s(&p)
	}
	return p
}

func owner(uid int) func(*conf.Perms) { return func(p *conf.Perms) { p.UID = uid } }
func group(gid int) func(*conf.Perms) { return func(p *conf.Perms) { p.GID = gid } }
func fileMode(m fs.FileMode) func(*conf.Perms) {
	return func(p *conf.Perms) { p.FileMode, p.HasFileMode = m, true }
}
func dirMode(m fs.FileMode) func(*conf.Perms) {
	return func(p *conf.Perms) { p.DirMode, p.HasDirMode = m, true }
}
func exclude(pats ...string) func(*conf.Perms) { return func(p *conf.Perms) { p.Exclude = pats } }
func rateOf(r float64) func(*conf.Perms)       { return func(p *conf.Perms) { p.Rate = r } }

func newNormaliser(t *testing.T, opts Options, policies ...conf.Perms) *Normaliser {
	t.Helper()
	n, err := New(policies, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// collector gathers the findings of a run.
type collector struct {
	mu       sync.Mutex
	findings []Finding
}

func (c *collector) add(f Finding) {
	c.mu.Lock()
	c.findings = append(c.findings, f)
	c.mu.Unlock()
}

// byPath is the findings keyed by path.
func (c *collector) byPath() map[string]Finding {
	m := make(map[string]Finding)
	for _, f := range c.findings {
		m[f.Path] = f
	}
	return m
}

func (c *collector) paths() []string {
	var ps []string
	for _, f := range c.findings {
		ps = append(ps, f.Path)
	}
	slices.Sort(ps)
	return ps
}

func check(t *testing.T, n *Normaliser, paths ...string) (Result, *collector) {
	t.Helper()
	c := &collector{}
	res, err := n.Check(testContext(t), paths, c.add)
	if err != nil {
		t.Fatalf("Check(%q): %v", paths, err)
	}
	return res, c
}

func fix(t *testing.T, n *Normaliser, dryRun bool, paths ...string) (Result, *collector) {
	t.Helper()
	c := &collector{}
	res, err := n.Fix(testContext(t), paths, dryRun, c.add)
	if err != nil {
		t.Fatalf("Fix(%q, dryRun=%v): %v", paths, dryRun, err)
	}
	return res, c
}

// testContext ends with the test, and after a minute at most: a walk that
// hangs (on a fifo, say) fails instead of blocking the package.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// counts is the part of a Result the tests compare.
type counts struct {
	Checked, Deviations, Fixed, Errors, Excluded, LeftAlone, Vanished, SkippedMounts int
}

func countsOf(r Result) counts {
	return counts{r.Checked, r.Deviations, r.Fixed, r.Errors, r.Excluded, r.LeftAlone, r.Vanished, r.SkippedMounts}
}

func wantCounts(t *testing.T, what string, r Result, want counts) {
	t.Helper()
	if got := countsOf(r); got != want {
		t.Errorf("%s: counts %+v, want %+v", what, got, want)
	}
}

// waitClockTick returns once the filesystem of dir stamps a ctime later
// than after, so that a change made now gets a new ctime: kernels stamp
// inodes with a coarse clock, and a test that checks a ctime stayed put
// must be able to see it move.
func waitClockTick(t *testing.T, dir string, after unix.Timespec) {
	t.Helper()
	probe := filepath.Join(dir, "ctime-probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := unix.Chmod(probe, 0o600); err != nil {
			t.Fatal(err)
		}
		if c := lstat(t, probe).ctime; c.Nano() > after.Nano() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the filesystem clock did not move within 5s")
		}
		runtime.Gosched()
	}
}

// latestCtime is the newest ctime below root.
func latestCtime(t *testing.T, root string) unix.Timespec {
	t.Helper()
	var latest unix.Timespec
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if c := lstat(t, p).ctime; c.Nano() > latest.Nano() {
			latest = c
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return latest
}

// snapshotTree is every entry's stat below root, by relative path.
func snapshotTree(t *testing.T, root string) map[string]entryStat {
	t.Helper()
	m := make(map[string]entryStat)
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		m[rel] = lstat(t, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// fakeLimiter counts the operations a walk takes from its rate limit and
// refuses them after failAfter (0 = never).
type fakeLimiter struct {
	mu        sync.Mutex
	waits     int
	failAfter int
}

var errLimiterRefused = errors.New("limiter refused")

func (l *fakeLimiter) Wait(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failAfter > 0 && l.waits >= l.failAfter {
		return errLimiterRefused
	}
	l.waits++
	return ctx.Err()
}

// under joins slash paths below root.
func under(root string, rels ...string) []string {
	out := make([]string, len(rels))
	for i, r := range rels {
		out[i] = filepath.Join(root, filepath.FromSlash(r))
	}
	return out
}

func hasPrefixAny(p string, prefixes ...string) bool {
	for _, pre := range prefixes {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

// mountTmpfs mounts a small tmpfs (mode 0700) on dir for the test.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// freeze makes p immutable for the test.
func freeze(t *testing.T, p string) {
	t.Helper()
	setImmutable(t, p, true)
	t.Cleanup(func() { setImmutable(t, p, false) })
}
