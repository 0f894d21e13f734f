package mirror

import (
	"io/fs"
	"syscall"

	"golang.org/x/sys/unix"
)

// statOf extracts what the mirror compares from an lstat or fstat result.
func statOf(fi fs.FileInfo) fileStat {
	st := fileStat{size: fi.Size(), mtime: fi.ModTime().UnixNano(), mode: fi.Mode()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.inode = s.Ino
		st.dev = s.Dev
		st.ctime = s.Ctim.Nano()
	}
	return st
}

// releaseMapped drops a read-only shared file mapping's pages from the
// resident set (MADV_DONTNEED; they stay in the page cache).
func releaseMapped(addr uintptr, n int64) {
	if addr == 0 || n <= 0 {
		return
	}
	_, _, _ = unix.Syscall(unix.SYS_MADVISE, addr, uintptr(n), unix.MADV_DONTNEED)
}
