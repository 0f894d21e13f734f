package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ftpgate/conf"
)

// Options tunes a Mirror; the zero value works (AllowDeletes 0 then allows
// no more than -1 does). Options are read once, by New.
type Options struct {
	// DryRun plans and reports without writing to the store, the journal
	// or the local tree.
	DryRun bool
	// AllowDeletes lets the max_delete and max_delete_ratio guards pass
	// when a pass plans at most this many object deletions (ftpgate mirror
	// --allow-deletes N). -1 means not set. It never overrides the root,
	// listing, sentinel or device guards.
	AllowDeletes int
	// Progress receives a progress bar during Pass when it is a terminal;
	// otherwise, when not nil, a progress line is logged every 5 seconds.
	Progress io.Writer
	// Settle is how long a file written by another program must be quiet
	// before it is uploaded, and how long a file that changed during its
	// upload waits before the next try. Default 1s.
	Settle time.Duration
	// Workers bounds the object operations in flight. Default 8.
	Workers int
	// QueueSize bounds the paths held in memory (a batch upload counts its
	// files); beyond it work is recorded in the journal and replayed, and a
	// pass waits above half of it. Default 10000.
	QueueSize int
	// MaxAttempts bounds the tries of one operation on transient errors
	// (network, 5xx, SlowDown) before it counts as failed and stays
	// pending. Default 8 (about half a minute of backoff).
	MaxAttempts int
	// DrainTimeout is how long Run lets running operations finish after
	// its context ends. Default 10s.
	DrainTimeout time.Duration
	// OverflowAfter is a test hook ($FTPGATE_TEST_OVERFLOW_AFTER): each
	// watcher behaves as if inotify overflowed at its N-th raw event.
	OverflowAfter int
	// Lock, when set, takes the job lock of a mapping's local tree for
	// each full pass (shared with pulls and permission fixes, which never
	// run at the same time on an overlapping tree).
	Lock func(ctx context.Context, tree, holder string) (release func(), err error)
	// PassDone, when set, is called after each full pass of a mapping,
	// once its lock is released, with the pass's summary and times. It
	// must not block.
	PassDone func(sum MappingSummary, start, end time.Time)
	// ReplayEvery is how often the daemon retries the pending operations
	// in the journal (failed ones, and those recorded while the queue was
	// full). Default 1 minute.
	ReplayEvery time.Duration
}

// defaultSettle (1s) is shared with the watcher (watch.go).
const (
	defaultWorkers     = 8
	defaultQueueSize   = 10000
	defaultMaxAttempts = 8
	defaultDrain       = 10 * time.Second
	defaultReplayEvery = time.Minute
	// eventBuffer is how many Notify calls wait for the dispatcher.
	eventBuffer = 4096
)

func (o Options) withDefaults() Options {
	if o.Settle <= 0 {
		o.Settle = defaultSettle
	}
	if o.Workers <= 0 {
		o.Workers = defaultWorkers
	}
	if o.QueueSize <= 0 {
		o.QueueSize = defaultQueueSize
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = defaultMaxAttempts
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = defaultDrain
	}
	if o.ReplayEvery <= 0 {
		o.ReplayEvery = defaultReplayEvery
	}
	return o
}

// Mirror keeps the buckets of the configured mappings equal to their local
// trees. Create it with New; run it with Run (daemon) or Pass (one-shot),
// never both at once. Notify and Status are safe for concurrent use at any
// time.
type Mirror struct {
	log      *slog.Logger
	store    objectStore
	j        *Journal
	opts     Options
	stateDir string
	mappings []*mapping

	events chan notifyEvent

	// set while Run or Pass runs
	active  atomic.Bool
	running atomic.Bool // Run's scheduler takes Notify's work directly
	sched   atomic.Pointer[sched]
	jw      atomic.Pointer[journalWriter]
	stop    atomic.Pointer[chan struct{}] // closed when Run's context ends

	batchOff atomic.Bool // the store refused a batch: single PUTs from now on

	// one-shot runs (Pass) bound their per-operation log lines
	oneShot atomic.Bool
	opLines atomic.Int64

	// test hooks
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	rnd   func(n int64) int64
	// testProgressEvery shortens the progress log interval in tests.
	testProgressEvery time.Duration
	// testOpenDir replaces os.Open for the walk's directories in tests.
	testOpenDir func(name string) (*os.File, error)
	// testWatcher replaces the fsnotify watcher in tests.
	testWatcher func(mp *mapping) changeSource
	// testRangeKeys replaces rangeKeys, the listing's range size, in tests.
	testRangeKeys int
}

