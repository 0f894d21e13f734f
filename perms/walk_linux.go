package perms

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
)

// dirBufSize is the getdents buffer of one open directory: a directory of
// a million entries is read in chunks of about a thousand names, and the
// walk holds one buffer per level.
const dirBufSize = 32 << 10

// I/O priority of the walk's thread (linux/ioprio.h).
const (
	ioprioClassIdle  = 3
	ioprioClassShift = 13
	ioprioClassMask  = 0x7
	ioprioWhoProcess = 1 // with who = 0: the calling thread
)

// Flags of the opens: never follow a symlink, never block on a fifo that
// replaced a file, never acquire a terminal.
const (
	openDir  = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	openFile = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
)

// statxMask is what the walk reads of an entry.
const statxMask = unix.STATX_TYPE | unix.STATX_MODE | unix.STATX_UID | unix.STATX_GID | unix.STATX_INO

// newRateLimiter paces a walk at perSec operations per second, with a
// burst of a tenth of a second so that high rates are not held back by
// timer granularity.
func newRateLimiter(perSec float64) limiter {
	return rate.NewLimiter(rate.Limit(perSec), max(1, int(perSec/10)))
}

// setIdleIO gives the calling thread the idle I/O class.
func setIdleIO() error {
	_, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, 0, ioprioClassIdle<<ioprioClassShift)
	if errno != 0 {
		return fmt.Errorf("ioprio_set: %w", errno)
	}
	return nil
}

// ioClass is the I/O priority class of the calling thread.
func ioClass() (int, error) {
	v, _, errno := unix.Syscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, 0, 0)
	if errno != 0 {
		return 0, fmt.Errorf("ioprio_get: %w", errno)
	}
	return int(v>>ioprioClassShift) & ioprioClassMask, nil
}

// queuePerWorker is how many directories a walk with several workers
// keeps handed off per worker: each is an open descriptor, nothing more.
const queuePerWorker = 4

// walk runs one tree on Options.Workers goroutines, each locked to a
// thread of its own whose I/O priority is idle, and waits for them all.
func (n *Normaliser) walk(parent context.Context, mode Mode, t tree, c *counters, report func(Finding)) error {
	workers := max(1, n.opts.Workers)
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	tw := &treeWalk{
		ctx:    ctx,
		cancel: cancel,
		mode:   mode,
		pol:    t.pol,
		lim:    n.limiterFor(t.pol),
		hooks:  &n.opts.hooks,
		c:      c,
		report: report,
		done:   make(chan struct{}),
	}
	if workers > 1 {
		tw.queue = make(chan dirJob, queuePerWorker*workers)
		var mu sync.Mutex
		tw.report = func(f Finding) {
			mu.Lock()
			defer mu.Unlock()
			report(f)
		}
	}
	tw.pending.Store(1) // the start, taken by the first worker
	var warn sync.Once
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			// Never unlocked: the thread, with its I/O priority, ends with
			// this goroutine.
			runtime.LockOSThread()
			if err := setIdleIO(); err != nil {
				warn.Do(func() { n.log.Warn("walking at normal I/O priority", "err", err) })
			}
			if h := tw.hooks.onThread; h != nil {
				h()
			}
			w := &walker{treeWalk: tw}
			if i == 0 {
				if w.do(func() error { return w.run(t.start) }) != nil {
					return
				}
			}
			w.work()
		})
	}
	wg.Wait()
	// Directories still handed off when the walk ended early.
	for len(tw.queue) > 0 {
		unix.Close((<-tw.queue).fd)
	}
	select {
	case <-tw.done:
		return nil
	default:
	}
	// The caller's context ended, or a worker ended the walk and
	// cancelled ctx with why.
	if err := parent.Err(); err != nil {
		return err
	}
	return context.Cause(ctx)
}

// treeWalk is one walk of one tree, shared by its workers. Safe for
// concurrent use: its fields are set before the workers start, and report
// is serialised when there are several.
type treeWalk struct {
	ctx    context.Context // ends when the caller's does or a worker fails
	cancel context.CancelCauseFunc
	mode   Mode
	pol    *policy
	lim    limiter // nil: unlimited; shared by the workers
	hooks  *hooks
	c      *counters
	report func(Finding)
	// rootDev is the device of the policy's path. The first worker sets
	// it before it hands off any directory; the others read it only
	// after they received one.
	rootDev uint64
	// queue holds directories a worker found and handed off for another
	// to read; nil with one worker. When it is full the finder reads the
	// directory itself, depth-first, so memory stays bounded.
	queue chan dirJob
	// pending counts the jobs not yet done: the start and each directory
	// handed off, from the handing off to the end of its subtree. Only a
	// worker busy with a job adds to it, so once it is 0 it stays 0; done
	// is closed then.
	pending atomic.Int64
	done    chan struct{}
}

