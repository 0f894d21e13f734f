package integration

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBinaryIsDefault: a client that never sends TYPE I still gets
// byte-exact transfers, SIZE and REST (ftpserverlib's default is ASCII).
func TestBinaryIsDefault(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	admin := s.cfg.user("admin1")
	rc := s.rawLogin(admin)
	data := payload(300_000, 1)

	if r := rc.store("STOR", "crlf.bin", data); r.code != 226 {
		t.Fatalf("STOR without TYPE: %v", r)
	}
	if disk := mustRead(t, s.path(admin, "crlf.bin")); !bytes.Equal(disk, data) {
		t.Fatalf("file on disk differs from the upload: %d bytes, want %d (sha %s, want %s)",
			len(disk), len(data), sha256Hex(disk), sha256Hex(data))
	}
	got, r := rc.retr("crlf.bin")
	if r.code != 226 || !bytes.Equal(got, data) {
		t.Fatalf("RETR without TYPE: reply %v, %d bytes (want %d), equal=%t", r, len(got), len(data), bytes.Equal(got, data))
	}
	if r := rc.cmd("SIZE crlf.bin"); r.code != 213 || r.text != "213 "+strconv.Itoa(len(data)) {
		t.Errorf("SIZE without TYPE: %v, want 213 %d", r, len(data))
	}
	rc.expect("REST 1000", 350)
	got, r = rc.retr("crlf.bin")
	if r.code != 226 || !bytes.Equal(got, data[1000:]) {
		t.Errorf("REST 1000 + RETR without TYPE: reply %v, %d bytes, want %d", r, len(got), len(data)-1000)
	}

	// The same through jlaffaye (which sends TYPE I).
	c := s.login(admin)
	data2 := payload(70_000, 2)
	stor(t, c, "crlf2.bin", data2)
	if got := retr(t, c, "crlf2.bin"); !bytes.Equal(got, data2) {
		t.Errorf("jlaffaye round trip differs")
	}
	if got := retr(t, c, "crlf.bin"); !bytes.Equal(got, data) {
		t.Errorf("jlaffaye download of the raw upload differs")
	}
}