// changeSource is what Run needs from a watcher.
type changeSource interface {
	Run(ctx context.Context, out chan<- change) error
}

// notifyEvent is one Notify call.
type notifyEvent struct {
	abs  string
	hint uploadHint
}

// mapping is one [[mirror]] with its runtime state.
type mapping struct {
	cfg    conf.Mirror
	name   string
	root   string // absolute local root
	real   string // root with symlinks resolved, when it differs
	prefix string // "" or ending in "/"
	ex     excluder
	log    *slog.Logger

	objects atomic.Int64 // objects under the prefix, as of the last full pass

	rescanMu  sync.Mutex
	rescans   map[string]struct{} // requested subtree rescans; "" = full pass
	rescanCh  chan struct{}
	passing   atomic.Bool // a pass runs
	replayReq chan struct{}

	mu      sync.Mutex
	status  MappingStatus
	renamed map[string]struct{} // old paths of renames copied, until their deletion
}

// markRenamed remembers that rel's object was copied to a new name: its
// deletion does not count against the deletion guards.
func (mp *mapping) markRenamed(rel string) {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	if len(mp.renamed) < maxRenames {
		mp.renamed[rel] = struct{}{}
	}
}

func (mp *mapping) wasRenamed(rel string) bool {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	_, ok := mp.renamed[rel]
	return ok
}

func (mp *mapping) forgetRenamed(rel string) {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	delete(mp.renamed, rel)
}

func (mp *mapping) abs(rel string) string { return filepath.Join(mp.root, filepath.FromSlash(rel)) }
func (mp *mapping) key(rel string) string { return mp.prefix + rel }

// MappingStatus is one mapping's state for the status page, metrics and
// alerts. Counters count since the Mirror was created.
type MappingStatus struct {
	Name   string
	Bucket string
	Prefix string
	Local  string

	QueueDepth    int           // tasks queued or running
	OldestPending time.Duration // age of the oldest queued or running task; 0 when none

	LastPassStart  time.Time
	LastPassEnd    time.Time // zero while the first pass runs
	LastPassResult string    // "ok", "failed" (operations failed), "guard" (a deletion guard tripped), "error"
	LastPassError  string    // the pass's error or first failure, "" when ok
	Passing        bool      // a pass is running

	// Guard is the deletion guard that tripped last, until a full pass
	// runs without one. Nil when none.
	Guard *GuardError

	Uploaded      int64
	UploadedBytes int64
	Copied        int64
	Deleted       int64
	Failed        int64
	Objects       int64 // objects under the prefix, as of the last full pass
}

// New builds a Mirror for cfg's mappings on store and j. It starts nothing
// and writes nothing.
func New(cfg *conf.Config, store objectStore, j *Journal, opts Options, log *slog.Logger) (*Mirror, error) {
	if store == nil {
		return nil, errors.New("mirror: no object store")
	}
	if j == nil {
		return nil, errors.New("mirror: no journal")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "mirror")
	m := &Mirror{
		log:      log,
		store:    store,
		j:        j,
		opts:     opts.withDefaults(),
		stateDir: cfg.Storage.StateDir,
		events:   make(chan notifyEvent, eventBuffer),
		now:      time.Now,
		rnd:      rand.Int64N,
	}
	m.sleep = m.realSleep
	for _, mp := range plainMappings(cfg, log) {
		mp.rescans = make(map[string]struct{})
		mp.rescanCh = make(chan struct{}, 1)
		mp.replayReq = make(chan struct{}, 1)
		mp.renamed = make(map[string]struct{})
		if r, err := filepath.EvalSymlinks(mp.root); err == nil && r != mp.root {
			mp.real = r
		}
		mp.status = MappingStatus{Name: mp.name, Bucket: mp.cfg.Bucket, Prefix: mp.prefix, Local: mp.root}
		m.mappings = append(m.mappings, mp)
	}
	return m, nil
}

