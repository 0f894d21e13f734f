package main

import (
	"context"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The first-sync workload of (b) and (c): a tree of syncDirs directories of
// syncPerDir files each, made once per run.
const (
	syncDirs     = 100
	syncPerDir   = 100
	syncFileSize = 4 << 10
	syncFiles    = syncDirs * syncPerDir
)

// gateSentinel is the file ftpgate's first pass leaves at the top of a
// mapped tree (a deletion guard); it is no part of the workload.
const gateSentinel = ".ftpgate-sentinel"

// Names of the sides of the mirror target, as the report prints them.
const (
	toolGate   = "ftpgate"
	toolMC     = "mc"
	toolRclone = "rclone"
)

// mirrorRun is one run of the mirror target. Not safe for concurrent use.
type mirrorRun struct {
	e          *env
	dir        string // <workDir>/mirror
	s3         *minioServer
	secretFile string // MinIO's secret key, for ftpgate's secret_key_file

	wantGate, wantAnchor      bool
	gateBin, mcBin, rcloneBin string

	adminPassword, adminHash string    // ftpgate's admin user
	vsPassive                portRange // vsftpd's passive range while it runs

	timedStarts, busyStarts int
	loadStart               string // 1-minute load average when the measurements began
	res                     mirrorResults
}

// mirrorResults are the measurements of one run; what a side did not run
// stays empty.
type mirrorResults struct {
	latGate, latAnchor       [2]latencySeries // by probe
	firstGate, firstMC       []float64        // seconds per round
	firstRclone              []float64
	noChangeGate, noChangeMC []float64
	large                    *largeResult
	findings                 []string // things that looked wrong, for the report
}

// runMirror is the "mirror" target (issue 3, "What it must show"): (a)
// upload → object latency, (b) a first sync of 10,000 small files, (c) a
// no-change pass, and with -large (d) the daemon's RSS over 1,000,000
// tracked files; ftpgate against vsftpd + mc mirror --watch, mc mirror and
// rclone copy, on one MinIO.
func runMirror(ctx context.Context, e *env) error {
	r := &mirrorRun{
		e:          e,
		dir:        filepath.Join(e.workDir, "mirror"),
		wantGate:   e.opts.only != serverVsftpd,
		wantAnchor: e.opts.only != serverFTPGate,
	}
	if err := os.MkdirAll(filepath.Join(r.dir, "logs"), 0o755); err != nil {
		return err
	}
	// The rclone remote lives in the environment; an empty file keeps
	// rclone from looking for (and complaining about) one.
	if err := os.WriteFile(filepath.Join(r.dir, "rclone.conf"), nil, 0o600); err != nil {
		return err
	}
	var err error
	if r.wantAnchor {
		if r.mcBin, err = toolPath(e, "mc"); err != nil {
			return err
		}
		if r.rcloneBin, err = toolPath(e, "rclone"); err != nil {
			return err
		}
	}
	if r.wantGate {
		if r.gateBin, err = buildFTPGate(ctx, e); err != nil {
			return err
		}
		if err := checkGateMirror(ctx, r.gateBin); err != nil {
			return err
		}
		r.adminPassword = cryptorand.Text()
		hash, err := bcrypt.GenerateFromPassword([]byte(r.adminPassword), bcrypt.DefaultCost)
		if err != nil {
			return fmt.Errorf("bcrypt: %w", err)
		}
		r.adminHash = string(hash)
	}
	if r.s3, err = startMinIO(ctx, e, filepath.Join(r.dir, "minio")); err != nil {
		return err
	}
	defer r.s3.stop()
	r.secretFile = filepath.Join(r.dir, "s3.secret")
	if err := os.WriteFile(r.secretFile, []byte(r.s3.secretKey+"\n"), 0o600); err != nil {
		return err
	}

	start := time.Now()
	r.loadStart = loadAverage()
	if err := r.latency(ctx); err != nil {
		return err
	}
	tree, err := makeSyncTree(e, filepath.Join(r.dir, "tree"))
	if err != nil {
		return err
	}
	if err := r.firstSync(ctx, tree); err != nil {
		return err
	}
	if err := r.noChange(ctx, tree); err != nil {
		return err
	}
	if e.opts.large {
		if !r.wantGate {
			e.log.Info("-large measures ftpgate only; skipped with -only " + e.opts.only)
		} else if r.res.large, err = r.largeRSS(ctx); err != nil {
			return err
		}
	}
	e.log.Info("done", "dur", time.Since(start).Round(time.Second))
	return r.report(ctx)
}

// makeSyncTree writes syncDirs × syncPerDir files of syncFileSize bytes from
// a fixed-seed stream (incompressible, reproducible).
func makeSyncTree(e *env, dir string) (string, error) {
	e.log.Info("generating the sync tree", "path", dir, "files", syncFiles, "file_size", formatBytes(syncFileSize))
	var seed [32]byte
	copy(seed[:], "ftpgate bench mirror tree v1")
	rng := rand.NewChaCha8(seed)
	buf := make([]byte, syncFileSize)
	for d := range syncDirs {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return "", fmt.Errorf("sync tree: %w", err)
		}
		for f := range syncPerDir {
			_, _ = rng.Read(buf)
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%03d.bin", f)), buf, 0o644); err != nil {
				return "", fmt.Errorf("sync tree: %w", err)
			}
		}
	}
	flushAll()
	return dir, nil
}

