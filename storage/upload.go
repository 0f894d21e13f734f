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

	"golang.org/x/sys/unix"
)

// writebackChunk is how many bytes an upload writes between two writeback
// steps (RocksDB's bytes_per_sync): dirty pages stay bounded and the fsync
// in Commit has little left to do. Without Policy.Fsync writeback is only
// started, never waited for: a large upload then does not fill the page
// cache with dirty pages until the kernel throttles every writer.
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
	fs   *FS
	virt string // virtual path of the final name
	rel  string // final name, jail-relative
	dir  string // directory of both, jail-relative
	base string // final name in dir
	part string // part file's name in dir
	key  string // part, root-relative: the registry and busy-set key

	mu    sync.Mutex
	d     *os.File // the directory, held until a plain STOR creates its part
	f     *os.File // the part; nil until created
	rc    syscall.RawConn
	h     hash.Hash
	off   int64 // bytes in the part, and where the next Write goes
	done  bool  // committed or aborted
	fresh bool  // the part was created empty by this upload (plain STOR)
	// anon: the part is an O_TMPFILE, a file without a name until Commit
	// links it to the final one (or Abort to the part's name).
	anon bool
	// finalExists and hadPart: at OpenUpload of a plain STOR, a file
	// had the final name, and an old part the part's name.
	finalExists, hadPart bool
	// held is the directory, kept open while the part is anonymous.
	held *os.File
	// nameTried: nameAnon ran (once per upload, even if it failed).
	nameTried bool

	// Writeback: [wbPrev, wbNext) has been started and not yet waited
	// for; from wbNext on nothing has been started. wbWait: wait for the
	// step before each new one (with Policy.Fsync).
	wb, wbWait     bool
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
// The part has the policy's group and mode from the start. A plain STOR
// creates it only when the first bytes arrive (or at Commit, for an empty
// file), so that the inode is allocated while the client, just told to
// send, is getting its bytes ready rather than before it is told; every
// check that can refuse the upload (name, type of the final name,
// directory, busy) is made here. A second upload of the same name by the
// same user fails with ErrBusy while one is open.
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
	dir, base := path.Dir(rel), path.Base(rel)
	// One descriptor of the target directory serves every step below:
	// it is resolved inside the jail once, and the part is created
	// relative to it by a name without slashes.
	d, err := f.openDir(dir)
	if err != nil {
		return nil, f.fail(op, virt, err)
	}
	finalExists, err := f.checkFinal(d, rel)
	if err != nil {
		d.Close()
		return nil, f.fail(op, virt, err)
	}
	u := &Upload{
		fs: f, virt: virt, rel: rel, dir: dir, base: base, part: partName(f.user, virt),
		h: sha256.New(), wb: true, wbWait: f.r.pol.Fsync,
	}
	u.key = path.Join(f.home, dir, u.part)
	if !f.r.acquire(u.key) {
		d.Close()
		return nil, &PathError{Op: op, Path: virt, Err: ErrBusy}
	}
	if offset == 0 && !appendMode {
		u.d = d // see ensure
		u.finalExists = finalExists
		var st unix.Stat_t
		u.hadPart = control(d, func(fd int) error {
			return unix.Fstatat(fd, u.part, &st, unix.AT_SYMLINK_NOFOLLOW)
		}) == nil
		return u, nil
	}
	defer d.Close()
	if err := u.open(d, offset, appendMode, finalExists); err != nil {
		u.undoOpen(d)
		f.r.release(u.key)
		return nil, f.fail(op, virt, err)
	}
	return u, nil
}

// ensure creates the part of a plain STOR, replacing an old one, on first
// use. A failure leaves no part; the upload then fails as a whole.
func (u *Upload) ensure() error {
	if u.f != nil {
		return nil
	}
	if u.d == nil {
		return u.fs.fail("upload", u.virt, fs.ErrClosed) // an earlier ensure failed
	}
	d := u.d
	u.d = nil
	if err := u.open(d, 0, false, false); err != nil {
		u.undoOpen(d)
		d.Close()
		return u.fs.fail("upload", u.virt, err)
	}
	if u.anon {
		u.held = d
	} else {
		d.Close()
	}
	return nil
}

