package server

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jlaffaye/ftp"
	"golang.org/x/crypto/bcrypt"

	"ftpgate/conf"
)

func TestLoginCache(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := newLoginCache(func() time.Time { return now })
	ip := netip.MustParseAddr("192.0.2.1")
	other := netip.MustParseAddr("192.0.2.2")
	const hash, pass = "$2a$10$hash", "secret"

	if g := c.reuse(ip, "bob", hash, pass); g != nil {
		t.Fatal("a grant before any login")
	}
	first := c.grant(ip, "bob", hash, pass)
	for _, tt := range []struct {
		name           string
		ip             netip.Addr
		user, hash, pw string
	}{
		{"other address", other, "bob", hash, pass},
		{"other user", ip, "alice", hash, pass},
		{"wrong password", ip, "bob", hash, "secreT"},
		{"password prefix", ip, "bob", hash, "secre"},
		{"changed hash", ip, "bob", "$2a$10$other", pass},
	} {
		if g := c.reuse(tt.ip, tt.user, tt.hash, tt.pw); g != nil {
			t.Errorf("%s: reused", tt.name)
		}
	}
	second := c.reuse(ip, "bob", hash, pass)
	if second != first || first.sessions != 2 {
		t.Fatalf("reuse = %p (sessions %d), want the first grant with 2 sessions", second, first.sessions)
	}

	// A grant serves only while one of its sessions is logged in.
	c.release(first)
	if c.reuse(ip, "bob", hash, pass) == nil {
		t.Fatal("grant gone while a session still holds it")
	}
	c.release(first)
	c.release(first)
	if c.reuse(ip, "bob", hash, pass) != nil {
		t.Fatal("grant outlived its sessions")
	}

	// And for loginReuseTTL after the bcrypt check at most.
	g := c.grant(ip, "bob", hash, pass)
	now = now.Add(loginReuseTTL - time.Second)
	if c.reuse(ip, "bob", hash, pass) == nil {
		t.Fatal("grant expired early")
	}
	now = now.Add(time.Second)
	if c.reuse(ip, "bob", hash, pass) != nil {
		t.Fatal("grant reused after loginReuseTTL")
	}
	c.release(g)
	c.release(g)

	// Failures, bans and reloads drop grants at once; a session of a
	// dropped grant ending does not touch its successor.
	g = c.grant(ip, "bob", hash, pass)
	c.forget(ip, "bob")
	if c.reuse(ip, "bob", hash, pass) != nil {
		t.Fatal("grant survived a failed login")
	}
	next := c.grant(ip, "bob", hash, pass)
	c.release(g)
	if c.reuse(ip, "bob", hash, pass) != next {
		t.Fatal("the end of a forgotten grant's session dropped its successor")
	}
	c.grant(ip, "alice", hash, pass)
	c.grant(other, "bob", hash, pass)
	c.forgetIP(ip)
	if c.reuse(ip, "bob", hash, pass) != nil || c.reuse(ip, "alice", hash, pass) != nil {
		t.Fatal("grant survived a ban of its address")
	}
	if c.reuse(other, "bob", hash, pass) == nil {
		t.Fatal("a ban dropped another address's grant")
	}
	c.clear()
	if len(c.grants) != 0 {
		t.Fatalf("%d grants after clear", len(c.grants))
	}
}

// TestLoginReuse runs the cache through the server: parallel sessions
// share a grant, a wrong password still fails and drops it, a reload that
// changes the password makes the old one useless at once, and the grant
// goes with the last session.
func TestLoginReuse(t *testing.T) {
	ts := startTestServer(t, nil)
	ip := netip.MustParseAddr("127.0.0.1")
	grant := func() *loginGrant {
		ts.srv.logins.mu.Lock()
		defer ts.srv.logins.mu.Unlock()
		return ts.srv.logins.grants[loginKey{ip, "up"}]
	}
	login := func(pass string) (*ftp.ServerConn, error) {
		c, err := ftp.Dial(ts.srv.Addr().String(), ftp.DialWithTimeout(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login("up", pass); err != nil {
			c.Quit()
			return nil, err
		}
		t.Cleanup(func() { _ = c.Quit() })
		return c, nil
	}
	first := ts.dial(t, "up")
	g := grant()
	if g == nil {
		t.Fatal("no grant after a login")
	}
	second := ts.dial(t, "up")
	if grant() != g || g.sessions != 2 {
		t.Fatalf("second login: grant %p with %d sessions, want %p with 2", grant(), g.sessions, g)
	}
	if _, err := login("wrong"); err == nil || !strings.HasPrefix(err.Error(), "530 ") {
		t.Fatalf("wrong password next to a grant: %v, want a 530", err)
	}
	if grant() != nil {
		t.Fatal("grant survived a failed login")
	}
	ts.srv.guard.mu.Lock()
	failures := len(ts.srv.guard.failures[ip])
	ts.srv.guard.mu.Unlock()
	if failures != 1 {
		t.Fatalf("%d failures recorded, want 1", failures)
	}
	third := ts.dial(t, "up")

	hash, err := bcrypt.GenerateFromPassword([]byte("changed"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := *ts.cfg
	cfg.Users = append([]conf.User(nil), ts.cfg.Users...)
	for i := range cfg.Users {
		if cfg.Users[i].Name == "up" {
			cfg.Users[i].PasswordHash = string(hash)
		}
	}
	if err := ts.srv.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := login("secret"); err == nil {
		t.Fatal("old password accepted after a reload changed it")
	}
	last, err := login("changed")
	if err != nil {
		t.Fatalf("new password: %v", err)
	}
	g = grant()
	sessions := func() int {
		ts.srv.guard.mu.Lock()
		defer ts.srv.guard.mu.Unlock()
		return ts.srv.guard.authed[ip]
	}
	for _, c := range []*ftp.ServerConn{first, second, third} {
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	}
	// A session releases its grant before it stops counting as logged in.
	waitFor(t, func() bool { return sessions() == 1 })
	if g == nil || grant() != g {
		t.Fatal("the new password's grant went with sessions it did not admit")
	}
	if err := last.Quit(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return sessions() == 0 })
	if grant() != nil {
		t.Fatal("grant outlived the last session it admitted")
	}
}
