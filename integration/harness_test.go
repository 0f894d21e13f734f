package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jlaffaye/ftp"
	"golang.org/x/crypto/bcrypt"
)

// Timeouts of the harness. They bound every wait so that a broken server
// fails a test instead of hanging the package.
const (
	startTimeout = 30 * time.Second // binary start until "ftp listening"
	logTimeout   = 15 * time.Second // a log line that must follow an action
	ioTimeout    = 30 * time.Second // each read/write on a client connection
	exitTimeout  = 20 * time.Second // SIGTERM (after transfers ended) until the process is gone
)

// binPath is the ftpgate binary built by TestMain; testGroup is the Unix
// group every test server writes with. Both are set once in TestMain before
// any test runs and only read afterwards.
var (
	binPath   string
	testGroup struct {
		name string
		gid  int
	}
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The tests wait on sockets and child processes, not on the CPU: run
	// more of them at once than there are cores, unless told otherwise.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", strconv.Itoa(max(6, runtime.GOMAXPROCS(0))))
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ftpgate-it-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	binPath = filepath.Join(dir, "ftpgate")
	build := exec.Command("go", "build", "-o", binPath, "ftpgate")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: go build ftpgate: %v\n%s", err, out)
		return 1
	}

	cleanup, err := setupGroup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: test group:", err)
		return 1
	}
	defer cleanup()
	defer stopSharedStores()

	return m.Run()
}

// setupGroup picks the group the servers write with: a fresh group when we
// are root (CI), else a supplementary group of the current user. It never
// gives up silently: with no usable group the whole package fails.
func setupGroup() (func(), error) {
	if os.Geteuid() == 0 {
		name := fmt.Sprintf("ftpgate-it-%d", mrand.IntN(1_000_000))
		if out, err := exec.Command("groupadd", name).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("groupadd %s: %v: %s", name, err, out)
		}
		cleanup := func() {
			if out, err := exec.Command("groupdel", name).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "integration: groupdel %s: %v: %s\n", name, err, out)
			}
		}
		g, err := user.LookupGroup(name)
		if err != nil {
			cleanup()
			return nil, fmt.Errorf("lookup %s: %w", name, err)
		}
		gid, err := strconv.Atoi(g.Gid)
		if err != nil {
			cleanup()
			return nil, fmt.Errorf("gid of %s: %w", name, err)
		}
		testGroup.name, testGroup.gid = name, gid
		return cleanup, nil
	}

	groups, err := os.Getgroups()
	if err != nil {
		return nil, fmt.Errorf("getgroups: %w", err)
	}
	gid := os.Getgid()
	for _, g := range groups {
		if g != os.Getgid() {
			gid = g
			break
		}
	}
	testGroup.gid = gid
	testGroup.name = strconv.Itoa(gid)
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		testGroup.name = g.Name
	}
	return func() {}, nil
}

// requireTool fails (never skips) the test when an external client is missing.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("required tool %q is not installed: %v", name, err)
	}
	return p
}

// ---------------------------------------------------------------------------
// Passive port ranges

var nextPassive atomic.Int32

// freePassiveRange hands out a passive port range that no other test server
// of this package uses and whose ports are free right now.
func freePassiveRange(t *testing.T) string {
	t.Helper()
	// Below the kernel's ephemeral range (32768+ on Linux), so that client
	// sockets in TIME_WAIT never hold a passive port.
	const base, size, slots = 21000, 20, 550
	var lastErr error
	for range slots {
		k := int(nextPassive.Add(1)) - 1
		if k >= slots {
			break
		}
		lo := base + k*size
		hi := lo + size - 1
		if lastErr = portsFree(lo, hi); lastErr == nil {
			return fmt.Sprintf("%d-%d", lo, hi)
		}
	}
	t.Fatalf("no free passive port range left (last error: %v)", lastErr)
	return ""
}

func portsFree(lo, hi int) error {
	for p := lo; p <= hi; p++ {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			return err
		}
		l.Close()
	}
	return nil
}

// ---------------------------------------------------------------------------
// Configuration

// testUser is one [[users]] entry plus the clear-text password the tests use.
type testUser struct {
	Name     string
	Password string
	Role     string // admin | uploader | reader
	Home     string // as written in the config; "" = server default
	NoHome   bool   // do not create the home directory before the start
	hash     string
}

// home is the user's jail relative to the root, as the server resolves it.
func (u *testUser) home(cfg *testConfig) string {
	switch {
	case u.Role == "admin" && u.Home == "":
		return "."
	case u.Home != "":
		return u.Home
	default:
		return filepath.Join(cfg.Uploads, u.Name)
	}
}

