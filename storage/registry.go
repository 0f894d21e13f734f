package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// registry records every part file, one small file per part in
// StateDir/parts holding the part's path relative to the storage root, so
// that sweeping never walks the data tree. Entries are a cleanup hint: a
// lost entry costs disk space until an operator notices, never data.
type registry struct{ dir string }

// tmpPrefix marks an entry being written; a crash can leave one behind.
const tmpPrefix = ".tmp-"

// entry is the registry file of the part at key (root-relative).
func (g registry) entry(key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(g.dir, hex.EncodeToString(sum[:]))
}

// put records key. The entry is written under a temporary name and renamed,
// so a reader never sees half a path.
func (g registry) put(key string) error {
	f, err := os.CreateTemp(g.dir, tmpPrefix+"*")
	if err != nil {
		return err
	}
	_, err = f.WriteString(key)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), g.entry(key))
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}

func (g registry) remove(key string) error {
	if err := os.Remove(g.entry(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// sync makes key's entry durable: used when an upload is interrupted and
// its part becomes long-lived.
func (g registry) sync(key string) error {
	for _, p := range []string{g.entry(key), g.dir} {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// SweepParts removes the part files whose last write is older than
// now - ResumeTTL, together with their registry entries, and drops entries
// whose part is gone. Parts of uploads in progress are never touched.
// removed counts the part files deleted; err joins every failure, and the
// sweep goes on past each. It is safe for concurrent use.
func (r *Root) SweepParts(now time.Time) (removed int, err error) {
	cutoff := now.Add(-r.pol.ResumeTTL)
	entries, err := os.ReadDir(r.reg.dir)
	if err != nil {
		return 0, fmt.Errorf("sweep parts: %w", err)
	}
	var errs []error
	for _, e := range entries {
		n, err := r.sweepEntry(e, cutoff)
		removed += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

func (r *Root) sweepEntry(e fs.DirEntry, cutoff time.Time) (int, error) {
	name := filepath.Join(r.reg.dir, e.Name())
	if strings.HasPrefix(e.Name(), tmpPrefix) {
		// A crash while writing an entry; it is stale once older than
		// any part could be.
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) {
			return 0, removeEntry(name)
		}
		return 0, nil
	}
	data, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil // committed meanwhile
	}
	if err != nil {
		return 0, fmt.Errorf("sweep parts: %w", err)
	}
	key := string(data)
	if !validPartKey(key) || r.reg.entry(key) != name {
		// Not written by us: never act on its content.
		return 0, removeEntry(name)
	}
	if !r.acquire(key) {
		return 0, nil // an upload is writing it
	}
	defer r.release(key)
	fi, err := r.root.Lstat(key)
	switch c := classify(err, r.escape); {
	case c == fs.ErrNotExist || c == ErrOutsideJail:
		// Gone, or its directory became a symlink leading out of the
		// root: either way there is nothing here to remove.
		return 0, removeEntry(name)
	case err != nil:
		return 0, fmt.Errorf("sweep part %s: %w", key, err)
	case !fi.Mode().IsRegular():
		return 0, removeEntry(name)
	case !fi.ModTime().Before(cutoff):
		return 0, nil
	}
	if err := r.root.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("sweep part %s: %w", key, err)
	}
	return 1, removeEntry(name)
}

func removeEntry(name string) error {
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sweep parts: %w", err)
	}
	return nil
}
