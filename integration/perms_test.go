package integration

// Permission normaliser tests (issue 5): `ftpgate perms check` and `fix`
// on a real tree, their output and exit codes, and fix waiting for the job
// lock that a mirror pass or a pull holds.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ftpgate/job"
)

// permsSetup is a tree and a config with one [[perms]] policy over it:
// group testGroup, file_mode 0664, dir_mode 2775, *.tmp excluded.
type permsSetup struct {
	base, tree, state, outside, cfgPath string
}

func newPermsSetup(t *testing.T) *permsSetup {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the perms tests chown and chattr entries: run them as root (CI does)")
	}
	base := t.TempDir()
	ps := &permsSetup{
		base:    base,
		tree:    filepath.Join(base, "tree"),
		state:   filepath.Join(base, "state"),
		outside: filepath.Join(base, "outside"),
		cfgPath: filepath.Join(base, "ftpgate.toml"),
	}
	g := testGroup.gid
	ps.mkdir(t, "", 0o2775, g)
	ps.mkdir(t, "sub", 0o775, g) // setgid missing
	ps.file(t, "sub/right.txt", 0o664, g)
	ps.file(t, "wrong-mode.txt", 0o644, g)
	ps.file(t, "wrong-group.txt", 0o664, 0)
	ps.file(t, "right.txt", 0o664, g)
	ps.file(t, "scratch.tmp", 0o600, 0) // excluded
	mustWrite(t, filepath.Join(ps.outside, "target"), []byte("outside"))
	if err := os.Chmod(filepath.Join(ps.outside, "target"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(ps.outside, "target"), filepath.Join(ps.tree, "link")); err != nil {
		t.Fatal(err)
	}
	ps.writeConfig(t, fmt.Sprintf("[[perms]]\npath = %s\ngroup = %s\nfile_mode = \"0664\"\ndir_mode = \"2775\"\nexclude = [\"*.tmp\"]\nrate = 5000\n",
		tomlString(ps.tree), tomlString(testGroup.name)))
	return ps
}

func (ps *permsSetup) writeConfig(t *testing.T, perms string) {
	t.Helper()
	text := fmt.Sprintf("[storage]\nroot = %s\nstate_dir = %s\ngroup = %s\n\n%s",
		tomlString(ps.tree), tomlString(ps.state), tomlString(testGroup.name), perms)
	mustWrite(t, ps.cfgPath, []byte(text))
}

func (ps *permsSetup) path(rel string) string { return filepath.Join(ps.tree, filepath.FromSlash(rel)) }

func (ps *permsSetup) mkdir(t *testing.T, rel string, mode uint32, gid int) {
	t.Helper()
	if err := os.MkdirAll(ps.path(rel), 0o700); err != nil {
		t.Fatal(err)
	}
	chownMode(t, ps.path(rel), mode, gid)
}

func (ps *permsSetup) file(t *testing.T, rel string, mode uint32, gid int) {
	t.Helper()
	mustWrite(t, ps.path(rel), []byte(rel))
	chownMode(t, ps.path(rel), mode, gid)
}

