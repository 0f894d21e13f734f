package mirror

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"ftpgate/conf"
	"ftpgate/storage"
)

// pullTempPrefix starts the names of a pull's temporary files: a part-file
// name, so that the mirror, FTP listings and the excluder ignore them.
const pullTempPrefix = storage.PartPrefix + "pull-"

// metaPullDir prefixes the journal meta keys of the directories a pull
// writes temporary files into, until the pull ends: a killed pull's
// leftovers are found there and removed by the next one.
const metaPullDir = "pulldir/"

// maxListed is how many conflicting keys or failures a PullResult keeps.
const maxListed = 10

// PullOptions tunes a Puller; the zero value works.
type PullOptions struct {
	// DryRun lists what would be downloaded and writes nothing.
	DryRun bool
	// Progress receives a spinner on a terminal, else periodic log lines;
	// nil reports nothing.
	Progress io.Writer
	// Lock, when set, takes the job lock of a mapping's local tree for the
	// pull (shared with the mirror's full passes and permission fixes).
	Lock func(ctx context.Context, tree, holder string) (release func(), err error)
	// Workers is how many downloads run at once. Default 4.
	Workers int
	// Restore is for a local tree that was lost (a replaced disk): the
	// journal's records of local files and deletions no longer hold, so
	// every object without a local file is downloaded, and a root
	// without its sentinel or on another device is accepted (the guards
	// against an empty mount point stand aside: the operator says the
	// tree is new). After a restore without failures the sentinel is
	// made again.
	Restore bool
}

const defaultPullWorkers = 4

// PullResult is one mapping's pull. A value owned by the caller.
type PullResult struct {
	Mapping string `json:"mapping"`
	Bucket  string `json:"bucket"`
	Prefix  string `json:"prefix"`
	Local   string `json:"local"`
	DryRun  bool   `json:"dry_run"`

	Objects        int   `json:"objects"`         // objects considered (excluded keys not counted)
	Downloaded     int   `json:"downloaded"`      // in a dry run: would be downloaded
	Bytes          int64 `json:"bytes"`           // their bytes
	Present        int   `json:"present"`         // the local file is the same
	Conflicts      int   `json:"conflicts"`       // a local file with other content: left alone
	DeletedLocally int   `json:"deleted_locally"` // deleted locally: not brought back
	Unsafe         int   `json:"unsafe"`          // keys that cannot be a local path
	Failed         int   `json:"failed"`
	TempsRemoved   int   `json:"temps_removed"` // leftovers of a killed pull

	ConflictKeys []string `json:"conflict_keys,omitempty"` // the first few
	Failures     []string `json:"failures,omitempty"`      // the first few, "key: error"

	Start time.Time     `json:"start"`
	End   time.Time     `json:"end"`
	Dur   time.Duration `json:"duration_ns"`
	Err   error         `json:"-"`
}

// OK reports whether the pull completed without conflicts or failures.
func (r PullResult) OK() bool {
	return r.Err == nil && r.Conflicts == 0 && r.Failed == 0 && r.Unsafe == 0
}

// Puller copies objects that exist only in the bucket to the local tree,
// never overwriting or deleting a local file. Create it with NewPuller; Run
// is not safe for concurrent use.
type Puller struct {
	store    objectStore
	get      getStore
	j        *Journal
	opts     PullOptions
	mappings []*mapping
	storage  conf.Storage
	perms    []conf.Perms
	log      *slog.Logger
	now      func() time.Time
}

