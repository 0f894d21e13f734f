package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// writeLocal writes data to a fresh local file and returns its path.
func writeLocal(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	mustWrite(t, p, data)
	return p
}

// checkUpload fails unless u's file rel holds data with group and mode.
func checkUpload(t *testing.T, s *server, u *testUser, rel string, data []byte) {
	t.Helper()
	got := mustRead(t, s.path(u, rel))
	if !bytes.Equal(got, data) {
		t.Errorf("%s on disk: %d bytes (sha %s), want %d (sha %s)", rel, len(got), sha256Hex(got)[:12], len(data), sha256Hex(data)[:12])
	}
	checkOwnership(t, s.path(u, rel), 0o664)
}

func TestCurl(t *testing.T) {
	t.Parallel()
	curl := requireTool(t, "curl")

	check := func(t *testing.T, s *server, u *testUser, scheme string, extra ...string) {
		base := fmt.Sprintf("%s://127.0.0.1:%d", scheme, s.port)
		args := append([]string{"-sS", "--ftp-pasv", "--user", u.Name + ":" + u.Password}, extra...)
		data := payload(1<<20, 300)
		local := writeLocal(t, "up.bin", data)

		r := run(t, "", curl, append(args, "--ftp-create-dirs", "-T", local, base+"/curl/up.bin")...)
		if r.code != 0 {
			t.Fatalf("curl upload: %v", r)
		}
		checkUpload(t, s, u, "curl/up.bin", data)
		checkOwnership(t, s.path(u, "curl"), 0o2775)

		out := filepath.Join(t.TempDir(), "down.bin")
		if r := run(t, "", curl, append(args, "-o", out, base+"/curl/up.bin")...); r.code != 0 {
			t.Fatalf("curl download: %v", r)
		}
		if got := mustRead(t, out); !bytes.Equal(got, data) {
			t.Errorf("curl download differs: %d bytes", len(got))
		}

		// Resume: curl -C - asks SIZE, then APPE of the rest.
		data2 := payload(3<<20, 301)
		_, _, n := interruptUpload(t, s, u, "curl/resume.bin", data2, 1<<20)
		local2 := writeLocal(t, "resume.bin", data2)
		r = run(t, "", curl, append(args, "-C", "-", "-T", local2, base+"/curl/resume.bin")...)
		if r.code != 0 {
			t.Fatalf("curl resume after %d bytes: %v", n, r)
		}
		checkUpload(t, s, u, "curl/resume.bin", data2)
	}

	t.Run("Plain", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, func(c *testConfig) { c.addUser("up1", "uploader", "") })
		check(t, s, s.cfg.user("up1"), "ftp")
	})
	t.Run("ExplicitTLS", func(t *testing.T) {
		t.Parallel()
		s := startTLSServer(t, "explicit", func(c *testConfig) { c.addUser("up1", "uploader", "") })
		check(t, s, s.cfg.user("up1"), "ftp", "--ssl-reqd", "-k")
	})
	t.Run("ImplicitTLS", func(t *testing.T) {
		t.Parallel()
		s := startTLSServer(t, "implicit", func(c *testConfig) { c.addUser("up1", "uploader", "") })
		u := s.cfg.user("up1")
		base := fmt.Sprintf("ftps://127.0.0.1:%d", s.port)
		args := []string{"-sS", "-k", "--ftp-pasv", "--user", u.Name + ":" + u.Password}
		data := payload(300_000, 302)
		local := writeLocal(t, "up.bin", data)
		if r := run(t, "", curl, append(args, "-T", local, base+"/imp.bin")...); r.code != 0 {
			t.Fatalf("curl implicit upload: %v", r)
		}
		checkUpload(t, s, u, "imp.bin", data)
		out := filepath.Join(t.TempDir(), "down.bin")
		if r := run(t, "", curl, append(args, "-o", out, base+"/imp.bin")...); r.code != 0 {
			t.Fatalf("curl implicit download: %v", r)
		}
		if got := mustRead(t, out); !bytes.Equal(got, data) {
			t.Errorf("curl implicit download differs")
		}
	})
}