// TestAtomicUploadAndPermissions: during an upload the final name shows
// the old content (or nothing), listings show no part file; afterwards the
// file has the configured group and mode whatever the umask, and MKD makes
// setgid directories with dir_mode.
func TestAtomicUploadAndPermissions(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) {
		c.Umask = "077"
		c.addUser("admin1", "admin", "")
		c.addUser("up1", "uploader", "")
	})
	up := s.cfg.user("up1")
	home := s.path(up, ".")
	watcher := s.login(up)

	old := payload(1000, 10)
	stor(t, watcher, "movie.bin", old)
	checkOwnership(t, s.path(up, "movie.bin"), 0o664)

	cases := []struct {
		name   string
		before []byte // nil: the file does not exist yet
	}{
		{"new.bin", nil},
		{"movie.bin", old},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := s.with(t)
			data := payload(6<<20, 11)
			upload := startGatedUpload(t, s, up, tc.name, data, 2<<20, 0)
			part, _ := waitPart(t, home, 1, "movie.bin", "new.bin")
			if !strings.HasPrefix(part, ".") {
				t.Errorf("part file %q is not hidden", part)
			}

			// The final name is untouched while the upload runs.
			disk, err := os.ReadFile(s.path(up, tc.name))
			switch {
			case tc.before == nil && !errors.Is(err, fs.ErrNotExist):
				t.Errorf("final name exists during the upload: %d bytes, err %v", len(disk), err)
			case tc.before != nil && !bytes.Equal(disk, tc.before):
				t.Errorf("final name changed during the upload: %d bytes, err %v", len(disk), err)
			}
			if tc.before != nil {
				if got := retr(t, watcher, tc.name); !bytes.Equal(got, tc.before) {
					t.Errorf("RETR during the upload returned %d bytes, want the old %d", len(got), len(tc.before))
				}
			} else if _, err := watcher.Retr(tc.name); err == nil || ftpCode(err) < 500 {
				t.Errorf("RETR of an unfinished upload: err %v, want 5xx", err)
			}
			hidden := []string{part}
			if tc.before == nil {
				hidden = append(hidden, tc.name)
			}
			checkListings(t, s, up, "", hidden, "movie.bin")

			if err := upload.result(t, ioTimeout); err != nil {
				t.Fatalf("STOR %s: %v", tc.name, err)
			}
			if disk := mustRead(t, s.path(up, tc.name)); !bytes.Equal(disk, data) {
				t.Errorf("final file differs: %d bytes, want %d", len(disk), len(data))
			}
			checkOwnership(t, s.path(up, tc.name), 0o664)
		})
	}
	if names := dirNames(t, home); !slices.Equal(names, []string{"movie.bin", "new.bin"}) {
		t.Errorf("home holds %q after the uploads, want only the two final files", names)
	}

	t.Run("MKD", func(t *testing.T) {
		s := s.with(t)
		c := s.login(up)
		if err := c.MakeDir("sub"); err != nil {
			t.Fatal(err)
		}
		if err := c.MakeDir("sub/deeper"); err != nil {
			t.Fatal(err)
		}
		checkOwnership(t, s.path(up, "sub"), 0o2775)
		checkOwnership(t, s.path(up, "sub/deeper"), 0o2775)
		mark := s.logs.len()
		data := payload(5000, 12)
		stor(t, c, "sub/deeper/f.txt", data)
		checkOwnership(t, s.path(up, "sub/deeper/f.txt"), 0o664)
		if err := c.Rename("sub/deeper/f.txt", "sub/g.txt"); err != nil {
			t.Fatalf("rename: %v", err)
		}
		checkOwnership(t, s.path(up, "sub/g.txt"), 0o664)

		l := s.waitTransferLog(mark, "f.txt")
		// Exactly one transfer line: the rename and later commands add none.
		count := 0
		for _, line := range s.logs.snapshot()[mark:] {
			if l := parseLogLine(line); l.msg() == "transfer" && strings.HasSuffix(l.get("path"), "f.txt") {
				count++
			}
		}
		if count != 1 {
			t.Errorf("%d transfer log lines for one upload, want 1", count)
		}
		for k, want := range map[string]string{"user": "up1", "result": "ok", "bytes": strconv.Itoa(len(data))} {
			if got := l.get(k); got != want {
				t.Errorf("transfer log %s=%q, want %q: %s", k, got, want, l.raw)
			}
		}
		if len(l.dups) > 0 {
			t.Errorf("transfer log line repeats keys %q: %s", l.dups, l.raw)
		}
		for _, k := range []string{"remote", "dur", "path"} {
			if l.get(k) == "" {
				t.Errorf("transfer log has no %s: %s", k, l.raw)
			}
		}
	})

	t.Run("AdminAtRoot", func(t *testing.T) {
		s := s.with(t)
		c := s.login(s.cfg.user("admin1"))
		if err := c.MakeDir("toplevel"); err != nil {
			t.Fatal(err)
		}
		stor(t, c, "toplevel/a.bin", payload(100, 13))
		checkOwnership(t, s.cfg.Root+"/toplevel", 0o2775)
		checkOwnership(t, s.cfg.Root+"/toplevel/a.bin", 0o664)
	})
}

