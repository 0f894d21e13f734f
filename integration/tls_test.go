package integration

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// startTLSServer starts a server in mode with a fresh self-signed cert.
func startTLSServer(t *testing.T, mode string, mutate func(*testConfig)) *server {
	t.Helper()
	certDir := t.TempDir()
	return startServer(t, func(c *testConfig) {
		c.TLSMode = mode
		c.TLSCert, c.TLSKey, _ = writeSelfSignedCert(t, certDir)
		if mutate != nil {
			mutate(c)
		}
	})
}

// roundTrip uploads and downloads a CRLF payload and checks the disk copy.
func roundTrip(t *testing.T, s *server, u *testUser, o clientOpts, name string, seed uint64) {
	t.Helper()
	s = s.with(t)
	c := s.loginWith(u, o)
	data := payload(500_000, seed)
	stor(t, c, name, data)
	if got := retr(t, c, name); !bytes.Equal(got, data) {
		t.Errorf("%+v: download differs: %d bytes, want %d", o, len(got), len(data))
	}
	if disk := mustRead(t, s.path(u, name)); !bytes.Equal(disk, data) {
		t.Errorf("%+v: file on disk differs", o)
	}
	checkOwnership(t, s.path(u, name), 0o664)
}

// oldTLSHandshake tries a TLS 1.0/1.1-only handshake on c.
func oldTLSHandshake(c net.Conn) error {
	tc := tls.Client(c, &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // self-signed test cert
		MinVersion:         tls.VersionTLS10,
		MaxVersion:         tls.VersionTLS11,
	})
	_ = tc.SetDeadline(time.Now().Add(ioTimeout))
	return tc.Handshake()
}

func TestExplicitTLS(t *testing.T) {
	t.Parallel()
	s := startTLSServer(t, "explicit", nil)
	admin := s.cfg.user("admin1")

	t.Run("FEAT", func(t *testing.T) {
		s := s.with(t)
		rc := s.raw()
		if r := rc.cmd("FEAT"); !strings.Contains(r.text, "AUTH TLS") {
			t.Errorf("FEAT does not offer AUTH TLS:\n%s", r.text)
		}
	})
	t.Run("RoundTrip", func(t *testing.T) { roundTrip(t, s, admin, clientOpts{tls: "explicit"}, "tls.bin", 100) })
	t.Run("PlainStillAllowed", func(t *testing.T) { roundTrip(t, s, admin, clientOpts{}, "plain.bin", 101) })
	t.Run("NegotiatesTLS12Plus", func(t *testing.T) {
		s := s.with(t)
		rc := s.raw()
		rc.expect("AUTH TLS", 234)
		tc := tls.Client(rc.conn, clientTLS())
		_ = tc.SetDeadline(time.Now().Add(ioTimeout))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if v := tc.ConnectionState().Version; v < tls.VersionTLS12 {
			t.Errorf("negotiated TLS version %#x", v)
		}
	})
	t.Run("TLS11Refused", func(t *testing.T) {
		s := s.with(t)
		rc := s.raw()
		rc.expect("AUTH TLS", 234)
		if err := oldTLSHandshake(rc.conn); err == nil {
			t.Errorf("a TLS 1.1-max client completed the handshake")
		}
	})
	t.Run("RawPROTP", func(t *testing.T) {
		s := s.with(t)
		rc := s.raw()
		rc.startTLS()
		rc.mustLogin(admin)
		data := payload(100_000, 102)
		if r := rc.store("STOR", "raw-tls.bin", data); r.code != 226 {
			t.Fatalf("STOR over TLS: %v", r)
		}
		if got, r := rc.retr("raw-tls.bin"); r.code != 226 || !bytes.Equal(got, data) {
			t.Errorf("RETR over TLS: %v, %d bytes", r, len(got))
		}
	})
}