// sides are the tools that take part in (b), in the order of round 0.
func (r *mirrorRun) sides() []string {
	var s []string
	if r.wantGate {
		s = append(s, toolGate)
	}
	if r.wantAnchor {
		s = append(s, toolMC, toolRclone)
	}
	return s
}

// rotate is s started at position round, so that every tool takes every
// place in the order over the rounds.
func rotate(s []string, round int) []string {
	if len(s) == 0 {
		return nil
	}
	k := round % len(s)
	return append(append([]string(nil), s[k:]...), s[:k]...)
}

// firstSync is (b): each round, each tool copies the tree into a fresh empty
// bucket; ftpgate with a fresh state_dir. Every result is checked by a
// listing, then the bucket is dropped.
func (r *mirrorRun) firstSync(ctx context.Context, tree string) error {
	e := r.e
	for round := range e.opts.rounds {
		order := rotate(r.sides(), round)
		e.log.Info("first sync round", "n", round+1, "of", e.opts.rounds, "order", strings.Join(order, ","))
		for _, tool := range order {
			bucket := fmt.Sprintf("first-%s-%d", tool, round)
			if err := r.s3.makeBucket(ctx, bucket); err != nil {
				return err
			}
			label := fmt.Sprintf("first-%s-%d", tool, round)
			var res cmdResult
			var err error
			switch tool {
			case toolGate:
				var g *gateSetup
				if g, err = r.writeGateConfig(label, tree, bucket); err != nil {
					return err
				}
				res, err = r.timedCommand(ctx, label, cleanEnv(), r.gateBin, "mirror", "--config", g.cfgPath, gateMapping)
				if round == 0 && err == nil {
					e.log.Info("ftpgate mirror summary (first sync, round 1)", "stdout", strings.TrimSpace(res.stdout))
				}
			case toolMC:
				res, err = r.timedCommand(ctx, label, r.mcEnv(), r.mcBin, "--quiet", "mirror", tree, mcAlias+"/"+bucket)
			case toolRclone:
				res, err = r.timedCommand(ctx, label, r.rcloneEnv(), r.rcloneBin, "copy", tree, rcloneRemote+":"+bucket)
			}
			if err != nil {
				return err
			}
			if err := r.checkBucket(ctx, bucket, tool); err != nil {
				return err
			}
			if tool == toolGate {
				if err := removeSentinel(tree); err != nil {
					return err
				}
			}
			if err := r.s3.dropBucket(ctx, bucket); err != nil {
				return err
			}
			secs := res.dur.Seconds()
			switch tool {
			case toolGate:
				r.res.firstGate = append(r.res.firstGate, secs)
			case toolMC:
				r.res.firstMC = append(r.res.firstMC, secs)
			case toolRclone:
				r.res.firstRclone = append(r.res.firstRclone, secs)
			}
			e.log.Info("first sync", "tool", tool, "files", syncFiles, "dur", res.dur.Round(time.Millisecond),
				"max_rss", formatBytes(res.maxRSS))
		}
	}
	return nil
}

