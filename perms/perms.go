package perms

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"ftpgate/conf"
)

// Sentinel errors of Check and Fix for paths they cannot walk. Both are bad
// usage: nothing was walked.
var (
	// ErrNoPolicy: the path lies under no [[perms]] policy.
	ErrNoPolicy = errors.New("no [[perms]] policy covers it")
	// ErrExcluded: the path is excluded by its policy's exclude patterns.
	ErrExcluded = errors.New("excluded by its [[perms]] policy")
)

// Mode is what a run does.
type Mode int

// The modes of a run.
const (
	ModeCheck  Mode = iota // list the deviations, change nothing
	ModeFix                // change what deviates
	ModeDryRun             // list what a fix would change, change nothing
)

// String is the mode as the summary and logs name it.
func (m Mode) String() string {
	switch m {
	case ModeFix:
		return "fix"
	case ModeDryRun:
		return "fix --dry-run"
	default:
		return "check"
	}
}

// Wrong is a set of attributes that deviate from a policy.
type Wrong uint8

// The attributes a policy sets.
const (
	WrongMode  Wrong = 1 << iota // mode & 07777 differs from file_mode or dir_mode
	WrongOwner                   // uid differs from owner
	WrongGroup                   // gid differs from group
)

// Attrs are the attributes a policy sets, as numbers.
type Attrs struct {
	Mode uint32 // permission bits with setuid, setgid and sticky (mode & 07777)
	UID  int    // -1 in a Want: not set by the policy
	GID  int    // -1 in a Want: not set by the policy
}

// Finding is one entry a run reports: one that deviates from its policy
// (Wrong != 0), one that could not be checked or changed (Err != nil), or
// both. A value the caller owns.
type Finding struct {
	Path  string // absolute
	Dir   bool
	Wrong Wrong
	Have  Attrs // what the entry had when the walk saw it
	Want  Attrs // what the policy wants; only the Wrong attributes are meaningful
	Fixed bool  // Fix changed it (never in Check or a dry run)
	Err   error // why it could not be read, entered or changed; nil when it could
}

// maxMounts is how many skipped mount points a Result names.
const maxMounts = 10

// Result is what one Check or Fix did, for the summary and the status
// endpoint. A value the caller owns.
type Result struct {
	Mode       Mode
	Trees      []string // where the walks started, in order
	Start, End time.Time
	Duration   time.Duration

	Checked    int // regular files and directories compared with their policy
	Deviations int // of those, entries that differ
	Fixed      int // of those, entries changed (Fix only)
	Errors     int // entries that could not be read, entered or changed
	Excluded   int // entries left out by exclude patterns (a directory counts once)
	LeftAlone  int // symlinks, fifos, sockets and devices: never changed
	Vanished   int // entries removed or replaced while the walk ran

	SkippedMounts int      // directories on another filesystem, not entered
	Mounts        []string // the first few of them
}

// OK reports whether the run found nothing left to do: for Check no
// deviation and no error, for Fix and dry runs no error.
func (r Result) OK() bool {
	if r.Mode == ModeCheck {
		return r.Deviations == 0 && r.Errors == 0
	}
	return r.Errors == 0
}

// Options tune a Normaliser. The zero value works: no locking, no progress.
type Options struct {
	// Lock takes the job lock on tree (the directory a walk starts at)
	// before Fix changes anything in it, and returns its release; holder
	// names the job ("perms fix /srv/ftp") for whoever waits on it. It
	// waits while a mirror pass or a pull holds an overlapping tree; ctx
	// ends the wait. nil: no locking. Check and dry runs never lock. The
	// signature is job.Locker.Lock's, as in mirror.Options.
	Lock func(ctx context.Context, tree, holder string) (release func(), err error)
	// Progress, when set, receives a progress bar when it is a terminal,
	// else log lines every ProgressEvery (5s when 0).
	Progress      io.Writer
	ProgressEvery time.Duration
	// Workers is how many threads walk each tree at once; 0 or 1: one.
	// Each is a goroutine locked to a thread of its own at idle I/O
	// priority; they share the policy's rate, and a worker hands whole
	// subdirectories to the others through a small bounded queue (when it
	// is full, the worker reads the subdirectory itself). With one worker
	// findings come in the filesystem's directory order, depth first;
	// with more, those of different directories interleave (a directory
	// still comes before what is in it). Counts are exact either way.
	// The CLI walks with GOMAXPROCS workers, the daemon's after_mirror
	// fix with one.
	Workers int

	// Test seams; nil in production.
	newLimiter func(perSec float64) limiter
	hooks      hooks
}

