package job

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// locksDir is the Locker's directory inside state_dir.
const locksDir = "locks"

// Poll intervals while a lock is held by another job: short at first, so a
// job that follows another starts at once, then backing off.
const (
	pollMin = 10 * time.Millisecond
	pollMax = 500 * time.Millisecond
)

// Locker hands out tree locks backed by flock(2) files in state_dir/locks,
// so that they hold across processes as well as within one. It is safe for
// concurrent use.
type Locker struct {
	dir string
	// Waiting, when set, is called once per Lock that has to wait, with the
	// tree asked for and the holder that blocks it ("" when unknown).
	Waiting func(tree, heldBy string)
}

// NewLocker returns a Locker keeping its lock files in stateDir/locks,
// which it creates.
func NewLocker(stateDir string) (*Locker, error) {
	dir := filepath.Join(stateDir, locksDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("job locks: %w", err)
	}
	return &Locker{dir: dir}, nil
}

// heldLock is one flock'ed file of a Lock.
type heldLock struct {
	f    *os.File
	path string // the directory it stands for
}

// Lock blocks until no other holder, in this process or another, has a
// lock on a tree overlapping tree (tree itself, an ancestor or a
// descendant), then takes it. holder names the job for whoever waits on it
// ("mirror pass genesisassets"). The returned release is idempotent. Lock
// returns ctx's error if ctx ends first.
func (l *Locker) Lock(ctx context.Context, tree, holder string) (release func(), err error) {
	chain, err := ancestry(tree)
	if err != nil {
		return nil, err
	}
	var held []heldLock
	unlock := func() {
		for i := len(held) - 1; i >= 0; i-- {
			_ = held[i].f.Close() // closing the last descriptor drops the flock
		}
		held = nil
	}
	waited := false
	for i, dir := range chain {
		exclusive := i == len(chain)-1
		f, err := l.open(dir)
		if err != nil {
			unlock()
			return nil, err
		}
		held = append(held, heldLock{f: f, path: dir})
		how := unix.LOCK_SH
		if exclusive {
			how = unix.LOCK_EX
		}
		if err := l.acquire(ctx, f, how, func() {
			if !waited && l.Waiting != nil {
				waited = true
				l.Waiting(chain[len(chain)-1], l.holderOf(dir))
			}
		}); err != nil {
			unlock()
			return nil, fmt.Errorf("job lock on %s: %w", tree, err)
		}
	}
	// Say who holds it, for the operator and for the next waiter.
	f := held[len(held)-1].f
	info := fmt.Sprintf("%s\npid %d since %s\n", holder, os.Getpid(), time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(info), 0) // informational only
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = f.Truncate(0)
			unlock()
		})
	}, nil
}

// acquire takes a flock of kind how on f, polling so that ctx can end the
// wait; wait is called before the first sleep.
func (l *Locker) acquire(ctx context.Context, f *os.File, how int, wait func()) error {
	d := pollMin
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("flock %s: %w", f.Name(), err)
		}
		wait()
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		d = min(2*d, pollMax)
	}
}

// open opens (creating) the lock file standing for dir.
func (l *Locker) open(dir string) (*os.File, error) {
	p := l.file(dir)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("job lock: %w", err)
	}
	return f, nil
}

// file is the lock file of dir: named by a hash, so any path fits.
func (l *Locker) file(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return filepath.Join(l.dir, hex.EncodeToString(sum[:12])+".lock")
}

// holderOf reads who holds dir's exclusive lock, "" when nobody says.
func (l *Locker) holderOf(dir string) string {
	b, err := os.ReadFile(l.file(dir))
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(b))
	return strings.ReplaceAll(s, "\n", ", ")
}

// ancestry is tree made absolute and resolved, preceded by its ancestors
// from "/" down. A tree that does not exist yet is resolved as far as it
// exists, so that two spellings of one directory share a lock.
func ancestry(tree string) ([]string, error) {
	if tree == "" {
		return nil, errors.New("job lock: empty tree")
	}
	abs, err := filepath.Abs(tree)
	if err != nil {
		return nil, fmt.Errorf("job lock on %s: %w", tree, err)
	}
	abs = resolve(abs)
	chain := []string{"/"}
	if abs == "/" {
		return chain, nil
	}
	cur := ""
	for _, part := range strings.Split(strings.TrimPrefix(abs, "/"), "/") {
		cur += "/" + part
		chain = append(chain, cur)
	}
	return chain, nil
}

// resolve follows symlinks in the longest existing prefix of abs.
func resolve(abs string) string {
	rest := ""
	p := abs
	for {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(r, rest)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return abs
		}
		parent := filepath.Dir(p)
		if parent == p {
			return abs
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}