// checkBucket checks that bucket holds exactly the tree's files (the
// sentinel aside).
func (r *mirrorRun) checkBucket(ctx context.Context, bucket, tool string) error {
	sum, err := r.s3.summarize(ctx, bucket, syncFileSize, gateSentinel)
	if err != nil {
		return err
	}
	if sum.objects != syncFiles || sum.sized != syncFiles {
		return fmt.Errorf("%s: bucket %s has %d objects (%d of %s), want %d of %s", tool, bucket,
			sum.objects, sum.sized, formatBytes(syncFileSize), syncFiles, formatBytes(syncFileSize))
	}
	return nil
}

// removeSentinel takes ftpgate's sentinel out of the shared tree, so that
// mc and rclone copy the same files. Anything else new at the top of the
// tree is an error: only ftpgate's state_dir may hold its files.
func removeSentinel(tree string) error {
	entries, err := os.ReadDir(tree)
	if err != nil {
		return err
	}
	for _, de := range entries {
		switch {
		case de.Name() == gateSentinel:
			if err := os.Remove(filepath.Join(tree, de.Name())); err != nil {
				return err
			}
		case !de.IsDir() || !strings.HasPrefix(de.Name(), "d"):
			return fmt.Errorf("ftpgate left %s in the mirrored tree", filepath.Join(tree, de.Name()))
		}
	}
	return nil
}

// noChange is (c): both buckets are brought in sync once (untimed), then
// each round times one more pass of each tool over the unchanged tree:
// `ftpgate mirror` on the same state_dir, `mc mirror --overwrite --remove`.
// A listing afterwards checks that no pass wrote anything.
func (r *mirrorRun) noChange(ctx context.Context, tree string) error {
	e := r.e
	var order []string
	if r.wantGate {
		order = append(order, toolGate)
	}
	if r.wantAnchor {
		order = append(order, toolMC)
	}
	var gate *gateSetup
	buckets := map[string]string{toolGate: "nochange-ftpgate", toolMC: "nochange-mc"}
	argv := map[string][]string{}
	envs := map[string][]string{}
	for _, tool := range order {
		if err := r.s3.makeBucket(ctx, buckets[tool]); err != nil {
			return err
		}
		switch tool {
		case toolGate:
			var err error
			if gate, err = r.writeGateConfig("nochange-ftpgate", tree, buckets[tool]); err != nil {
				return err
			}
			argv[tool] = []string{r.gateBin, "mirror", "--config", gate.cfgPath, gateMapping}
			envs[tool] = cleanEnv()
		case toolMC:
			argv[tool] = []string{r.mcBin, "--quiet", "mirror", "--overwrite", "--remove", tree, mcAlias + "/" + buckets[tool]}
			envs[tool] = r.mcEnv()
		}
		// ftpgate goes first: its sentinel is then part of the tree mc copies.
		e.log.Info("no-change: initial sync", "tool", tool, "bucket", buckets[tool])
		if _, err := r.runCommand(ctx, "nochange-"+tool+"-prime", envs[tool], argv[tool]...); err != nil {
			return err
		}
	}
	synced := time.Now()
	for round := range e.opts.rounds {
		o := rotate(order, round)
		e.log.Info("no-change round", "n", round+1, "of", e.opts.rounds, "order", strings.Join(o, ","))
		for _, tool := range o {
			res, err := r.timedCommand(ctx, fmt.Sprintf("nochange-%s-%d", tool, round), envs[tool], argv[tool]...)
			if err != nil {
				return err
			}
			if tool == toolGate {
				if round == 0 {
					e.log.Info("ftpgate mirror summary (no-change pass, round 1)", "stdout", strings.TrimSpace(res.stdout))
				}
				r.res.noChangeGate = append(r.res.noChangeGate, res.dur.Seconds())
			} else {
				r.res.noChangeMC = append(r.res.noChangeMC, res.dur.Seconds())
			}
			e.log.Info("no-change pass", "tool", tool, "dur", res.dur.Round(time.Millisecond), "max_rss", formatBytes(res.maxRSS))
		}
	}
	for _, tool := range order {
		sum, err := r.s3.summarize(ctx, buckets[tool], syncFileSize, gateSentinel)
		if err != nil {
			return err
		}
		if sum.sized != syncFiles {
			r.finding("(c) %s: bucket %s has %d objects of %s after the no-change passes, want %d",
				tool, buckets[tool], sum.sized, formatBytes(syncFileSize), syncFiles)
		}
		if sum.newest.After(synced) {
			r.finding("(c) %s: a no-change pass wrote to the bucket (%s modified at %s, after the initial sync)",
				tool, sum.newestAt, sum.newest.Format(time.RFC3339Nano))
		}
	}
	return nil
}

