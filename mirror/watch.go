package mirror

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// changeKind says what a change reported by the watcher asks the mirror to do.
type changeKind int

const (
	// changeFile: a regular file was created, written, had its attributes
	// changed or was moved in, and has been quiet for the settle period.
	changeFile changeKind = iota
	// changeRemoved: a path (file or directory) disappeared, was moved out or
	// was renamed away. It is a hint: the path may exist again by the time
	// the mirror looks.
	changeRemoved
	// changeRescan: rescan the subtree Rel ("" is the whole tree): a new or
	// moved-in directory (reported after its watches are in place), an
	// overflow of the event queue, or the watch limit.
	changeRescan
)

func (k changeKind) String() string {
	switch k {
	case changeFile:
		return "file"
	case changeRemoved:
		return "removed"
	case changeRescan:
		return "rescan"
	}
	return fmt.Sprintf("changeKind(%d)", int(k))
}

// change is one thing the watcher saw under its root.
type change struct {
	Rel  string // slash-separated path relative to the root ("" for the root)
	Kind changeKind
}

func (c change) String() string { return c.Kind.String() + " " + c.Rel }

// watcherConfig configures a watcher; its zero value, apart from Root, works.
type watcherConfig struct {
	Root   string
	Settle time.Duration // how long a file must be quiet before changeFile; default 1s
	// Exclude reports whether rel is excluded; nil excludes nothing. Excluded
	// paths are never reported and excluded directories are not watched.
	Exclude func(rel string, isDir bool) bool
	// OverflowAfter is a test hook: the OverflowAfter-th raw event is
	// discarded and handled exactly as if fsnotify had reported
	// ErrEventOverflow instead, once per Run. 0 turns it off.
	OverflowAfter int
}

const defaultSettle = time.Second

func (c watcherConfig) withDefaults() watcherConfig {
	if c.Settle <= 0 {
		c.Settle = defaultSettle
	}
	return c
}

const (
	// maxQueuedChanges bounds the changes waiting for the consumer; above it
	// the watcher stops reading events and lets them wait in the kernel
	// (which reports an overflow, and so a full rescan, if it fills up).
	maxQueuedChanges = 4096
	readDirBatch     = 256
	recentGoneSize   = 8

	msgOverflow   = "watch overflow, full rescan"
	msgWatchLimit = "watch limit reached, full rescan"
	msgRootGone   = "mirror root removed or renamed, full rescan"
)

// watcher turns fsnotify (inotify on Linux) events under a root into
// settled, deduplicated changes for the mirror. It watches every directory,
// since inotify is not recursive. Build it with newWatcher and call Run once;
// Ready is safe for concurrent use.
type watcher struct {
	cfg   watcherConfig
	log   *slog.Logger
	ready chan struct{}

	// addHook, set only by tests, runs before each watch is added; an error
	// it returns stands for the error of the add (to fake ENOSPC).
	addHook func(path string) error
}

// newWatcher returns a watcher for cfg.Root. It starts nothing.
func newWatcher(cfg watcherConfig, log *slog.Logger) *watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &watcher{cfg: cfg.withDefaults(), log: log, ready: make(chan struct{})}
}

// Ready is closed once the initial watches are in place. It is never closed
// if Run fails before that.
func (w *watcher) Ready() <-chan struct{} { return w.ready }

// Run watches the tree and sends changes on out until ctx ends, then returns
// nil once its goroutines have exited. It returns an error only when it
// cannot start: no inotify instance, or the root is not a watchable
// directory.
func (w *watcher) Run(ctx context.Context, out chan<- change) error {
	root := filepath.Clean(w.cfg.Root)
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", root, err)
	}
	l := &watchLoop{
		cfg:     w.cfg,
		log:     w.log,
		addHook: w.addHook,
		root:    root,
		fsw:     fsw,
		out:     out,
		dirs:    make(map[string]*dirNode),
		byID:    make(map[dirID]string),
		pending: make(map[string]settling),
		timer:   time.NewTimer(time.Hour),
		kick:    make(chan struct{}, 1),
	}
	l.timer.Stop()

	// fsnotify sends some errors while holding the lock that Add, Remove
	// and Close take, so its Errors channel must be read even while the
	// owner is busy adding watches or shutting down. This goroutine only
	// reads errors; the loop below stays the only user of the watcher.
	var wg sync.WaitGroup
	wg.Go(l.drainErrors)
	defer func() {
		if err := fsw.Close(); err != nil {
			w.log.Debug("close watcher", "path", root, "err", err)
		}
		wg.Wait()
	}()

	if err := l.watchTree(ctx, ""); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch %s: %w", root, err)
	}
	if l.dirs[""] == nil && !l.limitHit {
		return fmt.Errorf("watch %s: %w", root, errRootNotWatched)
	}
	close(w.ready)
	w.log.Debug("watching", "path", root, "dirs", len(l.dirs))
	return l.run(ctx)
}

