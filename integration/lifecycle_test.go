package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestReloadAddsUser: SIGHUP picks up a new user; a running session keeps
// working; a broken config is rejected and the old one stays in force.
func TestReloadAddsUser(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	admin := s.cfg.user("admin1")
	old := s.login(admin)
	stor(t, old, "before.bin", payload(1000, 200))

	late := s.cfg.addUser("late", "uploader", "")
	if c, err := s.dialFTP(clientOpts{}); err == nil {
		if err := c.Login(late.Name, late.Password); err == nil {
			t.Errorf("user %q logged in before the reload", late.Name)
		}
		_ = c.Quit()
	}
	s.mkdirGroup(late.home(s.cfg))
	s.reload()

	c := s.login(late)
	data := payload(200_000, 201)
	stor(t, c, "late.bin", data)
	if got := retr(t, c, "late.bin"); !bytes.Equal(got, data) {
		t.Errorf("new user's round trip differs")
	}
	if got := mustRead(t, s.path(late, "late.bin")); !bytes.Equal(got, data) {
		t.Errorf("new user's upload differs on disk")
	}

	if err := old.NoOp(); err != nil {
		t.Fatalf("session from before the reload: %v", err)
	}
	data2 := payload(50_000, 202)
	stor(t, old, "after.bin", data2)
	if got := retr(t, old, "after.bin"); !bytes.Equal(got, data2) {
		t.Errorf("session from before the reload: round trip differs")
	}

	t.Run("LimitsReload", func(t *testing.T) {
		s := s.with(t)
		s.cfg.MaxConnectionsPerIP = 1
		s.reload()
		if _, greet, err := s.rawDial("127.0.0.4"); err != nil || greet.code != 220 {
			t.Fatalf("first connection from 127.0.0.4: %v %v", greet, err)
		}
		if _, greet, err := s.rawDial("127.0.0.4"); greet.code != 421 {
			t.Errorf("second connection from 127.0.0.4 after lowering the per-IP cap to 1: %v %v, want 421", greet, err)
		}
		// Sessions above the new cap are not dropped.
		if err := old.NoOp(); err != nil {
			t.Errorf("session from before the reload: %v", err)
		}
		s.cfg.MaxConnectionsPerIP = 10
		s.reload()
	})
	t.Run("BrokenConfigKeepsRunning", func(t *testing.T) {
		s := s.with(t)
		if err := os.WriteFile(s.cfgPath, []byte("[server\nthis is not toml"), 0o600); err != nil {
			t.Fatal(err)
		}
		mark := s.logs.len()
		s.signal(syscall.SIGHUP)
		l, ok := s.waitLog(mark, func(l logLine) bool {
			lv := l.get("level")
			return (lv == "ERROR" || lv == "WARN") && strings.Contains(strings.ToLower(l.raw), "reload")
		}, logTimeout)
		if !ok {
			t.Errorf("no error logged for a broken config on SIGHUP\n%s", s.logs.tail(20))
		} else {
			t.Logf("broken config: %s", l.raw)
		}
		if err := old.NoOp(); err != nil {
			t.Errorf("session broke on a failed reload: %v", err)
		}
		c := s.login(late)
		if err := c.NoOp(); err != nil {
			t.Errorf("login after a failed reload: %v", err)
		}
		s.writeConfig() // leave a good config behind
	})
}