func TestLftp(t *testing.T) {
	t.Parallel()
	lftp := requireTool(t, "lftp")
	const common = "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 15; set net:reconnect-interval-base 1; set xfer:clobber on; "

	runLftp := func(t *testing.T, s *server, u *testUser, settings, script string) cmdResult {
		t.Helper()
		return run(t, "", lftp, "-u", u.Name+","+u.Password, "-p", strconv.Itoa(s.port),
			"-e", common+settings+script+"; bye", "127.0.0.1")
	}

	t.Run("Plain", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, func(c *testConfig) { c.addUser("up1", "uploader", "") })
		u := s.cfg.user("up1")
		const settings = "set ftp:ssl-allow no; "

		src := t.TempDir()
		files := map[string][]byte{
			"a.bin":         payload(700_000, 310),
			"tree/b.txt":    []byte("windows\r\nline endings\r\n"),
			"tree/sub/c.js": payload(5000, 311),
		}
		for rel, data := range files {
			mustWrite(t, filepath.Join(src, rel), data)
		}
		down := t.TempDir()
		r := runLftp(t, s, u, settings, fmt.Sprintf(
			"put %s -o lftp-a.bin; mirror -R --no-perms %s up; get lftp-a.bin -o %s; mirror --no-perms up %s",
			filepath.Join(src, "a.bin"), filepath.Join(src, "tree"), filepath.Join(down, "a.bin"), filepath.Join(down, "up")))
		if r.code != 0 {
			t.Fatalf("lftp: %v", r)
		}
		checkUpload(t, s, u, "lftp-a.bin", files["a.bin"])
		checkUpload(t, s, u, "up/b.txt", files["tree/b.txt"])
		checkUpload(t, s, u, "up/sub/c.js", files["tree/sub/c.js"])
		checkOwnership(t, s.path(u, "up"), 0o2775)
		checkOwnership(t, s.path(u, "up/sub"), 0o2775)
		for local, want := range map[string][]byte{
			"a.bin":       files["a.bin"],
			"up/b.txt":    files["tree/b.txt"],
			"up/sub/c.js": files["tree/sub/c.js"],
		} {
			if got := mustRead(t, filepath.Join(down, local)); !bytes.Equal(got, want) {
				t.Errorf("lftp download %s differs: %d bytes, want %d", local, len(got), len(want))
			}
		}

		t.Run("Resume", func(t *testing.T) {
			s := s.with(t)
			data := payload(3<<20, 312)
			_, _, n := interruptUpload(t, s, u, "resume.bin", data, 1<<20)
			local := writeLocal(t, "resume.bin", data)
			mark := s.logs.len()
			if r := runLftp(t, s, u, settings, "put -c "+local+" -o resume.bin"); r.code != 0 {
				t.Fatalf("lftp put -c after %d bytes: %v", n, r)
			}
			checkUpload(t, s, u, "resume.bin", data)
			// A resumed upload sends only the rest. (Match result=ok: the
			// interrupted upload's own line may arrive after the mark.)
			l, ok := s.waitLog(mark, func(l logLine) bool {
				return l.msg() == "transfer" && strings.HasSuffix(l.get("path"), "resume.bin") && l.get("result") == "ok"
			}, logTimeout)
			if !ok {
				t.Fatalf("no ok transfer log line for the resumed upload")
			}
			if l.get("bytes") != strconv.FormatInt(int64(len(data))-n, 10) &&
				l.get("bytes") != strconv.Itoa(len(data)) {
				t.Errorf("resume transfer log: %s", l.raw)
			} else if l.get("bytes") == strconv.Itoa(len(data)) {
				t.Logf("lftp re-sent the whole file instead of resuming at %d: %s", n, l.raw)
			}
		})
	})

	t.Run("ExplicitTLS", func(t *testing.T) {
		t.Parallel()
		s := startTLSServer(t, "explicit", func(c *testConfig) { c.addUser("up1", "uploader", "") })
		u := s.cfg.user("up1")
		const settings = "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:verify-certificate no; "
		data := payload(400_000, 320)
		local := writeLocal(t, "a.bin", data)
		out := filepath.Join(t.TempDir(), "back.bin")
		if r := runLftp(t, s, u, settings, fmt.Sprintf("put %s -o tls.bin; get tls.bin -o %s", local, out)); r.code != 0 {
			t.Fatalf("lftp over TLS: %v", r)
		}
		checkUpload(t, s, u, "tls.bin", data)
		if got := mustRead(t, out); !bytes.Equal(got, data) {
			t.Errorf("lftp TLS download differs")
		}
	})
}

func TestPythonFtplib(t *testing.T) {
	t.Parallel()
	py := requireTool(t, "python3")
	script, err := filepath.Abs("testdata/ftpclient.py")
	if err != nil {
		t.Fatal(err)
	}

	check := func(t *testing.T, s *server, u *testUser, tlsFlag bool) {
		data := payload(800_000, 330)
		local := writeLocal(t, "up.bin", data)
		out := filepath.Join(t.TempDir(), "down.bin")
		ops, _ := json.Marshal([][]string{
			{"put", local, "py.bin"},
			{"get", "py.bin", out},
			{"size", "py.bin"},
			{"mlsd", "."},
		})
		args := []string{script, "127.0.0.1", strconv.Itoa(s.port), u.Name, u.Password}
		if tlsFlag {
			args = append(args, "--tls")
		}
		r := run(t, "", py, append(args, string(ops))...)
		if r.code != 0 {
			t.Fatalf("ftplib: %v", r)
		}
		checkUpload(t, s, u, "py.bin", data)
		if got := mustRead(t, out); !bytes.Equal(got, data) {
			t.Errorf("ftplib download differs: %d bytes", len(got))
		}
		var sawFile, sawSize bool
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			var v struct {
				Name  string            `json:"name"`
				Facts map[string]string `json:"facts"`
				Size  *int64            `json:"size"`
			}
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Fatalf("bad script output %q: %v", line, err)
			}
			switch {
			case v.Size != nil:
				sawSize = *v.Size == int64(len(data))
			case v.Name == "py.bin":
				sawFile = v.Facts["size"] == strconv.Itoa(len(data)) && strings.EqualFold(v.Facts["type"], "file")
			case v.Name == "." || v.Name == ".." || v.Facts["type"] == "cdir" || v.Facts["type"] == "pdir":
			default:
				t.Errorf("MLSD shows unexpected entry %q %v", v.Name, v.Facts)
			}
		}
		if !sawFile || !sawSize {
			t.Errorf("MLSD/SIZE did not report py.bin with %d bytes:\n%s", len(data), r.stdout)
		}
	}

	t.Run("Plain", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, func(c *testConfig) { c.addUser("up1", "uploader", "") })
		check(t, s, s.cfg.user("up1"), false)
	})
	t.Run("ExplicitTLS", func(t *testing.T) {
		t.Parallel()
		s := startTLSServer(t, "explicit", func(c *testConfig) { c.addUser("up1", "uploader", "") })
		check(t, s, s.cfg.user("up1"), true)
	})
}