var errRootNotWatched = errors.New("root directory could not be watched")

// watchLoop is the state of one Run, owned by its goroutine.
type watchLoop struct {
	cfg     watcherConfig
	log     *slog.Logger
	addHook func(string) error
	root    string
	fsw     *fsnotify.Watcher
	out     chan<- change

	// Every known directory, watched or excluded, by relative path, as a
	// tree so that a subtree can be dropped without scanning them all.
	dirs    map[string]*dirNode
	byID    map[dirID]string
	syncGen uint32

	// Files with unsettled changes, and their deadlines in a heap. Only the
	// map is updated on each event; a heap entry whose deadline has moved
	// is pushed back when it comes up, and one whose gen no longer matches
	// (the file was removed and came back) is dropped.
	pending map[string]settling
	due     dueHeap
	gen     uint64
	timer   *time.Timer
	armedAt time.Time

	queue []change // changes not yet taken by the consumer, from head on
	head  int

	overflow atomic.Bool
	kick     chan struct{}

	raw          int
	limitHit     bool
	lastExcluded string
	// Directories recently dropped because they went away: inotify reports
	// a moved directory twice (MOVED_FROM on the parent, MOVE_SELF on its
	// own watch), and the second report must not become a second change.
	recentGone [recentGoneSize]string
	recentNext int
}

type dirNode struct {
	id       dirID
	parent   *dirNode
	children map[string]*dirNode // by name; nil when there are none
	excluded bool                // known but not watched
	seen     uint32              // syncGen of the last walk that found it
}

// dirID identifies a directory across renames.
type dirID struct{ dev, ino uint64 }

func dirIDOf(fi fs.FileInfo) dirID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return dirID{dev: uint64(st.Dev), ino: st.Ino}
	}
	return dirID{}
}

type settling struct {
	deadline time.Time
	gen      uint64
}

type dueItem struct {
	deadline time.Time
	rel      string
	gen      uint64
}

type dueHeap []dueItem

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueItem)) }
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = dueItem{}
	*h = old[:len(old)-1]
	return it
}

func (l *watchLoop) drainErrors() {
	for err := range l.fsw.Errors {
		if errors.Is(err, fsnotify.ErrEventOverflow) {
			l.overflow.Store(true)
			select {
			case l.kick <- struct{}{}:
			default:
			}
			continue
		}
		l.log.Warn("watch error", "path", l.root, "err", err)
	}
}

func (l *watchLoop) run(ctx context.Context) error {
	for {
		l.arm()
		var (
			send   chan<- change
			next   change
			events = l.fsw.Events
			timerC = l.timer.C
		)
		if l.head < len(l.queue) {
			send, next = l.out, l.queue[l.head]
		}
		if l.queued() >= maxQueuedChanges {
			events, timerC = nil, nil
		}
		select {
		case <-ctx.Done():
			return nil
		case send <- next:
			l.dequeue()
		case ev, ok := <-events:
			if !ok {
				return fmt.Errorf("watch %s: %w", l.root, fsnotify.ErrClosed)
			}
			l.handle(ctx, ev)
		case <-l.kick:
			if l.overflow.Swap(false) {
				l.fullRescan(ctx, msgOverflow)
			}
		case <-timerC:
			l.armedAt = time.Time{}
			l.flushDue(time.Now())
		}
	}
}

