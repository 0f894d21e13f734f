package server

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"net/netip"
	"sync"
	"time"
)

// loginReuseTTL bounds how long one bcrypt verification serves further
// logins; see loginCache.
const loginReuseTTL = time.Minute

// loginCache spares bcrypt to the extra sessions a client opens right after
// logging in: lftp's mirror -P4 logs in four times within a second, and each
// bcrypt check at the default cost takes 60 to 80 ms of CPU (three of them
// were 12 % of the server's CPU on a run of 2000 small files).
//
// A grant is made only by a login that passed bcrypt. It is keyed on the
// client's IP address and the user name, and holds an HMAC-SHA256, under a
// key drawn at random when the cache is made and never stored, of the user's
// bcrypt hash and the password that passed. A later login from the same
// address, as the same user, with the same password against the same hash
// skips bcrypt; anything else (another address, a wrong password, a
// password changed by a reload) goes through bcrypt exactly as without the
// cache, and counts towards a ban as before. So the cache never answers
// "no": an attacker's guesses cost what they did, and what a grant can admit
// is only someone who already holds the password.
//
// A grant lives while at least one session it admitted (the one that passed
// bcrypt included) is logged in, and at most loginReuseTTL after the bcrypt
// check that made it. A failed login for the same address and user, a ban
// of the address and a reload drop grants at once. The digest is computed
// for every login, grant or not, so the presence of a grant does not change
// how long a failed login takes.
//
// It is safe for concurrent use.
type loginCache struct {
	now func() time.Time
	key [32]byte

	mu     sync.Mutex
	grants map[loginKey]*loginGrant
}

type loginKey struct {
	ip   netip.Addr
	user string
}

// loginGrant is one bcrypt verification being reused.
type loginGrant struct {
	key      loginKey
	digest   [sha256.Size]byte
	expires  time.Time
	sessions int // logged-in sessions it admitted
}

func newLoginCache(now func() time.Time) *loginCache {
	c := &loginCache{now: now, grants: map[loginKey]*loginGrant{}}
	_, _ = rand.Read(c.key[:]) // crypto/rand.Read never fails
	return c
}

// digest is what a grant holds for a password checked against hash.
func (c *loginCache) digest(hash, pass string) [sha256.Size]byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write([]byte(hash))
	m.Write([]byte{0})
	m.Write([]byte(pass))
	var d [sha256.Size]byte
	m.Sum(d[:0])
	return d
}

// reuse returns the grant that admits pass for user (whose bcrypt hash is
// hash) from ip, counting one more session on it, or nil: then the caller
// checks the password with bcrypt.
func (c *loginCache) reuse(ip netip.Addr, user, hash, pass string) *loginGrant {
	d := c.digest(hash, pass)
	k := loginKey{ip, user}
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.grants[k]
	if g == nil || !hmac.Equal(g.digest[:], d[:]) || !c.now().Before(g.expires) {
		return nil
	}
	g.sessions++
	return g
}

// grant records that pass passed bcrypt for user (hash) from ip, for the
// session that is logging in with it, and returns the grant that session
// holds until it ends.
func (c *loginCache) grant(ip netip.Addr, user, hash, pass string) *loginGrant {
	k := loginKey{ip, user}
	g := &loginGrant{key: k, digest: c.digest(hash, pass), expires: c.now().Add(loginReuseTTL), sessions: 1}
	c.mu.Lock()
	c.grants[k] = g
	c.mu.Unlock()
	return g
}

// release ends one session admitted by g; the grant goes with its last one.
func (c *loginCache) release(g *loginGrant) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g.sessions--; g.sessions <= 0 && c.grants[g.key] == g {
		delete(c.grants, g.key)
	}
}

// forget drops the grant of user from ip, after a failed login.
func (c *loginCache) forget(ip netip.Addr, user string) {
	c.mu.Lock()
	delete(c.grants, loginKey{ip, user})
	c.mu.Unlock()
}

// forgetIP drops every grant of ip, when it is banned.
func (c *loginCache) forgetIP(ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.grants {
		if k.ip == ip {
			delete(c.grants, k)
		}
	}
}

// clear drops every grant, when users are reloaded.
func (c *loginCache) clear() {
	c.mu.Lock()
	clear(c.grants)
	c.mu.Unlock()
}
