package storage

import (
	"bytes"
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
)

// registry records every part file so that sweeping never walks the data
// tree. It is an append-only journal, StateDir/parts/journal, of lines
// "+key" (the part may exist) and "-key" (it is gone), key being the part's
// path relative to the storage root; a key is live while its last line is a
// "+". Recording a part costs one write(2) on an open descriptor: a file per
// part, as earlier versions kept, cost an inode created and another deleted
// per upload, which on small files was a large share of the work. The
// journal is rewritten to its live keys when the root is opened, by every
// sweep, and when it has grown by compactAfter.
//
// Entries are a cleanup hint: a lost entry costs disk space until an
// operator notices, never data. Lines are appended without fsync (a process
// crash keeps them, a power loss may not), except that [registry.sync]
// makes the journal durable when a part outlives its session. Any other
// file in parts/ is an entry of the one-file-per-part layout, which the
// sweep still reads and removes. One process at a time may use a state dir.
type registry struct {
	dir string

	mu       sync.Mutex
	f        *os.File // the journal, opened for appending; nil until needed
	appended int64    // bytes appended since the journal was last rewritten
}

const (
	journalName = "journal"
	// journalTmp is the journal being rewritten.
	journalTmp = "journal.tmp"
	// compactAfter bounds the journal between sweeps: at about 100 bytes
	// per upload, a rewrite every ~40,000 uploads.
	compactAfter = 4 << 20
	// tmpPrefix marks an entry of the old layout being written; a crash
	// could leave one behind.
	tmpPrefix = ".tmp-"
)

// openRegistry opens (and tidies) the journal in dir.
func openRegistry(dir string) (*registry, error) {
	g := &registry{dir: dir}
	if _, err := g.compact(); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *registry) path() string { return filepath.Join(g.dir, journalName) }

// put records that the part at key (root-relative) may exist.
func (g *registry) put(key string) error { return g.record('+', key) }

// remove records that the part at key is gone.
func (g *registry) remove(key string) error { return g.record('-', key) }

func (g *registry) record(op byte, key string) error {
	if strings.IndexByte(key, '\n') >= 0 {
		return fs.ErrInvalid // never from resolve, which refuses control characters
	}
	line := make([]byte, 0, len(key)+2)
	line = append(append(append(line, op), key...), '\n')
	g.mu.Lock()
	defer g.mu.Unlock()
	f, err := g.file()
	if err != nil {
		return err
	}
	n, err := f.Write(line)
	g.appended += int64(n)
	if err != nil {
		// A torn line would swallow the next one: rewrite the journal,
		// which keeps only whole lines, before anything else is added.
		g.closeLocked()
		g.appended = compactAfter
		return err
	}
	if g.appended >= compactAfter {
		_, _ = g.compactLocked() // a failure leaves the journal as it is
	}
	return nil
}

// file returns the journal's append descriptor, opening it when needed.
func (g *registry) file() (*os.File, error) {
	if g.f == nil {
		if g.appended >= compactAfter {
			if _, err := g.compactLocked(); err != nil {
				return nil, err
			}
		}
		f, err := os.OpenFile(g.path(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		g.f = f
	}
	return g.f, nil
}

// sync makes the journal durable: used when an upload is interrupted and
// its part becomes long-lived. The journal's own name was made durable
// when it was written.
func (g *registry) sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	f, err := g.file()
	if err != nil {
		return err
	}
	return f.Sync()
}

// close releases the journal's descriptor; a later use opens it again.
func (g *registry) close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closeLocked()
}

func (g *registry) closeLocked() error {
	if g.f == nil {
		return nil
	}
	err := g.f.Close()
	g.f = nil
	return err
}

// live returns the live keys, in the order they were first recorded.
func (g *registry) live() ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	data, err := os.ReadFile(g.path())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	keys, _ := parseJournal(data)
	return keys, nil
}

// compact rewrites the journal to its live keys, durably, and returns them.
func (g *registry) compact() ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.compactLocked()
}

func (g *registry) compactLocked() ([]string, error) {
	data, err := os.ReadFile(g.path())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read part registry: %w", err)
	}
	keys, tidy := parseJournal(data)
	if tidy && err == nil {
		g.appended = 0
		return keys, nil
	}
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteByte('+')
		b.WriteString(k)
		b.WriteByte('\n')
	}
	if err := g.replace(b.Bytes()); err != nil {
		return nil, fmt.Errorf("rewrite part registry: %w", err)
	}
	g.appended = 0
	return keys, nil
}