func chownMode(t *testing.T, p string, mode uint32, gid int) {
	t.Helper()
	if err := os.Lchown(p, 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// entryStat is what the tests compare of an entry.
type entryStat struct {
	mode       uint32
	uid, gid   int
	ctime, ino int64
}

func lstatEntry(t *testing.T, p string) entryStat {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return entryStat{st.Mode & 0o7777, int(st.Uid), int(st.Gid), st.Ctim.Nano(), int64(st.Ino)}
}

func (ps *permsSetup) perms(t *testing.T, args ...string) cmdResult {
	t.Helper()
	return run(t, "", binPath, append([]string{"perms"}, append(args, "--config", ps.cfgPath)...)...)
}

// findingLines are the lines before the summary.
func findingLines(stdout string) []string {
	head, _, _ := strings.Cut(stdout, "\n\nperms ")
	if strings.HasPrefix(stdout, "\nperms ") || head == "" {
		return nil
	}
	return strings.Split(strings.TrimSpace(head), "\n")
}

func TestPermsCheckAndFix(t *testing.T) {
	t.Parallel()
	ps := newPermsSetup(t)
	g := testGroup.name
	wantCheck := map[string]bool{
		ps.tree + "/sub/: mode 0775, want 2775":             true,
		ps.tree + "/wrong-mode.txt: mode 0644, want 0664":   true,
		ps.tree + "/wrong-group.txt: group root, want " + g: true,
	}

	r := ps.perms(t, "check")
	if r.code != 1 {
		t.Fatalf("check: %v, want exit 1", r)
	}
	lines := findingLines(r.stdout)
	if len(lines) != len(wantCheck) {
		t.Errorf("check printed %d finding lines, want %d:\n%s", len(lines), len(wantCheck), r.stdout)
	}
	for _, l := range lines {
		if !wantCheck[l] {
			t.Errorf("unexpected check line %q", l)
		}
	}
	for _, want := range []string{"\nperms check: 6 entries checked in ", "  deviations      3\n", "  excluded        1\n",
		"  left alone      1 ", "  result          3 deviations, 0 errors\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check summary lacks %q:\n%s", want, r.stdout)
		}
	}

	before := map[string]entryStat{}
	for _, rel := range []string{"", "sub", "sub/right.txt", "wrong-mode.txt", "wrong-group.txt", "right.txt", "scratch.tmp", "link"} {
		before[rel] = lstatEntry(t, ps.path(rel))
	}
	target := lstatEntry(t, filepath.Join(ps.outside, "target"))
	// A change made from now on gets a new ctime: see that a fix could
	// not hide behind the clock's granularity.
	waitNewCtime(t, ps.base, before)

	r = ps.perms(t, "fix", "--dry-run")
	if r.code != 0 || len(findingLines(r.stdout)) != 3 || !strings.Contains(r.stdout, ": would fix mode 0644 -> 0664") {
		t.Errorf("fix --dry-run: %v", r)
	}
	for rel, b := range before {
		if a := lstatEntry(t, ps.path(rel)); a != b {
			t.Errorf("the dry run changed %s: %+v -> %+v", rel, b, a)
		}
	}

	r = ps.perms(t, "fix")
	if r.code != 0 {
		t.Fatalf("fix: %v, want exit 0", r)
	}
	for _, want := range []string{
		ps.tree + "/sub/: fixed mode 0775 -> 2775\n",
		ps.tree + "/wrong-mode.txt: fixed mode 0644 -> 0664\n",
		ps.tree + "/wrong-group.txt: fixed group root -> " + g + "\n",
		"  fixed           3\n", "  result          all fixed\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("fix output lacks %q:\n%s", want, r.stdout)
		}
	}
	changed := map[string]uint32{"sub": 0o2775, "wrong-mode.txt": 0o664, "wrong-group.txt": 0o664}
	for rel, b := range before {
		a := lstatEntry(t, ps.path(rel))
		switch mode, ok := changed[rel]; {
		case ok:
			if a.mode != mode || a.gid != testGroup.gid || a.ctime == b.ctime || a.ino != b.ino {
				t.Errorf("%s after fix: %+v (before %+v), want mode %04o, group %d, a new ctime", rel, a, b, mode, testGroup.gid)
			}
		case a != b:
			t.Errorf("%s was right, excluded or a symlink, and changed: %+v -> %+v", rel, b, a)
		}
	}
	if got := lstatEntry(t, filepath.Join(ps.outside, "target")); got != target {
		t.Errorf("the symlink's target outside changed: %+v -> %+v", target, got)
	}

	r = ps.perms(t, "check")
	if r.code != 0 || len(findingLines(r.stdout)) != 0 || !strings.Contains(r.stdout, "every entry matches its policy") {
		t.Errorf("check after fix: %v, want exit 0 and no findings", r)
	}
	// A path below the policy is walked alone.
	r = ps.perms(t, "check", ps.path("sub"))
	if r.code != 0 || !strings.Contains(r.stdout, "perms check: 2 entries checked") {
		t.Errorf("check sub: %v", r)
	}
}

func TestPermsUsage(t *testing.T) {
	t.Parallel()
	ps := newPermsSetup(t)
	for _, tc := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"path under no policy", []string{"check", ps.outside}, "no [[perms]] policy covers it"},
		{"fix of a path under no policy", []string{"fix", "/"}, "no [[perms]] policy covers it"},
		{"excluded path", []string{"fix", ps.path("scratch.tmp")}, "excluded by its [[perms]] policy"},
		{"no subcommand", nil, `say "check" or "fix"`},
		{"unknown subcommand", []string{"chmod"}, `unknown subcommand "chmod"`},
		{"unknown flag", []string{"check", "--recursive"}, "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ps.perms(t, tc.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.stderr) || findingLines(r.stdout) != nil {
				t.Errorf("%v\nwant exit 2 and %q on stderr", r, tc.stderr)
			}
		})
	}
	if got := lstatEntry(t, ps.path("wrong-mode.txt")).mode; got != 0o644 {
		t.Errorf("a refused fix changed wrong-mode.txt: %04o", got)
	}

	t.Run("no policies", func(t *testing.T) {
		ps.writeConfig(t, "")
		r := ps.perms(t, "check")
		if r.code != 2 || !strings.Contains(r.stderr, "no [[perms]] policy") {
			t.Errorf("%v\nwant exit 2 naming the missing [[perms]]", r)
		}
	})
	t.Run("bad config", func(t *testing.T) {
		ps.writeConfig(t, fmt.Sprintf("[[perms]]\npath = %s\ngroup = \"no-such-group-ftpgate\"\nrate = -1\n", tomlString(ps.tree)))
		r := ps.perms(t, "fix")
		if r.code != 2 || !strings.Contains(r.stderr, "perms[0].group") || !strings.Contains(r.stderr, "perms[0].rate") {
			t.Errorf("%v\nwant exit 2 naming perms[0].group and perms[0].rate", r)
		}
	})
}

