package integration

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// jailFixture is a root with two users whose names share a prefix, a
// reader, files outside the root and symlinks pointing out of a home.
type jailFixture struct {
	s                      *server
	bob, bobby, rita, adm  *testUser
	secret                 string // outside the root, 7777 bytes
	bobbySecret, topSecret string
}

const secretSize = 7777

func newJailFixture(t *testing.T) *jailFixture {
	t.Helper()
	f := &jailFixture{}
	f.s = startServer(t, func(c *testConfig) {
		f.adm = c.addUser("admin1", "admin", "")
		f.bob = c.addUser("bob", "uploader", "")
		f.bobby = c.addUser("bobby", "uploader", "")
		f.rita = c.addUser("rita", "reader", "uploads/shared")
	})
	s := f.s
	f.secret = filepath.Join(s.outside, "secret.txt")
	mustWrite(t, f.secret, bytes.Repeat([]byte("S"), secretSize))
	f.bobbySecret = s.path(f.bobby, "secret.txt")
	mustWrite(t, f.bobbySecret, []byte("bobby's secret\r\n"))
	f.topSecret = filepath.Join(s.cfg.Root, "top-secret.txt")
	mustWrite(t, f.topSecret, []byte("admins only\r\n"))
	mustWrite(t, s.path(f.bob, "own.txt"), []byte("bob's own file\r\n"))
	mustWrite(t, s.path(f.rita, "readme.txt"), []byte("read me\r\n"))
	for name, target := range map[string]string{
		s.path(f.bob, "flink"):                       f.secret,
		s.path(f.bob, "dlink"):                       s.outside,
		s.path(f.bob, "siblink"):                     s.path(f.bobby, "."),
		filepath.Join(s.cfg.Root, "root-flink"):      f.secret,
		filepath.Join(s.cfg.Root, "uploads/rel-out"): "../../outside",
	} {
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// snapshot is everything outside bob's home (and the server's state dir).
func (f *jailFixture) snapshot(t *testing.T) map[string]string {
	return treeState(t, f.s.base, f.s.path(f.bob, "."), f.s.cfg.StateDir)
}

// checkNoLeak fails if a reply revealed a real path of the host. The
// command's own argument, echoed back, does not count.
func (f *jailFixture) checkNoLeak(t *testing.T, rc *rawConn) {
	t.Helper()
	for _, e := range rc.log {
		text := e.reply
		if _, arg, ok := strings.Cut(e.cmd, " "); ok && arg != "" {
			text = strings.ReplaceAll(text, path.Clean(arg), "<arg>")
			text = strings.ReplaceAll(text, arg, "<arg>")
		}
		for _, p := range []string{f.s.base, f.s.cfg.Root, f.s.outside} {
			if strings.Contains(text, p) {
				t.Errorf("reply to %s reveals the real path %s: %q", printable(e.cmd), p, e.reply)
			}
		}
		if strings.Contains(text, "root:x:0:0") {
			t.Errorf("reply to %s reveals /etc/passwd: %q", printable(e.cmd), e.reply)
		}
	}
}

// TestJailHostilePaths: every path trick gets a 5xx, changes nothing
// outside the user's home and reveals no real path.
func TestJailHostilePaths(t *testing.T) {
	t.Parallel()
	f := newJailFixture(t)
	s := f.s
	before := f.snapshot(t)
	rc := s.rawLogin(f.bob)

	type probe struct {
		path string
		ops  []string
	}
	allOps := []string{"RETR", "SIZE", "MDTM", "HASH", "XSHA256", "DELE", "RNFR", "MLST", "CWD", "RMD"}
	probes := []probe{
		{"..", []string{"RETR", "HASH", "XSHA256", "DELE", "RMD"}},
		{"../bobby/secret.txt", allOps},
		{"/../bobby/secret.txt", allOps},
		{"../../etc/passwd", allOps},
		{"../../../../../../../../../../etc/passwd", allOps},
		{"%2e%2e%2fbobby%2fsecret.txt", allOps},
		{"..%2f..%2f..%2fetc%2fpasswd", allOps},
		{"..\\bobby\\secret.txt", allOps},
		{"/etc/passwd", allOps},
		{f.secret, allOps},
		{f.bobbySecret, allOps},
		{"../../top-secret.txt", allOps},
		{"secret\x00.txt", allOps},
		{"../bobby/secret.txt\x00.jpg", allOps},
		{strings.Repeat("a", 1000), allOps},
		{"\xff\xfe\xfd.txt", allOps},
		{"../bobby/\xc3\x28", allOps},
		{"flink", []string{"RETR", "SIZE", "MDTM", "HASH", "XSHA256"}},
		{"dlink/secret.txt", allOps},
		{"./dlink/../dlink/secret.txt", allOps},
		{"siblink/secret.txt", allOps},
		{"dlink", []string{"CWD", "RETR", "SIZE", "HASH"}},
		{"siblink", []string{"CWD"}},
	}
	for _, p := range probes {
		for _, op := range p.ops {
			line := op + " " + p.path
			var r reply
			if op == "RETR" {
				var data []byte
				data, r = rc.retr(p.path)
				if len(data) > 0 {
					t.Errorf("%s: got %d bytes of data", printable(line), len(data))
				}
			} else {
				r = rc.cmd(line)
			}
			if r.code < 500 {
				t.Errorf("%s: %v, want 5xx", printable(line), r)
			}
			if op == "RNFR" && r.code == 350 {
				rc.cmd("RNTO stolen.txt")
			}
			if op == "CWD" && r.code < 300 {
				rc.cmd("CWD /")
			}
		}
	}

	// Listings of symlinks pointing out must not show what is out there.
	for _, cmd := range []string{"LIST dlink", "NLST dlink", "MLSD dlink", "LIST siblink", "MLSD siblink", "LIST flink", "STAT dlink", "STAT flink", "MLST flink"} {
		var out string
		var r reply
		if strings.HasPrefix(cmd, "STAT") || strings.HasPrefix(cmd, "MLST") {
			r = rc.cmd(cmd)
			out = r.text
		} else {
			out, r = rc.list(cmd)
		}
		if strings.Contains(out, "secret.txt") || strings.Contains(out, "7777") {
			t.Errorf("%s reveals the target of a symlink: %v\n%s", cmd, r, out)
		}
	}

	// Writes through hostile paths: refused, nothing created anywhere else.
	for _, p := range []string{
		"../bobby/owned.txt",
		"/../bobby/owned.txt",
		"../../../outside/owned.txt",
		"dlink/owned.txt",
		"siblink/owned.txt",
		f.s.outside + "/owned.txt",
		"owned\x00.txt",
		strings.Repeat("b", 1000),
		"owned-\xff\xfe.txt",
	} {
		for _, verb := range []string{"STOR", "APPE"} {
			if r := rc.store(verb, p, []byte("owned\r\n")); r.code < 500 {
				t.Errorf("%s %s: %v, want 5xx", verb, printable(p), r)
			}
		}
		if r := rc.cmd("MKD " + p + "-dir"); r.code < 500 {
			t.Errorf("MKD %s: %v, want 5xx", printable(p+"-dir"), r)
		}
	}
	// RNTO to a hostile target.
	for _, p := range []string{"../bobby/moved.txt", "dlink/moved.txt", "siblink/moved.txt", "moved-\xff.txt"} {
		if r := rc.cmd("RNFR own.txt"); r.code != 350 {
			t.Fatalf("RNFR own.txt: %v", r)
		}
		if r := rc.cmd("RNTO " + p); r.code < 500 {
			t.Errorf("RNTO %s: %v, want 5xx", printable(p), r)
		}
	}
	// Writing through a symlink to a file must not write the target.
	rc.store("APPE", "flink", []byte("appended\r\n"))
	rc.expect("REST 3", 350)
	rc.store("STOR", "flink", []byte("overwritten\r\n"))

	f.checkNoLeak(t, rc)
	if d := diffTrees(before, f.snapshot(t)); len(d) > 0 {
		t.Errorf("hostile commands changed files outside bob's home:\n%s", strings.Join(d, "\n"))
	}
	if got := mustRead(t, f.secret); len(got) != secretSize {
		t.Errorf("outside secret changed: %d bytes", len(got))
	}
	names := dirNames(t, s.path(f.bob, "."))
	for _, n := range names {
		if strings.Contains(n, "owned") || strings.Contains(n, "moved") || strings.Contains(n, "stolen") {
			t.Errorf("a hostile write created %q in bob's home", n)
		}
	}

	// The session survived all of that.
	rc.expect("NOOP", 200)
	if got, r := rc.retr("own.txt"); r.code != 226 || string(got) != "bob's own file\r\n" {
		t.Errorf("RETR own.txt after the probes: %v %q", r, got)
	}
}

// TestJailOverlongLine: a 5000-byte name exceeds the command line limit;
// the server refuses (5xx or closing the connection) and keeps serving.
func TestJailOverlongLine(t *testing.T) {
	t.Parallel()
	f := newJailFixture(t)
	before := f.snapshot(t)
	for _, verb := range []string{"RETR", "STOR", "HASH", "MKD"} {
		rc := f.s.rawLogin(f.bob)
		r, err := rc.try(verb + " " + strings.Repeat("x", 5000))
		switch {
		case err != nil:
			t.Logf("%s <5000 bytes>: connection closed (%v)", verb, err)
		case r.code < 500:
			t.Errorf("%s <5000 bytes>: %v, want 5xx or a closed connection", verb, r)
		}
		f.checkNoLeak(t, rc)
	}
	rc := f.s.rawLogin(f.bob)
	rc.expect("NOOP", 200)
	if d := diffTrees(before, f.snapshot(t)); len(d) > 0 {
		t.Errorf("overlong commands changed files outside bob's home: %v", d)
	}
}

// TestJailSiblingHash: HASH of a sibling user's file through every
// spelling is refused, for the sibling whose name extends the user's.
func TestJailSiblingHash(t *testing.T) {
	t.Parallel()
	f := newJailFixture(t)
	rc := f.s.rawLogin(f.bob)
	for _, p := range []string{"../bobby/secret.txt", "/../bobby/secret.txt", "../../uploads/bobby/secret.txt", "siblink/secret.txt", f.bobbySecret} {
		for _, cmd := range []string{"HASH", "XSHA256", "XSHA1", "XMD5", "XCRC"} {
			r := rc.cmd(cmd + " " + p)
			if r.code < 500 {
				t.Errorf("%s %s: %v, want 5xx", cmd, p, r)
			}
			if sha256Re.MatchString(r.text) {
				t.Errorf("%s %s revealed a digest: %v", cmd, p, r)
			}
		}
	}
	f.checkNoLeak(t, rc)
}

// TestRoles: readers cannot write, uploaders see only their home, admins
// see everything (but still not through symlinks out of the root).
func TestRoles(t *testing.T) {
	t.Parallel()
	f := newJailFixture(t)
	s := f.s

	t.Run("Reader", func(t *testing.T) {
		s := s.with(t)
		before := treeState(t, s.cfg.Root)
		rc := s.rawLogin(f.rita)
		if got, r := rc.retr("readme.txt"); r.code != 226 || string(got) != "read me\r\n" {
			t.Errorf("reader RETR: %v %q", r, got)
		}
		if out, r := rc.list("NLST"); r.code != 226 || !strings.Contains(out, "readme.txt") {
			t.Errorf("reader NLST: %v %q", r, out)
		}
		for _, verb := range []string{"STOR", "APPE"} {
			for _, name := range []string{"new.txt", "readme.txt"} {
				if r := rc.store(verb, name, []byte("x")); r.code < 500 {
					t.Errorf("reader %s %s: %v, want 5xx", verb, name, r)
				}
			}
		}
		rc.expect("REST 2", 350)
		if r := rc.store("STOR", "readme.txt", []byte("x")); r.code < 500 {
			t.Errorf("reader REST+STOR: %v, want 5xx", r)
		}
		for _, cmd := range []string{"DELE readme.txt", "MKD newdir", "RMD /", "SITE CHMOD 777 readme.txt", "MFMT 20000101000000 readme.txt"} {
			if r := rc.cmd(cmd); r.code < 500 {
				t.Errorf("reader %s: %v, want 5xx", cmd, r)
			}
		}
		// ftpserverlib answers RNFR after a mere Stat, so the driver can
		// refuse a reader's rename only at RNTO; it must.
		if r := rc.cmd("RNFR readme.txt"); r.code == 350 {
			t.Logf("reader RNFR readme.txt: %v (refusal expected at RNTO)", r)
			if r := rc.cmd("RNTO renamed.txt"); r.code < 500 {
				t.Errorf("reader RNTO: %v, want 5xx", r)
			}
		} else if r.code < 500 {
			t.Errorf("reader RNFR: %v, want 350 or 5xx", r)
		}
		if d := diffTrees(before, treeState(t, s.cfg.Root)); len(d) > 0 {
			t.Errorf("reader changed the tree: %v", d)
		}
	})

	t.Run("Uploader", func(t *testing.T) {
		s := s.with(t)
		c := s.login(f.bobby)
		names, err := c.NameList("/")
		if err != nil {
			t.Fatal(err)
		}
		names = cleanNames(names)
		if !slices.Equal(names, []string{"secret.txt"}) {
			t.Errorf("uploader sees %q at /, want only its own secret.txt", names)
		}
		if err := c.ChangeDir(".."); err == nil {
			if dir, _ := c.CurrentDir(); dir != "/" {
				t.Errorf("CWD .. moved the uploader to %q", dir)
			}
		}
		if names, _ := c.NameList("/"); !slices.Equal(cleanNames(names), []string{"secret.txt"}) {
			t.Errorf("after CWD .. the uploader sees %q", names)
		}
		if _, err := c.Retr("/uploads/bob/own.txt"); err == nil || ftpCode(err) < 500 {
			t.Errorf("uploader RETR of another home via the real layout: %v, want 5xx", err)
		}
		// Full read-write inside the home.
		if err := c.MakeDir("d"); err != nil {
			t.Fatal(err)
		}
		data := payload(10_000, 70)
		stor(t, c, "d/a.bin", data)
		if err := c.Rename("d/a.bin", "d/b.bin"); err != nil {
			t.Fatal(err)
		}
		stor(t, c, "d/b.bin", data[:100]) // overwrite
		if got := mustRead(t, s.path(f.bobby, "d/b.bin")); !bytes.Equal(got, data[:100]) {
			t.Errorf("overwrite: %d bytes", len(got))
		}
		if err := c.Delete("d/b.bin"); err != nil {
			t.Fatal(err)
		}
		if err := c.RemoveDir("d"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(s.path(f.bobby, "d")); !os.IsNotExist(err) {
			t.Errorf("RMD d: still there (%v)", err)
		}
	})

	t.Run("Admin", func(t *testing.T) {
		s := s.with(t)
		c := s.login(f.adm)
		names, err := c.NameList("/")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"uploads", "top-secret.txt"} {
			if !slices.Contains(cleanNames(names), want) {
				t.Errorf("admin does not see %q at / (got %q)", want, names)
			}
		}
		if got := retr(t, c, "/uploads/bobby/secret.txt"); string(got) != "bobby's secret\r\n" {
			t.Errorf("admin RETR of a user's file: %q", got)
		}
		if got := retr(t, c, "uploads/shared/readme.txt"); string(got) != "read me\r\n" {
			t.Errorf("admin RETR of the reader's file: %q", got)
		}
		stor(t, c, "/admin.bin", []byte("admin\r\n"))
		checkOwnership(t, filepath.Join(s.cfg.Root, "admin.bin"), 0o664)
		// The admin's jail is the root: symlinks out of it stay closed.
		rc := s.rawLogin(f.adm)
		for _, p := range []string{"root-flink", "uploads/rel-out/secret.txt", "../outside/secret.txt", "uploads/bob/flink"} {
			if data, r := rc.retr(p); r.code < 500 || len(data) > 0 {
				t.Errorf("admin RETR %s: %v (%d bytes), want 5xx", p, r, len(data))
			}
			if r := rc.cmd("SIZE " + p); r.code < 500 {
				t.Errorf("admin SIZE %s: %v, want 5xx", p, r)
			}
		}
		f.checkNoLeak(t, rc)
	})

	t.Run("ConcurrentUsersStayApart", func(t *testing.T) {
		s := s.with(t)
		// bob and bobby upload the same name at once; each gets his own.
		cb, cbb := s.login(f.bob), s.login(f.bobby)
		db, dbb := payload(200_000, 71), payload(200_000, 72)
		errs := make(chan error, 2)
		go func() { errs <- cb.Stor("same.bin", bytes.NewReader(db)) }()
		go func() { errs <- cbb.Stor("same.bin", bytes.NewReader(dbb)) }()
		for range 2 {
			select {
			case err := <-errs:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(ioTimeout):
				t.Fatal("uploads did not finish")
			}
		}
		if !bytes.Equal(mustRead(t, s.path(f.bob, "same.bin")), db) || !bytes.Equal(mustRead(t, s.path(f.bobby, "same.bin")), dbb) {
			t.Errorf("concurrent uploads of two users mixed up")
		}
	})
}

// cleanNames drops "." and ".." and any leading directory from NLST names.
func cleanNames(names []string) []string {
	var out []string
	for _, n := range names {
		n = filepath.Base(n)
		if n != "." && n != ".." {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