// hooks let tests act at exact points of a walk. Each runs on the goroutine
// of the worker that reaches the point: with several workers, at the same
// time as on others.
type hooks struct {
	onThread   func()            // on each worker's thread, after its I/O priority is set
	beforeStat func(path string) // after a name was read from its directory, before fstatat
	beforeOpen func(path string) // after fstatat, before openat of an entry to enter or change
	afterRead  func(dir string)  // after each getdents call
	// noDType makes every name's type unknown, as on filesystems without
	// d_type: each entry is then told apart by fstatat alone.
	noDType bool
}

// limiter paces a walk, all its workers together; *rate.Limiter
// implements it. Implementations are safe for concurrent use.
type limiter interface {
	Wait(ctx context.Context) error
}

// Normaliser checks and fixes the trees of a set of policies. It is safe
// for concurrent use; concurrent Fix runs on overlapping trees are kept
// apart only by Options.Lock.
type Normaliser struct {
	policies []*policy // sorted by path
	opts     Options
	log      *slog.Logger
}

// policy is a conf.Perms prepared for the walk.
type policy struct {
	conf.Perms
	fileMode, dirMode uint32          // mode & 07777 as chmod takes it
	nested            map[string]bool // paths of the policies strictly below this one
}

// New prepares the policies; it starts nothing and touches no file.
func New(policies []conf.Perms, opts Options, log *slog.Logger) (*Normaliser, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Normaliser{opts: opts, log: log.With("component", "perms")}
	seen := make(map[string]bool)
	for _, p := range policies {
		if !filepath.IsAbs(p.Path) || filepath.Clean(p.Path) != p.Path {
			return nil, fmt.Errorf("perms policy %q: path must be absolute and clean", p.Path)
		}
		if seen[p.Path] {
			return nil, fmt.Errorf("perms policy %q: duplicate path", p.Path)
		}
		if p.Rate < 0 {
			return nil, fmt.Errorf("perms policy %q: negative rate %v", p.Path, p.Rate)
		}
		seen[p.Path] = true
		n.policies = append(n.policies, &policy{
			Perms:    p,
			fileMode: modeBits(p.FileMode),
			dirMode:  modeBits(p.DirMode),
		})
	}
	slices.SortFunc(n.policies, func(a, b *policy) int { return strings.Compare(a.Path, b.Path) })
	for _, p := range n.policies {
		for _, q := range n.policies {
			if q != p && within(p.Path, q.Path) {
				if p.nested == nil {
					p.nested = make(map[string]bool)
				}
				p.nested[q.Path] = true
			}
		}
	}
	return n, nil
}

// modeBits converts a config mode to the bits chmod takes.
func modeBits(m fs.FileMode) uint32 {
	b := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}

// Check walks paths (every policy's tree when there are none) and calls
// report for every entry that deviates or cannot be read. It changes
// nothing. report is called from the walk's workers, one call at a time
// (in no set order across directories with several workers). The error is for a run that could not start or was cancelled
// (ErrNoPolicy, ErrExcluded, ctx); problems with entries are findings.
func (n *Normaliser) Check(ctx context.Context, paths []string, report func(Finding)) (Result, error) {
	return n.run(ctx, ModeCheck, paths, report)
}

// Fix is Check that changes what deviates, each tree under Options.Lock;
// report gets every entry changed (Fixed) or not (Err). With dryRun it
// changes nothing, takes no lock, and reports what it would change.
func (n *Normaliser) Fix(ctx context.Context, paths []string, dryRun bool, report func(Finding)) (Result, error) {
	if dryRun {
		return n.run(ctx, ModeDryRun, paths, report)
	}
	return n.run(ctx, ModeFix, paths, report)
}

// tree is one walk: from start (a policy's path or a path below it)
// under pol.
type tree struct {
	pol   *policy
	start string
}