// dirFile returns the upload's directory: the descriptor held for an
// anonymous part, else a new one; done closes what it opened.
func (u *Upload) dirFile() (d *os.File, done func(), err error) {
	if u.held != nil {
		return u.held, func() {}, nil
	}
	d, err = u.fs.openDir(u.dir)
	if err != nil {
		return nil, nil, err
	}
	return d, func() { d.Close() }, nil
}

// releaseDir closes the held directory, at the end of the upload.
func (u *Upload) releaseDir() {
	if u.held != nil {
		u.held.Close()
		u.held = nil
	}
}

// nameAnon gives an anonymous part its name once the upload has reached
// recvChunk bytes: a long upload then leaves a part that the client can
// resume even after the daemon was killed, and the sweep knows it. On
// failure the part stays anonymous; the upload goes on.
func (u *Upload) nameAnon() {
	u.nameTried = true
	d, done, err := u.dirFile()
	if err != nil {
		return
	}
	defer done()
	if control(d, u.linkPart) == nil {
		u.anon = false
		u.releaseDir()
	}
}

// undoOpen cleans up after open failed: the part is closed, and its
// registry entry dropped if the part does not exist.
func (u *Upload) undoOpen(d *os.File) {
	if u.f != nil {
		u.f.Close()
		u.f = nil
	}
	var st unix.Stat_t
	if errors.Is(control(d, func(fd int) error {
		return unix.Fstatat(fd, u.part, &st, unix.AT_SYMLINK_NOFOLLOW)
	}), unix.ENOENT) {
		_ = u.fs.r.reg.remove(u.key) // nothing to sweep
	}
}

// openDir opens the jail-relative directory dir. openat2 with
// RESOLVE_BENEATH confines the whole walk to the jail in the kernel, in
// one call, where os.Root walks it component by component and then tries
// the new descriptor on the poller (five more calls, twice per upload).
// Where openat2 is missing or refuses (a symlink leading out of the jail,
// a rename racing the walk, a name that does not exist), os.Root decides,
// so every error is its own.
func (f *FS) openDir(dir string) (*os.File, error) {
	fd := -1
	err := control(f.top, func(top int) error {
		var err error
		fd, err = openDirBeneath(top, dir)
		return err
	})
	if err == nil {
		return os.NewFile(uintptr(fd), dir), nil
	}
	return f.jail.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
}

// checkFinal fails before any byte is received when the final name rel,
// in the open directory d, is a directory or anything but a regular
// file, or leads out of the jail through a symlink. It reports whether a
// file exists there.
func (f *FS) checkFinal(d *os.File, rel string) (bool, error) {
	var st unix.Stat_t
	err := control(d, func(fd int) error {
		return unix.Fstatat(fd, path.Base(rel), &st, unix.AT_SYMLINK_NOFOLLOW)
	})
	switch {
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case err != nil:
		return false, err
	case st.Mode&unix.S_IFMT == unix.S_IFREG:
		return true, nil
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return false, ErrIsDir
	case st.Mode&unix.S_IFMT != unix.S_IFLNK:
		return false, fs.ErrPermission
	}
	// A symlink: what matters is where it leads, which os.Root decides.
	final, err := f.jail.Stat(rel)
	switch {
	case err == nil && final.IsDir():
		return false, ErrIsDir
	case err == nil && !final.Mode().IsRegular():
		return false, fs.ErrPermission
	case err != nil && classify(err, f.r.escape) != fs.ErrNotExist:
		return false, err
	}
	return err == nil, nil
}