// NewPuller builds a Puller for cfg's mappings. The journal is required:
// it tells local deletions apart, and downloads are recorded in it so that
// the mirror does not send them back.
func NewPuller(cfg *conf.Config, store objectStore, j *Journal, opts PullOptions, log *slog.Logger) (*Puller, error) {
	gs, ok := store.(getStore)
	if !ok || store == nil {
		return nil, errors.New("pull: the object store cannot read objects")
	}
	if j == nil {
		return nil, errors.New("pull: no journal")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Workers <= 0 {
		opts.Workers = defaultPullWorkers
	}
	log = log.With("component", "pull")
	return &Puller{
		store: store, get: gs, j: j, opts: opts, mappings: plainMappings(cfg, log),
		storage: cfg.Storage, perms: cfg.Perms, log: log, now: time.Now,
	}, nil
}

// Run pulls the named mappings (all when none) one after the other and
// returns one result per mapping. A mapping that could not be pulled has
// its Err set; Run's error is for bad names and a cancelled ctx.
func (p *Puller) Run(ctx context.Context, names []string) ([]PullResult, error) {
	return eachMapping(ctx, p.mappings, names, "pull",
		func(mp *mapping) PullResult { return p.mapping(ctx, mp) },
		func(r PullResult) ([]any, error) {
			return []any{"dry_run", r.DryRun, "objects", r.Objects, "downloaded", r.Downloaded, "bytes", r.Bytes,
				"present", r.Present, "conflicts", r.Conflicts, "deleted_locally", r.DeletedLocally,
				"unsafe", r.Unsafe, "failed", r.Failed, "temps_removed", r.TempsRemoved, "dur", r.Dur}, r.Err
		})
}

// pullJob is one object to download.
type pullJob struct {
	rel string
	obj objectInfo
}

// pullRun is the state of one mapping's pull shared with its workers.
type pullRun struct {
	p    *Puller
	mp   *mapping
	root *os.Root

	mu     sync.Mutex
	r      *PullResult
	dirsMu sync.Mutex
	dirs   map[string]bool // directories recorded under metaPullDir

	done  atomic.Int64
	bytes atomic.Int64
}

func (p *Puller) mapping(ctx context.Context, mp *mapping) (r PullResult) {
	r = PullResult{Mapping: mp.name, Bucket: mp.cfg.Bucket, Prefix: mp.prefix, Local: mp.root,
		DryRun: p.opts.DryRun, Start: p.now()}
	defer func() {
		r.End = p.now()
		r.Dur = r.End.Sub(r.Start)
	}()
	// the mirror's root guards: never fill an empty mount point
	rs, g, err := checkRoot(p.j, mp)
	switch {
	case err != nil:
		r.Err = err
		return r
	case g != nil:
		r.Err = fmt.Errorf("pull refused: %w", g)
		return r
	case p.opts.Restore:
		mp.log.Info("restore: the journal's records of local files and deletions are not used", "sentinel", rs.sentinel, "device_changed", rs.devChanged())
	case rs.sentinelMade && !rs.sentinel:
		r.Err = fmt.Errorf("pull refused: %w", sentinelGuard(mp))
		return r
	case rs.devChanged():
		r.Err = fmt.Errorf("pull refused: %w", deviceGuard(mp, rs))
		return r
	}
	if p.opts.Lock != nil {
		release, err := p.opts.Lock(ctx, mp.root, "pull "+mp.name)
		if err != nil {
			r.Err = err
			return r
		}
		defer release()
	}
	root, err := os.OpenRoot(mp.root)
	if err != nil {
		r.Err = fmt.Errorf("local root: %w", err)
		return r
	}
	defer root.Close()
	run := &pullRun{p: p, mp: mp, root: root, r: &r, dirs: make(map[string]bool)}
	if !p.opts.DryRun {
		if err := run.removeTemps(); err != nil {
			r.Err = err
			return r
		}
	}

	m := newMeter(p.opts.Progress, p.log, "pull progress", 0, func() (string, []any) {
		n, b := run.done.Load(), run.bytes.Load()
		return fmt.Sprintf("pull %s: %d downloaded (%d bytes)", mp.name, n, b),
			[]any{"mapping", mp.name, "downloaded", n, "bytes", b}
	})
	defer m.Stop()

	jobs := make(chan pullJob)
	var wg sync.WaitGroup
	for range p.opts.Workers {
		wg.Go(func() {
			for j := range jobs {
				run.download(ctx, j)
			}
		})
	}
	err = run.plan(ctx, jobs)
	close(jobs)
	wg.Wait()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		r.Err = err
		return r
	}
	if !p.opts.DryRun {
		// every temporary file was renamed or removed: forget the list
		if err := p.j.update(mp.name, func(t *mtx) error {
			for d := range run.dirs {
				if err := t.sub(bucketMeta).Delete([]byte(metaPullDir + d)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			r.Err = fmt.Errorf("journal %s: %w", mp.name, err)
		}
	}
	if p.opts.Restore && !p.opts.DryRun && r.Err == nil && r.Failed == 0 && !rs.sentinel {
		if err := writeSentinel(mp); err != nil {
			r.Err = err
		}
	}
	return r
}

// plan merges the bucket's listing with the local tree and the journal and
// sends the objects to download to jobs.
func (run *pullRun) plan(ctx context.Context, jobs chan<- pullJob) error {
	p, mp := run.p, run.mp
	walk := newWalker(mp.root, "", mp.ex, nil)
	files := p.j.stream(mp.name, bucketFiles, "")
	tombs := p.j.stream(mp.name, bucketTombstones, "")
	next, stop := iter.Pull2(listOrdered(ctx, p.store, mp.cfg.Bucket, mp.prefix, true))
	defer stop()
	var listErr error
	l, lok := walk.next()
	f, fok := files.next()
	t, tok := tombs.next()
	for {
		o, err, ok := next()
		if !ok {
			break
		}
		if err != nil {
			listErr = err
			break
		}
		rel, found := strings.CutPrefix(o.key, mp.prefix)
		if !found || rel == "" || strings.HasSuffix(rel, "/") || mp.ex.excludedPath(rel) {
			continue
		}
		o.key = rel
		for lok && l.rel < rel {
			l, lok = walk.next()
		}
		for fok && f.k < rel {
			f, fok = files.next()
		}
		for tok && t.k < rel {
			t, tok = tombs.next()
		}
		run.mu.Lock()
		run.r.Objects++
		run.mu.Unlock()
		var rec *fileRecord
		if fok && f.k == rel {
			if r, err := decodeRecord(f.v); err == nil {
				rec = &r
			}
		}
		switch {
		case lok && l.rel == rel:
			run.compare(rel, l, rec, o)
		case !p.opts.Restore && (tok && t.k == rel || rec != nil):
			// a tombstone, or a record whose file is gone: deleted locally
			run.count(func(r *PullResult) { r.DeletedLocally++ })
		case unsafeRel(rel) != "":
			mp.log.Warn("pull: key is not a safe local path; skipped", "key", mp.key(rel), "why", unsafeRel(rel))
			run.count(func(r *PullResult) { r.Unsafe++ })
		default:
			if _, err := os.Lstat(mp.abs(rel)); err == nil {
				// not a regular file (a directory, a symlink) or new since
				// the walk: never overwritten
				run.conflict(rel, "a local entry of another kind exists")
				continue
			}
			select {
			case jobs <- pullJob{rel: rel, obj: o}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	switch {
	case listErr != nil:
		return listErr
	case files.err != nil:
		return fmt.Errorf("read journal of %s: %w", mp.name, files.err)
	case tombs.err != nil:
		return fmt.Errorf("read journal of %s: %w", mp.name, tombs.err)
	}
	if err := walk.err(); err != nil {
		// keys under an unreadable directory were treated as missing and
		// may have been downloaded next to files the walk could not see;
		// renames never replace, so nothing was overwritten
		return err
	}
	return nil
}

// compare decides a key present on both sides: the same content, or a
// conflict. The content is compared by SHA-256 when the object carries
// X-Amz-Meta-Sha256, else by MD5 against a single-part ETag; a multipart
// object of another tool with the local file's size counts as the same.
func (run *pullRun) compare(rel string, l localFile, rec *fileRecord, o objectInfo) {
	if l.st.size != o.size {
		run.conflict(rel, fmt.Sprintf("size %d locally, %d in the bucket", l.st.size, o.size))
		return
	}
	known := rec != nil && rec.sameFile(l.st)
	if known && rec.etag != "" && rec.etag == o.etag {
		run.count(func(r *PullResult) { r.Present++ })
		return
	}
	md5, hasMD5 := md5ETag(o.etag)
	var d digests
	switch {
	case o.hasSHA && known:
		d.sha = rec.sha
	case o.hasSHA || hasMD5:
		var err error
		if d, _, err = hashLocal(run.mp.abs(rel)); err != nil {
			run.fail(rel, err)
			return
		}
	}
	switch {
	case o.hasSHA && d.sha != o.sha256:
		run.conflict(rel, "content differs (SHA-256)")
	case !o.hasSHA && hasMD5 && string(d.md5[:]) != string(md5):
		run.conflict(rel, "content differs (MD5 ETag)")
	default:
		run.count(func(r *PullResult) { r.Present++ })
	}
}

func (run *pullRun) count(fn func(*PullResult)) {
	run.mu.Lock()
	defer run.mu.Unlock()
	fn(run.r)
}

func (run *pullRun) conflict(rel, why string) {
	run.mp.log.Warn("pull conflict: local file left alone", "key", run.mp.key(rel), "path", run.mp.abs(rel), "why", why)
	run.count(func(r *PullResult) {
		r.Conflicts++
		if len(r.ConflictKeys) < maxListed {
			r.ConflictKeys = append(r.ConflictKeys, run.mp.key(rel)+": "+why)
		}
	})
}

func (run *pullRun) fail(rel string, err error) {
	run.mp.log.Error("pull failed", "key", run.mp.key(rel), "err", err)
	run.count(func(r *PullResult) {
		r.Failed++
		if len(r.Failures) < maxListed {
			r.Failures = append(r.Failures, run.mp.key(rel)+": "+err.Error())
		}
	})
}

// unsafeRel says why a key cannot be a local path under the root, "" when
// it can.
func unsafeRel(rel string) string {
	switch {
	case !utf8.ValidString(rel):
		return "not UTF-8"
	case strings.ContainsRune(rel, 0):
		return "contains NUL"
	case strings.HasPrefix(rel, "/"):
		return "absolute"
	}
	for _, seg := range strings.Split(rel, "/") {
		switch {
		case seg == "":
			return "empty path segment"
		case seg == "." || seg == "..":
			return "dot segment"
		case len(seg) > 255:
			return "segment longer than 255 bytes"
		case storage.IsPartName(seg):
			return "part-file name"
		}
	}
	if rel == SentinelName {
		return "the sentinel's name"
	}
	return ""
}

// download fetches one object into the local tree: a temporary file in the
// target directory, checked against the object's SHA-256, fsynced, given
// the policy's owner, group, mode and the object's mtime, then renamed
// into place (never over an existing file) and recorded in the journal.
func (run *pullRun) download(ctx context.Context, j pullJob) {
	p, mp := run.p, run.mp
	if p.opts.DryRun {
		mp.log.Info("would download", "key", mp.key(j.rel), "bytes", j.obj.size)
		run.count(func(r *PullResult) { r.Downloaded++; r.Bytes += j.obj.size })
		return
	}
	start := p.now()
	n, err := run.fetch(ctx, j)
	switch {
	case errors.Is(err, fs.ErrExist):
		run.conflict(j.rel, "a local file appeared during the pull")
		return
	case err != nil:
		if ctx.Err() == nil {
			run.fail(j.rel, err)
		}
		return
	}
	run.done.Add(1)
	run.bytes.Add(n)
	mp.log.Info("pulled", "key", mp.key(j.rel), "path", mp.abs(j.rel), "bytes", n, "dur", p.now().Sub(start))
	run.count(func(r *PullResult) { r.Downloaded++; r.Bytes += n })
}

func (run *pullRun) fetch(ctx context.Context, j pullJob) (int64, error) {
	p, mp := run.p, run.mp
	pol := p.policy(mp.abs(j.rel))
	dir := path.Dir(j.rel)
	if err := run.mkdirs(dir, pol); err != nil {
		return 0, err
	}
	if err := run.noteDir(dir); err != nil {
		return 0, err
	}
	d, err := run.root.Open(filepath.FromSlash(dir))
	if err != nil {
		return 0, fmt.Errorf("open directory %s: %w", mp.abs(dir), err)
	}
	defer d.Close()
	tmp := pullTempPrefix + randomHex()
	f, err := createAt(d, tmp)
	if err != nil {
		return 0, fmt.Errorf("create in %s: %w", mp.abs(dir), err)
	}
	renamed := false
	defer func() {
		f.Close()
		if !renamed {
			_ = removeAt(d, tmp)
		}
	}()
	body, oi, err := p.get.Get(ctx, mp.cfg.Bucket, mp.key(j.rel), j.obj.etag)
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), body)
	body.Close()
	if err != nil {
		return n, fmt.Errorf("download s3://%s/%s: %w", mp.cfg.Bucket, mp.key(j.rel), err)
	}
	if n != oi.size {
		return n, fmt.Errorf("download s3://%s/%s: got %d bytes, the object has %d", mp.cfg.Bucket, mp.key(j.rel), n, oi.size)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	if oi.hasSHA && oi.sha256 != sum {
		return n, fmt.Errorf("download s3://%s/%s: content does not match its X-Amz-Meta-Sha256", mp.cfg.Bucket, mp.key(j.rel))
	}
	mtime := p.now()
	if oi.hasMtime {
		mtime = time.Unix(0, oi.mtime)
	}
	if err := finishFile(f, pol.uid, pol.gid, pol.fileMode, mtime); err != nil {
		return n, fmt.Errorf("%s: %w", mp.abs(j.rel), err)
	}
	if err := renameNoReplace(d, tmp, path.Base(j.rel)); err != nil {
		return n, err // fs.ErrExist: a local file appeared
	}
	renamed = true
	if err := d.Sync(); err != nil {
		return n, fmt.Errorf("sync directory %s: %w", mp.abs(dir), err)
	}
	fi, err := f.Stat()
	if err != nil {
		return n, fmt.Errorf("stat %s: %w", mp.abs(j.rel), err)
	}
	st := statOf(fi)
	rec := fileRecord{size: st.size, mtime: st.mtime, ctime: st.ctime, inode: st.inode, sha: sum, etag: oi.etag}
	if err := p.j.update(mp.name, func(t *mtx) error { return t.putFile(j.rel, rec) }); err != nil {
		return n, fmt.Errorf("journal %s: %w", mp.name, err)
	}
	return n, nil
}

// pullPolicy is who owns what a pull writes, and its modes.
type pullPolicy struct {
	uid, gid          int // -1: leave as created
	fileMode, dirMode fs.FileMode
}

// policy is [storage]'s group and modes, overridden by the most specific
// [[perms]] policy covering abs: what `ftpgate perms check` would expect.
func (p *Puller) policy(abs string) pullPolicy {
	pol := pullPolicy{uid: -1, gid: p.storage.GID, fileMode: p.storage.FileMode, dirMode: p.storage.DirMode}
	best := -1
	for i, pp := range p.perms {
		if (abs == pp.Path || strings.HasPrefix(abs, strings.TrimSuffix(pp.Path, "/")+"/")) &&
			(best < 0 || len(pp.Path) > len(p.perms[best].Path)) {
			best = i
		}
	}
	if best >= 0 {
		pp := p.perms[best]
		if pp.UID >= 0 {
			pol.uid = pp.UID
		}
		if pp.GID >= 0 {
			pol.gid = pp.GID
		}
		if pp.HasFileMode {
			pol.fileMode = pp.FileMode
		}
		if pp.HasDirMode {
			pol.dirMode = pp.DirMode
		}
	}
	return pol
}

// mkdirs creates the missing directories of dir (slash, relative to the
// root) with the policy's owner, group and mode.
func (run *pullRun) mkdirs(dir string, pol pullPolicy) error {
	if dir == "." {
		return nil
	}
	cur := ""
	for _, seg := range strings.Split(dir, "/") {
		cur = path.Join(cur, seg)
		name := filepath.FromSlash(cur)
		err := run.root.Mkdir(name, 0o700)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("create directory %s: %w", run.mp.abs(cur), err)
		}
		if pol.uid >= 0 || pol.gid >= 0 {
			if err := run.root.Lchown(name, pol.uid, pol.gid); err != nil {
				return fmt.Errorf("chown %s: %w", run.mp.abs(cur), err)
			}
		}
		if err := run.root.Chmod(name, pol.dirMode); err != nil {
			return fmt.Errorf("chmod %s: %w", run.mp.abs(cur), err)
		}
	}
	return nil
}

// noteDir records dir in the journal before the first temporary file goes
// into it, so that a killed pull's leftovers can be found.
func (run *pullRun) noteDir(dir string) error {
	run.dirsMu.Lock()
	defer run.dirsMu.Unlock()
	if run.dirs[dir] {
		return nil
	}
	if err := run.p.j.update(run.mp.name, func(t *mtx) error {
		return t.setMeta(metaPullDir+dir, []byte{1})
	}); err != nil {
		return fmt.Errorf("journal %s: %w", run.mp.name, err)
	}
	run.dirs[dir] = true
	return nil
}

// removeTemps removes what a killed pull left: temporary files in the
// directories it recorded.
func (run *pullRun) removeTemps() error {
	var dirs []string
	err := run.p.j.view(run.mp.name, func(t *mtx) error {
		b := t.sub(bucketMeta)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, _ := c.Seek([]byte(metaPullDir)); k != nil && strings.HasPrefix(string(k), metaPullDir); k, _ = c.Next() {
			dirs = append(dirs, strings.TrimPrefix(string(k), metaPullDir))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal %s: %w", run.mp.name, err)
	}
	for _, dir := range dirs {
		d, err := run.root.Open(filepath.FromSlash(dir))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open directory %s: %w", run.mp.abs(dir), err)
		}
		names, err := d.Readdirnames(-1)
		for _, name := range names {
			if strings.HasPrefix(name, pullTempPrefix) {
				if rerr := removeAt(d, name); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
					err = errors.Join(err, rerr)
					continue
				}
				run.r.TempsRemoved++
				run.mp.log.Info("removed a killed pull's temporary file", "path", run.mp.abs(path.Join(dir, name)))
			}
		}
		d.Close()
		if err != nil {
			return fmt.Errorf("clean directory %s: %w", run.mp.abs(dir), err)
		}
	}
	return run.p.j.update(run.mp.name, func(t *mtx) error {
		for _, dir := range dirs {
			if err := t.sub(bucketMeta).Delete([]byte(metaPullDir + dir)); err != nil {
				return err
			}
		}
		return nil
	})
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
