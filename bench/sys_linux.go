package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// tmpfsMagic is TMPFS_MAGIC from linux/magic.h.
const tmpfsMagic = 0x01021994

// sameDisk reports whether dir is on the same filesystem as ref and is not a
// tmpfs.
func sameDisk(dir, ref string) (bool, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return false, fmt.Errorf("statfs %s: %w", dir, err)
	}
	if fs.Type == tmpfsMagic {
		return false, nil
	}
	var a, b syscall.Stat_t
	if err := syscall.Stat(dir, &a); err != nil {
		return false, fmt.Errorf("stat %s: %w", dir, err)
	}
	if err := syscall.Stat(ref, &b); err != nil {
		return false, fmt.Errorf("stat %s: %w", ref, err)
	}
	return a.Dev == b.Dev, nil
}

// dieWithParent makes the child get SIGKILL when bench dies, so that no
// server outlives an interrupted run.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// flushAll writes every dirty page back, so that one transfer's writeback is
// not paid by the next one.
func flushAll() { syscall.Sync() }

// idleTarget is the share of idle CPU time over one sample window that
// counts as a quiet machine.
const idleTarget = 0.85

// waitIdle waits until the CPUs were at least idleTarget idle over a 250 ms
// window, at most limit. It returns the last idle share and whether the target
// was reached. On a 2-core box one busy process (another test run, a build)
// changes a 1 GiB transfer by half, so a timed transfer should not start
// next to one.
func waitIdle(ctx context.Context, limit time.Duration) (float64, bool) {
	deadline := time.Now().Add(limit)
	idle := 0.0
	prevIdle, prevTotal, err := cpuTimes()
	if err != nil {
		return 0, true // no /proc/stat: nothing to wait for
	}
	for {
		select {
		case <-ctx.Done():
			return idle, true
		case <-time.After(250 * time.Millisecond):
		}
		i, t, err := cpuTimes()
		if err != nil {
			return 0, true
		}
		if t > prevTotal {
			idle = float64(i-prevIdle) / float64(t-prevTotal)
		}
		if idle >= idleTarget {
			return idle, true
		}
		if time.Now().After(deadline) {
			return idle, false
		}
		prevIdle, prevTotal = i, t
	}
}

// cpuTimes reads the idle (idle + iowait) and total jiffies of all CPUs.
func cpuTimes() (idle, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	for i, f := range fields[1:] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return idle, total, nil
}

// userHZ is the unit of the times in /proc/<pid>/stat: USER_HZ, 100 on
// every architecture Linux runs Go on.
const userHZ = 100

// cpu is the user and system time of the process and its descendants,
// each with the children it has reaped: vsftpd runs each session in
// processes of its own, and their time moves to the parent that reaps them.
func (p *process) cpu() (time.Duration, error) {
	var ticks int64
	var walk func(pid string, depth int) error
	walk = func(pid string, depth int) error {
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			if depth > 0 && errors.Is(err, fs.ErrNotExist) {
				return nil // exited and reaped meanwhile: counted by its parent
			}
			return err
		}
		// The command name may hold spaces; the fields after it do not.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			return fmt.Errorf("/proc/%s/stat: no command name", pid)
		}
		// f[0] is field 3 (state); utime, stime, cutime, cstime are 14-17.
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 15 {
			return fmt.Errorf("/proc/%s/stat: %d fields", pid, len(f)+2)
		}
		for _, v := range f[11:15] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("/proc/%s/stat: %w", pid, err)
			}
			ticks += n
		}
		children, err := os.ReadFile("/proc/" + pid + "/task/" + pid + "/children")
		if err != nil || depth > 8 {
			return nil
		}
		for _, c := range strings.Fields(string(children)) {
			if err := walk(c, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(strconv.Itoa(p.cmd.Process.Pid), 0); err != nil {
		return 0, err
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// lockVsftpdUser takes a machine-wide lock on vsftpd's test user, waiting
// while another bench run holds it; unlock releases it.
func lockVsftpdUser(ctx context.Context, e *env) (unlock func(), err error) {
	p := filepath.Join(os.TempDir(), "ftpgate-bench-"+vsftpdUser+".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vsftpd: lock the test user: %w", err)
	}
	for waited := false; ; waited = true {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("vsftpd: lock %s: %w", p, err)
		}
		if !waited {
			e.log.Info("another bench run is using vsftpd's test user; waiting", "lock", p)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
