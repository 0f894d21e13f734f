//go:build !linux

package perms

import (
	"context"
	"errors"
)

// errUnsupported: the walk needs Linux system calls (getdents, ioprio_set).
var errUnsupported = errors.New("perms: the normaliser runs on Linux only")

func newRateLimiter(float64) limiter { return nil }

func (n *Normaliser) walk(context.Context, Mode, tree, *counters, func(Finding)) error {
	return errUnsupported
}
