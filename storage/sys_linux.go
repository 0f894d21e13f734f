package storage

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// syncRange starts writeback of [off, off+n) or, with wait, writes it out
// and waits until it is on disk.
func syncRange(fd int, off, n int64, wait bool) error {
	flags := unix.SYNC_FILE_RANGE_WRITE
	if wait {
		flags |= unix.SYNC_FILE_RANGE_WAIT_BEFORE | unix.SYNC_FILE_RANGE_WAIT_AFTER
	}
	return unix.SyncFileRange(fd, off, n, flags)
}

// availableBytes is statfs's space available to unprivileged users.
func availableBytes(fd int) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return 0, err
	}
	bsize := int64(st.Frsize)
	if bsize <= 0 {
		bsize = int64(st.Bsize)
	}
	return int64(st.Bavail) * bsize, nil
}

// openDirBeneath opens the directory name below the directory top, the
// kernel refusing any walk (through "..", an absolute symlink or one that
// climbs out) that would leave top. It fails with ENOSYS before Linux 5.6.
func openDirBeneath(top int, name string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(top, name, &how)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// haveSyncFS: the commit log needs syncfs(2).
const haveSyncFS = true

// syncFS writes out the filesystem holding fd (syncfs(2)).
func syncFS(fd int) error { return unix.Syncfs(fd) }

// fdatasync writes out f's data and the metadata needed to read it.
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// memoryFS reports whether fd is on a filesystem that a reboot empties.
func memoryFS(fd int) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return false, err
	}
	return st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC, nil
}

// statCtime is st's change time in ns.
func statCtime(st *syscall.Stat_t) int64 { return st.Ctim.Nano() }

// openTmpfile opens a new file without a name in the directory dfd
// (O_TMPFILE), mode 0600.
func openTmpfile(dfd int) (int, error) {
	return openat(dfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
}

// linkEmptyPath links the file fd itself to name in dfd.
func linkEmptyPath(fd, dfd int, name string) error {
	return unix.Linkat(fd, "", dfd, name, unix.AT_EMPTY_PATH)
}