// open opens or creates the part and brings the hash and offset up to the
// point where the client's bytes continue.
func (u *Upload) open(d *os.File, offset int64, appendMode, finalExists bool) error {
	plain := offset == 0 && !appendMode
	if plain {
		switch err := u.createAnon(d); {
		case err == nil:
			u.fresh = true
		case !errors.Is(err, errNoTmpfile):
			return err
		}
	}
	// Registered before a named part can exist, so that no crash leaves
	// a part the sweep does not know of.
	if !u.anon {
		if err := u.fs.r.reg.put(u.key); err != nil {
			return err
		}
	}
	switch {
	case u.anon:
	case offset > 0:
		size, err := u.reopen(d)
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
		size, err := u.reopen(d)
		switch {
		case err == nil:
			if err := u.rehash(size); err != nil {
				return err
			}
		case !errors.Is(err, fs.ErrNotExist):
			return err
		default:
			if err := u.create(d); err != nil {
				return err
			}
			if finalExists {
				if err := u.copyFinal(); err != nil {
					return err
				}
			}
		}
	default:
		if err := u.create(d); err != nil {
			return err
		}
		u.fresh = true
	}
	if err := u.fs.r.applyPolicy(u.f, u.fs.r.pol.FileMode); err != nil {
		return err
	}
	if u.off > 0 {
		if _, err := u.f.Seek(u.off, io.SeekStart); err != nil {
			return err
		}
	}
	rc, err := u.f.SyscallConn()
	if err != nil {
		return err
	}
	u.rc = rc
	u.wbPrev, u.wbNext = u.off, u.off
	return nil
}

// errNoTmpfile: the filesystem (or kernel) has no O_TMPFILE.
var errNoTmpfile = errors.New("no O_TMPFILE")

// createAnon starts the part of a plain STOR as an O_TMPFILE in d. Its
// inode is allocated without the directory's lock, which a named create
// holds throughout (on ext4 without a journal that includes a scan past
// every inode freed in the last seconds, serialising the uploads into a
// directory behind each other), and it needs no registry entry: a crash
// leaves nothing behind. errNoTmpfile where O_TMPFILE is missing; the
// Root then stops trying.
func (u *Upload) createAnon(d *os.File) error {
	r := u.fs.r
	if r.noTmpfile.Load() {
		return errNoTmpfile
	}
	err := control(d, func(dfd int) error {
		fd, err := openTmpfile(dfd)
		if err != nil {
			return err
		}
		u.f = os.NewFile(uintptr(fd), u.part)
		return nil
	})
	switch {
	case err == nil:
		u.anon = true
		return nil
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EISDIR), errors.Is(err, unix.EINVAL):
		r.noTmpfile.Store(true)
		return errNoTmpfile
	}
	return err
}

// linkAnon gives the anonymous part the name in dfd: EEXIST when the name
// is taken. linkat with AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH (before
// Linux 6.10), so without it the link goes through /proc/self/fd.
func (u *Upload) linkAnon(dfd int, name string) error {
	return u.fs.r.linkTmpfile(int(u.f.Fd()), dfd, name)
}

// linkPart gives the anonymous part the part's name, replacing an old
// part; the registry records it first.
func (u *Upload) linkPart(dfd int) error {
	if err := u.fs.r.reg.put(u.key); err != nil {
		return err
	}
	err := u.linkAnon(dfd, u.part)
	if err == unix.EEXIST {
		if err := unix.Unlinkat(dfd, u.part, 0); err != nil && err != unix.ENOENT {
			return err
		}
		err = u.linkAnon(dfd, u.part)
	}
	return err
}

// publish gives the part, complete, the final name in dfd. A named part
// is renamed over it; an anonymous one is linked to it, or when a file
// has the name, linked to the part's name and renamed over it (the
// replacement stays atomic). An old part of the plain STOR goes.
func (u *Upload) publish(dfd int) error {
	r := u.fs.r
	if !u.anon {
		if err := unix.Renameat(dfd, u.part, dfd, u.base); err != nil {
			return err
		}
		// The part is gone: a stale entry would be dropped by the next
		// sweep, so a failure to record it is ignored.
		_ = r.reg.remove(u.key)
		return nil
	}
	var err error = unix.EEXIST
	if !u.finalExists {
		err = u.linkAnon(dfd, u.base)
	}
	switch {
	case err == unix.EEXIST:
		if err := u.linkPart(dfd); err != nil {
			return err
		}
		if err := unix.Renameat(dfd, u.part, dfd, u.base); err != nil {
			return err
		}
		_ = r.reg.remove(u.key)
		return nil
	case err != nil:
		return err
	}
	if u.hadPart {
		if err := unix.Unlinkat(dfd, u.part, 0); err == nil || err == unix.ENOENT {
			_ = r.reg.remove(u.key)
		}
	}
	return nil
}