// dirJob is a directory handed from one worker to another: open on fd,
// verified, checked (and in Fix changed) by the worker that found it, not
// yet read.
type dirJob struct {
	fd        int
	path, rel string
}

// walker is one worker of a walk. It lives on one goroutine.
type walker struct {
	*treeWalk
	stop  error // why the walk ends early: the context's end or the limiter's refusal
	stack []*frame
	bufs  [][]byte // getdents buffers of popped frames, for reuse
	n     tally    // counts not yet added to the run's counters
}

// tally is what a worker counted since it last added to the run's
// counters. Adding to those shared atomics for every entry would bounce
// their cache line between the workers' CPUs; a worker adds its tally
// when it leaves a directory, every tallyEvery entries in a large one, and
// at the end of each job, so the counts are exact when the walk returns
// and the progress reports lag by a directory at most.
type tally struct {
	checked, deviations, fixed, errors, excluded, leftAlone, vanished int64
}

// tallyEvery is how many entries a worker checks before it adds its tally
// to the run's counters in the middle of a directory.
const tallyEvery = 4096

// flush adds the worker's tally to the run's counters.
func (w *walker) flush() {
	add := func(a *atomic.Int64, n *int64) {
		if *n != 0 {
			a.Add(*n)
			*n = 0
		}
	}
	add(&w.c.checked, &w.n.checked)
	add(&w.c.deviations, &w.n.deviations)
	add(&w.c.fixed, &w.n.fixed)
	add(&w.c.errors, &w.n.errors)
	add(&w.c.excluded, &w.n.excluded)
	add(&w.c.leftAlone, &w.n.leftAlone)
	add(&w.c.vanished, &w.n.vanished)
}

// work reads handed-off directories until the walk is done or ends early.
func (w *walker) work() {
	for {
		select {
		case j := <-w.queue:
			w.push(j.fd, j.path, j.rel)
			if w.do(w.loop) != nil {
				return
			}
		case <-w.done:
			return
		case <-w.ctx.Done():
			return
		}
	}
}

// do runs one job to its end. An error ends the walk for every worker:
// it cancels the walk's context with the error as the cause.
func (w *walker) do(job func() error) error {
	err := job()
	for _, f := range w.stack {
		unix.Close(f.fd)
	}
	w.stack = w.stack[:0]
	w.flush()
	if err != nil {
		w.cancel(err)
		return err
	}
	if w.pending.Add(-1) == 0 {
		close(w.done)
	}
	return nil
}

// handOff queues the directory open on fd for another worker; false when
// the queue is full (or there is no other worker).
func (w *walker) handOff(fd int, path, rel string) bool {
	if w.queue == nil {
		return false
	}
	w.pending.Add(1)
	select {
	case w.queue <- dirJob{fd: fd, path: path, rel: rel}:
		return true
	default:
		w.pending.Add(-1)
		return false
	}
}

// frame is one open directory of the walk.
type frame struct {
	fd       int
	path     string // absolute
	rel      string // relative to the policy's path; "" at the top
	buf      []byte
	off, end int
	eof      bool
}

// stat is what the walk reads of an entry.
type stat struct {
	mode     uint32 // type and permission bits, as st_mode
	uid, gid uint32
	ino, dev uint64
}

func (s *stat) isDir() bool { return s.mode&unix.S_IFMT == unix.S_IFDIR }

// run walks from start, which is the policy's path or lies below it.
func (w *walker) run(start string) error {
	root := w.pol.Path
	fd, err := openRetry(unix.AT_FDCWD, root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		w.fail(root, true, fmt.Errorf("open: %w", err))
		return nil
	}
	var st stat
	if err := statFD(fd, &st); err != nil {
		unix.Close(fd)
		w.fail(root, true, err)
		return nil
	}
	w.rootDev = st.dev
	if start == root {
		w.opened(fd, root, "", &st)
		return w.loop()
	}
	// Down to start's directory, following nothing.
	rel := relPath(root, start)
	parent := &frame{fd: fd, path: root}
	for {
		name, rest, more := cut(rel)
		if !more {
			err := w.entry(parent, cString(name), unix.DT_UNKNOWN)
			unix.Close(parent.fd)
			if err != nil {
				return err
			}
			return w.loop()
		}
		p := joinPath(parent.path, name)
		cfd, err := openRetry(parent.fd, name, openDir)
		unix.Close(parent.fd)
		if err != nil {
			w.fail(p, true, fmt.Errorf("open: %w", err))
			return nil
		}
		if err := statFD(cfd, &st); err != nil {
			unix.Close(cfd)
			w.fail(p, true, err)
			return nil
		}
		if st.dev != w.rootDev {
			unix.Close(cfd)
			w.c.mount(p)
			return nil
		}
		parent = &frame{fd: cfd, path: p, rel: joinRel(parent.rel, name)}
		rel = rest
	}
}