// checkListings fails if any listing of dir ("" = the current directory)
// by u shows one of hidden or misses one of want.
func checkListings(t *testing.T, s *server, u *testUser, dir string, hidden []string, want ...string) {
	t.Helper()
	s = s.with(t)
	rc := s.rawLogin(u)
	arg := ""
	if dir != "" {
		arg = " " + dir
	}
	for _, cmd := range []string{"NLST" + arg, "LIST" + arg, "LIST -a" + arg, "MLSD" + arg, "STAT " + cmp.Or(dir, ".")} {
		var out string
		if strings.HasPrefix(cmd, "STAT") {
			r := rc.cmd(cmd)
			if r.code != 212 && r.code != 213 {
				t.Errorf("%s: %v", cmd, r)
			}
			out = r.text
		} else {
			var r reply
			out, r = rc.list(cmd)
			if r.code != 226 {
				t.Errorf("%s: %v", cmd, r)
				continue
			}
		}
		for _, h := range hidden {
			if strings.Contains(out, h) {
				t.Errorf("%s shows %q:\n%s", cmd, h, out)
			}
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s does not show %q:\n%s", cmd, w, out)
			}
		}
	}
	rc.cmd("QUIT")
}

// abortData closes a data connection with a TCP reset, as a crashing
// client or a broken network does.
func abortData(t *testing.T, c net.Conn) {
	t.Helper()
	if dc, ok := c.(deadlineConn); ok {
		c = dc.Conn
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		t.Fatalf("data connection is a %T", c)
	}
	_ = tc.SetLinger(0)
	_ = tc.Close()
}

// interruptUpload starts a STOR of data to name as u, sends the first sent
// bytes, waits for the part file and resets the data connection. It
// returns the session, the part's name and its size, checked to be a
// prefix of data, and that the final name does not exist.
func interruptUpload(t *testing.T, s *server, u *testUser, name string, data []byte, sent int) (*rawConn, string, int64) {
	t.Helper()
	s = s.with(t)
	dir := filepath.Dir(s.path(u, name))
	known := dirNames(t, dir)
	rc := s.rawLogin(u)
	conn := rc.epsv()
	rc.expect("STOR "+name, 150)
	if _, err := conn.Write(data[:sent]); err != nil {
		t.Fatalf("write: %v", err)
	}
	part, _ := waitPart(t, dir, 1, known...)
	abortData(t, conn)
	if r, err := rc.read(); err != nil || r.code < 400 {
		t.Fatalf("reply to the interrupted STOR: %v %v, want 4xx/5xx", r, err)
	}
	if _, err := os.Stat(s.path(u, name)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("final name exists after an interrupted upload: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, part))
	if err != nil {
		t.Fatalf("part %q was not kept: %v", part, err)
	}
	n := fi.Size()
	if n <= 0 || n > int64(sent) {
		t.Fatalf("part size %d, want 1..%d", n, sent)
	}
	if !bytes.Equal(mustRead(t, filepath.Join(dir, part)), data[:n]) {
		t.Fatalf("part content is not the prefix of the upload")
	}
	return rc, part, n
}

// TestInterruptedUploadResumes: a STOR cut by a reset keeps its part, SIZE
// reports the part's size, and REST+STOR or APPE by the same user finish
// the file byte-exact.
func TestInterruptedUploadResumes(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) { c.addUser("up1", "uploader", "") })
	up := s.cfg.user("up1")
	data := payload(4<<20, 20)
	const sent = 2 << 20

	for _, mode := range []string{"rest-stor", "appe"} {
		t.Run(mode, func(t *testing.T) {
			s := s.with(t)
			s.mkdirGroup(up.home(s.cfg) + "/" + mode)
			dir := s.path(up, mode)
			name := mode + "/big.bin"
			mark := s.logs.len()

			rc, part, n := interruptUpload(t, s, up, name, data, sent)
			if l := s.waitTransferLog(mark, name); l.get("result") == "ok" {
				t.Errorf("interrupted transfer logged as ok: %s", l.raw)
			}
			if r := rc.cmd("SIZE " + name); r.code != 213 || r.text != fmt.Sprintf("213 %d", n) {
				t.Fatalf("SIZE of the interrupted upload: %v, want 213 %d", r, n)
			}
			checkListings(t, s, up, mode, []string{part, "big.bin"})

			switch mode {
			case "rest-stor":
				conn := rc.epsv()
				rc.expect(fmt.Sprintf("REST %d", n), 350)
				rc.expect("STOR "+name, 150)
				if _, err := conn.Write(data[n:]); err != nil {
					t.Fatal(err)
				}
				conn.Close()
				if r, err := rc.read(); err != nil || r.code != 226 {
					t.Fatalf("resumed STOR: %v %v", r, err)
				}
			case "appe":
				c := s.login(up)
				size, err := c.FileSize(name)
				if err != nil || size != n {
					t.Fatalf("SIZE via jlaffaye: %d, %v; want %d", size, err, n)
				}
				if err := c.Append(name, bytes.NewReader(data[size:])); err != nil {
					t.Fatalf("APPE: %v", err)
				}
			}
			if got := mustRead(t, s.path(up, name)); !bytes.Equal(got, data) {
				t.Fatalf("resumed file differs: %d bytes, want %d", len(got), len(data))
			}
			checkOwnership(t, s.path(up, name), 0o664)
			if names := dirNames(t, dir); !slices.Equal(names, []string{"big.bin"}) {
				t.Errorf("directory holds %q after the resume, want only big.bin", names)
			}
			got, r := rc.retr(name)
			if r.code != 226 || !bytes.Equal(got, data) {
				t.Errorf("download of the resumed file: %v, %d bytes", r, len(got))
			}
		})
	}
}

