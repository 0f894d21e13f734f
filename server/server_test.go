package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jlaffaye/ftp"
	"golang.org/x/crypto/bcrypt"

	"ftpgate/conf"
	"ftpgate/storage"
)

// recorder is a Notifier that keeps what it was told.
type recorder struct {
	mu  sync.Mutex
	got []Upload
	ch  chan Upload
}

func (r *recorder) UploadCompleted(_ context.Context, u Upload) {
	r.mu.Lock()
	r.got = append(r.got, u)
	r.mu.Unlock()
	r.ch <- u
}

type testServer struct {
	srv    *Server
	cfg    *conf.Config
	root   string
	notes  *recorder
	cancel context.CancelFunc
	done   chan error
}

func startTestServer(t *testing.T, mutate func(*conf.Config)) *testServer {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := conf.Default(string(hash))
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Server.PassivePorts = conf.PortRange{Start: 41000, End: 41999}
	cfg.Storage.Root = filepath.Join(dir, "root")
	cfg.Storage.StateDir = filepath.Join(dir, "state")
	cfg.Users = append(cfg.Users, conf.User{Name: "up", PasswordHash: string(hash), Role: conf.RoleUploader, Home: "uploads/up"})
	if mutate != nil {
		mutate(cfg)
	}
	for _, d := range []string{cfg.Storage.Root, cfg.Storage.StateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root, err := storage.Open(cfg.Storage.Root, storage.Policy{
		GID: -1, FileMode: 0o640, DirMode: 0o750, Fsync: true,
		ResumeTTL: time.Hour, StateDir: cfg.Storage.StateDir,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	notes := &recorder{ch: make(chan Upload, 16)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(cfg, root, notes, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{srv: srv, cfg: cfg, root: cfg.Storage.Root, notes: notes, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-ts.done
	})
	return ts
}

func (ts *testServer) dial(t *testing.T, user string) *ftp.ServerConn {
	t.Helper()
	c, err := ftp.Dial(ts.srv.Addr().String(), ftp.DialWithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(user, "secret"); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	t.Cleanup(func() { _ = c.Quit() })
	return c
}

func TestUploadNotifiesAfterCommit(t *testing.T) {
	ts := startTestServer(t, nil)
	c := ts.dial(t, "up")
	data := bytes.Repeat([]byte("line\r\n"), 50_000)
	if err := c.Stor("a.bin", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-ts.notes.ch:
		if u.Path != "uploads/up/a.bin" || u.Size != int64(len(data)) || u.SHA256 != sha256.Sum256(data) || u.User != "up" {
			t.Fatalf("notification = %+v", u)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no upload notification")
	}
	got, err := os.ReadFile(filepath.Join(ts.root, "uploads", "up", "a.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored file differs (err %v)", err)
	}
}

func TestWrongPasswordGetsNoDetail(t *testing.T) {
	ts := startTestServer(t, nil)
	var replies []string
	for _, user := range []string{"up", "nobody"} {
		c, err := ftp.Dial(ts.srv.Addr().String(), ftp.DialWithTimeout(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Login(user, "wrong")
		if err == nil {
			t.Fatalf("%s logged in with a wrong password", user)
		}
		if !strings.HasPrefix(err.Error(), "530 ") {
			t.Fatalf("%s: reply %q, want a 530", user, err)
		}
		replies = append(replies, err.Error())
	}
	if replies[0] != replies[1] {
		t.Fatalf("known user got %q, unknown user %q: the reply tells them apart", replies[0], replies[1])
	}
}

func TestShutdownDrainsTransfer(t *testing.T) {
	ts := startTestServer(t, func(c *conf.Config) { c.Server.ShutdownGrace = 30 * time.Second })
	c := ts.dial(t, "up")
	pr, pw := io.Pipe()
	stored := make(chan error, 1)
	go func() { stored <- c.Stor("slow.bin", pr) }()

	chunk := bytes.Repeat([]byte{7}, 64<<10)
	if _, err := pw.Write(chunk); err != nil {
		t.Fatal(err)
	}
	// The transfer is running once the server counts it.
	waitFor(t, func() bool {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		return ts.srv.active == 1
	})
	ts.cancel()
	waitFor(t, func() bool {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		return ts.srv.draining
	})
	for range 4 {
		if _, err := pw.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	pw.Close()
	if err := <-stored; err != nil {
		t.Fatalf("transfer during drain: %v", err)
	}
	if err := <-ts.done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	ts.done <- nil // for the cleanup
	st, err := os.Stat(filepath.Join(ts.root, "uploads", "up", "slow.bin"))
	if err != nil || st.Size() != 5*int64(len(chunk)) {
		t.Fatalf("drained upload: %v, %v", st, err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
