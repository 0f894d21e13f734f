package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPolicy checks the exact group and mode of everything ftpgate creates,
// under a umask of 0077 (newEnv sets it) that would otherwise strip them.
func TestPolicy(t *testing.T) {
	gid := testGroup(t)
	tests := []struct {
		name     string
		gid      int
		fileMode fs.FileMode
		dirMode  fs.FileMode // as the config writes it
		wantDir  fs.FileMode
	}{
		{"group writable setgid", gid, 0o664, 0o2775, fs.ModeDir | fs.ModeSetgid | 0o775},
		{"go setgid bit", gid, 0o664, fs.ModeSetgid | 0o775, fs.ModeDir | fs.ModeSetgid | 0o775},
		{"private", gid, 0o600, 0o700, fs.ModeDir | 0o700},
		{"world writable sticky", gid, 0o644, 0o1777, fs.ModeDir | fs.ModeSticky | 0o777},
		{"group left alone", -1, 0o640, 0o750, fs.ModeDir | 0o750},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(p *Policy) { p.GID, p.FileMode, p.DirMode = tt.gid, tt.fileMode, tt.dirMode })
			wantDir := tt.wantDir
			wantGID := tt.gid
			if wantGID < 0 {
				wantGID = os.Getegid()
			}
			check := func(rel string, want fs.FileMode) {
				t.Helper()
				mode, g := owner(t, e.path(rel))
				if mode != want || g != wantGID {
					t.Errorf("%s: mode %v gid %d, want %v gid %d", rel, mode, g, want, wantGID)
				}
			}

			f := e.jail("uploads/dj1", "dj1", false)
			check("uploads", wantDir)
			check("uploads/dj1", wantDir)

			if err := f.Mkdir("/d", 0o777); err != nil {
				t.Fatal(err)
			}
			check("uploads/dj1/d", wantDir)
			if err := f.MkdirAll("/d/e/f/g", 0o777); err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{"d/e", "d/e/f", "d/e/f/g"} {
				check("uploads/dj1/"+d, wantDir)
			}

			u, err := f.OpenUpload("/d/e/a.wav", 0, false)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.Write([]byte("data")); err != nil {
				t.Fatal(err)
			}
			// The part, without a name until Commit, already has the
			// final group and mode.
			if parts := e.parts("uploads/dj1/d/e"); len(parts) != 0 || !u.anon {
				t.Fatalf("parts = %v, anonymous part %v; want none, true", parts, u.anon)
			}
			pfi, err := u.f.Stat()
			if err != nil {
				t.Fatal(err)
			}
			if mode, g := pfi.Mode(), int(pfi.Sys().(*syscall.Stat_t).Gid); mode != tt.fileMode || g != wantGID {
				t.Errorf("part: mode %v gid %d, want %v gid %d", mode, g, tt.fileMode, wantGID)
			}
			if _, err := u.Commit(); err != nil {
				t.Fatal(err)
			}
			check("uploads/dj1/d/e/a.wav", tt.fileMode)

			// Appending copies into a new part: the result has the policy
			// even if the old file did not.
			if err := os.Chmod(e.path("uploads/dj1/d/e/a.wav"), 0o600); err != nil {
				t.Fatal(err)
			}
			u, err = f.OpenUpload("/d/e/a.wav", 0, true)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.Commit(); err != nil {
				t.Fatal(err)
			}
			check("uploads/dj1/d/e/a.wav", tt.fileMode)
		})
	}
}