// testConfig is what startServer renders to TOML. Paths are absolute and
// filled in by the harness; mutators change what a test needs.
type testConfig struct {
	Listen              string
	PassivePorts        string
	IdleTimeout         string
	LoginTimeout        string
	ShutdownGrace       string
	MaxConnections      int
	MaxConnectionsPerIP int
	ActiveMode          bool
	Banner              string

	TLSMode string
	TLSCert string
	TLSKey  string

	BanMaxFailures int
	BanWindow      string
	BanDuration    string

	Root      string
	Uploads   string
	Group     string
	FileMode  string
	DirMode   string
	StateDir  string
	ResumeTTL string
	Fsync     bool

	HTTPListen string

	Users []*testUser

	// Umask, when set, is the umask the server process starts with.
	Umask string

	// Env is added to the environment of every ftpgate process started on
	// this configuration (serve, and the CLI helpers).
	Env []string

	// S3 and Mirrors render the [s3] section and [[mirror]] mappings
	// (store_test.go); nil and empty leave mirroring off.
	S3      *testS3
	Mirrors []*testMirror

	// Extra is TOML appended to the rendered config ([[perms]] policies).
	Extra string
}

// addUser adds a user with a fresh random password and returns it.
func (c *testConfig) addUser(name, role, home string) *testUser {
	u := &testUser{Name: name, Role: role, Home: home, Password: "pw-" + name + "-" + randHex(6)}
	c.Users = append(c.Users, u)
	return u
}

func (c *testConfig) user(name string) *testUser {
	for _, u := range c.Users {
		if u.Name == name {
			return u
		}
	}
	return nil
}

func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func (c *testConfig) render() string {
	var b strings.Builder
	q := tomlString
	fmt.Fprintf(&b, "[server]\n")
	fmt.Fprintf(&b, "listen = %s\n", q(c.Listen))
	fmt.Fprintf(&b, "passive_ports = %s\n", q(c.PassivePorts))
	fmt.Fprintf(&b, "idle_timeout = %s\n", q(c.IdleTimeout))
	fmt.Fprintf(&b, "login_timeout = %s\n", q(c.LoginTimeout))
	fmt.Fprintf(&b, "shutdown_grace = %s\n", q(c.ShutdownGrace))
	fmt.Fprintf(&b, "max_connections = %d\n", c.MaxConnections)
	fmt.Fprintf(&b, "max_connections_per_ip = %d\n", c.MaxConnectionsPerIP)
	fmt.Fprintf(&b, "active_mode = %t\n", c.ActiveMode)
	fmt.Fprintf(&b, "banner = %s\n", q(c.Banner))
	fmt.Fprintf(&b, "\n[server.tls]\nmode = %s\n", q(c.TLSMode))
	if c.TLSCert != "" {
		fmt.Fprintf(&b, "cert = %s\nkey = %s\n", q(c.TLSCert), q(c.TLSKey))
	}
	fmt.Fprintf(&b, "\n[server.ban]\nmax_failures = %d\nwindow = %s\nduration = %s\n",
		c.BanMaxFailures, q(c.BanWindow), q(c.BanDuration))
	fmt.Fprintf(&b, "\n[storage]\n")
	fmt.Fprintf(&b, "root = %s\n", q(c.Root))
	fmt.Fprintf(&b, "uploads = %s\n", q(c.Uploads))
	fmt.Fprintf(&b, "group = %s\n", q(c.Group))
	fmt.Fprintf(&b, "file_mode = %s\n", q(c.FileMode))
	fmt.Fprintf(&b, "dir_mode = %s\n", q(c.DirMode))
	fmt.Fprintf(&b, "state_dir = %s\n", q(c.StateDir))
	fmt.Fprintf(&b, "resume_ttl = %s\n", q(c.ResumeTTL))
	fmt.Fprintf(&b, "fsync = %t\n", c.Fsync)
	fmt.Fprintf(&b, "\n[http]\nlisten = %s\n", q(c.HTTPListen))
	for _, u := range c.Users {
		fmt.Fprintf(&b, "\n[[users]]\nname = %s\npassword_hash = %s\nrole = %s\n", q(u.Name), q(u.hash), q(u.Role))
		if u.Home != "" {
			fmt.Fprintf(&b, "home = %s\n", q(u.Home))
		}
	}
	c.renderMirror(&b)
	b.WriteString(c.Extra)
	return b.String()
}

// newTestConfig is the default test configuration below base: root,
// state dir, a free passive range, the test group, no users yet.
func newTestConfig(t *testing.T, base string) *testConfig {
	t.Helper()
	return &testConfig{
		Listen:              "127.0.0.1:0",
		PassivePorts:        freePassiveRange(t),
		IdleTimeout:         "15m",
		LoginTimeout:        "30s",
		ShutdownGrace:       "30s",
		MaxConnections:      200,
		MaxConnectionsPerIP: 10,
		Banner:              "ftpgate test",
		TLSMode:             "off",
		BanMaxFailures:      5,
		BanWindow:           "10m",
		BanDuration:         "1h",
		Root:                filepath.Join(base, "root"),
		Uploads:             "uploads",
		Group:               testGroup.name,
		FileMode:            "0664",
		DirMode:             "2775",
		StateDir:            filepath.Join(base, "state"),
		ResumeTTL:           "24h",
		Fsync:               true,
		HTTPListen:          "127.0.0.1:0",
	}
}

// ---------------------------------------------------------------------------
// Server process

// server is one running ftpgate process owned by one test.
type server struct {
	t       *testing.T
	cfg     *testConfig
	cfgPath string
	base    string // temp dir holding root, state, outside
	outside string // a directory outside the FTP root, for escape checks

	addr string // host:port of the FTP listener
	port int

	*proc
}