// plan turns the paths of a run into walks. Every path must lie under a
// policy and not in an excluded subtree. A path inside another path of
// the run is dropped: the outer walk covers it.
func (n *Normaliser) plan(paths []string) ([]tree, error) {
	if len(paths) == 0 {
		trees := make([]tree, 0, len(n.policies))
		for _, p := range n.policies {
			trees = append(trees, tree{pol: p, start: p.Path})
		}
		return trees, nil
	}
	clean := make([]string, 0, len(paths))
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("perms: %s: %w", p, err)
		}
		clean = append(clean, abs)
	}
	slices.Sort(clean)
	var starts []string
	for _, p := range clean {
		if len(starts) > 0 && within(starts[len(starts)-1], p) {
			continue
		}
		starts = append(starts, p)
	}
	var trees []tree
	for _, s := range starts {
		pol := n.governing(s)
		if pol == nil {
			return nil, fmt.Errorf("perms: %s: %w", s, ErrNoPolicy)
		}
		if rel := relPath(pol.Path, s); rel != "" && excludedPath(pol.Exclude, rel) {
			return nil, fmt.Errorf("perms: %s: %w %s", s, ErrExcluded, pol.Path)
		}
		trees = append(trees, tree{pol: pol, start: s})
		for _, q := range n.policies {
			if q.Path != s && within(s, q.Path) {
				trees = append(trees, tree{pol: q, start: q.Path})
			}
		}
	}
	return trees, nil
}

// governing is the most specific policy whose path holds p; nil when none.
func (n *Normaliser) governing(p string) *policy {
	var best *policy
	for _, q := range n.policies {
		if within(q.Path, p) && (best == nil || len(q.Path) > len(best.Path)) {
			best = q
		}
	}
	return best
}

// run is Check and Fix: the walks one after the other.
func (n *Normaliser) run(ctx context.Context, mode Mode, paths []string, report func(Finding)) (Result, error) {
	if report == nil {
		report = func(Finding) {}
	}
	trees, err := n.plan(paths)
	if err != nil {
		return Result{Mode: mode}, err
	}
	c := &counters{}
	res := Result{Mode: mode, Start: time.Now()}
	prog := newProgress(n.opts.Progress, n.log, n.opts.ProgressEvery, mode, c)
	for _, t := range trees {
		res.Trees = append(res.Trees, t.start)
		if err = n.walkTree(ctx, mode, t, c, report); err != nil {
			break
		}
	}
	prog.stop()
	c.fill(&res)
	res.End = time.Now()
	res.Duration = res.End.Sub(res.Start)
	return res, err
}

// walkTree runs one walk under the tree's job lock (Fix only).
func (n *Normaliser) walkTree(ctx context.Context, mode Mode, t tree, c *counters, report func(Finding)) error {
	if mode == ModeFix && n.opts.Lock != nil {
		release, err := n.opts.Lock(ctx, t.start, "perms fix "+t.start)
		if err != nil {
			return fmt.Errorf("perms: lock %s: %w", t.start, err)
		}
		defer release()
	}
	c.setTree(t.start)
	before := c.snapshot()
	start := time.Now()
	err := n.walk(ctx, mode, t, c, report)
	after := c.snapshot()
	n.log.Info("perms tree", "mode", mode.String(), "path", t.start, "policy", t.pol.Path,
		"checked", after.Checked-before.Checked, "deviations", after.Deviations-before.Deviations,
		"fixed", after.Fixed-before.Fixed, "errors", after.Errors-before.Errors,
		"dur", time.Since(start).Round(time.Millisecond))
	return err
}

// limiterFor is the pace of one walk of pol; nil when unlimited.
func (n *Normaliser) limiterFor(pol *policy) limiter {
	if pol.Rate <= 0 {
		return nil
	}
	if n.opts.newLimiter != nil {
		return n.opts.newLimiter(pol.Rate)
	}
	return newRateLimiter(pol.Rate)
}

// within reports whether p is dir or below it. Both are clean and absolute.
func within(dir, p string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// relPath is p relative to dir as a slash path; "" for dir itself. p is
// within dir.
func relPath(dir, p string) string {
	if p == dir {
		return ""
	}
	if dir == "/" {
		return p[1:]
	}
	return p[len(dir)+1:]
}

// excluded reports whether rel (a slash path relative to a policy's path)
// matches one of the patterns, by its base name or as a whole. It is the
// mirror's rule.
func excluded(patterns []string, rel string) bool {
	base := path.Base(rel)
	for _, p := range patterns {
		if ok, _ := path.Match(p, base); ok {
			return true
		}
		if ok, _ := path.Match(p, rel); ok {
			return true
		}
	}
	return false
}

// excludedPath reports whether rel or a directory above it is excluded.
func excludedPath(patterns []string, rel string) bool {
	if len(patterns) == 0 {
		return false
	}
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' && excluded(patterns, rel[:i]) {
			return true
		}
	}
	return excluded(patterns, rel)
}
