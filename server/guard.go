package server

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	ftpserver "github.com/fclairamb/ftpserverlib"
)

// Limits are the connection caps and the ban policy; they can change on reload.
type Limits struct {
	MaxConnections      int
	MaxConnectionsPerIP int
	BanMaxFailures      int
	BanWindow           time.Duration
	BanDuration         time.Duration
}

// refusal says why a connection is turned away before it reaches the FTP
// state machine.
type refusal int

const (
	admitted refusal = iota
	refusedBanned
	refusedGlobalCap
	refusedIPCap
)

func (r refusal) reply() string {
	switch r {
	case refusedBanned:
		return "421 Too many failed logins from your address, try later.\r\n"
	case refusedGlobalCap:
		return "421 Too many connections, try later.\r\n"
	case refusedIPCap:
		return "421 Too many connections from your address.\r\n"
	}
	return ""
}

// guard keeps per-IP connection counts, failed logins and bans, and the set
// of addresses that hold a logged-in session. It is safe for concurrent use.
type guard struct {
	now func() time.Time

	mu       sync.Mutex
	limits   Limits
	total    int
	perIP    map[netip.Addr]int
	authed   map[netip.Addr]int
	failures map[netip.Addr][]time.Time
	banned   map[netip.Addr]time.Time
}

func newGuard(l Limits, now func() time.Time) *guard {
	return &guard{
		now:      now,
		limits:   l,
		perIP:    map[netip.Addr]int{},
		authed:   map[netip.Addr]int{},
		failures: map[netip.Addr][]time.Time{},
		banned:   map[netip.Addr]time.Time{},
	}
}

func (g *guard) setLimits(l Limits) {
	g.mu.Lock()
	g.limits = l
	g.mu.Unlock()
}

// admit counts a new control connection from ip, or says why it is refused.
func (g *guard) admit(ip netip.Addr) refusal {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bannedLocked(ip) {
		return refusedBanned
	}
	if g.limits.MaxConnections > 0 && g.total >= g.limits.MaxConnections {
		return refusedGlobalCap
	}
	if g.limits.MaxConnectionsPerIP > 0 && g.perIP[ip] >= g.limits.MaxConnectionsPerIP {
		return refusedIPCap
	}
	g.total++
	g.perIP[ip]++
	return admitted
}

// release undoes one admit.
func (g *guard) release(ip netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
}

func (g *guard) isBanned(ip netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.bannedLocked(ip)
}

func (g *guard) bannedLocked(ip netip.Addr) bool {
	until, ok := g.banned[ip]
	if !ok {
		return false
	}
	if g.now().Before(until) {
		return true
	}
	delete(g.banned, ip)
	return false
}

// fail records a failed login and reports whether it banned ip.
func (g *guard) fail(ip netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.limits.BanMaxFailures <= 0 {
		return false
	}
	now := g.now()
	kept := g.failures[ip][:0]
	for _, t := range g.failures[ip] {
		if now.Sub(t) < g.limits.BanWindow {
			kept = append(kept, t)
		}
	}
	kept = append(kept, now)
	if len(kept) < g.limits.BanMaxFailures {
		g.failures[ip] = kept
		return false
	}
	delete(g.failures, ip)
	g.banned[ip] = now.Add(g.limits.BanDuration)
	return true
}

// loggedIn and loggedOut track addresses holding an authenticated session:
// only those may open passive data connections.
func (g *guard) loggedIn(ip netip.Addr) {
	g.mu.Lock()
	g.authed[ip]++
	g.mu.Unlock()
}

func (g *guard) loggedOut(ip netip.Addr) {
	g.mu.Lock()
	if g.authed[ip]--; g.authed[ip] <= 0 {
		delete(g.authed, ip)
	}
	g.mu.Unlock()
}

func (g *guard) hasSession(ip netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.authed[ip] > 0
}