// TestPermsFixFailure: an entry fix cannot change (immutable: even root
// cannot chmod it) is reported, the others are fixed, exit 1.
func TestPermsFixFailure(t *testing.T) {
	t.Parallel()
	ps := newPermsSetup(t)
	chattr := requireTool(t, "chattr")
	frozen := ps.path("wrong-mode.txt")
	if out, err := exec.Command(chattr, "+i", frozen).CombinedOutput(); err != nil {
		t.Fatalf("chattr +i: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(chattr, "-i", frozen).CombinedOutput(); err != nil {
			t.Errorf("chattr -i: %v: %s", err, out)
		}
	})
	r := ps.perms(t, "fix")
	if r.code != 1 {
		t.Fatalf("fix: %v, want exit 1", r)
	}
	for _, want := range []string{
		frozen + ": error: fchmod: operation not permitted; mode 0644, want 0664\n",
		ps.tree + "/wrong-group.txt: fixed group root -> " + testGroup.name + "\n",
		"  fixed           2\n", "  errors          1\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("fix output lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "could not be checked or fixed") {
		t.Errorf("stderr does not say why the exit is 1:\n%s", r.stderr)
	}
}

// TestPermsFixWaitsForJobLock: while another job (a mirror pass, a pull)
// holds the job lock on an overlapping tree, fix waits and changes
// nothing; it runs once the lock is released. check does not wait.
func TestPermsFixWaitsForJobLock(t *testing.T) {
	t.Parallel()
	ps := newPermsSetup(t)
	locks, err := job.NewLocker(ps.state)
	if err != nil {
		t.Fatal(err)
	}
	// A job on a parent of the policy's tree overlaps it.
	release, err := locks.Lock(t.Context(), ps.base, "mirror pass test")
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	if r := ps.perms(t, "check"); r.code != 1 {
		t.Errorf("check while the lock is held: %v, want exit 1 at once", r)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "perms", "fix", "--config", ps.cfgPath)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	var log []string
	waiting := false
	for !waiting {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("fix ended without waiting for the lock:\n%s\n%s", strings.Join(log, "\n"), stdout.String())
			}
			log = append(log, l)
			waiting = strings.Contains(l, "waiting for another job") && strings.Contains(l, "mirror pass test")
		case <-ctx.Done():
			t.Fatalf("fix did not report waiting for the lock:\n%s", strings.Join(log, "\n"))
		}
	}
	if got := lstatEntry(t, ps.path("wrong-mode.txt")).mode; got != 0o644 {
		t.Fatalf("fix changed wrong-mode.txt (%04o) while another job held the lock", got)
	}
	release()
	for range lines {
	}
	if err := <-exited; err != nil || !strings.Contains(stdout.String(), "result          all fixed") {
		t.Fatalf("fix after the release: %v\n%s\n%s", err, stdout.String(), strings.Join(log, "\n"))
	}
	if got := lstatEntry(t, ps.path("wrong-mode.txt")).mode; got != 0o664 {
		t.Errorf("wrong-mode.txt after the fix: %04o", got)
	}
}

// waitNewCtime returns once a change made now would get a ctime later
// than any in before (the kernel stamps inodes with a coarse clock).
func waitNewCtime(t *testing.T, dir string, before map[string]entryStat) {
	t.Helper()
	var latest int64
	for _, s := range before {
		latest = max(latest, s.ctime)
	}
	probe := filepath.Join(dir, "ctime-probe")
	mustWrite(t, probe, nil)
	deadline := time.Now().Add(5 * time.Second)
	for lstatEntry(t, probe).ctime <= latest {
		if time.Now().After(deadline) {
			t.Fatal("the filesystem clock did not move within 5s")
		}
		if err := os.Chmod(probe, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
