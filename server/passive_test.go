package server

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"ftpgate/conf"
)

// rawFTP is a control connection driven line by line.
type rawFTP struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr, user string) *rawFTP {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawFTP{t: t, conn: c, r: bufio.NewReader(c)}
	rc.expect("", 220)
	rc.expect("USER "+user, 331)
	rc.expect("PASS secret", 230)
	rc.expect("TYPE I", 200)
	return rc
}

// cmd sends line (unless empty) and returns the final reply's code and text.
func (rc *rawFTP) cmd(line string) (int, string) {
	rc.t.Helper()
	_ = rc.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if line != "" {
		if _, err := io.WriteString(rc.conn, line+"\r\n"); err != nil {
			rc.t.Fatal(err)
		}
	}
	for {
		l, err := rc.r.ReadString('\n')
		if err != nil {
			rc.t.Fatalf("%s: %v", line, err)
		}
		if len(l) >= 4 && l[3] == ' ' {
			code, _ := strconv.Atoi(l[:3])
			return code, strings.TrimSpace(l)
		}
	}
}

func (rc *rawFTP) expect(line string, want int) string {
	rc.t.Helper()
	code, text := rc.cmd(line)
	if code != want {
		rc.t.Fatalf("%s: %s, want %d", line, text, want)
	}
	return text
}

// epsv opens a passive data connection.
func (rc *rawFTP) epsv() net.Conn {
	rc.t.Helper()
	text := rc.expect("EPSV", 229)
	i, j := strings.Index(text, "(|||"), strings.LastIndex(text, "|)")
	if i < 0 || j < i {
		rc.t.Fatalf("EPSV reply %q", text)
	}
	host, _, _ := net.SplitHostPort(rc.conn.RemoteAddr().String())
	c, err := net.DialTimeout("tcp", net.JoinHostPort(host, text[i+4:j]), 5*time.Second)
	if err != nil {
		rc.t.Fatal(err)
	}
	rc.t.Cleanup(func() { c.Close() })
	return c
}

// TestPassivePortReusedBySameAddress: two sessions from one address take
// turns on a one-port range. The second reserves the port while the first
// still transfers over it; the end of the first transfer must not cancel
// the second's reservation (ftpserverlib releases reservations by address).
func TestPassivePortReusedBySameAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ts := startTestServer(t, func(c *conf.Config) { c.Server.PassivePorts = conf.PortRange{Start: port, End: port} })
	addr := ts.srv.Addr().String()
	data := bytes.Repeat([]byte("ftpgate"), 10_000)

	a := dialRaw(t, addr, "up")
	dataA := a.epsv()
	a.expect("STOR a.bin", 150)
	if _, err := dataA.Write(data); err != nil {
		t.Fatal(err)
	}
	b := dialRaw(t, addr, "up")
	text := b.expect("EPSV", 229)
	if !strings.Contains(text, "|||"+strconv.Itoa(port)+"|") {
		t.Fatalf("EPSV on a one-port range: %s", text)
	}
	dataA.Close()
	a.expect("", 226)

	dataB, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer dataB.Close()
	b.expect("RETR a.bin", 150)
	_ = dataB.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(dataB)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("RETR over the reused port: %d bytes, %v; want %d", len(got), err, len(data))
	}
	b.expect("", 226)
}
