package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/afero"
	"golang.org/x/sys/unix"
)

// FS is one user's view of the storage: a jail rooted at the user's home.
// Every name is a slash path as an FTP client sends it, absolute ("/a/b",
// from the jail's top) or relative (also from the jail's top); ".." never
// climbs above the top and symlinks leading out of the jail fail. Every
// error is a [*PathError] naming the virtual path.
//
// FS implements [afero.Fs] for reading; writes go through [FS.OpenUpload],
// and modes and owners belong to the [Policy], so Create, OpenFile for
// writing, Chmod, Chown and RemoveAll are refused. An FS is obtained from
// [Root.Jail], owned by one session, and safe for concurrent use.
type FS struct {
	r        *Root
	jail     *os.Root
	top      *os.File // the jail's top directory, for openDir
	home     string   // root-relative, "." for the whole root
	user     string
	readOnly bool
}

var _ afero.Fs = (*FS)(nil)

// hashBufSize is the read size for hashing and copying whole files.
const hashBufSize = 1 << 20

// Name returns "ftpgate".
func (f *FS) Name() string { return "ftpgate" }

// Close releases the jail's descriptors. Files and uploads already open
// stay usable.
func (f *FS) Close() error {
	err := f.top.Close()
	if jerr := f.jail.Close(); err == nil {
		err = jerr
	}
	return err
}

// fail wraps err for the client: a *PathError with the virtual path and a
// sentinel. An error that already is one is returned as it is.
func (f *FS) fail(op, virt string, err error) error {
	if err == nil {
		return nil
	}
	var pe *PathError
	if errors.As(err, &pe) {
		return pe
	}
	return &PathError{Op: op, Path: virt, Err: classify(err, f.r.escape)}
}

// name resolves a client's name; see resolve.
func (f *FS) name(op, name string) (virt, rel string, err error) {
	virt, rel, err = resolve(name)
	if err != nil {
		return "", "", &PathError{Op: op, Path: virt, Err: err}
	}
	return virt, rel, nil
}

// writable resolves a name for a change, refused on a read-only FS.
func (f *FS) writable(op, name string) (virt, rel string, err error) {
	virt, rel, err = f.name(op, name)
	if err == nil && f.readOnly {
		err = &PathError{Op: op, Path: virt, Err: fs.ErrPermission}
	}
	return virt, rel, err
}

// refuse reports op on name as not permitted (after checking the name, so
// that a bad name is still reported as such).
func (f *FS) refuse(op, name string) error {
	virt, _, err := f.name(op, name)
	if err != nil {
		return err
	}
	return &PathError{Op: op, Path: virt, Err: fs.ErrPermission}
}

// Create is refused: uploads go through OpenUpload.
func (f *FS) Create(name string) (afero.File, error) {
	return nil, f.refuse("create", name)
}

// Mkdir creates the directory name with the policy's group and mode; perm
// is ignored.
func (f *FS) Mkdir(name string, _ os.FileMode) error {
	virt, rel, err := f.writable("mkdir", name)
	if err != nil {
		return err
	}
	if rel == "." {
		return &PathError{Op: "mkdir", Path: virt, Err: fs.ErrExist}
	}
	return f.fail("mkdir", virt, f.r.mkdir(f.jail, rel))
}

// MkdirAll creates name and any missing parents, each with the policy's
// group and mode; perm is ignored.
func (f *FS) MkdirAll(name string, _ os.FileMode) error {
	virt, rel, err := f.writable("mkdir", name)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil
	}
	return f.fail("mkdir", virt, f.r.mkdirAll(f.jail, rel))
}

// Open opens name (a file or a directory) for reading.
func (f *FS) Open(name string) (afero.File, error) {
	file, err := f.openRead("open", name, false)
	if err != nil {
		return nil, err
	}
	return file, nil
}

// OpenFile opens name for reading; any flag asking to write, create,
// truncate or append is refused (uploads go through OpenUpload).
func (f *FS) OpenFile(name string, flag int, _ os.FileMode) (afero.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_TRUNC) != 0 {
		return nil, f.refuse("open", name)
	}
	return f.Open(name)
}

// OpenRead opens the regular file name for a download, positioned at
// offset.
func (f *FS) OpenRead(name string, offset int64) (*File, error) {
	file, err := f.openRead("open", name, true)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		file.Close()
		return nil, &PathError{Op: "open", Path: file.virt, Err: fs.ErrInvalid}
	}
	if offset > 0 {
		if _, err := file.Seek(offset, io.SeekStart); err != nil {
			file.Close()
			return nil, err
		}
	}
	return file, nil
}