// create starts an empty part in d, replacing an old one. O_EXCL
// guarantees the file is ours and new, so its mode starts at 0600 whatever
// was there.
func (u *Upload) create(d *os.File) error {
	const flag = unix.O_RDWR | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	err := control(d, func(dfd int) error {
		fd, err := openat(dfd, u.part, flag, 0o600)
		if err == unix.EEXIST {
			if err := unix.Unlinkat(dfd, u.part, 0); err != nil && err != unix.ENOENT {
				return err
			}
			fd, err = openat(dfd, u.part, flag, 0o600)
		}
		if err != nil {
			return err
		}
		u.f = os.NewFile(uintptr(fd), u.part)
		return nil
	})
	return err
}

// reopen opens the existing part in d and returns its size.
func (u *Upload) reopen(d *os.File) (int64, error) {
	err := control(d, func(dfd int) error {
		fd, err := openat(dfd, u.part, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		u.f = os.NewFile(uintptr(fd), u.part)
		return nil
	})
	if err != nil {
		return 0, err
	}
	fi, err := u.f.Stat()
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fs.ErrPermission
	}
	return fi.Size(), nil
}

// openat is openat(2), retried on EINTR. The descriptor it returns is
// blocking, so os.NewFile does not try to register it with the poller
// (regular files cannot be polled anyway).
func openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
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
	if err := u.ensure(); err != nil {
		return 0, err
	}
	n, err := u.write(p)
	u.h.Write(p[:n])
	return n, err
}

// write appends p to the part without hashing it.
func (u *Upload) write(p []byte) (int, error) {
	n, err := u.f.Write(p)
	u.off += int64(n)
	if err != nil {
		return n, u.fs.fail("write", u.virt, err)
	}
	if u.anon && !u.nameTried && u.off >= recvChunk {
		u.nameAnon()
	}
	if u.wb && u.off-u.wbNext >= writebackChunk {
		u.writeback()
	}
	return n, nil
}

// Receiving an upload is a pipeline of recvChunk-sized buffers, recvDepth
// of them per upload: the caller's goroutine receives a chunk and writes it
// to the part while a second goroutine hashes the one before. Each chunk
// costs two goroutine hand-offs, so chunks are large (256 KiB chunks
// measured some 7% more server CPU per GiB than 1 MiB ones).
const (
	recvChunk = 1 << 20
	recvDepth = 3
)

