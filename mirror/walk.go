package mirror

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"ftpgate/storage"
)

// SentinelName is the file the first pass of a mapping creates in its
// local root. Without it no deletion happens: an empty mount point or a
// wrong directory never empties a bucket. It is never uploaded.
const SentinelName = ".ftpgate-sentinel"

const sentinelText = "ftpgate: this file marks the local root of a mirror mapping.\n" +
	"Without it ftpgate deletes nothing in the bucket. Do not remove it.\n"

// fileStat is what the mirror compares of a local file.
type fileStat struct {
	size  int64
	mtime int64 // ns
	ctime int64 // ns
	inode uint64
	dev   uint64
	mode  fs.FileMode
}

func (s fileStat) same(o fileStat) bool {
	return s.size == o.size && s.mtime == o.mtime && s.ctime == o.ctime && s.inode == o.inode
}

// excluder decides what a mapping never mirrors: upload part files, the
// mapping's exclude patterns (matched against the base name and the
// relative path), the sentinel at the top, and the state directory when it
// lies inside the tree.
type excluder struct {
	patterns []string
	stateRel string // state_dir relative to the root, "" when outside
}

func newExcluder(root, stateDir string, patterns []string) excluder {
	e := excluder{patterns: patterns}
	if stateDir != "" {
		if rel, err := filepath.Rel(root, stateDir); err == nil && rel != "." &&
			rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			e.stateRel = filepath.ToSlash(rel)
		}
	}
	return e
}

// excluded reports whether rel (a slash path relative to the root) is left
// out, and with it everything below it when it is a directory.
func (e excluder) excluded(rel string, isDir bool) bool {
	base := path.Base(rel)
	if storage.IsPartName(base) {
		return true
	}
	if !isDir && rel == SentinelName {
		return true
	}
	if e.stateRel != "" && (rel == e.stateRel || strings.HasPrefix(rel, e.stateRel+"/")) {
		return true
	}
	for _, p := range e.patterns {
		if ok, _ := path.Match(p, base); ok {
			return true
		}
		if ok, _ := path.Match(p, rel); ok {
			return true
		}
	}
	return false
}

// excludedPath reports whether rel or any directory above it is excluded:
// for keys found in the journal or the bucket without a local file.
func (e excluder) excludedPath(rel string) bool {
	if e.excluded(rel, false) {
		return true
	}
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' && e.excluded(rel[:i], true) {
			return true
		}
	}
	return false
}

// localFile is one regular file found by the walker.
type localFile struct {
	rel string
	st  fileStat
}

// walker yields a tree's regular files in S3 key order: each directory's
// entries sorted with directories compared as name+"/", so that "a/b"
// comes after "a.txt" and before "a0". It holds one sorted name list per
// level, O(depth) directories.
type walker struct {
	root  string // absolute local root
	ex    excluder
	stack []*walkDir
	errs  []error // directories that could not be read (first few)
	nerr  int
	count int // files yielded
	open  func(name string) (*os.File, error)
}

type walkDir struct {
	rel     string // "" for the top, else "dir/sub/"
	entries []dirEntry
	i       int
}

type dirEntry struct {
	name  string
	isDir bool
}

// sortKey is the entry's name as it sorts among S3 keys.
func (d dirEntry) sortKey() string {
	if d.isDir {
		return d.name + "/"
	}
	return d.name
}

// maxWalkErrs is how many walk errors are kept for the report.
const maxWalkErrs = 10

// newWalker walks root/sub (sub is "" or a slash directory path ending in
// "/"). A missing sub is not an error: it has no files.
func newWalker(root, sub string, ex excluder, open func(string) (*os.File, error)) *walker {
	if open == nil {
		open = os.Open
	}
	w := &walker{root: root, ex: ex, open: open}
	w.push(sub)
	return w
}

func (w *walker) fail(err error) {
	w.nerr++
	if len(w.errs) < maxWalkErrs {
		w.errs = append(w.errs, err)
	}
}

// err is the walk's first error, nil when every directory was read.
func (w *walker) err() error {
	if w.nerr == 0 {
		return nil
	}
	return fmt.Errorf("walk %s: %d directories unreadable, first: %w", w.root, w.nerr, w.errs[0])
}

func (w *walker) push(rel string) {
	dir := filepath.Join(w.root, filepath.FromSlash(rel))
	f, err := w.open(dir)
	if err != nil {
		if !(rel != "" && errors.Is(err, fs.ErrNotExist)) {
			w.fail(err)
		}
		return
	}
	defer f.Close()
	var entries []dirEntry
	for {
		des, err := f.ReadDir(1024)
		for _, de := range des {
			entries = append(entries, dirEntry{name: de.Name(), isDir: de.IsDir()})
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			w.fail(fmt.Errorf("read directory %s: %w", dir, err))
			return
		}
		if len(des) == 0 {
			break
		}
	}
	slices.SortFunc(entries, func(a, b dirEntry) int { return strings.Compare(a.sortKey(), b.sortKey()) })
	w.stack = append(w.stack, &walkDir{rel: rel, entries: entries})
}

// next returns the next regular file in key order; ok is false at the end.
func (w *walker) next() (localFile, bool) {
	for len(w.stack) > 0 {
		top := w.stack[len(w.stack)-1]
		if top.i >= len(top.entries) {
			w.stack = w.stack[:len(w.stack)-1]
			continue
		}
		e := top.entries[top.i]
		top.i++
		rel := top.rel + e.name
		if w.ex.excluded(rel, e.isDir) {
			continue
		}
		if e.isDir {
			w.push(rel + "/")
			continue
		}
		fi, err := os.Lstat(filepath.Join(w.root, filepath.FromSlash(rel)))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				w.fail(err)
			}
			continue
		}
		if !fi.Mode().IsRegular() {
			// symlinks, devices, sockets: never mirrored; a directory that
			// replaced a file between ReadDir and Lstat is seen next pass
			continue
		}
		w.count++
		return localFile{rel: rel, st: statOf(fi)}, true
	}
	return localFile{}, false
}
