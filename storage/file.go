package storage

import (
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path"

	"github.com/spf13/afero"
)

// File is a file or directory opened for reading through an [FS]. It wraps
// an *os.File so that its name and its errors carry the virtual path: an
// *os.File's read, seek and stat errors name the file on the host, and
// ftpserverlib repeats those texts to the client. Downloads still use
// sendfile: io.Copy finds WriteTo, which hands the descriptor to the
// connection. Writing methods fail with fs.ErrPermission. A File is not
// safe for concurrent use, except ReadAt.
type File struct {
	fs   *FS
	f    *os.File
	virt string
}

var (
	_ afero.File  = (*File)(nil)
	_ io.WriterTo = (*File)(nil)
)

func (f *File) fail(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	return f.fs.fail(op, f.virt, err)
}

// Name returns the virtual path the file was opened by.
func (f *File) Name() string { return f.virt }

// Read reads from the current offset.
func (f *File) Read(p []byte) (int, error) {
	n, err := f.f.Read(p)
	return n, f.fail("read", err)
}

// ReadAt reads at off without moving the offset.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.f.ReadAt(p, off)
	return n, f.fail("read", err)
}

// Seek sets the offset of the next Read.
func (f *File) Seek(offset int64, whence int) (int64, error) {
	n, err := f.f.Seek(offset, whence)
	return n, f.fail("seek", err)
}

// WriteTo copies the rest of the file to w, with sendfile when w is a TCP
// or Unix connection (blocking sendfile for plain TCP, see sendFile).
// Errors of the file become *PathError; errors of w are returned as they
// are.
func (f *File) WriteTo(w io.Writer) (int64, error) {
	if c, ok := w.(net.Conn); ok {
		if n, handled, err := sendFile(c, f.f); handled {
			return n, err
		}
	}
	n, err := f.f.WriteTo(w)
	var pe *os.PathError
	if errors.As(err, &pe) && pe.Path == f.f.Name() {
		err = f.fail("read", err)
	}
	return n, err
}

// Stat describes the open file under its virtual base name.
func (f *File) Stat() (os.FileInfo, error) {
	fi, err := f.f.Stat()
	if err != nil {
		return nil, f.fail("stat", err)
	}
	return renamedInfo{fi, path.Base(f.virt)}, nil
}

// Readdir lists up to count entries of a directory (all if count <= 0),
// leaving out part files.
func (f *File) Readdir(count int) ([]os.FileInfo, error) {
	for {
		infos, err := f.f.Readdir(count)
		n := len(infos)
		infos = filterParts(infos, func(fi os.FileInfo) string { return fi.Name() })
		// Keep reading when filtering emptied a non-final batch, since
		// an empty result with a nil error would look like the end.
		if count <= 0 || len(infos) > 0 || n == 0 || err != nil {
			return infos, f.fail("readdir", err)
		}
	}
}

// Readdirnames lists up to n names of a directory (all if n <= 0), leaving
// out part files.
func (f *File) Readdirnames(n int) ([]string, error) {
	for {
		names, err := f.f.Readdirnames(n)
		got := len(names)
		names = filterParts(names, func(s string) string { return s })
		if n <= 0 || len(names) > 0 || got == 0 || err != nil {
			return names, f.fail("readdir", err)
		}
	}
}

func filterParts[T any](s []T, name func(T) string) []T {
	out := s[:0]
	for _, v := range s {
		if !IsPartName(name(v)) {
			out = append(out, v)
		}
	}
	return out
}

// Close closes the file.
func (f *File) Close() error { return f.fail("close", f.f.Close()) }

// Sync does nothing: the file is read-only.
func (f *File) Sync() error { return nil }

// Write is refused: the file is read-only.
func (f *File) Write([]byte) (int, error) { return 0, f.readOnly("write") }

// WriteAt is refused: the file is read-only.
func (f *File) WriteAt([]byte, int64) (int, error) { return 0, f.readOnly("write") }

// WriteString is refused: the file is read-only.
func (f *File) WriteString(string) (int, error) { return 0, f.readOnly("write") }

// Truncate is refused: the file is read-only.
func (f *File) Truncate(int64) error { return f.readOnly("truncate") }

func (f *File) readOnly(op string) error {
	return &PathError{Op: op, Path: f.virt, Err: fs.ErrPermission}
}
