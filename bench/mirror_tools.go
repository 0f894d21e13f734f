package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The mc alias and rclone remote every anchor command uses; both are
// configured through the environment only (see mcEnv, rcloneEnv).
const (
	mcAlias      = "bench"
	rcloneRemote = "bench"
)

// mcEnv points mc at the run's MinIO through MC_HOST_<alias>, with a config
// directory of its own so that the user's ~/.mc is neither read nor written.
func (r *mirrorRun) mcEnv() []string {
	return append(os.Environ(),
		"MC_CONFIG_DIR="+filepath.Join(r.dir, "mc-config"),
		"MC_HOST_"+mcAlias+"="+r.s3.url(),
		"MC_NO_COLOR=1",
	)
}

// rcloneEnv defines the S3 remote through RCLONE_CONFIG_<REMOTE>_* and an
// empty config file, so that the user's rclone.conf plays no part.
func (r *mirrorRun) rcloneEnv() []string {
	p := "RCLONE_CONFIG_" + strings.ToUpper(rcloneRemote) + "_"
	return append(os.Environ(),
		"RCLONE_CONFIG="+filepath.Join(r.dir, "rclone.conf"),
		p+"TYPE=s3",
		p+"PROVIDER=Minio",
		p+"ENV_AUTH=false",
		p+"ENDPOINT=http://"+r.s3.endpoint,
		p+"ACCESS_KEY_ID="+r.s3.accessKey,
		p+"SECRET_ACCESS_KEY="+r.s3.secretKey,
		p+"REGION=us-east-1",
	)
}

// gateFileConfig is the whole ftpgate configuration a mirror leg writes:
// the FTP part as bench's ftp target writes it, plus [s3] and one
// [[mirror]] (the contract of issue 3). Its own types, so that changes to
// the ftp target's config do not change this one.
type gateFileConfig struct {
	Server  gateFileServer   `toml:"server"`
	Storage gateFileStorage  `toml:"storage"`
	HTTP    gateFileHTTP     `toml:"http"`
	Users   []gateFileUser   `toml:"users"`
	S3      gateFileS3       `toml:"s3"`
	Mirrors []gateFileMirror `toml:"mirror"`
}

type gateFileServer struct {
	Listen       string `toml:"listen"`
	PassivePorts string `toml:"passive_ports"`
}

type gateFileStorage struct {
	Root     string `toml:"root"`
	StateDir string `toml:"state_dir"`
	Fsync    bool   `toml:"fsync"`
}

type gateFileHTTP struct {
	Listen string `toml:"listen"`
}

type gateFileUser struct {
	Name         string `toml:"name"`
	PasswordHash string `toml:"password_hash"`
	Role         string `toml:"role"`
}

type gateFileS3 struct {
	Endpoint      string `toml:"endpoint"`
	Secure        bool   `toml:"secure"`
	AccessKey     string `toml:"access_key"`
	SecretKeyFile string `toml:"secret_key_file"`
}

type gateFileMirror struct {
	Name      string `toml:"name"`
	Local     string `toml:"local"`
	Bucket    string `toml:"bucket"`
	Remove    bool   `toml:"remove"`
	Pull      string `toml:"pull"`
	Reconcile string `toml:"reconcile"`
}

// gateMapping is the mapping name every leg uses.
const gateMapping = "m"

// gateSetup is one written ftpgate configuration: its own directory with
// the FTP root and the state directory, one mapping of local to bucket.
type gateSetup struct {
	dir     string
	cfgPath string
	root    string // FTP root
	state   string // state_dir
	ftpAddr string
	passive portRange
}