// TestGracefulStop: SIGTERM stops accepting at once, lets the running
// upload finish with 226 and a complete file, then exits 0.
func TestGracefulStop(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) {
		c.ShutdownGrace = "30s"
		c.addUser("up1", "uploader", "")
	})
	up := s.cfg.user("up1")
	data := payload(12<<20, 210)
	upload := startGatedUpload(t, s, up, "big.bin", data, 3<<20, 10*time.Millisecond)
	waitPart(t, s.path(up, "."), 1)
	mark := s.logs.len()

	s.signal(syscall.SIGTERM)

	deadline := time.Now().Add(10 * time.Second)
	for {
		rc, greet, err := s.rawDial("")
		if err != nil || greet.code != 220 {
			t.Logf("new connection after SIGTERM: greeting %v, err %v", greet, err)
			break
		}
		rc.conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("new connections still accepted 10s after SIGTERM")
		}
		time.Sleep(50 * time.Millisecond) // poll interval of a bounded poll
	}
	select {
	case <-s.exited:
		t.Fatalf("process exited (code %d) while an upload was running", s.exitCode)
	default:
	}

	// The rest streams at a 32 KiB read per 10ms tick, about 3 MiB/s.
	if err := upload.result(t, time.Minute); err != nil {
		t.Errorf("upload during shutdown: %v, want 226", err)
	}
	if got := mustRead(t, s.path(up, "big.bin")); !bytes.Equal(got, data) {
		t.Errorf("file uploaded during shutdown differs: %d bytes, want %d", len(got), len(data))
	}
	if l := s.waitTransferLog(mark, "big.bin"); l.get("result") != "ok" {
		t.Errorf("transfer during shutdown logged %s", l.raw)
	}
	if code := s.waitExit(exitTimeout); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// TestStopWithIdleSessions: SIGTERM with idle sessions (logged in, not
// logged in, TLS-less) and no transfer exits 0 promptly and closes them.
func TestStopWithIdleSessions(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	authed := s.rawLogin(s.cfg.user("admin1"))
	anon := s.raw()
	start := time.Now()
	s.signal(syscall.SIGTERM)
	if code := s.waitExit(15 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	for name, rc := range map[string]*rawConn{"logged-in": authed, "anonymous": anon} {
		if closed, _ := rc.closedByServer(5 * time.Second); !closed {
			t.Errorf("%s session still open after the process exited", name)
		}
	}
}

// TestGracefulStopGraceExpires: an upload still running when the grace
// period ends is cut, publishes nothing, and the process exits 0.
func TestGracefulStopGraceExpires(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) {
		c.ShutdownGrace = "1s"
		c.addUser("up1", "uploader", "")
	})
	up := s.cfg.user("up1")
	upload := startGatedUpload(t, s, up, "stuck.bin", payload(4<<20, 220), 1<<20, 0)
	waitPart(t, s.path(up, "."), 1)
	start := time.Now()
	s.signal(syscall.SIGTERM)
	code := s.waitExit(exitTimeout)
	el := time.Since(start)
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if el < 900*time.Millisecond || el > 15*time.Second {
		t.Errorf("exited %v after SIGTERM with shutdown_grace 1s", el)
	}
	if err := upload.result(t, ioTimeout+5*time.Second); err == nil {
		t.Errorf("upload cut by shutdown reported success")
	}
	if _, err := os.Stat(s.path(up, "stuck.bin")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cut upload published under its final name: %v", err)
	}
}

// TestCLI: version, passwd, config check and exit codes.
func TestCLI(t *testing.T) {
	t.Parallel()

	t.Run("Version", func(t *testing.T) {
		r := run(t, "", binPath, "version")
		if r.code != 0 || strings.TrimSpace(r.stdout+r.stderr) == "" {
			t.Errorf("ftpgate version: %v", r)
		}
	})
	t.Run("Passwd", func(t *testing.T) {
		r := run(t, "s3cret pass\n", binPath, "passwd")
		if r.code != 0 {
			t.Fatalf("ftpgate passwd: %v", r)
		}
		hash := strings.TrimSpace(r.stdout)
		if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("s3cret pass")); err != nil {
			t.Errorf("passwd printed %q: %v", hash, err)
		}
	})
	t.Run("UnknownCommand", func(t *testing.T) {
		if r := run(t, "", binPath, "no-such-command"); r.code != 2 {
			t.Errorf("unknown command: %v, want exit 2", r)
		}
	})
	t.Run("ServeMissingConfig", func(t *testing.T) {
		if r := run(t, "", binPath, "serve", "--config", filepath.Join(t.TempDir(), "missing.toml")); r.code != 2 {
			t.Errorf("serve with a missing config: %v, want exit 2", r)
		}
	})

	base := t.TempDir()
	cfg := newTestConfig(t, base)
	if err := os.MkdirAll(cfg.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.addUser("admin1", "admin", "").hash = bcryptHash(t, "x")
	good := cfg.render()

	t.Run("ConfigCheckValid", func(t *testing.T) {
		p := filepath.Join(base, "good.toml")
		mustWrite(t, p, []byte(good))
		if r := run(t, "", binPath, "config", "check", "--config", p); r.code != 0 {
			t.Errorf("config check of a valid config: %v", r)
		}
	})
	for _, tc := range []struct {
		name, key, from, to string
	}{
		{"BadDuration", "idle_timeout", `idle_timeout = "15m"`, `idle_timeout = "banana"`},
		{"UnknownKey", "bogus_key", `banner = "ftpgate test"`, "banner = \"ftpgate test\"\nbogus_key = 1"},
		{"BadRole", "role", `role = "admin"`, `role = "superuser"`},
		{"BadMode", "dir_mode", `dir_mode = "2775"`, `dir_mode = "rwx"`},
	} {
		t.Run("ConfigCheck"+tc.name, func(t *testing.T) {
			text := strings.Replace(good, tc.from, tc.to, 1)
			if text == good {
				t.Fatalf("fixture: %q not in the config", tc.from)
			}
			line := 0
			for i, l := range strings.Split(text, "\n") {
				if strings.HasPrefix(l, tc.key+" ") {
					line = i + 1
				}
			}
			p := filepath.Join(base, tc.name+".toml")
			mustWrite(t, p, []byte(text))
			r := run(t, "", binPath, "config", "check", "--config", p)
			if r.code != 2 {
				t.Fatalf("config check: %v, want exit 2", r)
			}
			out := r.stdout + r.stderr
			lineRe := regexp.MustCompile(`\b` + strconv.Itoa(line) + `\b`)
			found := false
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, tc.key) && lineRe.MatchString(l) {
					found = true
				}
			}
			if !found {
				t.Errorf("config check output does not name %s and line %d:\n%s", tc.key, line, out)
			}
		})
	}
}