func (l *watchLoop) handle(ctx context.Context, ev fsnotify.Event) {
	if n := l.cfg.OverflowAfter; n > 0 && l.raw < n {
		l.raw++
		if l.raw == n {
			l.fullRescan(ctx, msgOverflow)
			return
		}
	}
	rel, ok := l.relOf(ev.Name)
	if !ok {
		return
	}
	if rel == "" {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			l.fullRescan(ctx, msgRootGone)
		}
		return
	}
	switch {
	case ev.Has(fsnotify.Create):
		l.created(ctx, rel)
	case ev.Has(fsnotify.Remove), ev.Has(fsnotify.Rename):
		l.gone(rel)
	case ev.Has(fsnotify.Write), ev.Has(fsnotify.Chmod):
		l.touched(rel)
	}
}

// created handles a name that appeared: created, or moved in from anywhere.
func (l *watchLoop) created(ctx context.Context, rel string) {
	l.forgetGone(rel)
	fi, err := os.Lstat(l.abs(rel))
	if err != nil {
		return // gone again; its removal is reported by its own event
	}
	switch {
	case fi.IsDir():
		if n := l.dirs[rel]; n != nil && n.id == dirIDOf(fi) {
			return // found by the walk of a parent, which reported it
		}
		if l.excluded(rel, true) {
			_, _ = l.watchDir(rel, dirIDOf(fi), true) // remember it, to ignore its removal
			return
		}
		// Watches first, then the rescan: a file created in between is
		// seen twice rather than not at all.
		if err := l.watchTree(ctx, rel); err != nil {
			if ctx.Err() != nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return
			}
			l.log.Warn("watch new directory", "path", l.abs(rel), "err", err)
		}
		l.emit(change{Rel: rel, Kind: changeRescan})
	case fi.Mode().IsRegular():
		if l.dirs[rel] != nil {
			l.drop(rel) // a directory we missed the removal of
		}
		l.touched(rel)
	}
	// Symlinks and special files are neither followed nor reported.
}

// touched starts or restarts the settle period of a file.
func (l *watchLoop) touched(rel string) {
	deadline := time.Now().Add(l.cfg.Settle)
	if p, ok := l.pending[rel]; ok {
		p.deadline = deadline
		l.pending[rel] = p
		return
	}
	if l.dirs[rel] != nil || l.excluded(rel, false) {
		return
	}
	l.gen++
	l.pending[rel] = settling{deadline: deadline, gen: l.gen}
	heap.Push(&l.due, dueItem{deadline: deadline, rel: rel, gen: l.gen})
}

// gone handles a name that disappeared: removed, or moved away.
func (l *watchLoop) gone(rel string) {
	if n := l.dirs[rel]; n != nil {
		if l.sameDir(rel, n.id) {
			return // an old event: the directory there now is the one we watch
		}
		excluded := l.drop(rel)
		l.rememberGone(rel)
		if !excluded {
			l.emit(change{Rel: rel, Kind: changeRemoved})
		}
		return
	}
	if l.forgetGone(rel) {
		return
	}
	_, wasFile := l.pending[rel]
	delete(l.pending, rel)
	// Unless it had pending changes, it may have been a directory that went
	// before we saw it: a directory exclusion applies too.
	if l.excluded(rel, false) || (!wasFile && l.excluded(rel, true)) {
		return
	}
	l.emit(change{Rel: rel, Kind: changeRemoved})
}

// flushDue reports the files whose settle period is over.
func (l *watchLoop) flushDue(now time.Time) {
	for len(l.due) > 0 && l.queued() < maxQueuedChanges {
		if l.due[0].deadline.After(now) {
			return
		}
		it := heap.Pop(&l.due).(dueItem)
		p, ok := l.pending[it.rel]
		if !ok || p.gen != it.gen {
			continue
		}
		if p.deadline.After(now) {
			it.deadline = p.deadline
			heap.Push(&l.due, it)
			continue
		}
		delete(l.pending, it.rel)
		fi, err := os.Lstat(l.abs(it.rel))
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
			continue // removed meanwhile; its own event reports that
		case err == nil && !fi.Mode().IsRegular():
			continue
		}
		l.emit(change{Rel: it.rel, Kind: changeFile})
	}
}