// proc is the state of the ftpgate process, shared by every view of a
// server (see with).
type proc struct {
	cmd      *exec.Cmd
	logs     *logBuffer
	exited   chan struct{}
	exitCode int         // valid after exited is closed
	quitSent atomic.Bool // the harness asked for a goroutine dump
}

// with returns a view of s that reports to t: subtests use it so that
// helper failures end the subtest, not its parent.
func (s *server) with(t *testing.T) *server {
	c := *s
	c.t = t
	return &c
}

// startServer writes a configuration (defaults changed by mutate), starts
// `ftpgate serve` on it and waits until the FTP listener is up. The process
// is killed when the test ends; a panic in its output fails the test.
func startServer(t *testing.T, mutate func(*testConfig)) *server {
	t.Helper()
	s := prepareServer(t, mutate)
	s.launch()
	return s
}

// prepareServer is startServer without the start: the configuration is
// decided and the directories exist, but only launch (or a CLI helper)
// writes the config and runs the binary.
func prepareServer(t *testing.T, mutate func(*testConfig)) *server {
	t.Helper()
	base := t.TempDir()
	s := &server{
		t:       t,
		base:    base,
		outside: filepath.Join(base, "outside"),
		cfgPath: filepath.Join(base, "ftpgate.toml"),
		proc:    &proc{logs: newLogBuffer(), exited: make(chan struct{})},
	}
	s.cfg = newTestConfig(t, base)
	for _, d := range []string{s.cfg.Root, s.outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if mutate != nil {
		mutate(s.cfg)
	}
	if len(s.cfg.Users) == 0 {
		s.cfg.addUser("admin1", "admin", "")
	}
	for _, u := range s.cfg.Users {
		if u.NoHome {
			continue
		}
		s.mkdirGroup(u.home(s.cfg))
	}
	return s
}

// restart starts a new ftpgate process on the same root, state dir and
// configuration once this one has exited, and returns its server.
func (s *server) restart() *server {
	s.t.Helper()
	select {
	case <-s.exited:
	default:
		s.t.Fatal("restart: the process is still running")
	}
	n := &server{t: s.t, cfg: s.cfg, cfgPath: s.cfgPath, base: s.base, outside: s.outside,
		proc: &proc{logs: newLogBuffer(), exited: make(chan struct{})}}
	n.launch()
	return n
}

// launch writes the config, starts the process and waits for its FTP
// listener.
func (s *server) launch() {
	t := s.t
	t.Helper()
	s.writeConfig()

	name, args := binPath, []string{"serve", "--config", s.cfgPath}
	if s.cfg.Umask != "" {
		args = append([]string{"-c", "umask " + s.cfg.Umask + ` && exec "$0" "$@"`, binPath}, args...)
		name = "/bin/sh"
	}
	s.cmd = exec.Command(name, args...)
	s.cmd.Dir = s.base
	s.cmd.Env = append(append(os.Environ(), "FTPGATE_CONFIG="), s.cfg.Env...)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start ftpgate: %v", err)
	}
	var readers sync.WaitGroup
	for _, r := range []io.Reader{stderr, stdout} {
		readers.Go(func() {
			sc := bufio.NewScanner(r)
			sc.Buffer(make([]byte, 64*1024), 1024*1024)
			for sc.Scan() {
				s.logs.add(sc.Text())
			}
		})
	}
	go func() {
		readers.Wait()
		err := s.cmd.Wait()
		s.exitCode = 0
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				s.exitCode = ee.ExitCode()
			} else {
				s.exitCode = -1
			}
		}
		close(s.exited)
	}()
	t.Cleanup(s.stop)

	l, ok := s.waitLog(0, func(l logLine) bool { return l.msg() == "ftp listening" }, startTimeout)
	if !ok {
		t.Fatalf("ftpgate did not log \"ftp listening\" within %v (exit: %s)\n%s", startTimeout, s.exitState(), s.logs.dump())
	}
	s.addr = l.get("addr")
	host, port, err := net.SplitHostPort(s.addr)
	if err != nil || host == "" {
		t.Fatalf("bad addr in %q: %v", l.raw, err)
	}
	s.port, _ = strconv.Atoi(port)
}

func (s *server) exitState() string {
	select {
	case <-s.exited:
		return fmt.Sprintf("exited with code %d", s.exitCode)
	default:
		return "still running"
	}
}

// stop kills the process if it still runs and fails the test when the
// process printed a panic or a fatal runtime error at any point.
func (s *server) stop() {
	select {
	case <-s.exited:
	default:
		_ = s.cmd.Process.Kill()
		select {
		case <-s.exited:
		case <-time.After(exitTimeout):
			s.t.Errorf("ftpgate (pid %d) did not exit after SIGKILL", s.cmd.Process.Pid)
		}
	}
	if p := s.logs.panicText(); p != "" && !s.quitSent.Load() {
		s.t.Errorf("ftpgate printed a panic or fatal error:\n%s", p)
	}
	if s.t.Failed() {
		lines := s.logs.snapshot()
		if s.quitSent.Load() { // the goroutine dump was reported already
			lines = slices.DeleteFunc(lines, func(l string) bool { return !strings.HasPrefix(l, "time=") })
		}
		s.t.Logf("ftpgate output (last lines):\n%s", strings.Join(lines[max(0, len(lines)-150):], "\n"))
	}
}