func addrIP(a net.Addr) netip.Addr {
	if tcp, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(tcp.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// controlListener admits control connections through the guard before
// ftpserverlib sees them, so a refused client costs no goroutine and gets a
// proper 421.
type controlListener struct {
	net.Listener
	g        *guard
	onRefuse func(ip netip.Addr, r refusal)
	track    func(c *countedConn, open bool)
	plain    bool // write the 421 reply (not on implicit-TLS ports)
}

func (l *controlListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrIP(c.RemoteAddr())
		if r := l.g.admit(ip); r != admitted {
			if l.plain {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = c.Write([]byte(r.reply()))
			}
			_ = c.Close()
			l.onRefuse(ip, r)
			continue
		}
		cc := &countedConn{Conn: c}
		cc.release = func() {
			l.g.release(ip)
			l.track(cc, false)
		}
		l.track(cc, true)
		return cc, nil
	}
}

type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
	// replied is set by a transfer that ended, and run by the next write on
	// the control connection: the transfer's final reply.
	replied atomic.Pointer[func()]
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if f := c.replied.Swap(nil); f != nil {
		(*f)()
	}
	return n, err
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if f := c.replied.Swap(nil); f != nil {
			(*f)()
		}
		c.release()
	})
	return err
}

// passiveListener wraps a PASV/EPSV reservation, which already admits
// only the control connection's address (see PassiveTransferPortMultiplexing
// in GetSettings), and drops any connection from an address that holds no
// logged-in session: a second line, should the reservation ever let one
// through, since ftpserverlib keeps a refused connection stored and serves
// it to a RETR retried without a new PASV/EPSV.
type passiveListener struct {
	net.Listener
	g *guard
	// handedOver is set once the reservation has passed on a
	// connection: ftpserverlib has then already dropped it.
	handedOver atomic.Bool
}

func (l *passiveListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.handedOver.Store(true)
		if l.g.hasSession(addrIP(c.RemoteAddr())) {
			return c, nil
		}
		_ = c.Close()
	}
}

// Close cancels the reservation if it is still waiting for its
// connection. ftpserverlib v0.32.3 releases a reservation by address, not
// by identity, so closing one that has already been given its connection
// would cancel whatever reservation the same address holds on the port by
// then: that of another of its sessions (lftp mirror -P4 opens four), or
// that of the same session's next PASV/EPSV, which ftpserverlib makes
// before it closes the previous transfer. Its data connection would then
// be refused. So a reservation that handed a connection over is left
// alone, and one whose connection arrived for a transfer the server then
// refused (a STOR to a bad path) is drained instead of closed: its
// connection is taken with a short deadline and closed.
func (l *passiveListener) Close() error {
	if l.handedOver.Load() {
		return nil
	}
	if _, plain := l.Listener.(*net.TCPListener); !plain {
		if ds, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok {
			if ds.SetDeadline(time.Now().Add(drainWait)) == nil {
				if c, err := l.Listener.Accept(); err == nil {
					l.handedOver.Store(true)
					return c.Close()
				}
			}
		}
	}
	return l.Listener.Close()
}

// drainWait is how long Close looks for a connection that arrived for a
// reservation nobody accepted: one that arrived is already queued.
const drainWait = time.Millisecond

// passivePorts picks PASV/EPSV ports at random in [start, end], as
// ftpserverlib's PortRange does, from math/rand/v2's per-thread ChaCha8
// instead of crypto/rand with a big.Int per call (which cost about 100 µs
// of CPU per data connection). The ports stay unpredictable to other
// clients; a connection to a port reserved for another address is closed
// anyway (see passiveListener).
type passivePorts struct{ start, end int }

var _ ftpserver.PasvPortGetter = passivePorts{}

// passiveAttempts is how many distinct ports a PASV/EPSV tries at most.
// ftpserverlib draws every candidate up front (up to four times as many
// draws, into a map), which over a whole range of hundreds of ports was a
// few percent of the CPU of small transfers. With multiplexed listeners a
// port is unavailable to a client only while another of its own transfers
// holds it, or when another program has taken it: 32 random tries all miss
// with a chance of 0.1 % when 80 % of the range is unavailable, 3 % at 90 %.
const passiveAttempts = 32

// FetchNext returns a random port of the range, as exposed and listened.
func (p passivePorts) FetchNext() (int, int, bool) {
	if p.end < p.start {
		return 0, 0, false
	}
	port := p.start + rand.IntN(p.end-p.start+1)
	return port, port, true
}

// NumberAttempts is the range's size, at most passiveAttempts.
func (p passivePorts) NumberAttempts() int { return min(p.end-p.start+1, passiveAttempts) }