// plainMappings builds the mappings of cfg without a mirror's runtime
// state: what the pull and the verify need, and what New starts from.
func plainMappings(cfg *conf.Config, log *slog.Logger) []*mapping {
	var mps []*mapping
	for _, c := range cfg.Mirrors {
		root := filepath.Clean(c.Local)
		mps = append(mps, &mapping{
			cfg: c, name: c.Name, root: root, prefix: c.Prefix,
			ex:  newExcluder(root, cfg.Storage.StateDir, c.Exclude),
			log: log.With("mapping", c.Name),
		})
	}
	return mps
}

func (m *Mirror) realSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// stopping reports whether Run's context ended: no more retries then.
func (m *Mirror) stopping() bool {
	p := m.stop.Load()
	if p == nil {
		return false
	}
	select {
	case <-*p:
		return true
	default:
		return false
	}
}

// Notify tells the mirror that the FTP server completed an upload of
// absPath. It queues the upload for every mapping the path belongs to and
// returns at once: it never blocks on the network, and when the queue is
// full it records the work in the journal instead.
func (m *Mirror) Notify(absPath string, size int64, sha256 [32]byte, mtime time.Time) {
	ev := notifyEvent{abs: filepath.Clean(absPath), hint: uploadHint{size: size, mtime: mtime.UnixNano(), sha: sha256}}
	if m.running.Load() {
		// straight to the queue: one goroutine hop less before the PUT
		m.route(ev)
		return
	}
	select {
	case m.events <- ev:
	default:
		m.spill(ev)
	}
}

// route queues an announced upload for every mapping it belongs to.
func (m *Mirror) route(ev notifyEvent) {
	for _, mp := range m.mappings {
		rel, ok := mp.relOf(ev.abs)
		if !ok || mp.ex.excludedPath(rel) {
			continue
		}
		h := ev.hint
		m.enqueue(&task{mp: mp, kind: kindSync, rel: rel, hint: &h})
	}
}

// spill records an announced upload as pending in the journal: the queue
// was full. Replay picks it up.
func (m *Mirror) spill(ev notifyEvent) {
	for _, mp := range m.mappings {
		rel, ok := mp.relOf(ev.abs)
		if !ok || mp.ex.excludedPath(rel) {
			continue
		}
		m.spillRel(mp, rel, opSync)
	}
}

func (m *Mirror) spillRel(mp *mapping, rel string, op opKind) {
	if m.opts.DryRun {
		return
	}
	now := m.now().UnixNano()
	err := m.j.update(mp.name, func(t *mtx) error {
		return t.putPending(rel, pendingRecord{op: op, enqueued: now})
	})
	if err != nil {
		mp.log.Error("mirror queue full and the journal failed: the change waits for the next full pass",
			"path", rel, "err", err)
		mp.requestRescan("")
		return
	}
	mp.log.Warn("mirror queue full: change recorded in the journal", "path", rel)
	signal(mp.replayReq)
}

// relOf is abs relative to the mapping's root, slash-separated; ok is
// false when abs is not below the root.
func (mp *mapping) relOf(abs string) (string, bool) {
	if rel, ok := relUnder(mp.root, abs); ok || mp.real == "" {
		return rel, ok
	}
	return relUnder(mp.real, abs)
}

