package storage

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestResolve(t *testing.T) {
	long := strings.Repeat("a", 255)
	tests := []struct {
		name     string
		in       string
		virt     string
		rel      string
		wantFail bool
	}{
		{name: "empty is the top", in: "", virt: "/", rel: "."},
		{name: "slash is the top", in: "/", virt: "/", rel: "."},
		{name: "dotdot stops at the top", in: "..", virt: "/", rel: "."},
		{name: "dotdot chain", in: "../../etc/passwd", virt: "/etc/passwd", rel: "etc/passwd"},
		{name: "absolute dotdot", in: "/../x", virt: "/x", rel: "x"},
		{name: "dotdot in the middle", in: "a/../../b", virt: "/b", rel: "b"},
		{name: "encoded dotdot is a literal name", in: "%2e%2e/x", virt: "/%2e%2e/x", rel: "%2e%2e/x"},
		{name: "backslash is a literal", in: `..\..\x`, virt: `/..\..\x`, rel: `..\..\x`},
		{name: "slashes and dots cleaned", in: "a//b/./c/", virt: "/a/b/c", rel: "a/b/c"},
		{name: "relative", in: "a/b", virt: "/a/b", rel: "a/b"},
		{name: "unicode", in: "/ünï/cødé ✓.wav", virt: "/ünï/cødé ✓.wav", rel: "ünï/cødé ✓.wav"},
		{name: "255-byte component", in: long, virt: "/" + long, rel: long},
		{name: "NUL", in: "a\x00b", wantFail: true},
		{name: "invalid UTF-8", in: "a\xffb", wantFail: true},
		{name: "newline", in: "a\nb", wantFail: true},
		{name: "carriage return", in: "a\rb", wantFail: true},
		{name: "DEL", in: "a\x7fb", wantFail: true},
		{name: "256-byte component", in: "d/" + long + "b", wantFail: true},
		{name: "path over 4096", in: strings.Repeat("ab/", 1366) + "c", wantFail: true},
		{name: "raw name over 4096", in: strings.Repeat("./", 2049) + "x", wantFail: true},
		{name: "part name", in: "/" + PartPrefix + "0123456789abcdef01234567", wantFail: true},
		{name: "part name as a directory", in: "a/" + PartPrefix + "x/b", wantFail: true},
		{name: "part prefix alone", in: PartPrefix, wantFail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			virt, rel, err := resolve(tt.in)
			if tt.wantFail {
				if !errors.Is(err, ErrInvalidName) {
					t.Fatalf("resolve(%q) = %q, %q, %v; want ErrInvalidName", tt.in, virt, rel, err)
				}
				return
			}
			if err != nil || virt != tt.virt || rel != tt.rel {
				t.Fatalf("resolve(%q) = %q, %q, %v; want %q, %q", tt.in, virt, rel, err, tt.virt, tt.rel)
			}
		})
	}
}

func TestPartName(t *testing.T) {
	a := partName("dj1", "/a.wav")
	if len(a) != len(PartPrefix)+partHashLen || !IsPartName(a) {
		t.Fatalf("partName = %q", a)
	}
	for _, other := range []string{partName("dj2", "/a.wav"), partName("dj1", "/b.wav"), partName("dj1a", ".wav")} {
		if other == a {
			t.Fatalf("partName collides: %q", a)
		}
	}
	if partName("dj1", "/a.wav") != a {
		t.Fatal("partName is not stable")
	}
}

