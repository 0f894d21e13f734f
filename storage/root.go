package storage

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Policy is how everything ftpgate writes is created. The conf package fills
// it from [storage]; a zero FileMode, DirMode or ResumeTTL takes the default
// noted on the field.
type Policy struct {
	// GID is the group of created files and directories; -1 leaves the
	// group the kernel gives (note that 0 means the group root).
	GID int
	// FileMode is the exact mode of created files: permission bits only,
	// the umask never applies. Default 0644.
	FileMode fs.FileMode
	// DirMode is the exact mode of created directories: permission bits
	// plus optionally fs.ModeSetgid and fs.ModeSticky. Default 0755.
	//
	// Both modes may also be written the Unix way, fs.FileMode(0o2775):
	// the 0o4000, 0o2000 and 0o1000 bits are read as setuid, setgid and
	// sticky.
	DirMode fs.FileMode
	// Fsync makes an upload durable before Upload.Commit returns.
	Fsync bool
	// ResumeTTL is how long an interrupted upload's part is kept for
	// resuming. Default 24h.
	ResumeTTL time.Duration
	// StateDir is where the registry of part files lives (in "parts/").
	// Required, and never inside the storage root.
	StateDir string
	// CommitLog is the size in bytes of the commit log in StateDir
	// (commit.log) through which uploads of up to 256 KiB are made
	// durable with Fsync; 0 fsyncs every upload in place. At least
	// MinCommitLog otherwise. Without Fsync it is not used.
	CommitLog int64
	// Log receives what the commit log reports while it runs (a write
	// error that turns it off, a failed checkpoint); nil discards it.
	Log *slog.Logger
}

// Default policy values for zero fields.
const (
	DefaultFileMode  fs.FileMode   = 0o644
	DefaultDirMode   fs.FileMode   = 0o755
	DefaultResumeTTL time.Duration = 24 * time.Hour
)

func (p Policy) withDefaults() Policy {
	p.FileMode, p.DirMode = goMode(p.FileMode), goMode(p.DirMode)
	if p.FileMode == 0 {
		p.FileMode = DefaultFileMode
	}
	if p.DirMode == 0 {
		p.DirMode = DefaultDirMode
	}
	if p.ResumeTTL == 0 {
		p.ResumeTTL = DefaultResumeTTL
	}
	return p
}

// goMode turns the Unix special bits of a mode written as octal into Go's.
func goMode(m fs.FileMode) fs.FileMode {
	for _, b := range [...]struct{ octal, gobit fs.FileMode }{
		{0o4000, fs.ModeSetuid}, {0o2000, fs.ModeSetgid}, {0o1000, fs.ModeSticky},
	} {
		if m&b.octal != 0 {
			m = m&^b.octal | b.gobit
		}
	}
	return m
}

func (p Policy) validate() error {
	switch {
	case p.FileMode&^fs.ModePerm != 0:
		return fmt.Errorf("file mode %v: only permission bits are allowed", p.FileMode)
	case p.DirMode&^(fs.ModePerm|fs.ModeSetgid|fs.ModeSticky) != 0:
		return fmt.Errorf("dir mode %v: only permission, setgid and sticky bits are allowed", p.DirMode)
	case p.GID < -1:
		return fmt.Errorf("gid %d: must be -1 or a group ID", p.GID)
	case p.ResumeTTL < 0:
		return fmt.Errorf("resume TTL %v: must not be negative", p.ResumeTTL)
	case p.StateDir == "":
		return errors.New("state dir: required")
	case p.CommitLog != 0 && p.CommitLog < MinCommitLog:
		return fmt.Errorf("commit log size %d: at least %d bytes, or 0 for none", p.CommitLog, MinCommitLog)
	}
	return nil
}

// Root is the storage root that jails are cut from. It owns the policy, the
// registry of part files and the set of uploads in progress. It is safe for
// concurrent use; [FS] values obtained from it stay usable after Close.
type Root struct {
	root   *os.Root
	pol    Policy
	reg    *registry
	dirs   dirSyncer        // group commit of directory fsyncs
	bufs   sync.Pool        // *[]byte of recvChunk bytes, for Upload.ReadFrom
	escape error            // os.Root's error for a path that leaves it
	log    *commitLog       // nil: uploads fsync in place
	now    func() time.Time // the commit log's clock
	// noTmpfile: O_TMPFILE failed once, uploads use named parts;
	// noEmptyPath: linkat with AT_EMPTY_PATH was refused.
	noTmpfile, noEmptyPath atomic.Bool
	recovery               LogRecovery

	mu     sync.Mutex
	active map[string]struct{} // root-relative part paths in use
}

