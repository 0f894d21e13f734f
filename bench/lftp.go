package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// lftpSettings apply to every session. ssl-allow is off because neither server
// offers TLS here and the comparison is about plain transfers.
func lftpSettings() []string {
	return []string{
		"set cmd:fail-exit yes",
		"set cmd:interactive no",
		"set ftp:passive-mode true",
		"set ftp:ssl-allow no",
		"set net:max-retries 1",
		"set net:timeout 60",
		"set xfer:clobber on",
	}
}

// lftpSession is one lftp process driven through its standard input: commands
// are sent one at a time and each is followed by an echo of a marker, so a
// command's duration is measured without lftp's start-up and the login. Not
// safe for concurrent use.
type lftpSession struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string   // lftp's merged stdout and stderr, closed at EOF
	done  chan struct{} // closed when the reader has finished
	seq   int

	waited  bool
	waitErr error
}

// lftpLogin starts lftp, logs in to addr and returns once the login is done.
func lftpLogin(ctx context.Context, addr, user, password string) (*lftpSession, error) {
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		return nil, fmt.Errorf("lftp: address %q has no port", addr)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("lftp: %w", err)
	}
	cmd := exec.CommandContext(ctx, "lftp")
	cmd.Stdout, cmd.Stderr = w, w
	stdin, err := cmd.StdinPipe()
	if err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("lftp: %w", err)
	}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start lftp: %w", err)
	}
	w.Close()
	s := &lftpSession{cmd: cmd, stdin: stdin, lines: make(chan string, 64), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	// The password goes through the pipe, never onto a command line.
	open := fmt.Sprintf("open -u %s,%s -p %s %s", user, password, port, host)
	if _, err := s.do(ctx, append(lftpSettings(), open, "quote NOOP")...); err != nil {
		s.close()
		return nil, fmt.Errorf("lftp login to %s as %s: %w", addr, user, err)
	}
	return s, nil
}

// do runs commands and returns what lftp printed besides the marker.
func (s *lftpSession) do(ctx context.Context, commands ...string) ([]string, error) {
	s.seq++
	marker := "__bench_done_" + strconv.Itoa(s.seq) + "__"
	script := strings.Join(commands, "\n") + "\necho " + marker + "\n"
	if _, err := io.WriteString(s.stdin, script); err != nil {
		return nil, fmt.Errorf("write to lftp: %w", err)
	}
	var out []string
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				err := s.wait()
				return out, fmt.Errorf("lftp failed (%v): %s", err, strings.Join(out, " | "))
			}
			if line == marker {
				return out, nil
			}
			out = append(out, line)
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
}

// timed runs one command and returns its wall time.
func (s *lftpSession) timed(ctx context.Context, command string) (time.Duration, []string, error) {
	start := time.Now()
	out, err := s.do(ctx, command)
	return time.Since(start), out, err
}

// wait reaps lftp after its output ended; it may be called more than once.
func (s *lftpSession) wait() error {
	if !s.waited {
		<-s.done
		s.waitErr, s.waited = s.cmd.Wait(), true
	}
	return s.waitErr
}

// close ends the session and reaps lftp.
func (s *lftpSession) close() {
	_, _ = io.WriteString(s.stdin, "quit\n")
	s.stdin.Close()
	for range s.lines {
	}
	_ = s.wait()
}
