package storage

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// env is a storage root in a temp dir: data/ is the root, state/ the state
// dir, outside/ a directory no jail may reach.
type env struct {
	t       *testing.T
	dir     string
	data    string
	outside string
	pol     Policy
	root    *Root
}

// newEnv opens a root with a hostile umask, so that every mode a test sees
// was set by the policy. mod may adjust the policy before Open.
func newEnv(t *testing.T, mod func(*Policy)) *env {
	t.Helper()
	old := syscall.Umask(0o077)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := t.TempDir()
	e := &env{t: t, dir: dir, data: filepath.Join(dir, "data"), outside: filepath.Join(dir, "outside")}
	for _, d := range []string{e.data, e.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.pol = Policy{
		GID:       -1,
		FileMode:  0o664,
		DirMode:   0o2775,
		ResumeTTL: testTTL,
		StateDir:  filepath.Join(dir, "state"),
	}
	if mod != nil {
		mod(&e.pol)
	}
	r, err := Open(e.data, e.pol)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	e.root = r
	return e
}

// namedParts makes plain STORs create named parts, as they do where
// O_TMPFILE is missing.
func (e *env) namedParts() { e.root.noTmpfile.Store(true) }

// testTTL is the tests' ResumeTTL.
const testTTL = 24 * time.Hour

// jail opens a jail and closes it with the test.
func (e *env) jail(home, usr string, readOnly bool) *FS {
	e.t.Helper()
	f, err := e.root.Jail(home, usr, readOnly)
	if err != nil {
		e.t.Fatalf("Jail(%q): %v", home, err)
	}
	e.t.Cleanup(func() { f.Close() })
	return f
}

// path is the host path of a root-relative slash path.
func (e *env) path(rel string) string { return filepath.Join(e.data, filepath.FromSlash(rel)) }

func (e *env) write(rel, content string) {
	e.t.Helper()
	p := e.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) read(rel string) string {
	e.t.Helper()
	b, err := os.ReadFile(e.path(rel))
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

func (e *env) exists(rel string) bool {
	e.t.Helper()
	_, err := os.Lstat(e.path(rel))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.t.Fatal(err)
	}
	return err == nil
}

// parts lists the part files in a root-relative directory.
func (e *env) parts(dir string) []string {
	e.t.Helper()
	m, err := filepath.Glob(filepath.Join(e.path(dir), PartPrefix+"*"))
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// entries counts the registry's entries: the journal's live keys plus any
// other file in parts/ (entries of the one-file-per-part layout, or junk).
func (e *env) entries() int {
	e.t.Helper()
	des, err := os.ReadDir(filepath.Join(e.pol.StateDir, "parts"))
	if err != nil {
		e.t.Fatal(err)
	}
	keys, err := e.root.reg.live()
	if err != nil {
		e.t.Fatal(err)
	}
	n := len(keys)
	for _, de := range des {
		if de.Name() != journalName && de.Name() != journalTmp {
			n++
		}
	}
	return n
}

// put uploads content to name in one go.
func put(t *testing.T, f *FS, name, content string) Result {
	t.Helper()
	u, err := f.OpenUpload(name, 0, false)
	if err != nil {
		t.Fatalf("OpenUpload(%q): %v", name, err)
	}
	if _, err := io.WriteString(u, content); err != nil {
		t.Fatalf("Write: %v", err)
	}
	res, err := u.Commit()
	if err != nil {
		t.Fatalf("Commit(%q): %v", name, err)
	}
	return res
}

// interrupted uploads content to name from offset and aborts.
func interrupted(t *testing.T, f *FS, name string, offset int64, appendMode bool, content string) {
	t.Helper()
	u, err := f.OpenUpload(name, offset, appendMode)
	if err != nil {
		t.Fatalf("OpenUpload(%q, %d, %v): %v", name, offset, appendMode, err)
	}
	if _, err := io.WriteString(u, content); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := u.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
}

// wantErr checks that err is a *PathError for virt wrapping target.
func wantErr(t *testing.T, err error, virt string, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
	var pe *PathError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %T %v, want *PathError", err, err)
	}
	if virt != "" && pe.Path != virt {
		t.Fatalf("err path = %q, want %q", pe.Path, virt)
	}
}

// testGroup returns a group the process may chown files to, other than its
// primary group when possible: as root a new group made for the test.
func testGroup(t *testing.T) int {
	t.Helper()
	if os.Geteuid() == 0 {
		name := fmt.Sprintf("ftpgt%d%04x", os.Getpid()%100000, rand.IntN(1<<16))
		if out, err := exec.Command("groupadd", name).CombinedOutput(); err != nil {
			t.Fatalf("groupadd %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("groupdel", name).CombinedOutput(); err != nil {
				t.Errorf("groupdel %s: %v: %s", name, err, out)
			}
		})
		g, err := user.LookupGroup(name)
		if err != nil {
			t.Fatal(err)
		}
		gid, err := strconv.Atoi(g.Gid)
		if err != nil {
			t.Fatal(err)
		}
		return gid
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if g != os.Getegid() {
			return g
		}
	}
	return os.Getegid()
}

// owner returns a host path's mode and group.
func owner(t *testing.T, p string) (os.FileMode, int) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode(), int(fi.Sys().(*syscall.Stat_t).Gid)
}