func TestSetgidInherited(t *testing.T) {
	gid := testGroup(t)
	e := newEnv(t, func(p *Policy) { p.GID, p.DirMode = gid, 0o2770 })
	f := e.jail("u", "u", false)
	if err := f.MkdirAll("/a/b", 0); err != nil {
		t.Fatal(err)
	}
	mode, g := owner(t, e.path("u/a/b"))
	if mode&fs.ModeSetgid == 0 || mode.Perm() != 0o770 || g != gid {
		t.Fatalf("u/a/b: mode %v gid %d, want setgid 0770 gid %d", mode, g, gid)
	}
	// Files created by other programs in a setgid directory get its group.
	if err := os.WriteFile(e.path("u/a/b/other"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, g := owner(t, e.path("u/a/b/other")); g != gid {
		t.Fatalf("file in setgid dir has gid %d, want %d", g, gid)
	}
}

func TestReadDir(t *testing.T) {
	e := newEnv(t, nil)
	e.write("u/b.txt", "b")
	e.write("u/a.txt", "a")
	e.write("u/c/x", "x")
	if err := os.Symlink("a.txt", e.path("u/link")); err != nil {
		t.Fatal(err)
	}
	f := e.jail("u", "u", false)
	interrupted(t, f, "/new.wav", 0, false, "partial")

	infos, err := f.ReadDir("/")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fi := range infos {
		names = append(names, fi.Name())
	}
	if want := []string{"a.txt", "b.txt", "c", "link"}; !slices.Equal(names, want) {
		t.Fatalf("ReadDir = %v, want %v", names, want)
	}
	if infos[3].Mode()&fs.ModeSymlink == 0 || !infos[2].IsDir() {
		t.Fatalf("modes: link %v, c %v", infos[3].Mode(), infos[2].Mode())
	}

	// afero's Readdir/Readdirnames hide parts too, also in small batches.
	for _, batch := range []int{-1, 1, 2} {
		d, err := f.Open("/")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			ns, err := d.Readdirnames(batch)
			got = append(got, ns...)
			if err != nil || batch <= 0 {
				break
			}
		}
		d.Close()
		slices.Sort(got)
		if !slices.Equal(got, names) {
			t.Fatalf("Readdirnames(%d) = %v", batch, got)
		}
		d, err = f.Open("/")
		if err != nil {
			t.Fatal(err)
		}
		fis, _ := d.Readdir(-1)
		d.Close()
		if len(fis) != 4 {
			t.Fatalf("Readdir = %d entries", len(fis))
		}
	}

	_, err = f.ReadDir("/a.txt")
	wantErr(t, err, "/a.txt", fs.ErrNotExist)
	_, err = f.ReadDir("/missing")
	wantErr(t, err, "/missing", fs.ErrNotExist)
}

func TestRemoveAndRename(t *testing.T) {
	e := newEnv(t, nil)
	e.write("u/f", "f")
	e.write("u/full/x", "x")
	e.write("u/g", "g")
	if err := os.Mkdir(e.path("u/empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := e.jail("u", "u", false)
	if err := f.MkdirAll("/parts-only", 0); err != nil {
		t.Fatal(err)
	}
	interrupted(t, f, "/parts-only/a", 0, false, "partial")

	tests := []struct {
		name string
		op   func() error
		virt string
		want error
	}{
		{"dele a dir", func() error { return f.Remove("/empty") }, "/empty", ErrIsDir},
		{"dele the top", func() error { return f.Remove("/") }, "/", ErrIsDir},
		{"dele missing", func() error { return f.Remove("/nope") }, "/nope", fs.ErrNotExist},
		{"rmd non-empty", func() error { return f.RemoveDir("/full") }, "/full", ErrNotEmpty},
		{"rmd a file", func() error { return f.RemoveDir("/f") }, "/f", ErrNotDir},
		{"rmd the top", func() error { return f.RemoveDir("/..") }, "/", fs.ErrPermission},
		{"rmd missing", func() error { return f.RemoveDir("/nope") }, "/nope", fs.ErrNotExist},
		{"removeall", func() error { return f.RemoveAll("/full") }, "/full", fs.ErrPermission},
		{"rename the top", func() error { return f.Rename("/", "/x") }, "/", fs.ErrPermission},
		{"rename missing", func() error { return f.Rename("/nope", "/x") }, "/nope", fs.ErrNotExist},
		{"rename file onto dir", func() error { return f.Rename("/f", "/full") }, "/f", fs.ErrExist},
		{"mkdir existing", func() error { return f.Mkdir("/full", 0) }, "/full", fs.ErrExist},
		{"mkdir the top", func() error { return f.Mkdir("/", 0) }, "/", fs.ErrExist},
		{"mkdir under a file", func() error { return f.Mkdir("/f/x", 0) }, "/f/x", fs.ErrNotExist},
		{"mkdirall under a file", func() error { return f.MkdirAll("/f/x/y", 0) }, "/f/x/y", fs.ErrNotExist},
		{"chmod", func() error { return f.Chmod("/f", 0o777) }, "/f", fs.ErrPermission},
		{"chown", func() error { return f.Chown("/f", 0, 0) }, "/f", fs.ErrPermission},
		{"create", func() error { _, err := f.Create("/new"); return err }, "/new", fs.ErrPermission},
		{"openfile for writing", func() error { _, err := f.OpenFile("/f", os.O_WRONLY, 0); return err }, "/f", fs.ErrPermission},
		{"openfile append", func() error { _, err := f.OpenFile("/f", os.O_APPEND, 0); return err }, "/f", fs.ErrPermission},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantErr(t, tt.op(), tt.virt, tt.want) })
	}

	if err := f.Remove("/f"); err != nil || e.exists("u/f") {
		t.Fatalf("Remove: %v", err)
	}
	if err := f.RemoveDir("/empty"); err != nil || e.exists("u/empty") {
		t.Fatalf("RemoveDir: %v", err)
	}
	// A directory that looks empty to the client, holding only a part,
	// can be removed; the part's registry entry goes with it.
	if err := f.RemoveDir("/parts-only"); err != nil || e.exists("u/parts-only") {
		t.Fatalf("RemoveDir(parts-only): %v", err)
	}
	if e.entries() != 0 {
		t.Fatalf("registry has %d entries", e.entries())
	}
	if err := f.Rename("/g", "/full/g2"); err != nil || e.read("u/full/g2") != "g" {
		t.Fatalf("Rename: %v", err)
	}
	if err := f.Rename("/full", "/renamed"); err != nil || e.read("u/renamed/x") != "x" {
		t.Fatalf("Rename dir: %v", err)
	}
	e.write("u/h", "new")
	if err := f.Rename("/h", "/renamed/x"); err != nil || e.read("u/renamed/x") != "new" {
		t.Fatalf("Rename over a file: %v", err)
	}
	when := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := f.Chtimes("/renamed/x", when, when); err != nil {
		t.Fatal(err)
	}
	if fi, err := f.Stat("/renamed/x"); err != nil || !fi.ModTime().Equal(when) {
		t.Fatalf("Chtimes: %v, %v", fi, err)
	}
}

func TestReadOnly(t *testing.T) {
	e := newEnv(t, nil)
	e.write("pub/f", "hello")
	e.write("pub/d/x", "x")
	if err := os.Mkdir(e.path("pub/empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := e.jail("pub", "reader", true)
	mutations := map[string]func() error{
		"mkdir":    func() error { return f.Mkdir("/n", 0) },
		"mkdirall": func() error { return f.MkdirAll("/n/m", 0) },
		"remove":   func() error { return f.Remove("/f") },
		"rmdir":    func() error { return f.RemoveDir("/empty") },
		"rename":   func() error { return f.Rename("/f", "/g") },
		"chtimes":  func() error { return f.Chtimes("/f", time.Now(), time.Now()) },
		"chmod":    func() error { return f.Chmod("/f", 0o777) },
		"chown":    func() error { return f.Chown("/f", 0, 0) },
		"removeal": func() error { return f.RemoveAll("/d") },
		"create":   func() error { _, err := f.Create("/n"); return err },
		"openfile": func() error { _, err := f.OpenFile("/f", os.O_RDWR, 0); return err },
		"upload":   func() error { _, err := f.OpenUpload("/n", 0, false); return err },
		"overwr":   func() error { _, err := f.OpenUpload("/f", 0, false); return err },
		"append":   func() error { _, err := f.OpenUpload("/f", 0, true); return err },
		"resume":   func() error { _, err := f.OpenUpload("/f", 2, false); return err },
	}
	for name, op := range mutations {
		t.Run(name, func(t *testing.T) { wantErr(t, op(), "", fs.ErrPermission) })
	}
	if e.read("pub/f") != "hello" || !e.exists("pub/empty") || e.exists("pub/n") || e.entries() != 0 {
		t.Fatal("a read-only jail changed the tree")
	}
	if got, err := f.Hash("/f", 0, 5); err != nil || got != hexSum("hello") {
		t.Fatalf("Hash = %s, %v", got, err)
	}
	r, err := f.OpenRead("/f", 2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	r.Close()
	if err != nil || string(b) != "llo" {
		t.Fatalf("OpenRead at 2 = %q, %v", b, err)
	}
	if _, err := f.ReadDir("/d"); err != nil {
		t.Fatal(err)
	}
}

func hexSum(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestOpenReadAndHash(t *testing.T) {
	e := newEnv(t, nil)
	content := strings.Repeat("0123456789", 1000)
	e.write("u/f", content)
	if err := syscall.Mkfifo(e.path("u/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := e.jail("u", "u", false)

	for _, off := range []int64{0, 1, 9999, 10000, 20000} {
		r, err := f.OpenRead("/f", off)
		if err != nil {
			t.Fatalf("OpenRead(%d): %v", off, err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if want := content[min(off, int64(len(content))):]; err != nil || string(b) != want {
			t.Fatalf("OpenRead(%d) read %d bytes, %v", off, len(b), err)
		}
	}
	_, err := f.OpenRead("/", 0)
	wantErr(t, err, "/", ErrIsDir)
	// A FIFO would block the session: refused before it is opened.
	_, err = f.OpenRead("/fifo", 0)
	wantErr(t, err, "/fifo", fs.ErrPermission)
	_, err = f.Open("/fifo")
	wantErr(t, err, "/fifo", fs.ErrPermission)
	_, err = f.OpenRead("/f", -1)
	wantErr(t, err, "/f", fs.ErrInvalid)

	for _, r := range [][2]int64{{0, 10000}, {0, 0}, {5, 17}, {9990, 10000}, {9990, 20000}} {
		got, err := f.Hash("/f", r[0], r[1])
		want := hexSum(content[r[0]:min(r[1], int64(len(content)))])
		if err != nil || got != want {
			t.Fatalf("Hash(%v) = %s, %v; want %s", r, got, err, want)
		}
	}
	_, err = f.Hash("/f", 5, 4)
	wantErr(t, err, "/f", fs.ErrInvalid)
	_, err = f.Hash("/", 0, 1)
	wantErr(t, err, "/", ErrIsDir)

	if n, err := f.AvailableSpace("/"); err != nil || n <= 0 {
		t.Fatalf("AvailableSpace = %d, %v", n, err)
	}
	if f.Name() != "ftpgate" {
		t.Fatalf("Name = %q", f.Name())
	}
}

// TestErrorsDoNotLeakRoot collects the errors of many failing operations:
// each must be a *PathError with a virtual path, and none may name the
// host's directories.
func TestErrorsDoNotLeakRoot(t *testing.T) {
	e := newEnv(t, nil)
	e.write("u/f", "x")
	e.write("u/d/x", "x")
	if err := os.Symlink(e.outside, e.path("u/out")); err != nil {
		t.Fatal(err)
	}
	f := e.jail("u", "u", false)
	ro := e.jail("u", "r", true)
	dir, err := f.Open("/d")
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	up, err := f.OpenUpload("/new", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Abort(); err != nil {
		t.Fatal(err)
	}
	errs := []error{
		func() error { _, err := f.Stat("/missing"); return err }(),
		func() error { _, err := f.Stat("/out/x"); return err }(),
		func() error { _, err := f.Open("/f\x00"); return err }(),
		func() error { _, err := f.OpenRead("/d", 0); return err }(),
		func() error { _, err := dir.Read(make([]byte, 1)); return err }(),
		func() error { _, err := dir.Seek(-5, io.SeekStart); return err }(),
		func() error { _, err := f.ReadDir("/f"); return err }(),
		func() error { _, err := f.OpenUpload("/d", 0, false); return err }(),
		func() error { _, err := f.OpenUpload("/zz", 5, false); return err }(),
		func() error { _, err := up.Write([]byte("x")); return err }(),
		func() error { _, err := up.Commit(); return err }(),
		f.Remove("/d"),
		f.RemoveDir("/d"),
		f.Rename("/missing", "/x"),
		f.Mkdir("/f/x", 0),
		ro.Mkdir("/x", 0),
		f.Chmod("/f", 0),
		func() error { _, err := e.root.Jail("u/f", "u", false); return err }(),
	}
	for i, err := range errs {
		if err == nil {
			t.Errorf("error %d: nil", i)
			continue
		}
		var pe *PathError
		if !errors.As(err, &pe) {
			t.Errorf("error %d: %T %v is not a *PathError", i, err, err)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, e.dir) || strings.Contains(msg, "/data") || strings.Contains(pe.Path, e.dir) {
			t.Errorf("error %d leaks a host path: %s", i, msg)
		}
	}
}

func TestClassify(t *testing.T) {
	e := newEnv(t, nil)
	escape := e.root.escape
	if escape == nil {
		t.Fatal("os.Root's escape error was not captured")
	}
	tests := []struct {
		in   error
		want error
	}{
		{syscall.ENOSPC, ErrNoSpace},
		{syscall.EDQUOT, ErrNoSpace},
		{&os.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}, ErrNoSpace},
		{syscall.ENOENT, fs.ErrNotExist},
		{syscall.ENOTDIR, fs.ErrNotExist},
		{syscall.EEXIST, fs.ErrExist},
		{syscall.EACCES, fs.ErrPermission},
		{syscall.EPERM, fs.ErrPermission},
		{syscall.EROFS, fs.ErrPermission},
		{syscall.ENOTEMPTY, ErrNotEmpty},
		{syscall.EISDIR, ErrIsDir},
		{syscall.ENAMETOOLONG, ErrInvalidName},
		{syscall.EIO, ErrIO},
		{&os.PathError{Op: "openat", Path: "x", Err: escape}, ErrOutsideJail},
		{os.ErrClosed, fs.ErrClosed},
		{errors.New("something else"), ErrIO},
		{ErrBusy, ErrBusy},
	}
	for _, tt := range tests {
		got := classify(tt.in, escape)
		if !errors.Is(got, tt.want) {
			t.Errorf("classify(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if got := classify(syscall.EIO, escape); !strings.Contains(got.Error(), syscall.EIO.Error()) {
		t.Errorf("ErrIO lost the errno text: %v", got)
	}
}

// TestNoSpace fills a small tmpfs when running as root; otherwise the
// mapping of ENOSPC is covered by TestClassify alone.
func TestNoSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		if !errors.Is(classify(syscall.ENOSPC, nil), ErrNoSpace) {
			t.Fatal("ENOSPC is not ErrNoSpace")
		}
		t.Log("not root: checked the error mapping only")
		return
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "data")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	r, err := Open(mnt, Policy{GID: -1, StateDir: filepath.Join(dir, "state"), Fsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := r.Jail("u", "u", false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u, err := f.OpenUpload("/big", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 16<<10)
	var werr error
	for range 16 {
		if _, werr = u.Write(chunk); werr != nil {
			break
		}
	}
	wantErr(t, werr, "/big", ErrNoSpace)
	if strings.Contains(werr.Error(), dir) {
		t.Fatalf("error leaks the root: %v", werr)
	}
	if err := u.Abort(); err != nil {
		t.Fatal(err)
	}
	// The partial part is kept for a resume once space is back.
	if fi, err := f.Stat("/big"); err != nil || fi.Size() == 0 {
		t.Fatalf("Stat after ENOSPC = %v, %v", fi, err)
	}
}

func TestOpenChecks(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(data, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	tests := []struct {
		name string
		root string
		pol  Policy
	}{
		{"missing root", filepath.Join(dir, "nope"), Policy{StateDir: state}},
		{"root is a file", filepath.Join(dir, "file"), Policy{StateDir: state}},
		{"no state dir", data, Policy{}},
		{"state dir inside root", data, Policy{StateDir: filepath.Join(data, "state")}},
		{"state dir is the root", data, Policy{StateDir: data}},
		{"state dir inside root through a symlink", data, Policy{StateDir: filepath.Join(dir, "link", "st")}},
		{"setgid file mode", data, Policy{StateDir: state, FileMode: 0o2664}},
		{"setuid dir mode", data, Policy{StateDir: state, DirMode: fs.ModeSetuid | 0o755}},
		{"bad gid", data, Policy{StateDir: state, GID: -2}},
		{"negative TTL", data, Policy{StateDir: state, ResumeTTL: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Open(tt.root, tt.pol)
			if err == nil {
				r.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
	if e, _ := os.ReadDir(data); len(e) != 0 {
		t.Fatalf("a refused Open left %d entries in the root", len(e))
	}

	r, err := Open(data, Policy{GID: -1, StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.pol.FileMode != DefaultFileMode || r.pol.DirMode != DefaultDirMode || r.pol.ResumeTTL != DefaultResumeTTL {
		t.Fatalf("defaults not applied: %+v", r.pol)
	}
	if fi, err := os.Stat(filepath.Join(state, "parts")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("parts dir: %v, %v", fi, err)
	}
}