// openRead opens name read-only. Only regular files, and directories unless
// regular is set, may be opened: a FIFO or a device would block the session
// or have side effects.
func (f *FS) openRead(op, name string, regular bool) (*File, error) {
	virt, rel, err := f.name(op, name)
	if err != nil {
		return nil, err
	}
	// Checked before opening so that nothing special is ever opened
	// (opening a tape rewinds it); checked again on the descriptor below,
	// which is the check that counts.
	fi, err := f.jail.Stat(rel)
	if err == nil {
		err = f.checkType(fi, regular)
	}
	if err != nil {
		return nil, f.fail(op, virt, err)
	}
	of, err := f.jail.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, f.fail(op, virt, err)
	}
	fi, err = of.Stat()
	if err == nil {
		err = f.checkType(fi, regular)
	}
	if err != nil {
		of.Close()
		return nil, f.fail(op, virt, err)
	}
	return &File{fs: f, f: of, virt: virt}, nil
}

func (f *FS) checkType(fi fs.FileInfo, regular bool) error {
	switch {
	case fi.Mode().IsRegular():
		return nil
	case fi.IsDir() && regular:
		return ErrIsDir
	case fi.IsDir():
		return nil
	}
	return fs.ErrPermission
}

// Remove deletes the file (or symlink) name; a directory is refused with
// ErrIsDir (see RemoveDir).
func (f *FS) Remove(name string) error {
	virt, rel, err := f.writable("remove", name)
	if err != nil {
		return err
	}
	if rel == "." {
		return &PathError{Op: "remove", Path: virt, Err: ErrIsDir}
	}
	err = f.atParent(rel, func(dirfd int, base string) error {
		return unix.Unlinkat(dirfd, base, 0)
	})
	return f.fail("remove", virt, err)
}

// RemoveDir deletes the directory name if it is empty. Part files are not
// entries a client can see, so a directory holding only parts of
// interrupted uploads counts as empty: they are removed with it.
func (f *FS) RemoveDir(name string) error {
	virt, rel, err := f.writable("rmdir", name)
	if err != nil {
		return err
	}
	if rel == "." {
		return &PathError{Op: "rmdir", Path: virt, Err: fs.ErrPermission}
	}
	err = f.atParent(rel, func(dirfd int, base string) error {
		err := unix.Unlinkat(dirfd, base, unix.AT_REMOVEDIR)
		if (err == unix.ENOTEMPTY || err == unix.EEXIST) && f.purgeParts(rel) {
			err = unix.Unlinkat(dirfd, base, unix.AT_REMOVEDIR)
		}
		if err == unix.ENOTDIR {
			return ErrNotDir
		}
		return err
	})
	return f.fail("rmdir", virt, err)
}

// purgeParts removes the part files in dir if they are its only entries
// and none is being written; it reports whether dir was left empty.
func (f *FS) purgeParts(dir string) bool {
	d, err := f.jail.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return false
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil || len(names) == 0 || slices.ContainsFunc(names, func(n string) bool { return !IsPartName(n) }) {
		return false
	}
	for _, n := range names {
		key := path.Join(f.home, dir, n)
		if !f.r.acquire(key) {
			return false
		}
		err := control(d, func(fd int) error { return unix.Unlinkat(fd, n, 0) })
		if err == nil || err == unix.ENOENT {
			_ = f.r.reg.remove(key) // a stale entry is dropped by the next sweep
		}
		f.r.release(key)
		if err != nil && err != unix.ENOENT {
			return false
		}
	}
	return true
}

// atParent runs fn on the directory holding rel and rel's last component,
// for the calls that must not follow that component (unlink, rmdir).
func (f *FS) atParent(rel string, fn func(dirfd int, base string) error) error {
	d, err := f.jail.OpenFile(path.Dir(rel), os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	return control(d, func(fd int) error { return fn(fd, path.Base(rel)) })
}

// control runs fn with f's descriptor.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rawControl(rc, fn)
}