func (s *server) writeConfig() {
	s.t.Helper()
	for _, u := range s.cfg.Users {
		if u.hash == "" {
			u.hash = bcryptHash(s.t, u.Password)
		}
	}
	if err := os.WriteFile(s.cfgPath, []byte(s.cfg.render()), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// mkdirGroup creates a directory below the root the way the server would:
// dir_mode and the test group. Tests use it to place fixtures.
func (s *server) mkdirGroup(rel string) string {
	s.t.Helper()
	p := filepath.Join(s.cfg.Root, rel)
	if err := os.MkdirAll(p, 0o775); err != nil {
		s.t.Fatal(err)
	}
	for d := p; strings.HasPrefix(d, s.cfg.Root); d = filepath.Dir(d) {
		_ = os.Chown(d, -1, testGroup.gid)
		_ = os.Chmod(d, 0o775|fs.ModeSetgid)
	}
	return p
}

// path is the on-disk location of a path relative to a user's jail.
func (s *server) path(u *testUser, rel string) string {
	return filepath.Join(s.cfg.Root, u.home(s.cfg), filepath.FromSlash(rel))
}

// signal sends sig to the server process.
func (s *server) signal(sig os.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %v: %v", sig, err)
	}
}

// reload rewrites the config from s.cfg, sends SIGHUP and waits for the
// "config reloaded" log line.
func (s *server) reload() {
	s.t.Helper()
	s.writeConfig()
	mark := s.logs.len()
	s.signal(syscall.SIGHUP)
	if _, ok := s.waitLog(mark, func(l logLine) bool { return l.msg() == "config reloaded" }, logTimeout); !ok {
		s.t.Fatalf("no \"config reloaded\" log line after SIGHUP\n%s", s.logs.tail(40))
	}
}

// waitExit waits for the process to exit and returns its exit code.
func (s *server) waitExit(timeout time.Duration) int {
	s.t.Helper()
	select {
	case <-s.exited:
		return s.exitCode
	case <-time.After(timeout):
	}
	// Hung: ask the Go runtime for a goroutine dump, which shows where.
	mark := s.logs.len()
	s.quitSent.Store(true)
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
	}
	// Keep the goroutines that run ftpgate's own code.
	var dump, block []string
	flush := func() {
		if b := strings.Join(block, "\n"); strings.Contains(b, "ftpgate/") || strings.Contains(b, "\nmain.") {
			dump = append(dump, b)
		}
		block = nil
	}
	for _, l := range s.logs.snapshot()[mark:] {
		switch {
		case strings.HasPrefix(l, "time="):
		case l == "":
			flush()
		default:
			block = append(block, l)
		}
	}
	flush()
	s.t.Fatalf("ftpgate did not exit within %v; its goroutines after SIGQUIT:\n%s", timeout, strings.Join(dump, "\n\n"))
	return -1
}

// waitLog waits for a line at index from or later that matches pred.
func (s *server) waitLog(from int, pred func(logLine) bool, timeout time.Duration) (logLine, bool) {
	return s.logs.wait(from, pred, timeout, s.exited)
}

// waitTransferLog waits for the transfer log line of a path that ends in
// the slash-separated name (whole components).
func (s *server) waitTransferLog(from int, name string) logLine {
	s.t.Helper()
	l, ok := s.waitLog(from, func(l logLine) bool {
		p := l.get("path")
		return l.msg() == "transfer" && (p == name || strings.HasSuffix(p, "/"+name))
	}, logTimeout)
	if !ok {
		s.t.Fatalf("no transfer log line for %q\n%s", name, s.logs.tail(40))
	}
	return l
}

// ---------------------------------------------------------------------------
// Logs

// logLine is one line of the server's output, parsed as slog text.
type logLine struct {
	raw  string
	keys map[string]string
	dups []string // keys that appear more than once
}

func (l logLine) get(k string) string { return l.keys[k] }
func (l logLine) msg() string         { return l.keys["msg"] }

// parseLogLine parses `k=v k="quoted v"` pairs; other text is ignored.
func parseLogLine(s string) logLine {
	l := logLine{raw: s, keys: map[string]string{}}
	rest := s
	for rest != "" {
		rest = strings.TrimLeft(rest, " ")
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			break
		}
		key := rest[:eq]
		if sp := strings.IndexByte(key, ' '); sp >= 0 {
			rest = rest[sp+1:]
			continue
		}
		rest = rest[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			qs, err := strconv.QuotedPrefix(rest)
			if err != nil {
				break
			}
			val, _ = strconv.Unquote(qs)
			rest = rest[len(qs):]
		} else if sp := strings.IndexByte(rest, ' '); sp >= 0 {
			val, rest = rest[:sp], rest[sp:]
		} else {
			val, rest = rest, ""
		}
		if _, ok := l.keys[key]; ok {
			l.dups = append(l.dups, key)
		}
		l.keys[key] = val
	}
	return l
}