// TestAbortLeavesNoFinalName: ABOR during a STOR leaves nothing under the
// final name, shows no part in listings, and logs result=aborted.
func TestAbortLeavesNoFinalName(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) { c.addUser("up1", "uploader", "") })
	up := s.cfg.user("up1")
	home := s.path(up, ".")
	mark := s.logs.len()

	rc := s.rawLogin(up)
	conn := rc.epsv()
	rc.expect("STOR aborted.bin", 150)
	if _, err := conn.Write(payload(1<<20, 30)); err != nil {
		t.Fatal(err)
	}
	part, _ := waitPart(t, home, 1)
	if err := rc.send("ABOR"); err != nil {
		t.Fatal(err)
	}
	var codes []int
	for {
		r, err := rc.read()
		if err != nil {
			t.Fatalf("replies to ABOR %v: %v", codes, err)
		}
		codes = append(codes, r.code)
		if r.code == 226 || r.code == 225 || len(codes) == 3 {
			break
		}
	}
	conn.Close()
	if last := codes[len(codes)-1]; last != 226 && last != 225 {
		t.Errorf("replies to ABOR: %v, want [426] 226", codes)
	}
	if _, err := os.Stat(s.path(up, "aborted.bin")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("final name exists after ABOR: %v", err)
	}
	if _, r := rc.retr("aborted.bin"); r.code < 500 {
		t.Errorf("RETR of an aborted upload: %v, want 5xx", r)
	}
	rc.expect("NOOP", 200)
	checkListings(t, s, up, "", []string{part, "aborted.bin"})
	if l := s.waitTransferLog(mark, "aborted.bin"); l.get("result") != "aborted" {
		t.Errorf("transfer log result=%q, want aborted: %s", l.get("result"), l.raw)
	}
}

// TestSiteDisabled: SITE is off, in particular CHOWN, RMDIR and SYMLINK.
func TestSiteDisabled(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	admin := s.cfg.user("admin1")
	c := s.login(admin)
	if err := c.MakeDir("d"); err != nil {
		t.Fatal(err)
	}
	stor(t, c, "d/x.txt", []byte("keep me\r\n"))
	stor(t, c, "f.txt", []byte("file\r\n"))
	before := treeState(t, s.cfg.Root)

	rc := s.rawLogin(admin)
	for _, cmd := range []string{
		"SITE CHOWN root f.txt",
		"SITE CHOWN 0:0 f.txt",
		"SITE CHMOD 777 f.txt",
		"SITE RMDIR d",
		"SITE SYMLINK /etc/passwd passwd-link",
		"SITE HELP",
	} {
		if r := rc.cmd(cmd); r.code < 500 {
			t.Errorf("%s: %v, want 5xx", cmd, r)
		}
	}
	if d := diffTrees(before, treeState(t, s.cfg.Root)); len(d) > 0 {
		t.Errorf("SITE commands changed the tree: %v", d)
	}
}