// TestConfinement tries every way out of a jail. bob's jail is home/bob;
// home/bobby is a sibling with a common prefix (afero's BasePathFs trap);
// outside/ is beside the storage root, reached through symlinks.
func TestConfinement(t *testing.T) {
	e := newEnv(t, nil)
	e.write("home/bob/in.txt", "bob's")
	e.write("home/bobby/secret.txt", "bobby's")
	secret := filepath.Join(e.outside, "secret.txt")
	if err := os.WriteFile(secret, []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	bob := e.path("home/bob")
	for name, target := range map[string]string{
		"abs-out":  e.outside,                       // absolute symlink to a dir outside
		"rel-out":  "../../../outside",              // relative symlink climbing out
		"file-out": secret,                          // symlink to a file outside
		"sibling":  "../bobby",                      // symlink to the sibling jail
		"loop":     "loop",                          // symlink to itself
		"in-link":  "in.txt",                        // harmless: stays inside
		"dot-out":  "./../../../outside/secret.txt", // file, relative, climbing
	} {
		if err := os.Symlink(target, filepath.Join(bob, name)); err != nil {
			t.Fatal(err)
		}
	}
	f := e.jail("home/bob", "bob", false)

	mustFail := []struct {
		name string
		op   func() error
		want error
	}{
		{"stat dotdot sibling", func() error { _, err := f.Stat("../bobby/secret.txt"); return err }, os.ErrNotExist},
		{"stat sibling by prefix", func() error { _, err := f.Stat("/home/bobby/secret.txt"); return err }, os.ErrNotExist},
		{"open etc passwd", func() error { _, err := f.Open("../../etc/passwd"); return err }, os.ErrNotExist},
		{"open absolute climb", func() error { _, err := f.Open("/../bobby/secret.txt"); return err }, os.ErrNotExist},
		{"open encoded dotdot", func() error { _, err := f.Open("%2e%2e/bobby/secret.txt"); return err }, os.ErrNotExist},
		{"stat through abs link", func() error { _, err := f.Stat("abs-out/secret.txt"); return err }, ErrOutsideJail},
		{"stat through rel link", func() error { _, err := f.Stat("rel-out/secret.txt"); return err }, ErrOutsideJail},
		{"stat file link", func() error { _, err := f.Stat("file-out"); return err }, ErrOutsideJail},
		{"stat sibling link", func() error { _, err := f.Stat("sibling/secret.txt"); return err }, ErrOutsideJail},
		{"stat dot link", func() error { _, err := f.Stat("dot-out"); return err }, ErrOutsideJail},
		{"stat loop", func() error { _, err := f.Stat("loop"); return err }, nil},
		{"open through link", func() error { _, err := f.Open("abs-out/secret.txt"); return err }, ErrOutsideJail},
		{"open file link", func() error { _, err := f.Open("file-out"); return err }, ErrOutsideJail},
		{"openread file link", func() error { _, err := f.OpenRead("file-out", 0); return err }, ErrOutsideJail},
		{"readdir link", func() error { _, err := f.ReadDir("rel-out"); return err }, ErrOutsideJail},
		{"hash file link", func() error { _, err := f.Hash("file-out", 0, 7); return err }, ErrOutsideJail},
		{"upload into link", func() error { _, err := f.OpenUpload("abs-out/new.txt", 0, false); return err }, ErrOutsideJail},
		{"upload into rel link", func() error { _, err := f.OpenUpload("rel-out/new.txt", 0, false); return err }, ErrOutsideJail},
		{"upload into sibling link", func() error { _, err := f.OpenUpload("sibling/new.txt", 0, false); return err }, ErrOutsideJail},
		{"upload over file link", func() error { _, err := f.OpenUpload("file-out", 0, false); return err }, ErrOutsideJail},
		{"append to file link", func() error { _, err := f.OpenUpload("file-out", 0, true); return err }, ErrOutsideJail},
		{"resume file link", func() error { _, err := f.OpenUpload("file-out", 3, false); return err }, ErrOutsideJail},
		{"rename out of link", func() error { return f.Rename("abs-out/secret.txt", "stolen") }, ErrOutsideJail},
		{"rename into link", func() error { return f.Rename("in.txt", "rel-out/in.txt") }, ErrOutsideJail},
		{"remove through link", func() error { return f.Remove("abs-out/secret.txt") }, ErrOutsideJail},
		{"rmdir through link", func() error { return f.RemoveDir("abs-out/x") }, ErrOutsideJail},
		{"mkdir through link", func() error { return f.Mkdir("abs-out/d", 0) }, ErrOutsideJail},
		{"mkdirall through link", func() error { return f.MkdirAll("rel-out/d/e", 0) }, ErrOutsideJail},
		{"chtimes file link", func() error { return f.Chtimes("file-out", time.Unix(0, 0), time.Unix(0, 0)) }, ErrOutsideJail},
		{"statfs link", func() error { _, err := f.AvailableSpace("abs-out"); return err }, ErrOutsideJail},
	}
	for _, tt := range mustFail {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op()
			if err == nil {
				t.Fatal("succeeded")
			}
			var pe *PathError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %T %v, want *PathError", err, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}

	// Nothing outside changed, and nothing landed outside.
	if b, err := os.ReadFile(secret); err != nil || string(b) != "outside" {
		t.Fatalf("outside file = %q, %v", b, err)
	}
	if des, _ := os.ReadDir(e.outside); len(des) != 1 {
		t.Fatalf("outside dir has %d entries, want 1", len(des))
	}
	if got := e.read("home/bobby/secret.txt"); got != "bobby's" {
		t.Fatalf("sibling file = %q", got)
	}
	if e.entries() != 0 {
		t.Fatalf("failed uploads left %d registry entries", e.entries())
	}

	// What stays inside works: the encoded name is a literal directory,
	// the inside symlink is followed, and a symlink itself can be removed.
	if err := f.Mkdir("%2e%2e", 0); err != nil {
		t.Fatal(err)
	}
	if !e.exists("home/bob/%2e%2e") {
		t.Fatal("literal %2e%2e directory not created inside the jail")
	}
	if fi, err := f.Stat("in-link"); err != nil || fi.Size() != 5 {
		t.Fatalf("Stat(in-link) = %v, %v", fi, err)
	}
	if err := f.Remove("file-out"); err != nil {
		t.Fatalf("Remove(file-out): %v", err)
	}
	if _, err := os.Stat(secret); err != nil {
		t.Fatalf("removing the symlink touched its target: %v", err)
	}
	res := put(t, f, "../../x.txt", "x")
	if res.Path != "home/bob/x.txt" || e.read("home/bob/x.txt") != "x" {
		t.Fatalf("upload of ../../x.txt landed at %q", res.Path)
	}
	// An upload through a directory symlink that stays inside lands in
	// its target.
	if err := f.MkdirAll("/sub/deeper", 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub", filepath.Join(bob, "in-dir")); err != nil {
		t.Fatal(err)
	}
	put(t, f, "in-dir/deeper/y.txt", "y")
	if e.read("home/bob/sub/deeper/y.txt") != "y" {
		t.Fatal("upload through an inside symlink did not land in its target")
	}
}

func TestInvalidNamesEverywhere(t *testing.T) {
	e := newEnv(t, nil)
	f := e.jail("u", "u", false)
	interrupted(t, f, "/a.wav", 0, false, "partial")
	part := "/" + partName("u", "/a.wav")
	names := []string{"a\x00b", "\xfe", "a\tb", "/" + strings.Repeat("x", 256), part, "/d/" + PartPrefix + "x/y"}
	ops := map[string]func(string) error{
		"stat":     func(n string) error { _, err := f.Stat(n); return err },
		"open":     func(n string) error { _, err := f.Open(n); return err },
		"openread": func(n string) error { _, err := f.OpenRead(n, 0); return err },
		"readdir":  func(n string) error { _, err := f.ReadDir(n); return err },
		"hash":     func(n string) error { _, err := f.Hash(n, 0, 1); return err },
		"upload":   func(n string) error { _, err := f.OpenUpload(n, 0, false); return err },
		"append":   func(n string) error { _, err := f.OpenUpload(n, 0, true); return err },
		"mkdir":    func(n string) error { return f.Mkdir(n, 0) },
		"mkdirall": func(n string) error { return f.MkdirAll(n, 0) },
		"remove":   func(n string) error { return f.Remove(n) },
		"rmdir":    func(n string) error { return f.RemoveDir(n) },
		"from":     func(n string) error { return f.Rename(n, "/b") },
		"to":       func(n string) error { return f.Rename("/a.wav", n) },
		"chtimes":  func(n string) error { return f.Chtimes(n, time.Now(), time.Now()) },
		"statfs":   func(n string) error { _, err := f.AvailableSpace(n); return err },
	}
	for opName, op := range ops {
		for _, n := range names {
			t.Run(opName+"/"+n[:min(len(n), 12)], func(t *testing.T) {
				if err := op(n); !errors.Is(err, ErrInvalidName) {
					t.Fatalf("err = %v, want ErrInvalidName", err)
				}
			})
		}
	}
	if len(e.parts("u")) != 1 {
		t.Fatal("the part was touched")
	}
}

func TestJailHome(t *testing.T) {
	e := newEnv(t, nil)
	for _, home := range []string{"", "/abs", "../x", "a/../b", "a/", "./a", "..", "a\x00", "a/" + PartPrefix + "1"} {
		if _, err := e.root.Jail(home, "u", false); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Jail(%q) err = %v, want ErrInvalidName", home, err)
		}
	}
	e.write("file", "x")
	if _, err := e.root.Jail("file", "u", false); err == nil {
		t.Error("Jail on a file succeeded")
	}
	if err := os.Symlink(e.outside, e.path("out")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.root.Jail("out/u", "u", false); !errors.Is(err, ErrOutsideJail) {
		t.Errorf("Jail through a symlink out: err = %v, want ErrOutsideJail", err)
	}
	admin := e.jail(".", "admin", false)
	if fi, err := admin.Stat("/file"); err != nil || fi.Size() != 1 {
		t.Fatalf("admin Stat = %v, %v", fi, err)
	}
	// A reader's missing home appears too, empty.
	r := e.jail("uploads/new", "new", true)
	if des, err := r.ReadDir("/"); err != nil || len(des) != 0 {
		t.Fatalf("new home: %v, %v", des, err)
	}
}

func TestFileReadErrorsAreVirtual(t *testing.T) {
	e := newEnv(t, nil)
	e.write("u/d/x", "x")
	f := e.jail("u", "u", false)
	file, err := f.Open("/d")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	_, err = file.Read(make([]byte, 8)) // EISDIR from the kernel
	wantErr(t, err, "/d", ErrIsDir)
	if _, err := io.Copy(io.Discard, file); !errors.Is(err, ErrIsDir) || strings.Contains(err.Error(), e.dir) {
		t.Fatalf("WriteTo err = %v", err)
	}
	if file.Name() != "/d" {
		t.Fatalf("Name = %q", file.Name())
	}
	if fi, err := file.Stat(); err != nil || fi.Name() != "d" {
		t.Fatalf("Stat = %v, %v", fi, err)
	}
	if _, err := file.Write([]byte("x")); !errors.Is(err, os.ErrPermission) {
		t.Fatalf("Write err = %v", err)
	}
}