// rawControl runs fn with rc's descriptor.
func rawControl(rc syscall.RawConn, fn func(fd int) error) error {
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// RemoveAll is refused: no client command needs a recursive delete.
func (f *FS) RemoveAll(name string) error {
	return f.refuse("removeall", name)
}

// Rename moves oldname to newname within the jail, replacing a file at
// newname.
func (f *FS) Rename(oldname, newname string) error {
	ov, orel, err := f.writable("rename", oldname)
	if err != nil {
		return err
	}
	_, nrel, err := f.writable("rename", newname)
	if err != nil {
		return err
	}
	if orel == "." || nrel == "." {
		return &PathError{Op: "rename", Path: ov, Err: fs.ErrPermission}
	}
	return f.fail("rename", ov, f.jail.Rename(orel, nrel))
}

// Stat describes name, following symlinks inside the jail. For a regular
// file that this user has an unfinished upload of, whose part is not older
// than the final file (or there is no final file yet), it describes the
// part under the final name, so that SIZE reports how much can be resumed.
func (f *FS) Stat(name string) (os.FileInfo, error) {
	virt, rel, err := f.name("stat", name)
	if err != nil {
		return nil, err
	}
	fi, err := f.jail.Stat(rel)
	if rel == "." && err == nil {
		return renamedInfo{fi, "/"}, nil
	}
	if f.readOnly || (err == nil && !fi.Mode().IsRegular()) {
		return fi, f.fail("stat", virt, err)
	}
	if err != nil && classify(err, f.r.escape) != fs.ErrNotExist {
		return nil, f.fail("stat", virt, err)
	}
	part, perr := f.jail.Lstat(path.Join(path.Dir(rel), partName(f.user, virt)))
	// On a tie the part wins: file times are coarse (a clock tick), and a
	// part that exists at all was most likely written after the file.
	if perr == nil && part.Mode().IsRegular() && (err != nil || !part.ModTime().Before(fi.ModTime())) {
		return renamedInfo{part, path.Base(rel)}, nil
	}
	if err != nil {
		return nil, f.fail("stat", virt, err)
	}
	return fi, nil
}

// renamedInfo shows a FileInfo under another name.
type renamedInfo struct {
	fs.FileInfo
	name string
}

func (i renamedInfo) Name() string { return i.name }

// ReadDir lists the directory name sorted by name, describing symlinks as
// symlinks; part files are left out.
func (f *FS) ReadDir(name string) ([]fs.FileInfo, error) {
	virt, rel, err := f.name("readdir", name)
	if err != nil {
		return nil, err
	}
	d, err := f.jail.OpenFile(rel, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, f.fail("readdir", virt, err)
	}
	defer d.Close()
	infos, err := d.Readdir(-1)
	if err != nil {
		return nil, f.fail("readdir", virt, err)
	}
	infos = filterParts(infos, fs.FileInfo.Name)
	slices.SortFunc(infos, func(a, b fs.FileInfo) int { return strings.Compare(a.Name(), b.Name()) })
	return infos, nil
}

// Chmod is refused: the policy owns modes.
func (f *FS) Chmod(name string, _ os.FileMode) error {
	return f.refuse("chmod", name)
}

// Chown is refused: the policy owns groups.
func (f *FS) Chown(name string, _, _ int) error {
	return f.refuse("chown", name)
}

// Chtimes sets name's access and modification times (MFMT).
func (f *FS) Chtimes(name string, atime, mtime time.Time) error {
	virt, rel, err := f.writable("chtimes", name)
	if err != nil {
		return err
	}
	return f.fail("chtimes", virt, f.jail.Chtimes(rel, atime, mtime))
}

// Hash returns the hex SHA-256 of the bytes [start, end) of the regular
// file name; a range past the end of the file hashes what there is.
func (f *FS) Hash(name string, start, end int64) (string, error) {
	file, err := f.openRead("hash", name, true)
	if err != nil {
		return "", err
	}
	defer file.Close()
	if start < 0 || end < start {
		return "", &PathError{Op: "hash", Path: file.virt, Err: fs.ErrInvalid}
	}
	h := sha256.New()
	buf := make([]byte, hashBufSize)
	if _, err := io.CopyBuffer(h, io.NewSectionReader(file.f, start, end-start), buf); err != nil {
		return "", f.fail("hash", file.virt, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// AvailableSpace returns the bytes available to unprivileged writers on
// the filesystem holding name (statfs f_bavail).
func (f *FS) AvailableSpace(name string) (int64, error) {
	file, err := f.openRead("statfs", name, false)
	if err != nil {
		return 0, err
	}
	defer file.Close()
	var n int64
	err = control(file.f, func(fd int) error {
		var err error
		n, err = availableBytes(fd)
		return err
	})
	return n, f.fail("statfs", file.virt, err)
}