// ReadFrom receives the rest of the upload from r until EOF; io.Copy uses
// it in place of Write. SHA-256 runs on a second goroutine, overlapping the
// receive and the write of the next bytes: on a machine with a core to
// spare, hashing (some 0.7 s of CPU per GiB with SHA-NI) leaves the
// transfer's critical path. An upload that fits in one chunk is hashed
// inline. Errors of r are returned as they are.
func (u *Upload) ReadFrom(r io.Reader) (int64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return 0, &PathError{Op: "write", Path: u.virt, Err: fs.ErrClosed}
	}
	if err := u.ensure(); err != nil {
		return 0, err
	}
	pool := &u.fs.r.bufs
	type chunk struct {
		buf *[]byte
		n   int
	}
	var (
		total  int64
		free   chan *[]byte // buffers the hasher has finished with
		full   chan chunk   // written, not yet hashed
		hashed chan struct{}
	)
	buf := pool.Get().(*[]byte)
	defer func() {
		if full != nil {
			close(full)
			<-hashed
			close(free)
			for b := range free {
				pool.Put(b)
			}
		}
		if buf != nil {
			pool.Put(buf)
		}
	}()
	for {
		n, rerr := io.ReadFull(r, *buf)
		more := rerr == nil
		if n > 0 {
			w, werr := u.write((*buf)[:n])
			total += int64(w)
			if more && werr == nil && full == nil {
				// More than one chunk: start the hasher.
				free = make(chan *[]byte, recvDepth)
				full = make(chan chunk, recvDepth)
				hashed = make(chan struct{})
				for range recvDepth - 1 {
					free <- pool.Get().(*[]byte)
				}
				go func() {
					defer close(hashed)
					for c := range full {
						u.h.Write((*c.buf)[:c.n])
						free <- c.buf
					}
				}()
			}
			if full != nil {
				full <- chunk{buf, w}
				buf = nil
			} else {
				u.h.Write((*buf)[:w])
			}
			if werr != nil {
				return total, werr
			}
		}
		switch {
		case errors.Is(rerr, io.EOF), errors.Is(rerr, io.ErrUnexpectedEOF):
			return total, nil
		case rerr != nil:
			return total, rerr
		}
		if buf == nil {
			buf = <-free
		}
	}
}

