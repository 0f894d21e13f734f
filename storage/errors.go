package storage

import (
	"errors"
	"io/fs"
	"strconv"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors carried by [PathError.Err]. Together with [fs.ErrNotExist],
// [fs.ErrExist], [fs.ErrPermission], [fs.ErrInvalid] (a bad offset or range)
// and [fs.ErrClosed] (use after Commit/Abort/Close) they are the only values
// an [FS], [File] or [Upload] reports; test them with [errors.Is].
var (
	// ErrInvalidName refuses a name no client may use: NUL, control
	// characters, invalid UTF-8, over-long, or naming a part file.
	ErrInvalidName = errors.New("invalid file name")
	// ErrOutsideJail refuses a name that resolves, through a symlink,
	// outside the user's jail.
	ErrOutsideJail = errors.New("path leads outside the jail")
	// ErrNotEmpty refuses to remove a directory that still has entries.
	ErrNotEmpty = errors.New("directory not empty")
	// ErrIsDir refuses a file operation on a directory.
	ErrIsDir = errors.New("is a directory")
	// ErrNotDir refuses a directory operation on something else.
	ErrNotDir = errors.New("not a directory")
	// ErrNoSpace reports a full filesystem or an exhausted quota.
	ErrNoSpace = errors.New("no space left on device")
	// ErrBusy refuses an upload while the same user is already uploading
	// the same path (both would write the same part file).
	ErrBusy = errors.New("an upload of this file is already in progress")
	// ErrIO is any other failure of the underlying filesystem.
	ErrIO = errors.New("i/o error")
)

// PathError is the only error type returned by [FS], [File] and [Upload].
// Path is the virtual path as the client sees it (for example "/a/b"), never
// a path on the host, so its text is safe to send to a client. Err is one of
// the sentinels listed at [ErrInvalidName]; for [ErrIO] it may be an error
// wrapping ErrIO that adds the system's description (never a path).
type PathError struct {
	Op   string
	Path string
	Err  error
}

// maxErrorPath bounds how much of a (possibly hostile, over-long) name an
// error message repeats.
const maxErrorPath = 512

// Error formats the error for logs and FTP replies: names with control
// characters or invalid UTF-8 are quoted and long names are shortened.
func (e *PathError) Error() string {
	p := e.Path
	if len(p) > maxErrorPath {
		p = p[:maxErrorPath] + "..."
	}
	if !printable(p) {
		p = strconv.QuoteToASCII(p)
	}
	msg := "<nil>"
	if e.Err != nil {
		msg = e.Err.Error()
	}
	return e.Op + " " + p + ": " + msg
}

// Unwrap returns the sentinel so that [errors.Is] works.
func (e *PathError) Unwrap() error { return e.Err }

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// ioError is ErrIO plus the errno's text, kept for the operator's logs.
type ioError struct{ errno syscall.Errno }

func (e ioError) Error() string        { return ErrIO.Error() + ": " + e.errno.Error() }
func (e ioError) Is(target error) bool { return target == ErrIO }

// classify reduces an error from the os package or a system call to one of
// the package's sentinels. escape is os.Root's (unexported) error for a path
// that leaves the root; nil if it could not be determined.
func classify(err, escape error) error {
	if err == nil {
		return nil
	}
	if escape != nil && errors.Is(err, escape) {
		return ErrOutsideJail
	}
	var ioe ioError
	if errors.As(err, &ioe) {
		return ioe
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return classifyErrno(errno)
	}
	// The package's own sentinels pass through unchanged.
	for _, s := range [...]error{
		ErrInvalidName, ErrOutsideJail, ErrNotEmpty, ErrIsDir, ErrNotDir, ErrNoSpace, ErrBusy, ErrIO,
		fs.ErrNotExist, fs.ErrExist, fs.ErrPermission, fs.ErrInvalid, fs.ErrClosed,
	} {
		if errors.Is(err, s) {
			return s
		}
	}
	return ErrIO
}

func classifyErrno(errno syscall.Errno) error {
	switch errno {
	case syscall.ENOENT, syscall.ENOTDIR:
		// ENOTDIR: a component on the way is a file, so the name does
		// not exist as asked.
		return fs.ErrNotExist
	case syscall.EEXIST:
		return fs.ErrExist
	case syscall.EACCES, syscall.EPERM, syscall.EROFS, syscall.ELOOP, syscall.ETXTBSY:
		return fs.ErrPermission
	case syscall.ENOTEMPTY:
		return ErrNotEmpty
	case syscall.EISDIR:
		return ErrIsDir
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
		return ErrNoSpace
	case syscall.ENAMETOOLONG:
		return ErrInvalidName
	}
	return ioError{errno}
}