// fullRescan resynchronises the watches with the tree and asks for a full
// pass: events may have been lost, including those of new or moved
// directories.
func (l *watchLoop) fullRescan(ctx context.Context, msg string) {
	l.log.Warn(msg, "path", l.root)
	l.recentGone = [recentGoneSize]string{}
	l.syncGen++
	if err := l.watchTree(ctx, ""); err != nil {
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("watch tree", "path", l.root, "err", err)
	}
	for rel, n := range l.dirs {
		if n.seen != l.syncGen {
			l.drop(rel)
		}
	}
	l.emit(change{Kind: changeRescan})
}

// watchTree walks the directory top and everything under it, parents before
// children, and makes sure that every directory not excluded is watched
// before it is listed, so that a directory created during the walk is found
// either by the walk or by its parent's watch. It fails only if ctx ends or
// top itself cannot be watched.
func (l *watchLoop) watchTree(ctx context.Context, top string) error {
	stack := []string{top}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		fi, err := os.Lstat(l.abs(rel))
		if err == nil && !fi.IsDir() {
			err = syscall.ENOTDIR
		}
		if err != nil {
			if rel == top {
				return err
			}
			continue // gone or replaced since listed; the parent's watch reports it
		}
		excluded := rel != "" && l.excluded(rel, true)
		descend, err := l.watchDir(rel, dirIDOf(fi), excluded)
		if err != nil {
			if rel == top {
				return err
			}
			l.log.Warn("watch directory", "path", l.abs(rel), "err", err)
		}
		if !descend {
			continue
		}
		if stack, err = l.appendSubdirs(stack, rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
			l.log.Warn("list directory", "path", l.abs(rel), "err", err)
		}
	}
	return nil
}

func (l *watchLoop) appendSubdirs(stack []string, rel string) ([]string, error) {
	f, err := os.OpenFile(l.abs(rel), os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return stack, err
	}
	defer f.Close()
	for {
		ents, err := f.ReadDir(readDirBatch)
		for _, e := range ents {
			if e.IsDir() {
				stack = append(stack, path.Join(rel, e.Name()))
			}
		}
		if err == io.EOF {
			return stack, nil
		}
		if err != nil {
			return stack, err
		}
	}
}

// watchDir makes sure the directory rel, whose identity is id, is known and,
// unless excluded, watched. It reports whether a walk should descend into it.
// The error is that of adding the watch, except for the watch limit (logged
// once) and a directory that is already gone.
func (l *watchLoop) watchDir(rel string, id dirID, excluded bool) (bool, error) {
	if n := l.dirs[rel]; n != nil {
		if n.id == id && n.excluded == excluded {
			n.seen = l.syncGen
			return !excluded, nil
		}
		l.drop(rel)
	}
	if other, ok := l.byID[id]; ok && id != (dirID{}) {
		if l.sameDir(other, id) {
			// Mounted twice (bind mount): inotify would report both
			// places under one name, so only the first is watched.
			l.log.Debug("directory already watched under another path", "path", l.abs(rel), "other", l.abs(other))
			return false, nil
		}
		// It moved from other to rel without our seeing it go, and inotify
		// would hand back the old watch with the old name: drop it first.
		if !l.drop(other) {
			l.emit(change{Rel: other, Kind: changeRemoved})
		}
	}
	var parent *dirNode
	if rel != "" {
		parent = l.dirs[relParent(rel)]
		if parent == nil || parent.excluded {
			return false, nil
		}
	}
	if !excluded {
		if err := l.addWatch(rel); err != nil {
			switch {
			case errors.Is(err, syscall.ENOSPC):
				if !l.limitHit {
					l.limitHit = true
					l.log.Warn(msgWatchLimit, "path", l.abs(rel), "dirs", len(l.dirs), "err", err)
					l.emit(change{Kind: changeRescan})
				}
				return false, nil
			case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
				return false, nil
			}
			return false, err
		}
	}
	n := &dirNode{id: id, parent: parent, excluded: excluded, seen: l.syncGen}
	l.dirs[rel] = n
	if id != (dirID{}) {
		l.byID[id] = rel
	}
	if parent != nil {
		if parent.children == nil {
			parent.children = make(map[string]*dirNode)
		}
		parent.children[path.Base(rel)] = n
	}
	return !excluded, nil
}