// writeback starts writing out the bytes written since the last step and,
// with wbWait, waits for those of the step before, so that at most two
// chunks per upload are dirty. Failures only switch it off: Commit's fsync
// is what reports errors.
func (u *Upload) writeback() {
	prev, start, end := u.wbPrev, u.wbNext, u.off
	err := rawControl(u.rc, func(fd int) error {
		if err := syncRange(fd, start, end-start, false); err != nil {
			return err
		}
		if u.wbWait && start > prev {
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
	if err := u.ensure(); err != nil {
		return Result{}, err
	}
	defer u.releaseDir()
	if r.log != nil && u.fresh && u.off <= logMaxFile {
		// The commit log's and the fsync's paths close u.f themselves.
		if res, ok, err := u.commitLogged(); ok {
			return res, err
		}
	}
	if r.pol.Fsync {
		if err := u.f.Sync(); err != nil {
			// After a failed fsync what the part holds on disk is
			// unknown, so it must not be resumed.
			u.f.Close()
			u.discard()
			return Result{}, u.fs.fail(op, u.virt, err)
		}
	}
	// The part's mtime is the final file's: rename and link do not
	// change it.
	fi, err := u.f.Stat()
	if err == nil && fi.Size() != u.off {
		err = ErrIO // written to by someone else: the hash would lie
	}
	if err != nil {
		u.f.Close()
		return Result{}, u.fs.fail(op, u.virt, err)
	}
	defer u.f.Close() // an anonymous part is linked through it
	d, done, err := u.dirFile()
	if err != nil {
		return Result{}, u.fs.fail(op, u.virt, err)
	}
	defer done()
	var dir dirID
	anon := u.anon
	err = control(d, func(dfd int) error {
		if err := u.publish(dfd); err != nil {
			return err
		}
		if anon && r.pol.Fsync {
			// The fsync above wrote the inode with no link: write it
			// again with the one the name gives it, which a filesystem
			// without a journal does not do for the directory's fsync.
			if err := u.f.Sync(); err != nil {
				return err
			}
		}
		if r.pol.Fsync {
			var st unix.Stat_t
			if err := unix.Fstat(dfd, &st); err != nil {
				return err
			}
			dir = dirID{dev: uint64(st.Dev), ino: uint64(st.Ino)} // int32 and uint32 on some systems
		}
		return nil
	})
	if err != nil {
		return Result{}, u.fs.fail(op, u.virt, err)
	}
	if r.pol.Fsync {
		if err := r.dirs.sync(dir, d.Sync); err != nil {
			return Result{}, u.fs.fail(op, u.virt, err)
		}
	}
	res := Result{Path: path.Join(u.fs.home, u.rel), Size: u.off, ModTime: fi.ModTime()}
	u.h.Sum(res.SHA256[:0])
	return res, nil
}

// commitLogged commits through the commit log: the part's bytes go to the
// log, made durable by one fdatasync shared with the uploads committing at
// the same time, then the part is renamed, with no fsync of its own (the
// log's next checkpoint writes it out). ok is false when the log cannot
// take the upload (full, off after a write error, the part on another
// filesystem than the root): the part is then untouched and Commit
// fsyncs it in place.
func (u *Upload) commitLogged() (res Result, ok bool, err error) {
	const op = "commit"
	r := u.fs.r
	fi, err := u.f.Stat()
	if err != nil {
		return Result{}, false, nil
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil || fi.Size() != u.off || uint64(st.Dev) != r.log.dev {
		return Result{}, false, nil
	}
	data := make([]byte, u.off)
	if _, err := u.f.ReadAt(data, 0); err != nil {
		return Result{}, false, nil
	}
	rec := &logRecord{
		boot: r.log.boot, dev: uint64(st.Dev), ino: uint64(st.Ino),
		size: u.off, mtime: fi.ModTime().UnixNano(), at: r.now().UnixNano(),
		mode: uint32(r.pol.FileMode.Perm()), gid: int32(r.pol.GID),
		path: path.Join(u.fs.home, u.rel), data: data,
	}
	u.h.Sum(rec.sum[:0])
	seq, lerr := r.log.append(rec)
	if lerr != nil {
		return Result{}, false, nil
	}
	// A rename that fails after the record is durable leaves a record
	// of an upload the client was told failed; the next checkpoint,
	// within seconds, passes it. Only a crash in between would restore
	// the file.
	defer r.log.done(seq)
	defer u.f.Close() // an anonymous part is linked through it
	d, done, err := u.dirFile()
	if err != nil {
		return Result{}, true, u.fs.fail(op, u.virt, err)
	}
	defer done()
	if err := control(d, u.publish); err != nil {
		return Result{}, true, u.fs.fail(op, u.virt, err)
	}
	return Result{Path: rec.path, Size: u.off, SHA256: rec.sum, ModTime: fi.ModTime()}, true, nil
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
	if u.f == nil {
		// A plain STOR that received nothing: like an empty part, it
		// replaces an old one, which then goes.
		return u.dropOld()
	}
	if u.anon {
		return u.abortAnon()
	}
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
		_ = r.reg.sync()
	}
	return u.fs.fail("abort", u.virt, err)
}

// abortAnon ends an interrupted plain STOR whose part has no name: with
// bytes it gets the part's name (replacing an old part) so that it can be
// resumed, without any the old part goes.
func (u *Upload) abortAnon() error {
	r := u.fs.r
	defer u.f.Close()
	defer u.releaseDir()
	d, done, err := u.dirFile()
	if err != nil {
		return u.fs.fail("abort", u.virt, err)
	}
	if u.off == 0 {
		u.d, u.held = d, nil // dropOld closes it
		return u.dropOld()
	}
	defer done()
	err = control(d, u.linkPart)
	if err == nil && r.pol.Fsync {
		// The part now outlives the session; its entry must survive a
		// crash so that the sweep finds it.
		_ = r.reg.sync()
	}
	return u.fs.fail("abort", u.virt, err)
}

// dropOld removes an old part of a plain STOR that never created its own.
func (u *Upload) dropOld() error {
	d := u.d
	u.d = nil
	if d == nil {
		return nil // ensure failed and cleaned up
	}
	defer d.Close()
	err := control(d, func(fd int) error { return unix.Unlinkat(fd, u.part, 0) })
	switch {
	case err == nil:
		_ = u.fs.r.reg.remove(u.key)
	case errors.Is(err, unix.ENOENT):
		err = nil
	}
	return u.fs.fail("abort", u.virt, err)
}

// discard removes the part and its registry entry.
func (u *Upload) discard() {
	if u.anon {
		return // closing it was enough
	}
	if err := u.fs.jail.Remove(path.Join(u.dir, u.part)); err == nil || errors.Is(err, fs.ErrNotExist) {
		_ = u.fs.r.reg.remove(u.key)
	}
}
