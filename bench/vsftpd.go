package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The local account and PAM service vsftpd authenticates the benchmark with.
// The account has no login shell and gets a fresh random password on every run,
// locked again at the end; the PAM service checks only the Unix password
// (Debian's vsftpd service also requires a shell listed in /etc/shells).
const (
	vsftpdUser    = "ftpbench"
	vsftpdPAMName = "ftpgate-bench"
	vsftpdPAMFile = "/etc/pam.d/" + vsftpdPAMName
	vsftpdPAM     = `# Written by ftpgate's bench (go run ./bench) for its vsftpd test user ` + vsftpdUser + `.
auth     required pam_unix.so
account  required pam_unix.so
session  required pam_permit.so
`
)

// startVsftpd runs Debian's vsftpd in the foreground on 127.0.0.1 with a
// generated config, its user landing in <workDir>/vsftpd/home.
func startVsftpd(ctx context.Context, e *env, avoid ...portRange) (*ftpServer, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("vsftpd: needs root (a local test user and a PAM service); run as root or with -only ftpgate")
	}
	bin, err := exec.LookPath("vsftpd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/vsftpd"); serr != nil {
			return nil, fmt.Errorf("vsftpd not installed (make bench installs it): %w", err)
		}
		bin = "/usr/sbin/vsftpd"
	}
	dir := filepath.Join(e.workDir, "vsftpd")
	home := filepath.Join(dir, "home")
	empty := filepath.Join(dir, "empty")
	for _, d := range []string{home, empty} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("vsftpd: %w", err)
		}
	}
	if err := searchableByOthers(home); err != nil {
		return nil, fmt.Errorf("vsftpd: its user cannot reach its home (use -dir): %w", err)
	}
	if err := ensurePAMService(); err != nil {
		return nil, err
	}
	// The test user is one per machine: a second bench run would give it
	// a new password, and lock it when done, under the first one's feet.
	unlock, err := lockVsftpdUser(ctx, e)
	if err != nil {
		return nil, err
	}
	password := rand.Text()
	if err := ensureUser(ctx, home, password); err != nil {
		unlock()
		return nil, err
	}
	cleanup := func() {
		if out, err := exec.Command("usermod", "--lock", vsftpdUser).CombinedOutput(); err != nil {
			e.log.Warn("cannot lock the vsftpd test user", "user", vsftpdUser, "err", err, "out", string(out))
		}
		unlock()
	}
	if err := chownTo(home, vsftpdUser); err != nil {
		cleanup()
		return nil, err
	}

	port, err := freePort()
	if err != nil {
		cleanup()
		return nil, err
	}
	pasv, err := freePortRange(200, avoid...)
	if err != nil {
		cleanup()
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	conf := vsftpdConfig(port, pasv, empty)
	confPath := filepath.Join(dir, "vsftpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		cleanup()
		return nil, fmt.Errorf("write %s: %w", confPath, err)
	}
	proc, err := startProcess(serverVsftpd, filepath.Join(dir, "vsftpd.log"), os.Environ(), bin, confPath)
	if err != nil {
		cleanup()
		return nil, err
	}
	if err := proc.waitFTP(ctx, addr, 15*time.Second); err != nil {
		proc.stop(5 * time.Second)
		cleanup()
		return nil, err
	}
	e.log.Info("vsftpd ready", "addr", addr, "passive_ports", pasv.String(), "home", home)
	return &ftpServer{
		name: serverVsftpd, addr: addr, user: vsftpdUser, password: password,
		home: home, passive: pasv, proc: proc, cleanup: cleanup,
	}, nil
}

// vsftpdConfig is a foreground, loopback-only, no-TLS vsftpd for one local user.
// The sandboxing options are off because they need namespaces and seccomp that
// containers usually refuse; uploads are not fsynced by vsftpd (it never does).
func vsftpdConfig(port int, pasv portRange, emptyDir string) string {
	lines := []string{
		"# Written by ftpgate's bench (go run ./bench).",
		"listen=YES",
		"listen_ipv6=NO",
		"listen_address=127.0.0.1",
		"listen_port=" + strconv.Itoa(port),
		"background=NO",
		"anonymous_enable=NO",
		"local_enable=YES",
		"write_enable=YES",
		"local_umask=022",
		"chroot_local_user=NO",
		"pasv_enable=YES",
		"pasv_address=127.0.0.1",
		"pasv_min_port=" + strconv.Itoa(pasv.first),
		"pasv_max_port=" + strconv.Itoa(pasv.last),
		"port_enable=NO",
		"connect_from_port_20=NO",
		"max_clients=0",
		"max_per_ip=0",
		"pam_service_name=" + vsftpdPAMName,
		"seccomp_sandbox=NO",
		"isolate=NO",
		"isolate_network=NO",
		"secure_chroot_dir=" + emptyDir,
		"xferlog_enable=NO",
		"dirmessage_enable=NO",
		"ssl_enable=NO",
		"use_sendfile=YES",
	}
	return strings.Join(lines, "\n") + "\n"
}

// ensurePAMService writes the PAM service file when it is missing or differs.
func ensurePAMService() error {
	if b, err := os.ReadFile(vsftpdPAMFile); err == nil && string(b) == vsftpdPAM {
		return nil
	}
	if err := os.WriteFile(vsftpdPAMFile, []byte(vsftpdPAM), 0o644); err != nil {
		return fmt.Errorf("vsftpd: write PAM service: %w", err)
	}
	return nil
}

// ensureUser creates the test user when missing, points its home at home and
// sets its password.
func ensureUser(ctx context.Context, home, password string) error {
	shell := "/usr/sbin/nologin"
	if _, err := os.Stat(shell); err != nil {
		shell = "/bin/false"
	}
	var args []string
	if _, err := user.Lookup(vsftpdUser); err != nil {
		var unknown user.UnknownUserError
		if !errors.As(err, &unknown) {
			return fmt.Errorf("vsftpd: look up user %s: %w", vsftpdUser, err)
		}
		args = []string{"useradd", "--system", "--no-create-home", "--home-dir", home, "--shell", shell,
			"--comment", "ftpgate bench vsftpd user", vsftpdUser}
	} else {
		args = []string{"usermod", "--home", home, "--shell", shell, vsftpdUser}
	}
	if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("vsftpd: %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	cmd := exec.CommandContext(ctx, "chpasswd")
	cmd.Stdin = strings.NewReader(vsftpdUser + ":" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("vsftpd: chpasswd %s: %w: %s", vsftpdUser, err, bytes.TrimSpace(out))
	}
	return nil
}

// chownTo gives dir to the named user.
func chownTo(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("vsftpd: look up user %s: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return fmt.Errorf("vsftpd: uid of %s: %w", name, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return fmt.Errorf("vsftpd: gid of %s: %w", name, err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("vsftpd: %w", err)
	}
	return nil
}

// searchableByOthers checks that every directory from / down to dir lets
// other users through, which vsftpd's unprivileged session needs.
func searchableByOthers(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return &fs.PathError{Op: "search", Path: d, Err: fs.ErrPermission}
		}
		if parent := filepath.Dir(d); parent == d {
			return nil
		}
	}
}