// Open opens the storage root, an existing directory, under pol, and
// creates pol.StateDir/parts (mode 0700) for the part registry.
func Open(root string, pol Policy) (*Root, error) {
	return open(root, pol, bootID(), time.Now)
}

// open is Open with the boot ID and the clock that the commit log uses
// given (tests give others).
func open(root string, pol Policy, boot [16]byte, now func() time.Time) (*Root, error) {
	pol = pol.withDefaults()
	if pol.Log == nil {
		pol.Log = slog.New(slog.DiscardHandler)
	}
	if err := pol.validate(); err != nil {
		return nil, fmt.Errorf("storage policy: %w", err)
	}
	osr, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("open storage root: %w", err)
	}
	r := &Root{root: osr, pol: pol, active: make(map[string]struct{}), now: now}
	r.bufs.New = func() any { b := make([]byte, recvChunk); return &b }
	if err := r.openState(root); err != nil {
		osr.Close()
		return nil, err
	}
	r.probeTmpfile()
	if err := r.openLog(boot); err != nil {
		r.reg.close()
		osr.Close()
		return nil, err
	}
	// os.Root does not export the error it returns for a path that leaves
	// it; take it from a refused lookup so it can be matched by identity.
	if _, err := osr.Lstat(".."); err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			r.escape = pe.Err
		}
	}
	return r, nil
}

func (r *Root) openState(root string) error {
	// Checked before anything is created, so a mistake never leaves a
	// state directory in the data tree.
	inside, err := within(root, r.pol.StateDir)
	if err != nil {
		return err
	}
	if inside {
		return fmt.Errorf("state dir %s: must not be inside the storage root %s", r.pol.StateDir, root)
	}
	dir := filepath.Join(r.pol.StateDir, "parts")
	if err := os.MkdirAll(r.pol.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create part registry: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("create part registry: %w", err)
	}
	reg, err := openRegistry(dir)
	if err != nil {
		return fmt.Errorf("open part registry: %w", err)
	}
	r.reg = reg
	return nil
}

// openLog opens the commit log when the policy asks for one and the state
// directory keeps it across a reboot.
func (r *Root) openLog(boot [16]byte) error {
	if !r.pol.Fsync || r.pol.CommitLog == 0 {
		r.recovery.Reason = "off in the configuration"
		return nil
	}
	d, err := os.Open(r.pol.StateDir)
	if err != nil {
		return err
	}
	mem, err := memoryFS(int(d.Fd()))
	d.Close()
	switch {
	case err != nil:
		return err
	case mem:
		r.recovery.Reason = "the state directory is on tmpfs, which a reboot empties"
		return nil
	}
	if !haveSyncFS {
		r.recovery.Reason = "not supported on this system"
		return nil
	}
	l, err := r.openCommitLog(filepath.Join(r.pol.StateDir, logName), r.pol.CommitLog, boot)
	if err != nil {
		return err
	}
	r.log = l
	r.recovery.Enabled = true
	return nil
}

// CommitLogStats reports how many uploads the commit log made durable and
// with how many flushes; zeros without a log.
func (r *Root) CommitLogStats() (commits, flushes int) {
	if r.log == nil {
		return 0, 0
	}
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	return r.log.commits, r.log.flushes
}

// Recovery reports whether uploads go through the commit log and what
// Open found in it.
func (r *Root) Recovery() LogRecovery { return r.recovery }

// within reports whether dir is root or below it, after resolving symlinks
// (for dir, those of its longest existing prefix).
func within(root, dir string) (bool, error) {
	rr, err := resolvePath(root)
	if err != nil {
		return false, fmt.Errorf("resolve storage root: %w", err)
	}
	dr, err := resolvePath(dir)
	if err != nil {
		return false, fmt.Errorf("resolve state dir: %w", err)
	}
	rel, err := filepath.Rel(rr, dr)
	if err != nil {
		return false, nil
	}
	return rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)), nil
}

func resolvePath(p string) (string, error) {
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	var rest []string
	for {
		resolved, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(append([]string{resolved}, rest...)...), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return "", err
		}
		rest = append([]string{filepath.Base(p)}, rest...)
		p = parent
	}
}

// Close releases the root's descriptors. Jails opened from it keep working
// until their own Close; SweepParts does not.
func (r *Root) Close() error {
	var err error
	if r.log != nil {
		err = r.log.close()
	}
	if cerr := r.root.Close(); err == nil {
		err = cerr
	}
	if rerr := r.reg.close(); err == nil {
		err = rerr
	}
	return err
}