func portArg(ip net.IP, port int) string {
	v := ip.To4()
	return fmt.Sprintf("%d,%d,%d,%d,%d,%d", v[0], v[1], v[2], v[3], port/256, port%256)
}

// TestActiveMode: PORT/EPRT are refused with active_mode=false; with
// active_mode=true they are still refused towards a third host, and work
// towards the client.
func TestActiveMode(t *testing.T) {
	t.Parallel()
	t.Run("Off", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, nil)
		rc := s.rawLogin(s.cfg.user("admin1"))
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		for _, cmd := range []string{
			"PORT " + portArg(net.ParseIP("127.0.0.1"), port),
			fmt.Sprintf("EPRT |1|127.0.0.1|%d|", port),
		} {
			if r := rc.cmd(cmd); r.code < 400 {
				t.Errorf("%s with active_mode=false: %v, want refusal", cmd, r)
			} else {
				t.Logf("%s with active_mode=false: %v", cmd, r)
			}
		}
	})
	t.Run("On", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, func(c *testConfig) { c.ActiveMode = true })
		admin := s.cfg.user("admin1")
		data := payload(50_000, 40)
		mustWrite(t, s.path(admin, "a.bin"), data)
		rc := s.rawLogin(admin)
		for _, cmd := range []string{
			"PORT 10,1,2,3,4,5",
			"EPRT |1|10.1.2.3|1029|",
			"PORT 127,0,0,2,4,5",
		} {
			if r := rc.cmd(cmd); r.code < 400 {
				t.Errorf("%s (third host): %v, want refusal", cmd, r)
			} else {
				t.Logf("%s (third host): %v", cmd, r)
			}
		}

		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		rc.expect("PORT "+portArg(net.ParseIP("127.0.0.1"), l.Addr().(*net.TCPAddr).Port), 200)
		if r := rc.cmd("RETR a.bin"); r.code != 150 && r.code != 125 {
			t.Fatalf("RETR over PORT: %v", r)
		}
		_ = l.(*net.TCPListener).SetDeadline(time.Now().Add(ioTimeout))
		dc, err := l.Accept()
		if err != nil {
			t.Fatalf("server did not connect back: %v", err)
		}
		got, err := io.ReadAll(deadlineConn{dc})
		dc.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("active download: %d bytes, err %v", len(got), err)
		}
		if r, err := rc.read(); err != nil || r.code != 226 {
			t.Errorf("active RETR final reply: %v %v", r, err)
		}
	})
}

var sha256Re = regexp.MustCompile(`\b[0-9a-fA-F]{64}\b`)

// TestHashSHA256: HASH answers with the SHA-256 of the file.
func TestHashSHA256(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	admin := s.cfg.user("admin1")
	data := payload(123_456, 50)
	c := s.login(admin)
	stor(t, c, "h.bin", data)

	rc := s.rawLogin(admin)
	if r := rc.cmd("FEAT"); !strings.Contains(r.text, "SHA-256") {
		t.Errorf("FEAT does not offer SHA-256 HASH:\n%s", r.text)
	}
	r := rc.expect("HASH h.bin", 213)
	if got := sha256Re.FindString(r.text); !strings.EqualFold(got, sha256Hex(data)) {
		t.Errorf("HASH h.bin: %q, want SHA-256 %s", r.text, sha256Hex(data))
	}
	if !strings.Contains(r.text, "SHA-256") {
		t.Errorf("HASH reply does not name SHA-256: %q", r.text)
	}
	if r := rc.cmd("HASH missing.bin"); r.code < 500 {
		t.Errorf("HASH of a missing file: %v, want 5xx", r)
	}
}

