package storage

import (
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"
	"syscall"
	"time"
)

// writebackChunk is how many bytes an upload writes between two writeback
// steps (RocksDB's bytes_per_sync): dirty pages stay bounded and the fsync
// in Commit has little left to do.
const writebackChunk = 8 << 20

// Result describes a committed upload, for the mirror.
type Result struct {
	Path    string   // slash path relative to the storage root, e.g. "uploads/dj1/a.wav"
	Size    int64    // bytes in the file
	SHA256  [32]byte // of the whole file, resumed parts included
	ModTime time.Time
}

// Upload is one STOR or APPE in progress: bytes go to a hidden part file
// beside the target and into a SHA-256; Commit moves the part to the final
// name, Abort keeps it for a resume. It is owned by the transfer that opened
// it; its methods may be called from any goroutine.
type Upload struct {
	fs      *FS
	virt    string // virtual path of the final name
	rel     string // final name, jail-relative
	partRel string // part, jail-relative
	key     string // part, root-relative: the registry and busy-set key

	mu   sync.Mutex
	f    *os.File
	rc   syscall.RawConn
	h    hash.Hash
	off  int64 // bytes in the part, and where the next Write goes
	done bool  // committed or aborted

	// Writeback: [wbPrev, wbNext) has been started and not yet waited
	// for; from wbNext on nothing has been started.
	wb             bool
	wbPrev, wbNext int64
}

// OpenUpload starts an upload to name, a file that may or may not exist.
//
//   - offset 0, not appendMode (STOR): any old part is replaced, the
//     upload starts empty.
//   - offset > 0 (REST + STOR): resumes this user's part of name, which must
//     hold at least offset bytes (else fs.ErrNotExist); it is cut to offset.
//   - appendMode (APPE): appends to this user's part of name if there is
//     one, else to a copy of the existing file, else to an empty part. The
//     final file is never seen half-appended.
//
// The part has the policy's group and mode from the start. A second upload
// of the same name by the same user fails with ErrBusy while one is open.
func (f *FS) OpenUpload(name string, offset int64, appendMode bool) (*Upload, error) {
	const op = "upload"
	virt, rel, err := f.writable(op, name)
	if err != nil {
		return nil, err
	}
	if rel == "." {
		return nil, &PathError{Op: op, Path: virt, Err: ErrIsDir}
	}
	if offset < 0 {
		return nil, &PathError{Op: op, Path: virt, Err: fs.ErrInvalid}
	}
	// Fail before any byte is received: a directory in the way, or a name
	// leading out of the jail through a symlink.
	final, err := f.jail.Stat(rel)
	switch {
	case err == nil && final.IsDir():
		return nil, &PathError{Op: op, Path: virt, Err: ErrIsDir}
	case err == nil && !final.Mode().IsRegular():
		return nil, &PathError{Op: op, Path: virt, Err: fs.ErrPermission}
	case err != nil && classify(err, f.r.escape) != fs.ErrNotExist:
		return nil, f.fail(op, virt, err)
	case err != nil:
		final = nil
	}
	partRel := path.Join(path.Dir(rel), partName(f.user, virt))
	u := &Upload{
		fs: f, virt: virt, rel: rel, partRel: partRel, key: path.Join(f.home, partRel),
		h: sha256.New(), wb: f.r.pol.Fsync,
	}
	if !f.r.acquire(u.key) {
		return nil, &PathError{Op: op, Path: virt, Err: ErrBusy}
	}
	if err := u.open(offset, appendMode, final != nil); err != nil {
		if u.f != nil {
			u.f.Close()
		}
		if _, lerr := f.jail.Lstat(partRel); errors.Is(lerr, fs.ErrNotExist) {
			_ = f.r.reg.remove(u.key) // nothing to sweep
		}
		f.r.release(u.key)
		return nil, f.fail(op, virt, err)
	}
	return u, nil
}

