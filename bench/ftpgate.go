package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"golang.org/x/crypto/bcrypt"
)

// Names of the servers under test, as -only takes them and the report prints
// them.
const (
	serverFTPGate = "ftpgate"
	serverVsftpd  = "vsftpd"
)

// ftpServer is a running FTP server under test. Not safe for concurrent use.
type ftpServer struct {
	name     string // serverFTPGate or serverVsftpd
	addr     string // host:port of the control connection
	user     string
	password string
	home     string // local directory the user lands in after login
	passive  portRange
	proc     *process
	cleanup  func() // undoes what the start did besides the process; may be nil
}

// login opens an lftp session to s.
func (s *ftpServer) login(ctx context.Context) (*lftpSession, error) {
	return lftpLogin(ctx, s.addr, s.user, s.password)
}

// stop stops the server and undoes its set-up.
func (s *ftpServer) stop() {
	s.proc.stop(10 * time.Second)
	if s.cleanup != nil {
		s.cleanup()
	}
}

// buildFTPGate builds the binary from the module root into the scratch
// directory.
func buildFTPGate(ctx context.Context, e *env) (string, error) {
	bin := filepath.Join(e.workDir, "ftpgate")
	e.log.Info("building ftpgate", "path", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = e.repoRoot
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ftpgate: %w\n%s", err, out.String())
	}
	return bin, nil
}

// ftpgateConfig is the part of ftpgate's TOML configuration the benchmark
// sets; everything else keeps its default.
type ftpgateConfig struct {
	Server  ftpgateServer  `toml:"server"`
	Storage ftpgateStorage `toml:"storage"`
	HTTP    ftpgateHTTP    `toml:"http"`
	Users   []ftpgateUser  `toml:"users"`
}

type ftpgateServer struct {
	Listen       string `toml:"listen"`
	PassivePorts string `toml:"passive_ports"`
}

type ftpgateStorage struct {
	Root     string `toml:"root"`
	StateDir string `toml:"state_dir"`
	Fsync    bool   `toml:"fsync"`
}

type ftpgateHTTP struct {
	Listen string `toml:"listen"`
}

type ftpgateUser struct {
	Name         string `toml:"name"`
	PasswordHash string `toml:"password_hash"`
	Role         string `toml:"role"`
}

// encodeFTPGateConfig renders cfg as the TOML file ftpgate reads.
func encodeFTPGateConfig(cfg ftpgateConfig) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Written by ftpgate's bench (go run ./bench); removed with its scratch directory.\n\n")
	if err := toml.NewEncoder(&b).Encode(cfg); err != nil {
		return nil, fmt.Errorf("encode ftpgate config: %w", err)
	}
	return b.Bytes(), nil
}

// startFTPGate runs `ftpgate serve` with a config of its own under
// <workDir>/<label>, an admin user and fsync as given.
func startFTPGate(ctx context.Context, e *env, bin, label string, fsync bool, avoid ...portRange) (*ftpServer, error) {
	dir := filepath.Join(e.workDir, label)
	root := filepath.Join(dir, "root")
	state := filepath.Join(dir, "state")
	for _, d := range []string{root, state} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("ftpgate %s: %w", label, err)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	pasv, err := freePortRange(200, avoid...)
	if err != nil {
		return nil, err
	}
	password := rand.Text()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return nil, fmt.Errorf("bcrypt: %w", err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cfg := ftpgateConfig{
		Server:  ftpgateServer{Listen: addr, PassivePorts: pasv.String()},
		Storage: ftpgateStorage{Root: root, StateDir: state, Fsync: fsync},
		HTTP:    ftpgateHTTP{Listen: "127.0.0.1:" + strconv.Itoa(httpPort)},
		Users:   []ftpgateUser{{Name: "bench", PasswordHash: string(hash), Role: "admin"}},
	}
	data, err := encodeFTPGateConfig(cfg)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "ftpgate.toml")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", cfgPath, err)
	}
	proc, err := startProcess(serverFTPGate, filepath.Join(dir, "ftpgate.log"), cleanEnv(),
		bin, "serve", "--config", cfgPath)
	if err != nil {
		return nil, err
	}
	if err := proc.waitFTP(ctx, addr, 30*time.Second); err != nil {
		proc.stop(5 * time.Second)
		return nil, err
	}
	e.log.Info("ftpgate ready", "addr", addr, "passive_ports", pasv.String(), "fsync", fsync, "root", root)
	return &ftpServer{name: serverFTPGate, addr: addr, user: "bench", password: password, home: root, passive: pasv, proc: proc}, nil
}

// cleanEnv is bench's environment without FTPGATE_* variables, so that the
// server under test runs on its config file alone.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FTPGATE_") {
			env = append(env, kv)
		}
	}
	return env
}
