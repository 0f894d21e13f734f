package server

import (
	"net/netip"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestGuardBan(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	g := newGuard(Limits{BanMaxFailures: 3, BanWindow: time.Minute, BanDuration: time.Hour}, clk.now)
	ip := netip.MustParseAddr("192.0.2.7")
	other := netip.MustParseAddr("192.0.2.8")

	if g.fail(ip) || g.fail(ip) {
		t.Fatal("banned before max_failures")
	}
	// failures older than the window do not count
	clk.advance(2 * time.Minute)
	if g.fail(ip) || g.fail(ip) {
		t.Fatal("old failures counted after the window")
	}
	if !g.fail(ip) {
		t.Fatal("third failure within the window did not ban")
	}
	if !g.isBanned(ip) || g.admit(ip) != refusedBanned {
		t.Fatal("banned address admitted")
	}
	if g.isBanned(other) || g.admit(other) != admitted {
		t.Fatal("another address was banned too")
	}
	clk.advance(time.Hour)
	if g.isBanned(ip) || g.admit(ip) != admitted {
		t.Fatal("ban outlived its duration")
	}
}

func TestGuardCaps(t *testing.T) {
	g := newGuard(Limits{MaxConnections: 3, MaxConnectionsPerIP: 2}, time.Now)
	a := netip.MustParseAddr("198.51.100.1")
	b := netip.MustParseAddr("198.51.100.2")
	tests := []struct {
		ip   netip.Addr
		want refusal
	}{
		{a, admitted},
		{a, admitted},
		{a, refusedIPCap},
		{b, admitted},
		{b, refusedGlobalCap},
	}
	for i, tt := range tests {
		if got := g.admit(tt.ip); got != tt.want {
			t.Fatalf("admit #%d from %s = %v, want %v", i, tt.ip, got, tt.want)
		}
	}
	g.release(a)
	if got := g.admit(b); got != admitted {
		t.Fatalf("after a release: %v, want admitted", got)
	}
	g.setLimits(Limits{MaxConnections: 10, MaxConnectionsPerIP: 3})
	if got := g.admit(a); got != admitted {
		t.Fatalf("after raising the per-IP cap: %v, want admitted", got)
	}
}

func TestGuardSessions(t *testing.T) {
	g := newGuard(Limits{}, time.Now)
	ip := netip.MustParseAddr("::1")
	if g.hasSession(ip) {
		t.Fatal("session before login")
	}
	g.loggedIn(ip)
	g.loggedIn(ip)
	g.loggedOut(ip)
	if !g.hasSession(ip) {
		t.Fatal("one of two sessions left, but none seen")
	}
	g.loggedOut(ip)
	if g.hasSession(ip) {
		t.Fatal("session seen after the last logout")
	}
}

func TestPassivePorts(t *testing.T) {
	p := passivePorts{start: 30000, end: 30009}
	if n := p.NumberAttempts(); n != 10 {
		t.Fatalf("NumberAttempts = %d, want 10", n)
	}
	if n := (passivePorts{start: 30000, end: 30999}).NumberAttempts(); n != passiveAttempts {
		t.Fatalf("NumberAttempts of 1000 ports = %d, want %d", n, passiveAttempts)
	}
	seen := map[int]bool{}
	for range 1000 {
		exposed, listened, ok := p.FetchNext()
		if !ok || exposed != listened || exposed < 30000 || exposed > 30009 {
			t.Fatalf("FetchNext = %d, %d, %v", exposed, listened, ok)
		}
		seen[exposed] = true
	}
	if len(seen) != 10 {
		t.Fatalf("1000 draws reached %d of 10 ports", len(seen))
	}
	if port, _, ok := (passivePorts{start: 2, end: 2}).FetchNext(); !ok || port != 2 {
		t.Fatalf("single-port range: %d, %v", port, ok)
	}
}