func TestImplicitTLS(t *testing.T) {
	t.Parallel()
	s := startTLSServer(t, "implicit", nil)
	admin := s.cfg.user("admin1")

	t.Run("RoundTrip", func(t *testing.T) { roundTrip(t, s, admin, clientOpts{tls: "implicit"}, "implicit.bin", 110) })
	t.Run("TLS11Refused", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", s.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := oldTLSHandshake(c); err == nil {
			t.Errorf("a TLS 1.1-max client completed the implicit handshake")
		}
	})
	t.Run("PlaintextGetsNoFTP", func(t *testing.T) {
		s := s.with(t)
		c, err := net.DialTimeout("tcp", s.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("USER " + admin.Name + "\r\nPASS " + admin.Password + "\r\n"))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		if strings.HasPrefix(line, "2") || strings.HasPrefix(line, "3") {
			t.Errorf("plaintext client on the implicit port got an FTP reply: %q", line)
		}
	})
}

func TestRequiredTLS(t *testing.T) {
	t.Parallel()
	s := startTLSServer(t, "required", nil)
	admin := s.cfg.user("admin1")

	t.Run("USERBeforeAUTHRefused", func(t *testing.T) {
		s := s.with(t)
		rc := s.raw()
		r, err := rc.try("USER " + admin.Name)
		if err == nil && (r.code < 400) {
			t.Errorf("USER before AUTH TLS: %v, want a refusal", r)
		}
		if err == nil && r.code == 331 {
			if r, err := rc.try("PASS " + admin.Password); err == nil && r.code == 230 {
				t.Errorf("logged in without TLS in required mode")
			}
		}
	})
	t.Run("RoundTrip", func(t *testing.T) { roundTrip(t, s, admin, clientOpts{tls: "explicit"}, "required.bin", 120) })
	t.Run("PlainDataRefused", func(t *testing.T) {
		s := s.with(t)
		// TLS on the control connection, PROT C for data.
		rc := s.raw()
		rc.expect("AUTH TLS", 234)
		tc := tls.Client(rc.conn, clientTLS())
		_ = tc.SetDeadline(time.Now().Add(ioTimeout))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		rc.conn, rc.r = tc, bufio.NewReader(tc)
		rc.mustLogin(admin)
		mustWrite(t, s.path(admin, "clear.bin"), []byte("secret data\r\n"))
		rc.cmd("PROT C")
		if data, r := rc.retr("clear.bin"); r.code < 400 || len(data) > 0 {
			t.Errorf("RETR over a plain data connection in required mode: %v, %d bytes", r, len(data))
		}
	})
}

// TestTLSCertReload: a new certificate at the configured paths is used by
// new connections after SIGHUP; a running TLS session keeps working.
func TestTLSCertReload(t *testing.T) {
	t.Parallel()
	certDir := t.TempDir()
	var first, second []byte
	s := startServer(t, func(c *testConfig) {
		c.TLSMode = "explicit"
		certPath, keyPath, cert := writeSelfSignedCert(t, certDir)
		c.TLSCert, c.TLSKey = certDir+"/live.crt", certDir+"/live.key"
		mustWrite(t, c.TLSCert, mustRead(t, certPath))
		mustWrite(t, c.TLSKey, mustRead(t, keyPath))
		first = cert.Raw
	})
	admin := s.cfg.user("admin1")
	peer := func() []byte {
		rc := s.raw()
		rc.expect("AUTH TLS", 234)
		tc := tls.Client(rc.conn, clientTLS())
		_ = tc.SetDeadline(time.Now().Add(ioTimeout))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		return tc.ConnectionState().PeerCertificates[0].Raw
	}
	if !bytes.Equal(peer(), first) {
		t.Fatal("server does not present the configured certificate")
	}
	running := s.loginWith(admin, clientOpts{tls: "explicit"})

	certPath, keyPath, cert := writeSelfSignedCert(t, certDir)
	second = cert.Raw
	for src, dst := range map[string]string{certPath: s.cfg.TLSCert, keyPath: s.cfg.TLSKey} {
		if err := os.WriteFile(dst+".tmp", mustRead(t, src), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dst+".tmp", dst); err != nil {
			t.Fatal(err)
		}
	}
	s.reload()
	if !bytes.Equal(peer(), second) {
		t.Errorf("after SIGHUP new connections do not get the new certificate")
	}
	if err := running.NoOp(); err != nil {
		t.Errorf("running TLS session broke on reload: %v", err)
	}
	data := payload(10_000, 130)
	stor(t, running, "after-reload.bin", data)
	if !bytes.Equal(retr(t, running, "after-reload.bin"), data) {
		t.Errorf("running TLS session: round trip after reload differs")
	}
}
