//go:build unix && !linux

package storage

import (
	"errors"

	"golang.org/x/sys/unix"
)

// syncRange is Linux-only; elsewhere Commit's fsync does all the work.
func syncRange(int, int64, int64, bool) error { return errors.ErrUnsupported }

// availableBytes is statfs's space available to unprivileged users.
func availableBytes(fd int) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// openDirBeneath needs Linux's openat2; elsewhere os.Root does the walk.
func openDirBeneath(int, string) (int, error) { return -1, errors.ErrUnsupported }
