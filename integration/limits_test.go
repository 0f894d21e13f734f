package integration

import (
	"testing"
	"time"
)

// loginFrom tries a full login from the local address and returns the
// first refusal (or the 230), and whether the login succeeded.
func loginFrom(s *server, local, name, password string) (reply, bool) {
	rc, greet, err := s.rawDial(local)
	if err != nil {
		return reply{text: "connect: " + err.Error()}, false
	}
	defer rc.conn.Close()
	if greet.code != 220 {
		return greet, false
	}
	r, err := rc.try("USER " + name)
	if err != nil {
		return reply{text: "USER: " + err.Error()}, false
	}
	if r.code != 331 {
		return r, r.code == 230
	}
	r, err = rc.try("PASS " + password)
	if err != nil {
		return reply{text: "PASS: " + err.Error()}, false
	}
	return r, r.code == 230
}

// TestBan: after max_failures bad logins an address is refused even with
// the right password; other addresses are not affected.
func TestBan(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) {
		c.BanMaxFailures = 3
		c.addUser("admin1", "admin", "")
	})
	admin := s.cfg.user("admin1")
	const attacker = "127.0.0.2"

	for i, name := range []string{admin.Name, "nosuchuser", admin.Name} {
		r, ok := loginFrom(s, attacker, name, "wrong-password")
		if ok || r.code != 530 {
			t.Fatalf("bad login #%d for %s: %v (ok=%t), want 530", i+1, name, r, ok)
		}
	}
	if r, ok := loginFrom(s, attacker, admin.Name, admin.Password); ok {
		t.Errorf("banned address logged in with the right password: %v", r)
	} else {
		t.Logf("banned address refused: %v", r)
	}
	if r, ok := loginFrom(s, "127.0.0.1", admin.Name, admin.Password); !ok {
		t.Errorf("another address was refused: %v", r)
	}
	// The jlaffaye client sees the refusal as an error too.
	if c, err := s.dialFTP(clientOpts{local: attacker}); err == nil {
		if err := c.Login(admin.Name, admin.Password); err == nil {
			t.Errorf("banned address logged in with jlaffaye")
		}
		_ = c.Quit()
	}
}

// TestPerIPCap: with max_connections_per_ip=2 a third connection from the
// same address gets 421; other addresses still connect, and a slot frees
// when a connection closes.
func TestPerIPCap(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) {
		c.MaxConnectionsPerIP = 2
		c.addUser("admin1", "admin", "")
	})
	admin := s.cfg.user("admin1")
	c1 := s.raw()
	c1.mustLogin(admin)
	s.raw() // second, not logged in

	rc, greet, err := s.rawDial("")
	switch {
	case err != nil && greet.code == 0:
		t.Errorf("third connection: no reply (%v), want 421", err)
	case greet.code != 421:
		t.Errorf("third connection: %v, want 421", greet)
	}
	if err == nil {
		if closed, got := rc.closedByServer(10 * time.Second); !closed {
			t.Errorf("third connection was not closed after %v (got %q)", greet, got)
		}
	}

	other, greet, err := s.rawDial("127.0.0.3")
	if err != nil || greet.code != 220 {
		t.Fatalf("connection from another address: %v %v", greet, err)
	}
	other.mustLogin(admin)

	// A logged-in session keeps working while the cap is reached.
	c1.expect("NOOP", 200)

	c1.cmd("QUIT")
	c1.conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rc, greet, err := s.rawDial("")
		if err == nil && greet.code == 220 {
			rc.mustLogin(admin)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot freed after closing a connection: %v %v", greet, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval of a bounded poll
	}
}

// TestLoginTimeout: an unauthenticated connection is closed after
// login_timeout; a logged-in one is not.
func TestLoginTimeout(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) {
		c.LoginTimeout = "1s"
		c.addUser("admin1", "admin", "")
	})
	admin := s.cfg.user("admin1")
	authed := s.raw()
	authed.mustLogin(admin)

	idle := s.raw()
	half := s.raw()
	start := time.Now()
	half.expect("USER "+admin.Name, 331)
	for name, rc := range map[string]*rawConn{"idle": idle, "after USER": half} {
		closed, got := rc.closedByServer(15 * time.Second)
		if !closed {
			t.Errorf("%s connection still open %v after connecting (login_timeout 1s); got %q", name, time.Since(start), got)
		}
	}
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Errorf("unauthenticated connections closed after %v, before login_timeout", el)
	}
	authed.expect("NOOP", 200)
	c := s.login(admin)
	if err := c.NoOp(); err != nil {
		t.Errorf("fresh login after the deadline test: %v", err)
	}
}

// TestGlobalCap: with max_connections=3 a fourth connection, from a fresh
// address, gets 421.
func TestGlobalCap(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) {
		c.MaxConnections = 3
		c.addUser("admin1", "admin", "")
	})
	for _, ip := range []string{"127.0.0.1", "127.0.0.5", "127.0.0.6"} {
		if _, greet, err := s.rawDial(ip); err != nil || greet.code != 220 {
			t.Fatalf("connection from %s: %v %v", ip, greet, err)
		}
	}
	if _, greet, err := s.rawDial("127.0.0.7"); greet.code != 421 {
		t.Errorf("fourth connection: %v %v, want 421", greet, err)
	}
}

// TestBanExpires: a ban ends after ban.duration.
func TestBanExpires(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *testConfig) {
		c.BanMaxFailures = 2
		c.BanDuration = "2s"
		c.addUser("admin1", "admin", "")
	})
	admin := s.cfg.user("admin1")
	const ip = "127.0.0.8"
	for i := range 2 {
		if r, ok := loginFrom(s, ip, admin.Name, "wrong"); ok || r.code != 530 {
			t.Fatalf("bad login #%d: %v", i+1, r)
		}
	}
	start := time.Now()
	if r, ok := loginFrom(s, ip, admin.Name, admin.Password); ok {
		t.Fatalf("not banned after 2 failures: %v", r)
	}
	deadline := start.Add(15 * time.Second)
	for {
		if _, ok := loginFrom(s, ip, admin.Name, admin.Password); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ban of 2s still in force after 15s")
		}
		time.Sleep(100 * time.Millisecond) // poll interval of a bounded poll
	}
	if el := time.Since(start); el < time.Second {
		t.Errorf("ban of 2s lifted after %v", el)
	}
}
