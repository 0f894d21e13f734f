package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"time"

	ftpserver "github.com/fclairamb/ftpserverlib"
	"golang.org/x/crypto/bcrypt"

	"ftpgate/conf"
)

// driver is the Server as ftpserverlib sees it.
type driver struct{ s *Server }

var (
	_ ftpserver.MainDriver                         = driver{}
	_ ftpserver.MainDriverExtensionUserVerifier    = driver{}
	_ ftpserver.MainDriverExtensionPassiveWrapper  = driver{}
	_ ftpserver.MainDriverExtensionPostAuthMessage = driver{}
)

// session is per control connection, kept with SetExtra.
type session struct {
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	ip     netip.Addr
	remote string
	login  *time.Timer // closes the connection if no login in time

	// set once at login, read by the same session's transfers afterwards
	user   string
	home   string
	authed bool
	fsys   interface{ Close() error }
	grant  *loginGrant // the login's entry in Server.logins
}

func sessionOf(cc ftpserver.ClientContext) *session {
	s, _ := cc.Extra().(*session)
	return s
}

func (d driver) GetSettings() (*ftpserver.Settings, error) {
	cfg := d.s.cfg.Load()
	tlsMode := ftpserver.ClearOrEncrypted
	switch cfg.Server.TLS.Mode {
	case conf.TLSRequired:
		tlsMode = ftpserver.MandatoryEncryption
	case conf.TLSImplicit:
		tlsMode = ftpserver.ImplicitEncryption
	}
	return &ftpserver.Settings{
		Listener:   d.s.ln,
		PublicHost: cfg.Server.PublicHost,
		Banner:     cfg.Server.Banner,
		PassiveTransferPortRange: passivePorts{
			start: cfg.Server.PassivePorts.Start, end: cfg.Server.PassivePorts.End,
		},
		IdleTimeout:       int(cfg.Server.IdleTimeout / time.Second),
		ConnectionTimeout: dataConnTimeout,
		// PORT never binds port 20: that needs root and buys nothing.
		ActiveTransferPortNon20: true,
		DisableActiveMode:       !cfg.Server.ActiveMode,
		// SITE CHMOD/CHOWN/RMDIR would bypass the storage policy.
		DisableSite:         true,
		EnableHASH:          true,
		TLSRequired:         tlsMode,
		DefaultTransferType: ftpserver.TransferTypeBinary,
		// Files are stored byte for byte even after TYPE A, as vsftpd does by
		// default: the SHA-256 and the mirror see what the client sent.
		DisableASCIIConversion: true,
		ActiveConnectionsCheck: ftpserver.IPMatchRequired,
		PasvConnectionsCheck:   ftpserver.IPMatchRequired,
		// Each passive port keeps one listener, opened on first use, and
		// a PASV/EPSV reserves it for the control connection's address:
		// a data connection from any other address is closed before the
		// session sees it, so ftpserverlib never keeps a foreign one for
		// a retried RETR. It also spares a listening socket set up and
		// torn down per transfer: PASV fell from some 9 % of the CPU on
		// small files to 3 %.
		PassiveTransferPortMultiplexing: true,
	}, nil
}

func (d driver) ClientConnected(cc ftpserver.ClientContext) (string, error) {
	s := d.s
	ctx, cancel := context.WithCancel(context.Background())
	sess := &session{
		ctx: ctx, cancel: cancel,
		ip:     addrIP(cc.RemoteAddr()),
		remote: cc.RemoteAddr().String(),
	}
	sess.log = s.log.With("session", cc.ID(), "remote", sess.remote)
	cc.SetExtra(sess)
	cfg := s.cfg.Load()
	if cfg.Server.LoginTimeout > 0 {
		log := sess.log
		sess.login = time.AfterFunc(cfg.Server.LoginTimeout, func() {
			log.Info("login deadline passed, closing")
			s.disconnect(sess.remote)
		})
	}
	return cfg.Server.Banner, nil
}

func (d driver) ClientDisconnected(cc ftpserver.ClientContext) {
	s := d.s
	sess := sessionOf(cc)
	if sess == nil {
		return
	}
	if sess.login != nil {
		sess.login.Stop()
	}
	if sess.authed {
		s.logins.release(sess.grant)
		s.guard.loggedOut(sess.ip)
		_ = sess.fsys.Close()
	}
	sess.cancel()
}

func (d driver) PreAuthUser(cc ftpserver.ClientContext, _ string) error {
	if sess := sessionOf(cc); sess != nil && d.s.guard.isBanned(sess.ip) {
		return errLoginFailed
	}
	return nil
}

func (d driver) AuthUser(cc ftpserver.ClientContext, name, pass string) (ftpserver.ClientDriver, error) {
	s := d.s
	sess := sessionOf(cc)
	if sess == nil || sess.authed {
		return nil, errLoginFailed
	}
	u, known := (*s.users.Load())[name]
	hash := *s.dummy.Load()
	if known {
		hash = []byte(u.PasswordHash)
	}
	// A session opened next to one that has just passed bcrypt, with the
	// same password against the same hash, skips it (see loginCache);
	// every other login, every failed one included, goes through bcrypt.
	// Grants are made for known users only, so an unknown name never
	// finds one.
	grant := s.logins.reuse(sess.ip, name, string(hash), pass)
	if grant == nil {
		// The dummy hash has the users' cost, so an unknown name takes as long.
		err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
		if !known || err != nil {
			s.logins.forget(sess.ip, name)
			if s.guard.fail(sess.ip) {
				s.logins.forgetIP(sess.ip)
				sess.log.Warn("login failed, address banned", "user", name)
			} else {
				sess.log.Warn("login failed", "user", name)
			}
			return nil, errLoginFailed
		}
		grant = s.logins.grant(sess.ip, name, u.PasswordHash, pass)
	}
	fsys, err := s.root.Jail(u.Home, u.Name, u.Role == conf.RoleReader)
	if err != nil {
		s.logins.release(grant)
		sess.log.Error("open home", "user", name, "err", err)
		return nil, errors.New("home directory unavailable")
	}
	if sess.login != nil {
		sess.login.Stop()
	}
	sess.user, sess.home, sess.authed, sess.fsys, sess.grant = u.Name, u.Home, true, fsys, grant
	sess.log = sess.log.With("user", u.Name)
	s.guard.loggedIn(sess.ip)
	sess.log.Info("login", "role", string(u.Role))
	cc.SetPath("/")
	return &clientDriver{FS: fsys, srv: s, sess: sess}, nil
}

func (d driver) PostAuthMessage(_ ftpserver.ClientContext, _ string, authErr error) string {
	if authErr != nil {
		return "Login incorrect."
	}
	return "Login successful."
}

func (d driver) GetTLSConfig() (*tls.Config, error) {
	if c := d.s.certs.config(); c != nil {
		return c, nil
	}
	return nil, errTLSOff
}

func (d driver) WrapPassiveListener(l net.Listener) (net.Listener, error) {
	return &passiveListener{Listener: l, g: d.s.guard}, nil
}