// logBuffer collects output lines and lets tests wait for one.
type logBuffer struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (b *logBuffer) add(line string) {
	b.mu.Lock()
	b.lines = append(b.lines, line)
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

func (b *logBuffer) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.lines)
}

func (b *logBuffer) snapshot() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.lines)
}

func (b *logBuffer) wait(from int, pred func(logLine) bool, timeout time.Duration, exited <-chan struct{}) (logLine, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	exitSeen := false
	for {
		b.mu.Lock()
		for i := from; i < len(b.lines); i++ {
			if l := parseLogLine(b.lines[i]); pred(l) {
				b.mu.Unlock()
				return l, true
			}
		}
		from = len(b.lines)
		ch := b.changed
		b.mu.Unlock()
		if exitSeen {
			return logLine{}, false
		}
		select {
		case <-ch:
		case <-exited:
			// One more scan: the readers are done once exited is closed.
			exitSeen = true
		case <-deadline.C:
			return logLine{}, false
		}
	}
}

func (b *logBuffer) dump() string { return strings.Join(b.snapshot(), "\n") }

func (b *logBuffer) tail(n int) string {
	lines := b.snapshot()
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// panicText returns the output from the first panic or fatal error on.
func (b *logBuffer) panicText() string {
	lines := b.snapshot()
	for i, l := range lines {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") ||
			(strings.HasPrefix(l, "goroutine ") && strings.HasSuffix(l, "[running]:")) {
			end := min(len(lines), i+40)
			return strings.Join(lines[i:end], "\n")
		}
	}
	return ""
}

// ---------------------------------------------------------------------------
// Users, passwords, TLS material, payloads

func bcryptHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), 4)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeSelfSignedCert writes a fresh self-signed certificate for 127.0.0.1
// and its key into dir and returns both paths and the certificate.
func writeSelfSignedCert(t *testing.T, dir string) (certPath, keyPath string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "ftpgate integration " + serial.String()},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath = filepath.Join(dir, "tls-"+serial.String()+".crt")
	keyPath = filepath.Join(dir, "tls-"+serial.String()+".key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath, cert
}

// clientTLS is the TLS configuration of every test client: the server's
// certificate is self-signed, so verification is off.
func clientTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // self-signed test cert
}

// payload returns n bytes that break any text-mode conversion: CRLF, bare
// LF, bare CR, CR CR LF, NUL and high bytes, ending in CRLF.
func payload(n int, seed uint64) []byte {
	r := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pieces := [][]byte{[]byte("line\r\n"), []byte("\n"), []byte("\r"), []byte("\r\r\n"), []byte("\n\r"), {0}, {0xff, 0xfe}}
	b := make([]byte, 0, n+8)
	for len(b) < n-2 {
		if r.IntN(4) == 0 {
			b = append(b, pieces[r.IntN(len(pieces))]...)
		} else {
			b = append(b, byte(r.IntN(256)))
		}
	}
	b = b[:max(0, n-2)]
	return append(b, '\r', '\n')
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// ---------------------------------------------------------------------------
// jlaffaye/ftp clients

// deadlineConn puts a fresh deadline on every read and write so that a
// misbehaving server fails the test instead of hanging it.
type deadlineConn struct{ net.Conn }

func (c deadlineConn) Read(p []byte) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	return c.Conn.Read(p)
}

func (c deadlineConn) Write(p []byte) (int, error) {
	_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
	return c.Conn.Write(p)
}

// clientOpts says how a jlaffaye client connects.
type clientOpts struct {
	local string // source IP, "" = default
	tls   string // "" plain, "explicit", "implicit"
}

// dialFTP connects a jlaffaye client without logging in.
func (s *server) dialFTP(o clientOpts) (*ftp.ServerConn, error) {
	var tcfg *tls.Config
	if o.tls != "" {
		tcfg = clientTLS()
	}
	var calls atomic.Int32
	dial := func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: 10 * time.Second}
		if o.local != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(o.local)}
		}
		c, err := d.Dial(network, addr)
		if err != nil {
			return nil, err
		}
		var conn net.Conn = deadlineConn{c}
		control := calls.Add(1) == 1
		if tcfg != nil && (o.tls == "implicit" || !control) {
			conn = tls.Client(conn, tcfg)
		}
		return conn, nil
	}
	opts := []ftp.DialOption{ftp.DialWithDialFunc(dial), ftp.DialWithShutTimeout(ioTimeout)}
	switch o.tls {
	case "explicit":
		opts = append(opts, ftp.DialWithExplicitTLS(tcfg))
	case "implicit":
		opts = append(opts, ftp.DialWithTLS(tcfg))
	}
	return ftp.Dial(s.addr, opts...)
}

// login connects and logs u in with the mode's natural client: implicit TLS
// for implicit servers, AUTH TLS for required ones, plain otherwise.
func (s *server) login(u *testUser) *ftp.ServerConn {
	s.t.Helper()
	o := clientOpts{}
	switch s.cfg.TLSMode {
	case "implicit":
		o.tls = "implicit"
	case "required":
		o.tls = "explicit"
	}
	return s.loginWith(u, o)
}