// loop reads the directories on the stack depth-first.
func (w *walker) loop() error {
	for len(w.stack) > 0 {
		f := w.stack[len(w.stack)-1]
		name, typ, ok, err := w.next(f)
		if w.stop != nil {
			return w.stop
		}
		if err != nil {
			w.fail(f.path, true, err)
			ok = false
		}
		if !ok {
			w.pop()
			continue
		}
		if err := w.entry(f, name, typ); err != nil {
			return err
		}
		if w.n.checked >= tallyEvery {
			w.flush()
		}
	}
	return nil
}

func (w *walker) pop() {
	f := w.stack[len(w.stack)-1]
	w.stack = w.stack[:len(w.stack)-1]
	unix.Close(f.fd)
	w.bufs = append(w.bufs, f.buf)
	w.flush()
}

func (w *walker) push(fd int, path, rel string) {
	var buf []byte
	if k := len(w.bufs); k > 0 {
		buf, w.bufs = w.bufs[k-1], w.bufs[:k-1]
	} else {
		buf = make([]byte, dirBufSize)
	}
	w.stack = append(w.stack, &frame{fd: fd, path: path, rel: rel, buf: buf})
}

// next returns the next name of f (never "." or ".."); ok is false at the
// end of the directory. The name is f's buffer, NUL-terminated there: it
// is valid until the next call, and is passed to system calls as it is.
func (w *walker) next(f *frame) (name []byte, typ uint8, ok bool, err error) {
	for {
		if f.off >= f.end {
			if f.eof {
				return nil, 0, false, nil
			}
			if err := w.wait(); err != nil {
				return nil, 0, false, err
			}
			n, err := getdents(f.fd, f.buf)
			if h := w.hooks.afterRead; h != nil {
				h(f.path)
			}
			if err != nil {
				return nil, 0, false, fmt.Errorf("read directory: %w", err)
			}
			if n == 0 {
				f.eof = true
				return nil, 0, false, nil
			}
			f.off, f.end = 0, n
		}
		// struct linux_dirent64: ino u64, off s64, reclen u16, type u8,
		// name with its NUL, padded.
		b := f.buf[f.off:f.end]
		if len(b) < 20 {
			return nil, 0, false, errors.New("read directory: short record")
		}
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < 20 || reclen > len(b) {
			return nil, 0, false, fmt.Errorf("read directory: bad record length %d", reclen)
		}
		f.off += reclen
		if binary.NativeEndian.Uint64(b[0:8]) == 0 {
			continue // a deleted entry
		}
		nb := b[19:reclen]
		end := -1
		for i, c := range nb {
			if c == 0 {
				end = i
				break
			}
		}
		if end <= 0 {
			return nil, 0, false, errors.New("read directory: name without NUL")
		}
		nb = nb[:end]
		if nb[0] == '.' && (len(nb) == 1 || len(nb) == 2 && nb[1] == '.') {
			continue
		}
		if w.hooks.noDType {
			return nb, unix.DT_UNKNOWN, true, nil
		}
		return nb, b[18], true, nil
	}
}