// TestPassiveForeignIP: a data connection from another address than the
// control connection never receives the data, even on a retried RETR.
func TestPassiveForeignIP(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	admin := s.cfg.user("admin1")
	data := payload(64<<10, 60)
	mustWrite(t, s.path(admin, "f.bin"), data)
	host, _, _ := net.SplitHostPort(s.addr)

	// attacker connects to port from 127.0.0.2 and collects whatever arrives.
	attacker := func(port string) (stop func() []byte) {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		c, err := d.Dial("tcp", net.JoinHostPort(host, port))
		got := make(chan []byte, 1)
		if err != nil {
			got <- nil // refused at connect: fine
		} else {
			go func() {
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
				b, _ := io.ReadAll(c)
				got <- b
			}()
		}
		return func() []byte {
			if c != nil {
				c.Close()
			}
			return <-got
		}
	}

	t.Run("AttackerFirst", func(t *testing.T) {
		s := s.with(t)
		rc := s.rawLogin(admin)
		port := rc.epsvPort()
		stop := attacker(port)
		d := net.Dialer{Timeout: 5 * time.Second}
		dc, err := d.Dial("tcp", net.JoinHostPort(host, port))
		if err != nil {
			t.Fatal(err)
		}
		defer dc.Close()
		r := rc.cmd("RETR f.bin")
		if r.code == 150 || r.code == 125 {
			got, _ := io.ReadAll(deadlineConn{dc})
			if !bytes.Equal(got, data) {
				t.Errorf("legitimate data connection got %d bytes, want %d", len(got), len(data))
			}
			if r, err := rc.read(); err != nil || r.code != 226 {
				t.Errorf("final reply: %v %v", r, err)
			}
		} else {
			t.Errorf("RETR with a legitimate data connection: %v", r)
		}
		if b := stop(); len(b) > 0 {
			t.Errorf("foreign address received %d bytes of file data", len(b))
		}
	})

	// retryRETR sends RETR twice without a new EPSV (the second reuses
	// whatever passive connection the server kept) and fails on success.
	retryRETR := func(t *testing.T, rc *rawConn) {
		start := time.Now()
		for i := range 2 {
			if err := rc.send("RETR f.bin"); err != nil {
				t.Fatal(err)
			}
			_ = rc.conn.SetReadDeadline(time.Now().Add(90 * time.Second))
			for {
				line, err := rc.r.ReadString('\n')
				if err != nil {
					t.Fatalf("RETR #%d: %v", i+1, err)
				}
				if len(line) >= 4 && line[3] == ' ' && line[0] != '1' {
					t.Logf("RETR #%d with only a foreign data connection: %s after %v", i+1, strings.TrimSpace(line), time.Since(start).Round(time.Millisecond))
					if line[0] == '2' {
						t.Errorf("RETR #%d succeeded over a foreign data connection: %s", i+1, strings.TrimSpace(line))
					}
					break
				}
			}
		}
	}

	t.Run("AttackerOnlyThenRetry", func(t *testing.T) {
		s := s.with(t)
		rc := s.rawLogin(admin)
		port := rc.epsvPort()
		stop := attacker(port)
		retryRETR(t, rc)
		if b := stop(); len(b) > 0 {
			t.Errorf("foreign address received %d bytes of file data", len(b))
		}
	})

	// The foreign address holds a logged-in session of its own, so a
	// listener filter on "has a session" lets its connection through.
	t.Run("AttackerWithSessionThenRetry", func(t *testing.T) {
		s := s.with(t)
		other, err := s.dialFTP(clientOpts{local: "127.0.0.2"})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Quit()
		if err := other.Login(admin.Name, admin.Password); err != nil {
			t.Fatal(err)
		}
		rc := s.rawLogin(admin)
		port := rc.epsvPort()
		stop := attacker(port)
		retryRETR(t, rc)
		if b := stop(); len(b) > 0 {
			t.Errorf("foreign address (with a session of its own) received %d bytes of file data", len(b))
		}
	})
}