// finding records something that looked wrong, logs it, and keeps it for
// the report.
func (r *mirrorRun) finding(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.e.log.Warn(msg)
	r.res.findings = append(r.res.findings, msg)
}

// mirrorLine is one row of the report. Ratios and goals are in the unit
// the metric's goal is stated in.
type mirrorLine struct {
	metric   string
	gate     string
	anchor   string
	anchorIs string
	ratio    float64 // 0 = none
	goalText string
	pass     *bool // nil = not judged
}

// judge builds the result of a goal "lower is better" (le) or "higher is
// better".
func judge(v, goal float64, le bool) *bool {
	ok := v >= goal
	if le {
		ok = v <= goal
	}
	return &ok
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func secs(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f s", v)
}

// report prints the table, the raw figures and the reproduce command; it
// returns errGoalMissed when a goal was missed.
func (r *mirrorRun) report(ctx context.Context) error {
	e, res := r.e, r.res
	var lines []mirrorLine

	// (a): the goal is judged on the StatObject series; the ListObjects
	// one is shown beside it, unjudged (see probeList).
	for _, pr := range []probe{probeStat, probeList} {
		la, lg := res.latAnchor[pr], res.latGate[pr]
		for _, p := range []float64{50, 99} {
			l := mirrorLine{metric: fmt.Sprintf("(a) upload→visible p%.0f, %d × 1 KiB", p, latencyFiles), anchorIs: "vsftpd + mc mirror --watch",
				goalText: "≤ 0.50×", gate: "-", anchor: "-"}
			if pr == probeList {
				l.metric = fmt.Sprintf("    same, polled with ListObjects, p%.0f", p)
				l.goalText = "(no goal)"
			}
			g, a := percentile(lg.samples, p), percentile(la.samples, p)
			if len(lg.samples) > 0 {
				l.gate = ms(g)
			}
			if len(la.samples) > 0 {
				l.anchor = ms(a)
			}
			if len(lg.samples) > 0 && len(la.samples) > 0 {
				l.ratio = float64(g) / float64(a)
				if pr == probeStat {
					l.pass = judge(l.ratio, 0.5, true)
					if lg.lost > 0 {
						f := false
						l.pass = &f
					}
				}
			}
			lines = append(lines, l)
		}
	}

	// (b)
	fg, fm, fr := median(res.firstGate), median(res.firstMC), median(res.firstRclone)
	best, bestIs := fm, "mc mirror"
	if fr > 0 && (fr < fm || fm == 0) {
		best, bestIs = fr, "rclone copy"
	}
	lb := mirrorLine{metric: fmt.Sprintf("(b) first sync, %d × %s", syncFiles, formatBytes(syncFileSize)), gate: secs(fg), anchor: secs(best),
		anchorIs: "better of mc, rclone: " + bestIs, goalText: "≥ 1.50× faster"}
	if fg > 0 && best > 0 {
		lb.ratio = best / fg
		lb.pass = judge(lb.ratio, 1.5, false)
	}
	lines = append(lines, lb)

	// (c)
	ng, nm := median(res.noChangeGate), median(res.noChangeMC)
	lc := mirrorLine{metric: "(c) no-change pass, same tree", gate: secs(ng), anchor: secs(nm), anchorIs: "mc mirror --overwrite --remove", goalText: "≤ 0.50×"}
	if ng > 0 && nm > 0 {
		lc.ratio = ng / nm
		lc.pass = judge(lc.ratio, 0.5, true)
	}
	lines = append(lines, lc)

	// (d)
	if lr := res.large; lr != nil {
		const goalMB = 100
		lines = append(lines,
			mirrorLine{metric: fmt.Sprintf("(d) RSS peak (VmHWM), %s files tracked", groupThousands(lr.files)), gate: mb(lr.hwm), anchor: "-", anchorIs: "-",
				goalText: "≤ 100 MB", pass: judge(float64(lr.hwm)/1e6, goalMB, true)},
			mirrorLine{metric: "(d) RSS steady (VmRSS) after the start-up pass", gate: mb(lr.rss), anchor: "-", anchorIs: "-",
				goalText: "≤ 100 MB", pass: judge(float64(lr.rss)/1e6, goalMB, true)},
		)
	}

	out := e.out
	tools := []string{modVersion(ctx, r.s3.bin)}
	for _, b := range []string{r.mcBin, r.rcloneBin} {
		if b != "" {
			tools = append(tools, modVersion(ctx, b))
		}
	}
	fmt.Fprintf(out, "\nmirror benchmark: one MinIO on %s, fresh buckets per leg; (b) and (c): %d round(s), median, order rotating\n",
		r.s3.endpoint, e.opts.rounds)
	fmt.Fprintf(out, "tools: %s; %s\n", strings.Join(tools, ", "), toolVersions(ctx))
	fmt.Fprintf(out, "scratch directory %s; load average (1 min) %s at the start, %s at the end, %d CPUs\n\n",
		e.workDir, r.loadStart, loadAverage(), runtime.NumCPU())
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tftpgate\tanchor\tanchor is\tratio\tgoal\tresult\t")
	missed := 0
	for _, l := range lines {
		ratio, result := "-", "-"
		if l.ratio > 0 {
			ratio = fmt.Sprintf("%.2f", l.ratio)
		}
		if l.pass != nil {
			result = "PASS"
			if !*l.pass {
				result = "MISS"
				missed++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", l.metric, l.gate, l.anchor, l.anchorIs, ratio, l.goalText, result)
	}
	tw.Flush()
	fmt.Fprint(out, "\nratio: (a), (c) ftpgate / anchor (lower is better); (b) anchor time / ftpgate time (higher is better).\n")

	fmt.Fprintf(out, "\nraw figures:\n")
	for _, pr := range []probe{probeStat, probeList} {
		for _, s := range []struct {
			name string
			ls   latencySeries
		}{{"ftpgate", res.latGate[pr]}, {"vsftpd+mc", res.latAnchor[pr]}} {
			if len(s.ls.samples) == 0 {
				continue
			}
			fmt.Fprintf(out, "  (a) %-10s %-11s min %s  p50 %s  p90 %s  p99 %s  max %s  lost %d  partial-size polls %d\n", s.name, pr,
				ms(percentile(s.ls.samples, 0)), ms(percentile(s.ls.samples, 50)), ms(percentile(s.ls.samples, 90)),
				ms(percentile(s.ls.samples, 99)), ms(percentile(s.ls.samples, 100)), s.ls.lost, s.ls.earlyStat)
			fmt.Fprintf(out, "      %-10s %-11s %d calls per file (median), each p50 %s p99 %s; %d files with a call over %s (a lock wait)\n", "", "",
				medianInt(s.ls.polls), ms(percentile(s.ls.stats, 50)), ms(percentile(s.ls.stats, 99)), s.ls.locked, lockWait)
		}
	}
	for _, s := range []struct {
		name string
		xs   []float64
	}{{"(b) ftpgate mirror", res.firstGate}, {"(b) mc mirror", res.firstMC}, {"(b) rclone copy", res.firstRclone},
		{"(c) ftpgate mirror", res.noChangeGate}, {"(c) mc mirror", res.noChangeMC}} {
		if len(s.xs) > 0 {
			fmt.Fprintf(out, "  %-20s median %s  rounds %s\n", s.name, secs(median(s.xs)), formatSeries(s.xs, "s"))
		}
	}
	if lr := res.large; lr != nil {
		fmt.Fprintf(out, "  (d) journal fill: `ftpgate mirror` of %s files took %s, its peak RSS %s, %s lines of output\n",
			groupThousands(lr.files), lr.fill.Round(time.Second), mb(lr.fillRSS), groupThousands(lr.fillLines))
		fmt.Fprintf(out, "  (d) ftpgate serve: start-up pass over %s files in %s (end seen by %s)\n",
			groupThousands(lr.files), lr.startup.Round(time.Second), lr.doneBy)
		fmt.Fprintf(out, "  (d) during the pass, highest 1 s sample: VmRSS %s (RssAnon %s, RssFile %s) at %s; VmHWM %s\n",
			mb(lr.peak.rss), mb(lr.peak.anon), mb(lr.peak.file), lr.peakAt.Round(time.Second), mb(lr.hwm))
		fmt.Fprintf(out, "  (d) 10 s after the pass: VmRSS %s (RssAnon %s, RssFile %s)\n", mb(lr.rss), mb(lr.anon), mb(lr.file))
	}

	fmt.Fprintf(out, `
notes:
  - (a) one Go FTP client (jlaffaye/ftp) uploads one file at a time; t0 is STOR returning
    (the 226 reply read); a minio-go client then calls StatObject at t0, t0+2 ms, ...
    until the object exists with its full size; the figure is t0 → the return of that call.
    %d warm-up files go first on each side and are not counted. Both sides run at once and
    the measured files alternate between them, so that both see the same machine.
  - (a) A HEAD that meets a PUT of the same key in MinIO waits in MinIO's lock retry loop
    (a random sleep of up to 50 ms, internal/lsync), and so does the PUT: 2 ms StatObject
    polls add 0-50 ms to the sample and to the mirror's own upload, on both sides alike.
    A second series of %d files per side is polled with ListObjects (prefix = key), which
    takes no object lock: the same comparison without that noise. The goal is judged on
    the StatObject series, as the issue states it.
  - (a) anchor: vsftpd (Debian, as in the ftp target) writes into a directory that
    `+"`mc mirror --watch --overwrite --remove DIR alias/bucket`"+` watches.
  - (b) each round copies the tree into a fresh empty bucket: `+"`ftpgate mirror`"+` with a fresh
    state_dir, `+"`mc mirror DIR alias/bucket`"+`, `+"`rclone copy DIR remote:bucket`"+` (default
    concurrency of each). Times run from process start to exit; every bucket is listed
    afterwards and must hold all %d objects.
  - (c) the tree and buckets are in sync (one untimed pass of each tool first); ftpgate keeps
    its state_dir. A listing afterwards checks that no timed pass wrote anything.
  - Every timed command starts after sync(2) and once the CPUs are idle.
`, latencyWarmup, latencyFiles, syncFiles)
	if res.large != nil {
		fmt.Fprint(out, `  - (d) the journal is filled by a one-shot `+"`ftpgate mirror`"+` of the tree into a fresh bucket;
    then `+"`ftpgate serve`"+` starts on the same state_dir. VmRSS and VmHWM count file-backed
    pages too: RssFile is mostly the journal's mmap (bbolt) as the pass reads it, RssAnon
    the Go heap and stacks. The goal is judged on both the peak and the steady figure.
`)
	}
	reportTail(out, res.findings, r.busyStarts, r.timedStarts, "commands")
	repro := reproduce(e.opts, "mirror")
	if e.opts.large {
		repro = mirrorReproduce(e.opts)
	}
	fmt.Fprintf(out, "\nreproduce: %s\n\n", repro)
	if missed > 0 {
		return fmt.Errorf("mirror: %d of the goals: %w", missed, errGoalMissed)
	}
	return nil
}

// mirrorReproduce is reproduce with -large, which options.nonDefault does
// not know about.
func mirrorReproduce(o options) string {
	f := strings.TrimSpace(o.nonDefault() + " -large")
	return `make bench-mirror BENCH_FLAGS="` + f + `"`
}

// mb prints bytes as decimal megabytes, the unit of the RSS goal.
func mb(n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}

// groupThousands prints n with thin separators: 1,000,000.
func groupThousands(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// errNotDir is returned when a scratch path that must be a directory is not.
var errNotDir = errors.New("not a directory")

// isDir reports whether p is an existing directory.
func isDir(p string) (bool, error) {
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case !fi.IsDir():
		return false, fmt.Errorf("%s: %w", p, errNotDir)
	}
	return true, nil
}

// loadAverage is the 1-minute load average from /proc/loadavg, or "?".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// medianInt is the median of xs, the lower middle for an even count.
func medianInt(xs []int) int {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