// open opens or creates the part and brings the hash and offset up to the
// point where the client's bytes continue.
func (u *Upload) open(offset int64, appendMode, finalExists bool) error {
	// Registered before the part can exist, so that no crash leaves a
	// part the sweep does not know of.
	if err := u.fs.r.reg.put(u.key); err != nil {
		return err
	}
	switch {
	case offset > 0:
		size, err := u.reopen()
		if err != nil {
			return err
		}
		if size < offset {
			return fs.ErrNotExist
		}
		if err := u.f.Truncate(offset); err != nil {
			return err
		}
		if err := u.rehash(offset); err != nil {
			return err
		}
	case appendMode:
		size, err := u.reopen()
		switch {
		case err == nil:
			if err := u.rehash(size); err != nil {
				return err
			}
		case !errors.Is(err, fs.ErrNotExist):
			return err
		default:
			if err := u.create(); err != nil {
				return err
			}
			if finalExists {
				if err := u.copyFinal(); err != nil {
					return err
				}
			}
		}
	default:
		if err := u.create(); err != nil {
			return err
		}
	}
	if err := u.fs.r.applyPolicy(u.f, u.fs.r.pol.FileMode); err != nil {
		return err
	}
	if _, err := u.f.Seek(u.off, io.SeekStart); err != nil {
		return err
	}
	rc, err := u.f.SyscallConn()
	if err != nil {
		return err
	}
	u.rc = rc
	u.wbPrev, u.wbNext = u.off, u.off
	return nil
}

// create starts an empty part, replacing an old one. O_EXCL guarantees the
// file is ours and new, so its mode starts at 0600 whatever was there.
func (u *Upload) create() error {
	jail := u.fs.jail
	const flag = os.O_RDWR | os.O_CREATE | os.O_EXCL
	f, err := jail.OpenFile(u.partRel, flag, 0o600)
	if errors.Is(err, fs.ErrExist) {
		if err := jail.Remove(u.partRel); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		f, err = jail.OpenFile(u.partRel, flag, 0o600)
	}
	if err != nil {
		return err
	}
	u.f = f
	return nil
}

// reopen opens the existing part and returns its size.
func (u *Upload) reopen() (int64, error) {
	f, err := u.fs.jail.OpenFile(u.partRel, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	u.f = f
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fs.ErrPermission
	}
	return fi.Size(), nil
}

// rehash reads back the part's first n bytes so the final SHA-256 covers
// the whole file.
func (u *Upload) rehash(n int64) error {
	got, err := io.CopyBuffer(u.h, io.NewSectionReader(u.f, 0, n), make([]byte, hashBufSize))
	if err != nil {
		return err
	}
	if got != n {
		return ErrIO // the part shrank under us
	}
	u.off = n
	return nil
}

// copyFinal fills a new part with the final file's bytes, for APPE.
func (u *Upload) copyFinal() error {
	src, err := u.fs.openRead("upload", u.virt, true)
	if err != nil {
		return err
	}
	defer src.Close()
	n, err := io.CopyBuffer(io.MultiWriter(u.f, u.h), src.f, make([]byte, hashBufSize))
	u.off = n
	return err
}

// Write appends p to the part.
func (u *Upload) Write(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return 0, &PathError{Op: "write", Path: u.virt, Err: fs.ErrClosed}
	}
	n, err := u.f.Write(p)
	u.h.Write(p[:n])
	u.off += int64(n)
	if err != nil {
		return n, u.fs.fail("write", u.virt, err)
	}
	if u.wb && u.off-u.wbNext >= writebackChunk {
		u.writeback()
	}
	return n, nil
}

// writeback starts writing out the bytes written since the last step and
// waits for those of the step before, so that at most two chunks per
// upload are dirty. Failures only switch it off: Commit's fsync is what
// reports errors.
func (u *Upload) writeback() {
	prev, start, end := u.wbPrev, u.wbNext, u.off
	err := rawControl(u.rc, func(fd int) error {
		if err := syncRange(fd, start, end-start, false); err != nil {
			return err
		}
		if start > prev {
			return syncRange(fd, prev, start-prev, true)
		}
		return nil
	})
	if err != nil {
		u.wb = false
	}
	u.wbPrev, u.wbNext = start, end
}

