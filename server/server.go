package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	ftpserver "github.com/fclairamb/ftpserverlib"
	"golang.org/x/crypto/bcrypt"

	"ftpgate/conf"
	"ftpgate/storage"
)

// Upload is a completed upload, announced after its data is durable and
// renamed into place. Path is slash-separated and relative to the storage root.
type Upload struct {
	Path    string
	Size    int64
	SHA256  [32]byte
	ModTime time.Time
	User    string
}

// Notifier learns of completed uploads. UploadCompleted is called on the
// upload path before the 226 reply, so it must only enqueue, never block on
// the network. Implementations must be safe for concurrent use.
type Notifier interface {
	UploadCompleted(ctx context.Context, u Upload)
}

// NopNotifier is the Notifier used when mirroring is off.
type NopNotifier struct{}

// UploadCompleted does nothing.
func (NopNotifier) UploadCompleted(context.Context, Upload) {}

// sweepEvery is how often expired upload parts are removed.
const sweepEvery = 10 * time.Minute

// dataConnTimeout bounds how long a PASV/EPSV port waits for its data
// connection: short, so that a stray peer cannot hold it.
const dataConnTimeout = 10

// Server is ftpgate's FTP/FTPS server. Create it with New, then Listen and
// Serve; Reload may be called from any goroutine while it serves.
type Server struct {
	log    *slog.Logger
	root   *storage.Root
	notify Notifier
	now    func() time.Time

	cfg    atomic.Pointer[conf.Config]
	users  atomic.Pointer[map[string]conf.User]
	dummy  atomic.Pointer[[]byte] // bcrypt hash checked for unknown users
	certs  certStore
	guard  *guard
	logins *loginCache

	ftp *ftpserver.FtpServer
	ln  net.Listener

	mu sync.Mutex
	// conns are the open control connections by remote address. Closing
	// one is how the server ends a session from outside it: ftpserverlib's
	// ClientContext.Close is not safe to call from another goroutine.
	conns    map[string]*countedConn
	active   int           // running transfers
	idle     chan struct{} // closed when active drops to 0 while draining
	draining bool
}

// New builds a server for cfg on root. It starts nothing.
func New(cfg *conf.Config, root *storage.Root, notify Notifier, log *slog.Logger) (*Server, error) {
	if notify == nil {
		notify = NopNotifier{}
	}
	s := &Server{
		log:    log.With("component", "ftp"),
		root:   root,
		notify: notify,
		now:    time.Now,
		conns:  map[string]*countedConn{},
	}
	s.guard = newGuard(limitsOf(cfg), s.now)
	s.logins = newLoginCache(s.now)
	if err := s.apply(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

func limitsOf(cfg *conf.Config) Limits {
	return Limits{
		MaxConnections:      cfg.Server.MaxConnections,
		MaxConnectionsPerIP: cfg.Server.MaxConnectionsPerIP,
		BanMaxFailures:      cfg.Server.Ban.MaxFailures,
		BanWindow:           cfg.Server.Ban.Window,
		BanDuration:         cfg.Server.Ban.Duration,
	}
}

// apply installs the parts of cfg that can change while serving: users,
// TLS certificate and limits. On error nothing is changed.
func (s *Server) apply(cfg *conf.Config) error {
	var certs certStore
	if cfg.Server.TLS.Mode != conf.TLSOff && cfg.Server.TLS.Mode != "" {
		if err := certs.load(cfg.Server.TLS.Cert, cfg.Server.TLS.Key); err != nil {
			return err
		}
	}
	users := make(map[string]conf.User, len(cfg.Users))
	cost := bcrypt.DefaultCost
	for _, u := range cfg.Users {
		users[u.Name] = u
		if c, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil && c > cost {
			cost = c
		}
	}
	if old := s.dummy.Load(); old == nil || mustCost(*old) != cost {
		secret := make([]byte, 18)
		_, _ = rand.Read(secret)
		h, err := bcrypt.GenerateFromPassword(secret, cost)
		if err != nil {
			return fmt.Errorf("prepare password check: %w", err)
		}
		s.dummy.Store(&h)
	}
	if c := certs.cert.Load(); c != nil {
		s.certs.cert.Store(c)
	} else {
		s.certs.clear()
	}
	s.users.Store(&users)
	// Grants were made against the old users; a password or role
	// change must be felt by the next login.
	s.logins.clear()
	s.guard.setLimits(limitsOf(cfg))
	s.cfg.Store(cfg)
	return nil
}

func mustCost(h []byte) int {
	c, _ := bcrypt.Cost(h)
	return c
}

// Reload applies a new configuration without dropping sessions: users, TLS
// certificate and connection limits. Settings that need a new listener
// (addresses, ports, TLS mode) are kept and reported as warnings.
func (s *Server) Reload(cfg *conf.Config) error {
	old := s.cfg.Load()
	if old.Server.Listen != cfg.Server.Listen || old.Server.PassivePorts != cfg.Server.PassivePorts ||
		old.Server.TLS.Mode != cfg.Server.TLS.Mode || old.Server.PublicHost != cfg.Server.PublicHost ||
		old.Storage.Root != cfg.Storage.Root {
		s.log.Warn("listen address, passive ports, public host, TLS mode and storage root change only on restart")
		cfg.Server.TLS.Mode = old.Server.TLS.Mode
	}
	if err := s.apply(cfg); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	return nil
}

// Listen opens the control listener. A port of 0 picks a free one; Addr
// tells which.
func (s *Server) Listen() error {
	cfg := s.cfg.Load()
	raw, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Server.Listen, err)
	}
	implicit := cfg.Server.TLS.Mode == conf.TLSImplicit
	var ln net.Listener = &controlListener{
		Listener: raw, g: s.guard, plain: !implicit,
		onRefuse: func(ip netip.Addr, r refusal) {
			s.log.Warn("connection refused", "remote", ip.String(), "reason", r.reason())
		},
		track: s.track,
	}
	if implicit {
		ln = tls.NewListener(ln, s.certs.config())
	}
	s.ln = ln
	s.ftp = ftpserver.NewFtpServer(driver{s})
	s.ftp.Logger = slog.New(minLevel{s.log.Handler(), slog.LevelWarn})
	if err := s.ftp.Listen(); err != nil {
		_ = raw.Close()
		return fmt.Errorf("start FTP server: %w", err)
	}
	s.log.Info("ftp listening", "addr", raw.Addr().String(), "tls", string(cfg.Server.TLS.Mode))
	return nil
}