// replace atomically and durably makes data the journal's content. The
// append descriptor, which names the old file, is closed.
func (g *registry) replace(data []byte) error {
	tmp := filepath.Join(g.dir, journalTmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, g.path())
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	_ = g.closeLocked()
	return syncDir(g.dir)
}

// parseJournal returns the live keys of a journal in first-recorded order,
// and whether the journal holds exactly those as "+" lines already. An
// incomplete last line (a crash while appending) and lines that do not name
// a part file are ignored.
func parseJournal(data []byte) (keys []string, tidy bool) {
	tidy = true
	at := map[string]int{} // live key -> index in keys
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return compactKeys(keys), false
		}
		line := data[:i]
		data = data[i+1:]
		if len(line) < 2 || !validPartKey(string(line[1:])) {
			tidy = false
			continue
		}
		key := string(line[1:])
		switch _, ok := at[key]; {
		case line[0] == '+' && !ok:
			at[key] = len(keys)
			keys = append(keys, key)
		case line[0] == '-' && ok:
			keys[at[key]] = ""
			delete(at, key)
			tidy = false
		default: // a repeated "+", a "-" of nothing, or junk
			tidy = false
		}
	}
	return compactKeys(keys), tidy
}

// compactKeys drops the removed ("") keys.
func compactKeys(keys []string) []string {
	out := keys[:0]
	for _, k := range keys {
		if k != "" {
			out = append(out, k)
		}
	}
	return out
}

// SweepParts removes the part files whose last write is older than
// now - ResumeTTL, together with their registry entries, and drops entries
// whose part is gone. Parts of uploads in progress are never touched.
// removed counts the part files deleted; err joins every failure, and the
// sweep goes on past each. It is safe for concurrent use.
func (r *Root) SweepParts(now time.Time) (removed int, err error) {
	cutoff := now.Add(-r.pol.ResumeTTL)
	keys, err := r.reg.compact()
	if err != nil {
		return 0, fmt.Errorf("sweep parts: %w", err)
	}
	var errs []error
	for _, key := range keys {
		n, err := r.sweepPart(key, cutoff, func() error {
			if err := r.reg.remove(key); err != nil {
				return fmt.Errorf("sweep parts: %w", err)
			}
			return nil
		})
		removed += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	entries, err := os.ReadDir(r.reg.dir)
	if err != nil {
		return removed, fmt.Errorf("sweep parts: %w", err)
	}
	for _, e := range entries {
		if e.Name() == journalName || e.Name() == journalTmp {
			continue
		}
		n, err := r.sweepEntry(e, cutoff)
		removed += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// sweepEntry handles a registry file of the one-file-per-part layout.
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
		return 0, nil // removed meanwhile
	}
	if err != nil {
		return 0, fmt.Errorf("sweep parts: %w", err)
	}
	key := string(data)
	if !validPartKey(key) || legacyEntry(key) != e.Name() {
		// Not written by us: never act on its content.
		return 0, removeEntry(name)
	}
	return r.sweepPart(key, cutoff, func() error { return removeEntry(name) })
}

// legacyEntry is the file name the one-file-per-part layout gave key.
func legacyEntry(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// sweepPart removes the part at key if it has expired, and calls drop to
// forget its entry when the part is gone; both happen while the key is
// held, so that an upload starting after them records it afresh.
func (r *Root) sweepPart(key string, cutoff time.Time, drop func() error) (int, error) {
	if !r.acquire(key) {
		return 0, nil // an upload is writing it
	}
	defer r.release(key)
	fi, err := r.root.Lstat(key)
	switch c := classify(err, r.escape); {
	case c == fs.ErrNotExist || c == ErrOutsideJail:
		// Gone, or its directory became a symlink leading out of the
		// root: either way there is nothing here to remove.
		return 0, drop()
	case err != nil:
		return 0, fmt.Errorf("sweep part %s: %w", key, err)
	case !fi.Mode().IsRegular():
		return 0, drop()
	case !fi.ModTime().Before(cutoff):
		return 0, nil
	}
	if err := r.root.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("sweep part %s: %w", key, err)
	}
	return 1, drop()
}

func removeEntry(name string) error {
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sweep parts: %w", err)
	}
	return nil
}
