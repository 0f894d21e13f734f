package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is a server started by bench, with its output in a log file. Its
// methods are safe for use by one goroutine.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once Wait returned
	err     error         // Wait's result, set before done is closed
}

// startProcess runs argv with stdout and stderr appended to logPath. The child
// dies with bench (see dieWithParent) and must be stopped with stop.
func startProcess(name, logPath string, env []string, argv ...string) (*process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// waitFTP polls addr until it answers with a 220 greeting, the process exits,
// or the deadline passes.
func (p *process) waitFTP(ctx context.Context, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it listened on %s: %v\n%s", p.name, addr, p.err, p.logTail(20))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if greets(addr) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not greet on %s within %s\n%s", p.name, addr, limit, p.logTail(20))
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-p.done:
		case <-ctx.Done():
		}
	}
}

// greets reports whether an FTP server at addr sends its 220 line.
func greets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "220")
}

// stop sends SIGTERM, and SIGKILL after grace; it returns once the process is
// gone.
func (p *process) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// logTail is the end of the process's log, for error messages.
func (p *process) logTail(lines int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return p.name + " log " + p.logPath + ":\n  " + strings.Join(all, "\n  ")
}

// freePort is a TCP port on 127.0.0.1 that nobody listens on right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portRange is an inclusive range of TCP ports.
type portRange struct{ first, last int }

func (r portRange) String() string { return strconv.Itoa(r.first) + "-" + strconv.Itoa(r.last) }

// freePortRange finds n consecutive free ports for passive data connections,
// below Linux's ephemeral range (32768-60999) so that the clients' own ports
// never collide with them, and outside the ranges in avoid.
func freePortRange(n int, avoid ...portRange) (portRange, error) {
	const low, high = 20000, 32767
	for range 100 {
		first := low + rand.IntN(high-low-n)
		r := portRange{first, first + n - 1}
		if overlaps(r, avoid) {
			continue
		}
		if allFree(r) {
			return r, nil
		}
	}
	return portRange{}, errors.New("no free range of passive ports")
}

func overlaps(r portRange, others []portRange) bool {
	for _, o := range others {
		if r.first <= o.last && o.first <= r.last {
			return true
		}
	}
	return false
}

func allFree(r portRange) bool {
	for port := r.first; port <= r.last; port++ {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}