// TestCommitLogAfterKill: small uploads are made durable through the
// commit log in state_dir. After a kill -9 (the same boot: the kernel still
// has everything that was written) the restart finds the records left, if
// any, checks none against the tree and restores nothing: a file deleted
// in between stays deleted, every other upload is intact, and uploads go
// on through the log.
func TestCommitLogAfterKill(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) { c.addUser("up1", "uploader", "") })
	up := s.cfg.user("up1")
	if _, ok := s.waitLog(0, func(l logLine) bool { return l.msg() == "commit log on" }, logTimeout); !ok {
		t.Fatalf("no \"commit log on\" line\n%s", s.logs.tail(20))
	}
	fi, err := os.Stat(filepath.Join(s.cfg.StateDir, "commit.log"))
	if err != nil || fi.Size() != 64<<20 {
		t.Fatalf("commit.log: %v, %v; want 64 MiB", fi, err)
	}
	rc := s.rawLogin(up)
	files := map[string][]byte{}
	for i := range 10 {
		name := fmt.Sprintf("small-%d.bin", i)
		data := payload(1000+997*i, uint64(500+i))
		if r := rc.store("STOR", name, data); r.code != 226 {
			t.Fatalf("STOR %s: %v", name, r)
		}
		files[name] = data
	}
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	s.waitExit(exitTimeout)
	if err := os.Remove(s.path(up, "small-0.bin")); err != nil {
		t.Fatal(err)
	}
	delete(files, "small-0.bin")

	s = s.restart()
	l, ok := s.waitLog(0, func(l logLine) bool { return l.msg() == "commit log on" }, logTimeout)
	if !ok {
		t.Fatalf("no \"commit log on\" line after the restart\n%s", s.logs.tail(20))
	}
	if l.get("checked") != "0" || l.get("restored") != "0" {
		t.Fatalf("after a kill -9: %v; want nothing checked or restored", l.keys)
	}
	if _, err := os.Stat(s.path(up, "small-0.bin")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the deleted file came back: %v", err)
	}
	for name, data := range files {
		if got := mustRead(t, s.path(up, name)); !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes differ from the upload", name, len(got))
		}
		checkOwnership(t, s.path(up, name), 0o664)
	}
	rc = s.rawLogin(up)
	if r := rc.store("STOR", "after.bin", []byte("after the restart")); r.code != 226 {
		t.Fatalf("STOR after the restart: %v", r)
	}
	if got := mustRead(t, s.path(up, "after.bin")); string(got) != "after the restart" {
		t.Fatalf("after.bin = %q", got)
	}
}