// writeGateConfig writes a configuration under <r.dir>/<label> mapping local
// (created when missing) to bucket. The FTP root is <dir>/root, the admin
// user lands there; local may be inside it.
func (r *mirrorRun) writeGateConfig(label, local, bucket string) (*gateSetup, error) {
	dir := filepath.Join(r.dir, label)
	g := &gateSetup{dir: dir, root: filepath.Join(dir, "root"), state: filepath.Join(dir, "state"), cfgPath: filepath.Join(dir, "ftpgate.toml")}
	for _, d := range []string{g.root, g.state, local} {
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
	// Away from ftpgate's default range and from vsftpd's, in case one runs.
	if g.passive, err = freePortRange(100, portRange{30000, 30099}, r.vsPassive); err != nil {
		return nil, err
	}
	g.ftpAddr = "127.0.0.1:" + strconv.Itoa(port)
	cfg := gateFileConfig{
		Server:  gateFileServer{Listen: g.ftpAddr, PassivePorts: g.passive.String()},
		Storage: gateFileStorage{Root: g.root, StateDir: g.state, Fsync: true},
		HTTP:    gateFileHTTP{Listen: "127.0.0.1:" + strconv.Itoa(httpPort)},
		Users:   []gateFileUser{{Name: "bench", PasswordHash: r.adminHash, Role: "admin"}},
		S3:      gateFileS3{Endpoint: r.s3.endpoint, AccessKey: r.s3.accessKey, SecretKeyFile: r.secretFile},
		Mirrors: []gateFileMirror{{Name: gateMapping, Local: local, Bucket: bucket, Remove: true, Reconcile: "1h"}},
	}
	var b bytes.Buffer
	b.WriteString("# Written by ftpgate's bench (go run ./bench mirror); removed with its scratch directory.\n\n")
	if err := toml.NewEncoder(&b).Encode(cfg); err != nil {
		return nil, fmt.Errorf("encode ftpgate config: %w", err)
	}
	if err := os.WriteFile(g.cfgPath, b.Bytes(), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", g.cfgPath, err)
	}
	return g, nil
}

// startServe runs `ftpgate serve` on g and waits for its FTP greeting.
func (r *mirrorRun) startServe(ctx context.Context, g *gateSetup, limit time.Duration) (*process, error) {
	proc, err := startProcess(serverFTPGate, filepath.Join(g.dir, "ftpgate.log"), cleanEnv(),
		r.gateBin, "serve", "--config", g.cfgPath)
	if err != nil {
		return nil, err
	}
	if err := proc.waitFTP(ctx, g.ftpAddr, limit); err != nil {
		proc.stop(5 * time.Second)
		return nil, err
	}
	return proc, nil
}

// checkGateMirror fails unless the built ftpgate has the mirror command.
func checkGateMirror(ctx context.Context, bin string) error {
	out, err := exec.CommandContext(ctx, bin, "mirror", "--help").CombinedOutput()
	if err != nil {
		return fmt.Errorf("this ftpgate has no working `mirror` command yet (%v): %s", err, firstLine(string(out)))
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// modVersion names the Go module a binary was built from ("mc v0.0.0-…"),
// from `go version -m`; the base name alone when that fails.
func modVersion(ctx context.Context, bin string) string {
	name := filepath.Base(bin)
	out, err := exec.CommandContext(ctx, "go", "version", "-m", bin).Output()
	if err != nil {
		return name
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "mod" {
			return name + " " + f[2]
		}
	}
	return name
}

// cmdResult is one finished command.
type cmdResult struct {
	dur    time.Duration
	stdout string
	maxRSS int64 // bytes, from getrusage; 0 when unknown
}

// timedCommand waits for a quiet machine, then runs argv and returns its
// wall time from start to exit. Its output goes to <r.dir>/logs/<label>.log;
// stdout is also returned. A non-zero exit is an error that quotes the end
// of the log.
func (r *mirrorRun) timedCommand(ctx context.Context, label string, env []string, argv ...string) (cmdResult, error) {
	flushAll()
	r.timedStarts++
	if idle, ok := waitIdle(ctx, 10*time.Second); !ok {
		r.busyStarts++
		r.e.log.Warn("the machine stayed busy; this figure is noisy", "leg", label, "cpu_idle", fmt.Sprintf("%.0f%%", idle*100))
	}
	return r.runCommand(ctx, label, env, argv...)
}

// runCommand runs argv to the end with its output logged as timedCommand
// does, without waiting for a quiet machine first.
func (r *mirrorRun) runCommand(ctx context.Context, label string, env []string, argv ...string) (cmdResult, error) {
	logs := filepath.Join(r.dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return cmdResult{}, err
	}
	logPath := filepath.Join(logs, label+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return cmdResult{}, err
	}
	defer f.Close()
	fmt.Fprintf(f, "$ %s\n", strings.Join(argv, " "))
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout = io.MultiWriter(&stdout, f)
	cmd.Stderr = f
	dieWithParent(cmd)
	start := time.Now()
	err = cmd.Run()
	res := cmdResult{dur: time.Since(start), stdout: stdout.String()}
	if cmd.ProcessState != nil {
		res.maxRSS = maxRSS(cmd.ProcessState)
	}
	if err != nil {
		return res, fmt.Errorf("%s: %s: %w\n%s", label, filepath.Base(argv[0]), err, tailFile(logPath, 25))
	}
	return res, nil
}

// tailFile is the last lines of a log file, indented, for error messages.
func tailFile(p string, lines int) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return "log " + p + ":\n  " + strings.Join(all, "\n  ")
}
