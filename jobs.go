package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"ftpgate/conf"
	"ftpgate/job"
	"ftpgate/mirror"
	"ftpgate/perms"
)

// maxDriftLogged is how many drifting keys a scheduled verify logs one by
// one; the count of all is in its summary line.
const maxDriftLogged = 20

// daemonJobs are the jobs `ftpgate serve` runs besides FTP and the mirror:
// each mapping's reverse pull on its schedule with a verify after it, and
// the record of every job run (mirror full passes too) for the status
// endpoint.
type daemonJobs struct {
	cfg     *conf.Config
	perms   *perms.Normaliser // nil without [[perms]]
	fixReq  chan struct{}     // a fix is wanted (after_mirror)
	fixMu   sync.Mutex
	fixWant map[string]bool // policy paths to fix
	locks   *job.Locker
	hist    *job.History
	sched   *job.Scheduler
	store   *mirror.S3Store
	journal *mirror.Journal
	log     *slog.Logger
}

func newDaemonJobs(cfg *conf.Config, log *slog.Logger) (*daemonJobs, error) {
	log = log.With("component", "jobs")
	locks, err := newLocker(cfg, log)
	if err != nil {
		return nil, err
	}
	d := &daemonJobs{cfg: cfg, locks: locks, hist: job.NewHistory(0), sched: job.NewScheduler(log), log: log,
		fixReq: make(chan struct{}, 1), fixWant: make(map[string]bool)}
	if len(cfg.Perms) > 0 {
		if d.perms, err = perms.New(cfg.Perms, perms.Options{Lock: locks.Lock}, log); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// record keeps a finished run and logs it: the times are what the status
// endpoint shows and what tests check for overlaps.
func (d *daemonJobs) record(r job.Record) {
	d.hist.Add(r)
	args := []any{"kind", r.Kind, "name", r.Name,
		"start", r.Start.Format(time.RFC3339Nano), "end", r.End.Format(time.RFC3339Nano), "dur", r.Duration()}
	for _, k := range sortedKeys(r.Counts) {
		args = append(args, k, r.Counts[k])
	}
	if r.Err != "" {
		d.log.Error("job done", append(args, "err", r.Err)...)
		return
	}
	d.log.Info("job done", args...)
}

// mirrorPassDone records a full mirror pass.
func (d *daemonJobs) mirrorPassDone(sum mirror.MappingSummary, start, end time.Time) {
	r := job.Record{Kind: job.KindMirror, Name: sum.Name, Start: start, End: end, Counts: map[string]int64{
		"uploaded": int64(sum.Uploaded), "copied": int64(sum.Copied), "deleted": int64(sum.Deleted),
		"failed": int64(sum.Failed), "files": int64(sum.Scanned),
	}}
	switch {
	case sum.Err != nil:
		r.Err = sum.Err.Error()
	case sum.Guard != nil:
		r.Err = sum.Guard.Error()
	}
	d.record(r)
	d.afterMirror(sum.Name)
}

// afterMirror asks for a fix of each after_mirror policy whose tree
// overlaps mapping name's local root. It does not block: the fix runs on
// runFixes' goroutine, and waits for the tree's job lock.
func (d *daemonJobs) afterMirror(name string) {
	if d.perms == nil {
		return
	}
	var root string
	for _, m := range d.cfg.Mirrors {
		if m.Name == name {
			root = filepath.Clean(m.Local)
		}
	}
	d.fixMu.Lock()
	for _, p := range d.cfg.Perms {
		if p.AfterMirror && root != "" && (within(root, p.Path) || within(p.Path, root)) {
			d.fixWant[p.Path] = true
		}
	}
	wanted := len(d.fixWant) > 0
	d.fixMu.Unlock()
	if wanted {
		select {
		case d.fixReq <- struct{}{}:
		default: // a request is pending already
		}
	}
}

// within reports whether p is dir or below it.
func within(dir, p string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// wantsFixes reports whether a policy asks for fixes after mirror passes.
func (d *daemonJobs) wantsFixes() bool {
	for _, p := range d.cfg.Perms {
		if p.AfterMirror {
			return d.perms != nil
		}
	}
	return false
}

// runFixes runs the requested permission fixes, one after the other, until
// ctx ends.
func (d *daemonJobs) runFixes(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.fixReq:
		}
		d.fixMu.Lock()
		paths := make([]string, 0, len(d.fixWant))
		for p := range d.fixWant {
			paths = append(paths, p)
		}
		clear(d.fixWant)
		d.fixMu.Unlock()
		slices.Sort(paths)
		for _, p := range paths {
			res, err := d.perms.Fix(ctx, []string{p}, false, func(f perms.Finding) {
				d.log.Debug("perms", "finding", fmt.Sprint(f))
			})
			r := job.Record{Kind: job.KindPerms, Name: p, Start: res.Start, End: res.End, Counts: map[string]int64{
				"checked": int64(res.Checked), "deviations": int64(res.Deviations), "fixed": int64(res.Fixed),
				"errors": int64(res.Errors), "skipped_mounts": int64(res.SkippedMounts),
			}}
			if r.Start.IsZero() {
				r.Start, r.End = time.Now(), time.Now()
			}
			if err != nil {
				r.Err = err.Error()
			}
			d.record(r)
			if ctx.Err() != nil {
				return nil
			}
		}
	}
}

// schedulePulls adds each mapping's pull schedule, with a verify after
// each pull.
func (d *daemonJobs) schedulePulls() error {
	for _, m := range d.cfg.Mirrors {
		if m.Pull == "" {
			continue
		}
		name := m.Name
		if err := d.sched.Add(m.Pull, "pull "+name, func(ctx context.Context) { d.pullAndVerify(ctx, name) }); err != nil {
			return err
		}
	}
	return nil
}

// pullAndVerify runs one mapping's pull, then a checksum verify.
func (d *daemonJobs) pullAndVerify(ctx context.Context, name string) {
	p, err := mirror.NewPuller(d.cfg, d.store, d.journal, mirror.PullOptions{Lock: d.locks.Lock}, d.log)
	if err != nil {
		d.record(job.Record{Kind: job.KindPull, Name: name, Start: time.Now(), End: time.Now(), Err: err.Error()})
		return
	}
	rs, err := p.Run(ctx, []string{name})
	for _, r := range rs {
		rec := job.Record{Kind: job.KindPull, Name: r.Mapping, Start: r.Start, End: r.End, Counts: map[string]int64{
			"downloaded": int64(r.Downloaded), "bytes": r.Bytes, "conflicts": int64(r.Conflicts),
			"failed": int64(r.Failed), "objects": int64(r.Objects),
		}}
		if r.Err != nil {
			rec.Err = r.Err.Error()
		}
		d.record(rec)
	}
	if err != nil || ctx.Err() != nil {
		return
	}
	d.verify(ctx, name)
}

// verify runs a checksum verify of one mapping and records its result.
func (d *daemonJobs) verify(ctx context.Context, name string) {
	start := time.Now()
	fail := func(err error) {
		d.record(job.Record{Kind: job.KindVerify, Name: name, Start: start, End: time.Now(), Err: err.Error()})
	}
	cache, err := mirror.OpenHashCache(d.cfg.Storage.StateDir)
	if err != nil {
		fail(err)
		return
	}
	defer cache.Close()
	v, err := mirror.NewVerifier(d.cfg, d.store, d.journal, mirror.VerifyOptions{Checksum: true, Cache: cache}, d.log)
	if err != nil {
		fail(err)
		return
	}
	logged := 0
	rs, err := v.Run(ctx, []string{name}, func(e mirror.VerifyEntry) {
		if logged < maxDriftLogged {
			logged++
			d.log.Warn("drift", "mapping", e.Mapping, "key", e.Key, "status", e.Status, "reason", e.Reason)
		}
	})
	if err != nil && len(rs) == 0 {
		fail(err)
		return
	}
	for _, r := range rs {
		rec := job.Record{Kind: job.KindVerify, Name: r.Mapping, Start: r.Start, End: r.End, Counts: map[string]int64{
			"keys": int64(r.Keys), "missing_in_bucket": int64(r.MissingInBucket), "missing_locally": int64(r.MissingLocally),
			"differ": int64(r.Differ), "errors": int64(r.Errors), "files_read": int64(r.FilesRead),
		}}
		if r.Err != nil {
			rec.Err = r.Err.Error()
		}
		d.record(rec)
	}
}

func sortedKeys(m map[string]int64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