func (s *server) loginWith(u *testUser, o clientOpts) *ftp.ServerConn {
	s.t.Helper()
	c, err := s.dialFTP(o)
	if err != nil {
		s.t.Fatalf("dial %s (%+v): %v", s.addr, o, err)
	}
	if err := c.Login(u.Name, u.Password); err != nil {
		_ = c.Quit()
		s.t.Fatalf("login %s: %v", u.Name, err)
	}
	s.t.Cleanup(func() { _ = c.Quit() })
	return c
}

func retr(t *testing.T, c *ftp.ServerConn, path string) []byte {
	t.Helper()
	r, err := c.Retr(path)
	if err != nil {
		t.Fatalf("RETR %s: %v", path, err)
	}
	b, err := io.ReadAll(r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("RETR %s: %v", path, err)
	}
	return b
}

func stor(t *testing.T, c *ftp.ServerConn, path string, data []byte) {
	t.Helper()
	if err := c.Stor(path, bytes.NewReader(data)); err != nil {
		t.Fatalf("STOR %s: %v", path, err)
	}
}

// ftpCode extracts the reply code of a jlaffaye error, 0 if there is none.
func ftpCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// ---------------------------------------------------------------------------
// Raw control connections

// rawConn is a hand-driven FTP control connection: it sends exactly the
// bytes a test gives it (NUL, invalid UTF-8, no TYPE I) and returns reply
// codes and texts.
type rawConn struct {
	t       *testing.T
	s       *server
	conn    net.Conn
	r       *bufio.Reader
	local   string
	tlsCfg  *tls.Config // set once PROT P is active: data connections use TLS
	lastCmd string
	log     []exchange // every command and its reply, for leak checks
}

// exchange is one command line and the reply it got.
type exchange struct {
	cmd   string
	reply string
}

// reply is one (possibly multi-line) FTP reply.
type reply struct {
	code int
	text string
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.code, r.text) }

// rawDial connects from local ("" = default) and returns the connection and
// the greeting. It does not fail the test when the greeting is not 220.
func (s *server) rawDial(local string) (*rawConn, reply, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", s.addr)
	if err != nil {
		return nil, reply{}, err
	}
	rc := &rawConn{t: s.t, s: s, conn: c, r: bufio.NewReader(c), local: local}
	if s.cfg.TLSMode == "implicit" {
		tc := tls.Client(c, clientTLS())
		rc.conn, rc.r = tc, bufio.NewReader(tc)
		rc.tlsCfg = clientTLS()
	}
	s.t.Cleanup(func() { rc.conn.Close() })
	greet, err := rc.read()
	return rc, greet, err
}

// raw connects and requires the 220 greeting.
func (s *server) raw() *rawConn {
	s.t.Helper()
	rc, greet, err := s.rawDial("")
	if err != nil {
		s.t.Fatalf("connect %s: %v", s.addr, err)
	}
	if greet.code != 220 {
		s.t.Fatalf("greeting: %v", greet)
	}
	return rc
}

// rawLogin connects and logs in u over a raw connection.
func (s *server) rawLogin(u *testUser) *rawConn {
	s.t.Helper()
	rc := s.raw()
	if s.cfg.TLSMode == "required" {
		rc.startTLS()
	}
	rc.mustLogin(u)
	return rc
}

func (rc *rawConn) mustLogin(u *testUser) {
	rc.t.Helper()
	if r := rc.cmd("USER " + u.Name); r.code != 331 && r.code != 230 {
		rc.t.Fatalf("USER %s: %v", u.Name, r)
	}
	if r := rc.cmd("PASS " + u.Password); r.code != 230 {
		rc.t.Fatalf("PASS for %s: %v", u.Name, r)
	}
}