// entry examines name (NUL-terminated in its buffer) in the directory f.
// The error ends the walk (a cancelled context); everything else is a
// finding or a count. The entry's path is built only when it is needed:
// most entries are right, and cost one statx and no allocation.
func (w *walker) entry(f *frame, name []byte, typ uint8) error {
	var p, rel string
	path := func() string {
		if p == "" {
			p = joinPath(f.path, string(name))
		}
		return p
	}
	if len(w.pol.Exclude) > 0 {
		rel = joinRel(f.rel, string(name))
		if excluded(w.pol.Exclude, rel) {
			w.n.excluded++
			return nil
		}
	}
	if len(w.pol.nested) > 0 && w.pol.nested[path()] {
		return nil // walked under its own policy
	}
	switch typ {
	case unix.DT_LNK, unix.DT_FIFO, unix.DT_SOCK, unix.DT_CHR, unix.DT_BLK:
		w.n.leftAlone++
		return nil
	}
	if h := w.hooks.beforeStat; h != nil {
		h(path())
	}
	var st stat
	if err := statName(f.fd, name, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			w.n.vanished++
			return nil
		}
		w.fail(path(), typ == unix.DT_DIR, err)
		return nil
	}
	isDir := st.isDir()
	if !isDir && st.mode&unix.S_IFMT != unix.S_IFREG {
		w.n.leftAlone++
		return nil
	}
	if st.dev != w.rootDev {
		w.c.mount(path())
		return nil
	}
	want := w.pol.want(isDir)
	wrong := want.diff(&st)
	if !isDir && (wrong == 0 || w.mode != ModeFix) {
		// Nothing to open: a right file, or one only to be reported.
		w.n.checked++
		if wrong != 0 {
			w.deviation(path(), false, wrong, &st, want, -1)
		}
		return w.err()
	}
	if h := w.hooks.beforeOpen; h != nil {
		h(path())
	}
	flags := openFile
	if isDir {
		flags = openDir
	}
	fd, err := openNoatime(f.fd, string(name), flags)
	if err != nil {
		if gone(err) {
			w.n.vanished++
			return nil
		}
		w.n.checked++
		fnd := Finding{Path: path(), Dir: isDir, Err: fmt.Errorf("open: %w", err)}
		if wrong != 0 {
			w.n.deviations++
			fnd.Wrong, fnd.Have, fnd.Want = wrong, attrsOf(&st), want.attrs()
		}
		w.n.errors++
		w.report(fnd)
		return nil
	}
	var now stat
	if err := statFD(fd, &now); err != nil {
		unix.Close(fd)
		w.fail(path(), isDir, err)
		return nil
	}
	if now.dev != st.dev || now.ino != st.ino || now.mode&unix.S_IFMT != st.mode&unix.S_IFMT {
		// Replaced since the statx: not the entry the walk saw. The new
		// one is seen by the next run.
		unix.Close(fd)
		w.n.vanished++
		return nil
	}
	if isDir && rel == "" {
		rel = joinRel(f.rel, string(name))
	}
	w.opened(fd, path(), rel, &now)
	return w.err()
}

// opened checks (and in Fix changes) the entry open on fd, which the walk
// verified; a directory is handed off or pushed to be read, a file closed.
func (w *walker) opened(fd int, p, rel string, st *stat) {
	isDir := st.isDir()
	w.n.checked++
	want := w.pol.want(isDir)
	if wrong := want.diff(st); wrong != 0 {
		w.deviation(p, isDir, wrong, st, want, fd)
	}
	if isDir {
		if !w.handOff(fd, p, rel) {
			w.push(fd, p, rel)
		}
		return
	}
	unix.Close(fd)
}

// deviation reports an entry that differs from its policy and, in Fix,
// changes it through fd.
func (w *walker) deviation(p string, isDir bool, wrong Wrong, st *stat, want wantAttrs, fd int) {
	w.n.deviations++
	fnd := Finding{Path: p, Dir: isDir, Wrong: wrong, Have: attrsOf(st), Want: want.attrs()}
	if w.mode == ModeFix {
		if err := w.wait(); err != nil {
			return // cancelled: loop returns the context's error
		}
		if err := apply(fd, st, want); err != nil {
			fnd.Err = err
			w.n.errors++
		} else {
			fnd.Fixed = true
			w.n.fixed++
		}
	}
	w.report(fnd)
}

// apply changes the entry open on fd to want: owner and group first (chown
// clears setuid and setgid on files), then the mode.
func apply(fd int, st *stat, want wantAttrs) error {
	uid, gid := -1, -1
	if want.uid >= 0 && int(st.uid) != want.uid {
		uid = want.uid
	}
	if want.gid >= 0 && int(st.gid) != want.gid {
		gid = want.gid
	}
	mode := st.mode & 0o7777
	if uid >= 0 || gid >= 0 {
		if err := retry(func() error { return unix.Fchown(fd, uid, gid) }); err != nil {
			return fmt.Errorf("fchown: %w", err)
		}
		var now stat
		if err := statFD(fd, &now); err != nil {
			return err
		}
		mode = now.mode & 0o7777
	}
	if want.hasMode && mode != want.mode {
		if err := retry(func() error { return unix.Fchmod(fd, want.mode) }); err != nil {
			return fmt.Errorf("fchmod: %w", err)
		}
	}
	return nil
}

// fail reports an entry that could not be read or entered.
func (w *walker) fail(p string, isDir bool, err error) {
	w.n.errors++
	w.report(Finding{Path: p, Dir: isDir, Err: err})
}