// TestPartsSurviveRestartAndExpire: a part survives a crash and resumes
// after the restart; a part untouched for longer than resume_ttl is removed
// at start-up and no longer offered for resume.
func TestPartsSurviveRestartAndExpire(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) { c.addUser("up1", "uploader", "") })
	up := s.cfg.user("up1")
	home := s.path(up, ".")
	fresh, stale := payload(2<<20, 400), payload(2<<20, 401)
	_, _, n := interruptUpload(t, s, up, "fresh.bin", fresh, 1<<20)
	_, stalePart, _ := interruptUpload(t, s, up, "stale.bin", stale, 1<<20)

	// A crash, not a clean stop: parts and their records must survive it.
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	s.waitExit(exitTimeout)
	old := time.Now().Add(-48 * time.Hour) // resume_ttl is 24h
	if err := os.Chtimes(filepath.Join(home, stalePart), old, old); err != nil {
		t.Fatal(err)
	}
	s = s.restart()

	deadline := time.Now().Add(logTimeout)
	for {
		if _, err := os.Stat(filepath.Join(home, stalePart)); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("expired part %s still there %v after the restart", stalePart, logTimeout)
		}
		time.Sleep(50 * time.Millisecond) // poll interval of a bounded poll
	}
	rc := s.rawLogin(up)
	if r := rc.cmd("SIZE stale.bin"); r.code < 500 {
		t.Errorf("SIZE of an expired upload: %v, want 5xx", r)
	}
	if r := rc.cmd("SIZE fresh.bin"); r.text != fmt.Sprintf("213 %d", n) {
		t.Fatalf("SIZE of an interrupted upload after a restart: %v, want 213 %d", r, n)
	}
	conn := rc.epsv()
	rc.expect(fmt.Sprintf("REST %d", n), 350)
	rc.expect("STOR fresh.bin", 150)
	if _, err := conn.Write(fresh[n:]); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if r, err := rc.read(); err != nil || r.code != 226 {
		t.Fatalf("resumed STOR after a restart: %v %v", r, err)
	}
	checkUpload(t, s, up, "fresh.bin", fresh)
	if names := dirNames(t, home); !slices.Equal(names, []string{"fresh.bin"}) {
		t.Errorf("home holds %q, want only fresh.bin", names)
	}
}

// TestIPv6: the server listens on ::1 and transfers over EPSV.
func TestIPv6(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) { c.Listen = "[::1]:0" })
	admin := s.cfg.user("admin1")
	c := s.login(admin)
	data := payload(100_000, 500)
	stor(t, c, "v6.bin", data)
	if got := retr(t, c, "v6.bin"); !bytes.Equal(got, data) {
		t.Errorf("IPv6 round trip differs")
	}
	checkUpload(t, s, admin, "v6.bin", data)
}

// TestPassivePortReused: a data connection that arrived for a transfer the
// server then refused must not cost the next transfer its own. With two
// passive ports an EPSV reserves the same port as the one before for the
// same address half the time, and closing the refused transfer's
// reservation (ftpserverlib releases by address) used to cancel the next
// one, whose RETR then timed out. (With a single port, the next EPSV can
// find the port still reserved while the refused transfer's connection is
// on its way: 421, which a range of one port makes likely.)
func TestPassivePortReused(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) {
		lo, _ := strconv.Atoi(strings.SplitN(freePassiveRange(t), "-", 2)[0])
		c.PassivePorts = fmt.Sprintf("%d-%d", lo, lo+1)
		c.addUser("up1", "uploader", "")
	})
	up := s.cfg.user("up1")
	mustWrite(t, s.path(up, "own.txt"), []byte("mine\n"))
	rc := s.rawLogin(up)
	for range 8 {
		if r := rc.store("STOR", "no-such-dir/x.txt", []byte("x")); r.code < 500 {
			t.Fatalf("STOR no-such-dir/x.txt: %v, want 5xx", r)
		}
		if got, r := rc.retr("own.txt"); r.code != 226 || string(got) != "mine\n" {
			t.Fatalf("RETR after a refused STOR on the same passive port: %v %q", r, got)
		}
	}
}
