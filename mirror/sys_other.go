//go:build !linux

package mirror

import "io/fs"

// statOf extracts what the mirror compares from an lstat or fstat result.
// Without Linux's stat the inode, device and ctime are unknown: renames
// are then uploads, and ctime-only changes go unnoticed.
func statOf(fi fs.FileInfo) fileStat {
	return fileStat{size: fi.Size(), mtime: fi.ModTime().UnixNano(), ctime: fi.ModTime().UnixNano(), mode: fi.Mode()}
}

// releaseMapped is a no-op outside Linux.
func releaseMapped(uintptr, int64) {}