// Jail returns the FS of user, confined to home: a slash path relative to
// the storage root, already clean, "." for the whole root. Missing
// components of home are created with the policy, so a new uploader's home
// appears on first login. A readOnly FS refuses every change.
func (r *Root) Jail(home, user string, readOnly bool) (*FS, error) {
	if err := checkHome(home); err != nil {
		return nil, &PathError{Op: "jail", Path: home, Err: err}
	}
	if home != "." {
		if err := r.mkdirAll(r.root, home); err != nil {
			return nil, &PathError{Op: "jail", Path: home, Err: classify(err, r.escape)}
		}
	}
	jail, err := r.root.OpenRoot(home)
	if err != nil {
		return nil, &PathError{Op: "jail", Path: home, Err: classify(err, r.escape)}
	}
	top, err := jail.OpenFile(".", os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		jail.Close()
		return nil, &PathError{Op: "jail", Path: home, Err: classify(err, r.escape)}
	}
	return &FS{r: r, jail: jail, top: top, home: home, user: user, readOnly: readOnly}, nil
}

// mkdirAll creates every missing component of rel in dir with the policy.
func (r *Root) mkdirAll(dir *os.Root, rel string) error {
	for i := 1; i <= len(rel); i++ {
		if i < len(rel) && rel[i] != '/' {
			continue
		}
		p := rel[:i]
		err := r.mkdir(dir, p)
		if errors.Is(err, fs.ErrExist) {
			fi, serr := dir.Stat(p)
			if serr != nil {
				return serr
			}
			if !fi.IsDir() {
				return syscall.ENOTDIR
			}
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// mkdir creates rel in dir and gives it the policy's group and mode on its
// descriptor. A directory that cannot get the policy is removed again.
func (r *Root) mkdir(dir *os.Root, rel string) error {
	if err := dir.Mkdir(rel, 0o700); err != nil {
		return err
	}
	if err := r.applyDir(dir, rel); err != nil {
		_ = dir.Remove(rel)
		return err
	}
	return nil
}

func (r *Root) applyDir(dir *os.Root, rel string) error {
	d, err := dir.OpenFile(rel, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	err = r.applyPolicy(d, r.pol.DirMode)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// applyPolicy sets group then mode on an open descriptor: chown clears the
// setgid bit, so the order matters, and acting on the descriptor leaves no
// window in which the name could point elsewhere.
func (r *Root) applyPolicy(f *os.File, mode fs.FileMode) error {
	if r.pol.GID >= 0 {
		if err := f.Chown(-1, r.pol.GID); err != nil {
			return err
		}
	}
	return f.Chmod(mode)
}

// acquire marks the part key as in use; false if it already is.
func (r *Root) acquire(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, busy := r.active[key]; busy {
		return false
	}
	r.active[key] = struct{}{}
	return true
}

// linkTmpfile gives the O_TMPFILE fd the name in the directory dfd
// (EEXIST when taken). linkat with AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH
// before Linux 6.10; without it the link goes through /proc/self/fd.
func (r *Root) linkTmpfile(fd, dfd int, name string) error {
	if !r.noEmptyPath.Load() {
		err := linkEmptyPath(fd, dfd, name)
		if err != unix.ENOENT && err != unix.EPERM {
			return err
		}
		r.noEmptyPath.Store(true)
	}
	return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), dfd, name, unix.AT_SYMLINK_FOLLOW)
}

// probeTmpfile finds out once whether parts can be anonymous: an
// O_TMPFILE in the root that can be linked to a name (a part name, which
// listings and the mirror ignore, removed at once). Where either step
// fails, every part is named from the start.
func (r *Root) probeTmpfile() {
	d, err := os.Open(r.root.Name())
	if err != nil {
		r.noTmpfile.Store(true)
		return
	}
	defer d.Close()
	dfd := int(d.Fd())
	fd, err := openTmpfile(dfd)
	if err != nil {
		r.noTmpfile.Store(true)
		return
	}
	defer unix.Close(fd)
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	name := PartPrefix + "probe-" + hex.EncodeToString(rnd[:])
	if err := r.linkTmpfile(fd, dfd, name); err != nil {
		r.noTmpfile.Store(true)
		return
	}
	_ = unix.Unlinkat(dfd, name, 0)
}

func (r *Root) release(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.active, key)
}