func relUnder(root, abs string) (string, bool) {
	if !strings.HasPrefix(abs, root) || len(abs) <= len(root) {
		return "", false
	}
	rest := abs[len(root):]
	if root != string(filepath.Separator) {
		if rest[0] != filepath.Separator {
			return "", false
		}
		rest = rest[1:]
	}
	if rest == "" {
		return "", false
	}
	return filepath.ToSlash(rest), true
}

// Status reports every mapping's state.
func (m *Mirror) Status() []MappingStatus {
	s := m.sched.Load()
	now := m.now()
	out := make([]MappingStatus, 0, len(m.mappings))
	for _, mp := range m.mappings {
		mp.mu.Lock()
		st := mp.status
		mp.mu.Unlock()
		st.Passing = mp.passing.Load()
		st.Objects = mp.objects.Load()
		if s != nil {
			depth, oldest := s.stats(mp)
			st.QueueDepth = depth
			if !oldest.IsZero() {
				st.OldestPending = now.Sub(oldest)
			}
		}
		out = append(out, st)
	}
	return out
}

// count adds an operation's outcome to the mapping's counters.
func (mp *mapping) count(o outcome) {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	switch o.kind {
	case outUploaded:
		mp.status.Uploaded++
		mp.status.UploadedBytes += o.bytes
	case outCopied:
		mp.status.Copied++
	case outDeleted:
		mp.status.Deleted++
	case outFailed:
		mp.status.Failed++
	}
}

func (mp *mapping) setGuard(g *GuardError) {
	mp.mu.Lock()
	mp.status.Guard = g
	mp.mu.Unlock()
}

// requestRescan asks the pass loop for a pass over rel's subtree ("" =
// the whole mapping).
func (mp *mapping) requestRescan(rel string) {
	mp.rescanMu.Lock()
	mp.rescans[rel] = struct{}{}
	mp.rescanMu.Unlock()
	signal(mp.rescanCh)
}

// takeRescans returns and clears the requested rescans; a full pass
// supersedes the others.
func (mp *mapping) takeRescans() []string {
	mp.rescanMu.Lock()
	defer mp.rescanMu.Unlock()
	if len(mp.rescans) == 0 {
		return nil
	}
	var out []string
	if _, full := mp.rescans[""]; full {
		out = []string{""}
	} else {
		for r := range mp.rescans {
			out = append(out, r)
		}
	}
	clear(mp.rescans)
	return out
}

func (mp *mapping) rescanPending() bool {
	mp.rescanMu.Lock()
	defer mp.rescanMu.Unlock()
	return len(mp.rescans) > 0
}

// eachMapping runs job on the mappings of all named in names (all when
// none), one after the other, and logs each result as msg with the
// key-value pairs and error that summary gives: the loop of the pull and
// the verify. It stops after the mapping during which ctx ended.
func eachMapping[R any](ctx context.Context, all []*mapping, names []string, msg string, job func(*mapping) R, summary func(R) ([]any, error)) ([]R, error) {
	mps, err := pick(all, names)
	if err != nil {
		return nil, err
	}
	var out []R
	for _, mp := range mps {
		r := job(mp)
		args, err := summary(r)
		if err != nil {
			mp.log.Error(msg, append(args, "err", err)...)
		} else {
			mp.log.Info(msg, args...)
		}
		out = append(out, r)
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
}

// pick selects the mappings of mps named in names, in that order; all of
// them when names is empty.
func pick(mps []*mapping, names []string) ([]*mapping, error) {
	if len(names) == 0 {
		return mps, nil
	}
	var out []*mapping
	for _, n := range names {
		i := slices.IndexFunc(mps, func(mp *mapping) bool { return mp.name == n })
		if i < 0 {
			known := make([]string, 0, len(mps))
			for _, mp := range mps {
				known = append(known, mp.name)
			}
			return nil, fmt.Errorf("no [[mirror]] named %q (have: %s)", n, strings.Join(known, ", "))
		}
		out = append(out, mps[i])
	}
	return out, nil
}