// read reads one reply; multi-line replies are joined with "\n".
func (rc *rawConn) read() (reply, error) {
	_ = rc.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	var lines []string
	first := ""
	for {
		line, err := rc.r.ReadString('\n')
		if err != nil {
			if len(lines) > 0 || line != "" {
				lines = append(lines, line)
			}
			return reply{text: strings.Join(lines, "\n")}, err
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if first == "" {
			if len(line) < 3 {
				return reply{text: line}, fmt.Errorf("short reply line %q", line)
			}
			first = line[:3]
			if len(line) == 3 || line[3] != '-' {
				break
			}
			continue
		}
		if strings.HasPrefix(line, first+" ") || line == first {
			break
		}
	}
	code, err := strconv.Atoi(first)
	if err != nil {
		return reply{text: strings.Join(lines, "\n")}, fmt.Errorf("bad reply code in %q", lines[0])
	}
	r := reply{code: code, text: strings.Join(lines, "\n")}
	rc.log = append(rc.log, exchange{cmd: rc.lastCmd, reply: r.text})
	return r, nil
}

// send writes one command line verbatim.
func (rc *rawConn) send(line string) error {
	rc.lastCmd = line
	_ = rc.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := io.WriteString(rc.conn, line+"\r\n")
	return err
}

// cmd sends a command and reads its reply; a connection error fails the test.
func (rc *rawConn) cmd(line string) reply {
	rc.t.Helper()
	r, err := rc.try(line)
	if err != nil {
		rc.t.Fatalf("%s: %v (reply %q)", printable(line), err, r.text)
	}
	return r
}

// try is cmd that returns connection errors instead of failing.
func (rc *rawConn) try(line string) (reply, error) {
	if err := rc.send(line); err != nil {
		return reply{}, err
	}
	return rc.read()
}

// expect sends a command and fails the test unless the reply code is want.
func (rc *rawConn) expect(line string, want int) reply {
	rc.t.Helper()
	r := rc.cmd(line)
	if r.code != want {
		rc.t.Fatalf("%s: got %v, want %d", printable(line), r, want)
	}
	return r
}

// startTLS upgrades the control connection with AUTH TLS and enables
// PROT P for data connections.
func (rc *rawConn) startTLS() {
	rc.t.Helper()
	rc.expect("AUTH TLS", 234)
	tc := tls.Client(rc.conn, clientTLS())
	_ = tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		rc.t.Fatalf("TLS handshake after AUTH TLS: %v", err)
	}
	rc.conn, rc.r = tc, bufio.NewReader(tc)
	rc.tlsCfg = clientTLS()
	rc.expect("PBSZ 0", 200)
	rc.expect("PROT P", 200)
}

// epsvPort asks for a passive port.
func (rc *rawConn) epsvPort() string {
	rc.t.Helper()
	r := rc.expect("EPSV", 229)
	i, j := strings.Index(r.text, "(|||"), strings.LastIndex(r.text, "|)")
	if i < 0 || j < i+4 {
		rc.t.Fatalf("bad EPSV reply %v", r)
	}
	return r.text[i+4 : j]
}

// epsv asks for a passive port and connects to it.
func (rc *rawConn) epsv() net.Conn {
	rc.t.Helper()
	port := rc.epsvPort()
	d := net.Dialer{Timeout: 10 * time.Second}
	if rc.local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(rc.local)}
	}
	host, _, _ := net.SplitHostPort(rc.s.addr)
	c, err := d.Dial("tcp", net.JoinHostPort(host, port))
	if err != nil {
		rc.t.Fatalf("data connection to port %s: %v", port, err)
	}
	var conn net.Conn = deadlineConn{c}
	if rc.tlsCfg != nil {
		conn = tls.Client(conn, rc.tlsCfg)
	}
	return conn
}

// retr downloads path; it returns the data (nil on refusal) and the final
// (or refusing) reply.
func (rc *rawConn) retr(path string) ([]byte, reply) {
	rc.t.Helper()
	data := rc.epsv()
	defer data.Close()
	r := rc.cmd("RETR " + path)
	if r.code != 150 && r.code != 125 {
		return nil, r
	}
	b, err := io.ReadAll(data)
	if err != nil {
		rc.t.Fatalf("RETR %s: read data: %v", printable(path), err)
	}
	final, err := rc.read()
	if err != nil {
		rc.t.Fatalf("RETR %s: final reply: %v", printable(path), err)
	}
	return b, final
}

// store runs STOR or APPE (verb) of data to path and returns the final or
// refusing reply.
func (rc *rawConn) store(verb, path string, data []byte) reply {
	rc.t.Helper()
	conn := rc.epsv()
	defer conn.Close()
	r := rc.cmd(verb + " " + path)
	if r.code != 150 && r.code != 125 {
		return r
	}
	if _, err := conn.Write(data); err != nil {
		rc.t.Fatalf("%s %s: write data: %v", verb, printable(path), err)
	}
	if tc, ok := conn.(*tls.Conn); ok && len(data) == 0 {
		_ = tc.Handshake()
	}
	if err := conn.Close(); err != nil {
		rc.t.Fatalf("%s %s: close data: %v", verb, printable(path), err)
	}
	final, err := rc.read()
	if err != nil {
		rc.t.Fatalf("%s %s: final reply: %v", verb, printable(path), err)
	}
	return final
}

// list runs a listing command (LIST, NLST, MLSD) and returns its output and
// the final or refusing reply.
func (rc *rawConn) list(cmd string) (string, reply) {
	rc.t.Helper()
	data := rc.epsv()
	defer data.Close()
	r := rc.cmd(cmd)
	if r.code != 150 && r.code != 125 {
		return "", r
	}
	b, err := io.ReadAll(data)
	if err != nil {
		rc.t.Fatalf("%s: read data: %v", printable(cmd), err)
	}
	final, err := rc.read()
	if err != nil {
		rc.t.Fatalf("%s: final reply: %v", printable(cmd), err)
	}
	return string(b), final
}

// closedByServer reports whether the server closes the connection (or
// sends a final 421) within timeout, and the reply it sent, if any.
func (rc *rawConn) closedByServer(timeout time.Duration) (bool, string) {
	_ = rc.conn.SetReadDeadline(time.Now().Add(timeout))
	var got strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := rc.r.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return false, got.String()
			}
			return true, got.String()
		}
	}
}