func (l *watchLoop) addWatch(rel string) error {
	p := l.abs(rel)
	if l.addHook != nil {
		if err := l.addHook(p); err != nil {
			return err
		}
	}
	return l.fsw.Add(p)
}

// drop forgets the directory rel and every directory under it and removes
// their watches, by the names we recorded: fsnotify keeps the old names of a
// moved directory's sub-watches, which are the same. It reports whether rel
// was an excluded directory.
func (l *watchLoop) drop(rel string) (excluded bool) {
	n := l.dirs[rel]
	if n == nil {
		return false
	}
	if n.parent != nil {
		delete(n.parent.children, path.Base(rel))
	}
	l.dropNode(rel, n)
	return n.excluded
}

func (l *watchLoop) dropNode(rel string, n *dirNode) {
	for name, c := range n.children {
		l.dropNode(path.Join(rel, name), c)
	}
	delete(l.dirs, rel)
	if l.byID[n.id] == rel {
		delete(l.byID, n.id)
	}
	if n.excluded {
		return
	}
	// The kernel drops the watch of a deleted directory by itself.
	if err := l.fsw.Remove(l.abs(rel)); err != nil && !errors.Is(err, fsnotify.ErrNonExistentWatch) {
		l.log.Debug("remove watch", "path", l.abs(rel), "err", err)
	}
}

func (l *watchLoop) sameDir(rel string, id dirID) bool {
	fi, err := os.Lstat(l.abs(rel))
	return err == nil && fi.IsDir() && dirIDOf(fi) == id
}

func (l *watchLoop) excluded(rel string, isDir bool) bool {
	if l.cfg.Exclude == nil {
		return false
	}
	// A part file being uploaded sends a write event per chunk.
	if !isDir && rel == l.lastExcluded {
		return true
	}
	if !l.cfg.Exclude(rel, isDir) {
		return false
	}
	if !isDir {
		l.lastExcluded = rel
	}
	return true
}

func (l *watchLoop) rememberGone(rel string) {
	l.recentGone[l.recentNext] = rel
	l.recentNext = (l.recentNext + 1) % recentGoneSize
}

// forgetGone removes rel from the recently gone directories and reports
// whether it was there.
func (l *watchLoop) forgetGone(rel string) bool {
	for i, g := range l.recentGone {
		if g == rel && g != "" {
			l.recentGone[i] = ""
			return true
		}
	}
	return false
}

// relParent returns the relative path of rel's parent directory.
func relParent(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return ""
}

func (l *watchLoop) abs(rel string) string {
	if rel == "" {
		return l.root
	}
	return filepath.Join(l.root, filepath.FromSlash(rel))
}

// relOf turns an event's name into a path relative to the root.
func (l *watchLoop) relOf(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, l.root)
	if !ok {
		return "", false
	}
	if rest != "" && !os.IsPathSeparator(rest[0]) && !os.IsPathSeparator(l.root[len(l.root)-1]) {
		return "", false
	}
	return filepath.ToSlash(strings.TrimLeft(rest, string(filepath.Separator))), true
}

func (l *watchLoop) emit(c change) { l.queue = append(l.queue, c) }

func (l *watchLoop) queued() int { return len(l.queue) - l.head }

func (l *watchLoop) dequeue() {
	l.queue[l.head] = change{}
	l.head++
	switch {
	case l.head == len(l.queue):
		l.queue, l.head = l.queue[:0], 0
	case l.head >= 1024 && 2*l.head >= len(l.queue):
		n := copy(l.queue, l.queue[l.head:])
		clear(l.queue[n:])
		l.queue, l.head = l.queue[:n], 0
	}
}

// arm sets the timer to the earliest settle deadline.
func (l *watchLoop) arm() {
	if len(l.due) == 0 {
		if !l.armedAt.IsZero() {
			l.timer.Stop()
			l.armedAt = time.Time{}
		}
		return
	}
	if d := l.due[0].deadline; !d.Equal(l.armedAt) {
		l.timer.Reset(time.Until(d))
		l.armedAt = d
	}
}
