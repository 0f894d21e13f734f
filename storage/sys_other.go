//go:build unix && !linux

package storage

import (
	"errors"
	"os"
	"syscall"

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

// haveSyncFS: syncfs(2) is Linux-only; without it there is no commit log.
const haveSyncFS = false

// syncFS is Linux-only.
func syncFS(int) error { return errors.ErrUnsupported }

// fdatasync falls back to fsync.
func fdatasync(f *os.File) error { return f.Sync() }

// memoryFS: no commit log elsewhere, so the answer does not matter.
func memoryFS(int) (bool, error) { return false, nil }

// statCtime is st's change time in ns.
func statCtime(st *syscall.Stat_t) int64 { return st.Ctimespec.Nano() }

// openTmpfile: O_TMPFILE is Linux-only; parts are named.
func openTmpfile(int) (int, error) { return -1, unix.EOPNOTSUPP }

// linkEmptyPath is Linux-only.
func linkEmptyPath(int, int, string) error { return unix.ENOENT }