// Addr is the control listener's address, once Listen has returned.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts clients until ctx is cancelled, then stops accepting, lets
// running transfers finish for up to server.shutdown_grace, closes the
// remaining sessions and returns.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.ftp.Serve() }()

	sweepDone := make(chan struct{})
	sweepCtx, stopSweep := context.WithCancel(ctx)
	go func() {
		defer close(sweepDone)
		s.sweepLoop(sweepCtx)
	}()
	defer func() {
		stopSweep()
		<-sweepDone
	}()

	select {
	case err := <-errc:
		return fmt.Errorf("serve FTP: %w", err)
	case <-ctx.Done():
	}
	s.shutdown()
	if err := <-errc; err != nil {
		return fmt.Errorf("serve FTP: %w", err)
	}
	return nil
}

func (s *Server) shutdown() {
	grace := s.cfg.Load().Server.ShutdownGrace
	s.mu.Lock()
	s.draining = true
	s.idle = make(chan struct{})
	if s.active == 0 {
		close(s.idle)
	}
	idle, n := s.idle, s.active
	s.mu.Unlock()

	if err := s.ftp.Stop(); err != nil {
		s.log.Warn("stop listener", "err", err)
	}
	s.log.Info("stopping: no new connections", "transfers", n, "grace", grace)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		s.log.Warn("grace period over, closing running transfers")
	}
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (s *Server) track(c *countedConn, open bool) {
	key := c.RemoteAddr().String()
	s.mu.Lock()
	defer s.mu.Unlock()
	if open {
		s.conns[key] = c
	} else if s.conns[key] == c {
		delete(s.conns, key)
	}
}

// disconnect ends the session on the control connection from remote.
func (s *Server) disconnect(remote string) {
	s.mu.Lock()
	c := s.conns[remote]
	s.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

func (s *Server) sweepLoop(ctx context.Context) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		if n, err := s.root.SweepParts(s.now()); err != nil {
			s.log.Warn("remove expired upload parts", "err", err)
		} else if n > 0 {
			s.log.Info("removed expired upload parts", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// transferStart counts a new transfer, or refuses it while draining.
func (s *Server) transferStart() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.active++
	return true
}

// transferReplied counts the transfer on the control connection from remote
// as ended once its final reply has been written, so that a drain never
// closes a session between its data and its 226.
func (s *Server) transferReplied(remote string) {
	s.mu.Lock()
	c := s.conns[remote]
	s.mu.Unlock()
	if c == nil {
		s.transferEnd()
		return
	}
	end := s.transferEnd
	if old := c.replied.Swap(&end); old != nil {
		(*old)()
	}
}

func (s *Server) transferEnd() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	if s.draining && s.active == 0 {
		close(s.idle)
	}
}

func (r refusal) reason() string {
	switch r {
	case refusedBanned:
		return "banned"
	case refusedGlobalCap:
		return "max_connections"
	case refusedIPCap:
		return "max_connections_per_ip"
	}
	return ""
}

// minLevel drops ftpserverlib's chatter below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}
func (h minLevel) WithGroup(g string) slog.Handler { return minLevel{h.Handler.WithGroup(g), h.min} }

// errLoginFailed is the one answer to every failed login: it says nothing
// about whether the user exists.
var errLoginFailed = errors.New("login incorrect")