// wait takes one operation from the rate limit. An error ends the walk.
func (w *walker) wait() error {
	if err := w.err(); err != nil || w.lim == nil {
		return err
	}
	if err := w.lim.Wait(w.ctx); err != nil {
		// rate refuses a wait that would outlast the context's deadline
		// before the context ends: the walk ends either way.
		w.stop = fmt.Errorf("rate limit: %w", err)
		if w.ctx.Err() != nil {
			w.stop = context.Cause(w.ctx)
		}
	}
	return w.stop
}

// err is why the walk must end now; nil while it may go on. Another
// worker's failure ends it too: the walk's context carries it as the
// cause.
func (w *walker) err() error {
	if w.stop == nil && w.ctx.Err() != nil {
		w.stop = context.Cause(w.ctx)
	}
	return w.stop
}

// wantAttrs is what a policy wants of a file or of a directory.
type wantAttrs struct {
	uid, gid int // -1: not set
	mode     uint32
	hasMode  bool
}

func (p *policy) want(dir bool) wantAttrs {
	w := wantAttrs{uid: p.UID, gid: p.GID}
	if dir {
		w.mode, w.hasMode = p.dirMode, p.HasDirMode
	} else {
		w.mode, w.hasMode = p.fileMode, p.HasFileMode
	}
	return w
}

func (w wantAttrs) attrs() Attrs { return Attrs{Mode: w.mode, UID: w.uid, GID: w.gid} }

// diff is what of st differs from w.
func (w wantAttrs) diff(st *stat) Wrong {
	var wrong Wrong
	if w.hasMode && st.mode&0o7777 != w.mode {
		wrong |= WrongMode
	}
	if w.uid >= 0 && int(st.uid) != w.uid {
		wrong |= WrongOwner
	}
	if w.gid >= 0 && int(st.gid) != w.gid {
		wrong |= WrongGroup
	}
	return wrong
}

func attrsOf(st *stat) Attrs {
	return Attrs{Mode: st.mode & 0o7777, UID: int(st.uid), GID: int(st.gid)}
}

// gone reports an open that failed because the entry the walk saw is no
// longer there: removed, or replaced by a symlink or a non-directory.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR)
}

// cut splits the first name off a slash path; more is false for the last.
func cut(rel string) (name, rest string, more bool) {
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' {
			return rel[:i], rel[i+1:], true
		}
	}
	return rel, "", false
}

// joinPath is dir/name for an absolute dir, "/" included.
func joinPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// cString is name as next returns names: followed by a NUL.
func cString(name string) []byte {
	b := append([]byte(name), 0)
	return b[:len(name)]
}

// The system calls, retried on EINTR (FUSE and network filesystems return
// it despite SA_RESTART).

func retry(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

// statName reads the entry name of the directory dirfd without following
// a symlink. name must be followed by a NUL in its backing array (next
// and cString make sure of it): it goes to the kernel as it is, so that
// the common case, a right entry, allocates nothing.
func statName(dirfd int, name []byte, st *stat) error {
	var x unix.Statx_t
	for {
		_, _, errno := unix.Syscall6(unix.SYS_STATX, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])),
			unix.AT_SYMLINK_NOFOLLOW, statxMask, uintptr(unsafe.Pointer(&x)), 0)
		switch errno {
		case 0:
			*st = statOf(&x)
			return nil
		case unix.EINTR:
			continue
		}
		return fmt.Errorf("statx: %w", errno)
	}
}

// statFD reads the entry open on fd.
func statFD(fd int, st *stat) error {
	var x unix.Statx_t
	if err := retry(func() error { return unix.Statx(fd, "", unix.AT_EMPTY_PATH, statxMask, &x) }); err != nil {
		return fmt.Errorf("statx: %w", err)
	}
	*st = statOf(&x)
	return nil
}

func statOf(x *unix.Statx_t) stat {
	return stat{
		mode: uint32(x.Mode), uid: x.Uid, gid: x.Gid, ino: x.Ino,
		dev: unix.Mkdev(x.Dev_major, x.Dev_minor),
	}
}

func openRetry(dirfd int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// openNoatime opens without updating the entry's atime when the process
// may (root, or the owner), so that the walk writes nothing it does not
// have to.
func openNoatime(dirfd int, name string, flags int) (int, error) {
	fd, err := openRetry(dirfd, name, flags|unix.O_NOATIME)
	if err == unix.EPERM {
		return openRetry(dirfd, name, flags)
	}
	return fd, err
}

func getdents(fd int, buf []byte) (int, error) {
	for {
		n, err := unix.Getdents(fd, buf)
		if err != unix.EINTR {
			return n, err
		}
	}
}