func printable(s string) string {
	if len(s) > 80 {
		s = s[:60] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return strconv.Quote(s)
}

// ---------------------------------------------------------------------------
// File system checks

// checkOwnership fails unless path has the test group and exactly the
// permission bits perm (setgid included, as in the config's octal modes).
func checkOwnership(t *testing.T, path string, perm uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("stat %s: %v", path, err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Gid) != testGroup.gid {
		t.Errorf("%s: gid %d, want %d (%s)", path, st.Gid, testGroup.gid, testGroup.name)
	}
	if got := st.Mode & 0o7777; got != perm {
		t.Errorf("%s: mode %04o, want %04o", path, got, perm)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// dirNames lists the entry names of a directory on disk.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// waitPart polls dir until it holds an entry that is not one of known and
// has at least minSize bytes: the hidden part file of a running upload.
func waitPart(t *testing.T, dir string, minSize int64, known ...string) (string, int64) {
	t.Helper()
	deadline := time.Now().Add(logTimeout)
	for {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if slices.Contains(known, e.Name()) {
				continue
			}
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && fi.Size() >= minSize {
				return e.Name(), fi.Size()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no part file of >= %d bytes appeared in %s (entries %v)", minSize, dir, dirNames(t, dir))
		}
		time.Sleep(20 * time.Millisecond) // poll interval of a bounded poll
	}
}

// treeState is a snapshot of a directory tree: path -> kind, size, mode,
// mtime and content hash. Tests compare snapshots to prove nothing changed.
func treeState(t *testing.T, root string, skip ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, s := range skip {
			if p == s {
				return filepath.SkipDir
			}
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		v := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			v += " " + sha256Hex(mustRead(t, p))
		}
		m[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func diffTrees(before, after map[string]string) []string {
	var d []string
	for k, v := range before {
		if w, ok := after[k]; !ok {
			d = append(d, "removed "+k)
		} else if v != w {
			d = append(d, "changed "+k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			d = append(d, "added "+k)
		}
	}
	slices.Sort(d)
	return d
}

// ---------------------------------------------------------------------------
// Readers for long uploads

// gatedReader yields data in chunks; it blocks once gateAt bytes were read
// until release is called, and can be slowed with a per-chunk pause.
type gatedReader struct {
	data    []byte
	off     int
	gateAt  int
	chunk   int
	pace    *time.Ticker // nil: no throttle
	reached chan struct{}
	gate    chan struct{}
	once    sync.Once
	rel     sync.Once
}

func newGatedReader(data []byte, gateAt, chunk int, pace time.Duration) *gatedReader {
	g := &gatedReader{data: data, gateAt: gateAt, chunk: chunk, reached: make(chan struct{}), gate: make(chan struct{})}
	if pace > 0 {
		g.pace = time.NewTicker(pace)
	}
	return g
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.off >= len(g.data) {
		return 0, io.EOF
	}
	if g.off >= g.gateAt {
		g.once.Do(func() { close(g.reached) })
		<-g.gate
	}
	if g.pace != nil {
		<-g.pace.C
	}
	end := min(len(g.data), g.off+g.chunk, g.off+len(p))
	if g.off < g.gateAt {
		end = min(end, g.gateAt)
	}
	n := copy(p, g.data[g.off:end])
	g.off += n
	return n, nil
}

func (g *gatedReader) release() { g.rel.Do(func() { close(g.gate) }) }

func (g *gatedReader) waitReached(t *testing.T) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(ioTimeout):
		t.Fatal("upload did not reach its gate")
	}
}

// ---------------------------------------------------------------------------
// External commands

// cmdResult is what an external command did.
type cmdResult struct {
	stdout, stderr string
	code           int
}

func (r cmdResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs a command with stdin and a deadline; a command that cannot start
// or runs past the deadline fails the test.
func run(t *testing.T, stdin string, name string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cmdResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %q timed out\n%s", name, args, res)
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

// gatedUpload is a jlaffaye STOR fed by a gatedReader, running in the
// background.
type gatedUpload struct {
	*gatedReader
	done chan error
}

// startGatedUpload logs u in on a new session and starts a STOR of data to
// name that pauses after gateAt bytes (each chunk after a pace tick, if
// pace > 0). It returns once those bytes were handed to the connection.
func startGatedUpload(t *testing.T, s *server, u *testUser, name string, data []byte, gateAt int, pace time.Duration) *gatedUpload {
	t.Helper()
	c := s.with(t).login(u)
	up := &gatedUpload{gatedReader: newGatedReader(data, gateAt, 64<<10, pace), done: make(chan error, 1)}
	t.Cleanup(up.release)
	go func() { up.done <- c.Stor(name, up.gatedReader) }()
	up.waitReached(t)
	return up
}

// result releases the gate and returns the STOR's outcome, failing the
// test if it takes longer than timeout.
func (up *gatedUpload) result(t *testing.T, timeout time.Duration) error {
	t.Helper()
	up.release()
	select {
	case err := <-up.done:
		return err
	case <-time.After(timeout):
		t.Fatalf("upload did not finish within %v", timeout)
		return nil
	}
}
