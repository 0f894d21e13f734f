//go:build !linux

package main

import (
	"context"
	"errors"
	"os/exec"
	"time"
)

func sameDisk(dir, ref string) (bool, error) {
	return false, errors.New("bench runs on Linux only")
}

func dieWithParent(cmd *exec.Cmd) {}

func flushAll() {}

func waitIdle(ctx context.Context, limit time.Duration) (float64, bool) { return 1, true }

func (p *process) cpu() (time.Duration, error) { return 0, errors.New("bench runs on Linux only") }

func lockVsftpdUser(ctx context.Context, e *env) (func(), error) {
	return nil, errors.New("bench runs on Linux only")
}