// Seek reports the upload's position. The part is written sequentially,
// so only the current position can be sought (ftpserverlib seeks to the
// REST offset, which OpenUpload has already applied).
func (u *Upload) Seek(offset int64, whence int) (int64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	want := offset
	switch whence {
	case io.SeekCurrent, io.SeekEnd:
		want += u.off
	case io.SeekStart:
	default:
		want = -1
	}
	if want != u.off {
		return u.off, &PathError{Op: "seek", Path: u.virt, Err: fs.ErrInvalid}
	}
	return u.off, nil
}

// Commit ends a clean transfer: the part is fsynced (with Policy.Fsync),
// renamed to the final name, replacing a file there, and the directory is
// fsynced. If the final name is a directory it fails with ErrIsDir and the
// part is kept. After Commit or Abort, the Upload is finished.
func (u *Upload) Commit() (Result, error) {
	const op = "commit"
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return Result{}, &PathError{Op: op, Path: u.virt, Err: fs.ErrClosed}
	}
	u.done = true
	r := u.fs.r
	defer r.release(u.key)
	jail := u.fs.jail
	if r.pol.Fsync {
		if err := u.f.Sync(); err != nil {
			// After a failed fsync what the part holds on disk is
			// unknown, so it must not be resumed.
			u.f.Close()
			u.discard()
			return Result{}, u.fs.fail(op, u.virt, err)
		}
	}
	fi, err := u.f.Stat()
	if err == nil && fi.Size() != u.off {
		err = ErrIO // written to by someone else: the hash would lie
	}
	if cerr := u.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Result{}, u.fs.fail(op, u.virt, err)
	}
	if err := jail.Rename(u.partRel, u.rel); err != nil {
		if fi, serr := jail.Lstat(u.rel); serr == nil && fi.IsDir() {
			err = ErrIsDir // os.Root reports EEXIST for a directory in the way
		}
		return Result{}, u.fs.fail(op, u.virt, err)
	}
	_ = r.reg.remove(u.key) // the part is gone: a stale entry is dropped by the next sweep
	if r.pol.Fsync {
		if err := syncDir(jail, path.Dir(u.rel)); err != nil {
			return Result{}, u.fs.fail(op, u.virt, err)
		}
	}
	fi, err = jail.Lstat(u.rel)
	if err != nil {
		return Result{}, u.fs.fail(op, u.virt, err)
	}
	res := Result{Path: path.Join(u.fs.home, u.rel), Size: u.off, ModTime: fi.ModTime()}
	u.h.Sum(res.SHA256[:0])
	return res, nil
}

// Abort ends an interrupted transfer: the part is closed and kept for a
// resume until the sweep removes it, unless it is empty. Abort after Commit
// or Abort does nothing.
func (u *Upload) Abort() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return nil
	}
	u.done = true
	r := u.fs.r
	defer r.release(u.key)
	err := u.f.Close()
	switch {
	case u.off == 0:
		// Nothing to resume; an empty part would only make Stat report
		// size 0 for an existing file.
		u.discard()
	case r.pol.Fsync:
		// The part now outlives the session; its entry must survive a
		// crash so that the sweep finds it. A failure costs only disk
		// space, never data, so the client is not told.
		_ = r.reg.sync(u.key)
	}
	return u.fs.fail("abort", u.virt, err)
}

// discard removes the part and its registry entry.
func (u *Upload) discard() {
	if err := u.fs.jail.Remove(u.partRel); err == nil || errors.Is(err, fs.ErrNotExist) {
		_ = u.fs.r.reg.remove(u.key)
	}
}

func syncDir(root *os.Root, dir string) error {
	d, err := root.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
