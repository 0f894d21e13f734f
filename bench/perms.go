package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// The perms target's tree: permsFiles empty files in permsDirs directories,
// made once per run; one entry in permsWrongEvery is wrong (half of them by
// mode, half by group).
const (
	permsDirs       = 1000
	permsPerDir     = 100
	permsFiles      = permsDirs * permsPerDir
	permsEntries    = permsFiles + permsDirs + 1 // with the top directory
	permsWrongEvery = 100
	permsFileMode   = 0o664
	permsDirMode    = 0o2775
	permsWrongFile  = 0o644  // a wrong file mode
	permsWrongDir   = 0o2755 // a wrong directory mode
	permsGroup      = "users"
	permsBenchGroup = "ftpgate-bench" // made when permsGroup does not exist
)

// The sides of the perms target, as the report names them.
const (
	permsGate  = "ftpgate perms fix"
	permsOld   = "old way"
	permsTuned = "tuned find"
)

// The shell scripts ftpgate replaces; $1 is the tree, $2 the group. The
// old way sets every file, directory and group; the tuned one only what
// find sees is wrong. chgrp -h: a symlink's target is never changed.
const (
	permsOldScript = `find "$1" -type f -exec chmod 664 {} + && ` +
		`find "$1" -type d -exec chmod 2775 {} + && ` +
		`chgrp -R "$2" "$1"`
	permsTunedScript = `find "$1" -type f ! -perm 664 -exec chmod 664 {} + && ` +
		`find "$1" -type d ! -perm 2775 -exec chmod 2775 {} + && ` +
		`find "$1" ! -group "$2" -exec chgrp -h "$2" {} +`
)

// permsRun is one run of the perms target. Not safe for concurrent use.
type permsRun struct {
	e       *env
	dir     string // <workDir>/perms
	master  string // the tree every leg copies
	copy    string // the leg's copy
	cfgPath string // ftpgate's config, on copy
	gateBin string
	group   string
	gid     int
	wrong   int // wrong entries in the master

	sides                   []string
	res                     map[string]*permsSeries
	timedStarts, busyStarts int
	loadStart               string
	findings                []string
}

// permsSeries are one side's figures, one per round.
type permsSeries struct {
	wall, cpu, sync []float64 // seconds
	ctimes          []int     // entries whose ctime changed
}

// wallSync is, per round, the wall time plus the writeback after it.
func (s *permsSeries) wallSync() []float64 {
	out := make([]float64, len(s.wall))
	for i := range s.wall {
		out[i] = s.wall[i] + s.sync[i]
	}
	return out
}

// runPerms is the "perms" target (issue 5): `ftpgate perms fix` against
// (a) the old `find -exec chmod` + `chgrp -R`, and (b) a tuned shell that
// changes only what find sees is wrong, each on an identical copy of a
// tree of 100,000 files with 1 % wrong, alternating over the rounds.
func runPerms(ctx context.Context, e *env) error {
	if os.Geteuid() != 0 {
		return errors.New("perms: run as root: the tree's group is changed with chgrp")
	}
	r := &permsRun{e: e, dir: filepath.Join(e.workDir, "perms"), res: map[string]*permsSeries{}}
	r.master = filepath.Join(r.dir, "master")
	r.copy = filepath.Join(r.dir, "tree")
	if err := os.MkdirAll(filepath.Join(r.dir, "logs"), 0o755); err != nil {
		return err
	}
	if e.opts.only != serverVsftpd {
		r.sides = append(r.sides, permsGate)
	}
	if e.opts.only != serverFTPGate {
		r.sides = append(r.sides, permsOld, permsTuned)
	}
	for _, s := range r.sides {
		r.res[s] = &permsSeries{}
	}
	cleanup, err := r.setupGroup(ctx)
	if err != nil {
		return err
	}
	defer cleanup()
	if e.opts.only != serverVsftpd {
		if r.gateBin, err = buildFTPGate(ctx, e); err != nil {
			return err
		}
		if err := r.writeConfig(); err != nil {
			return err
		}
	}
	if err := r.makeTree(); err != nil {
		return err
	}

	start := time.Now()
	r.loadStart = loadAverage()
	for round := range e.opts.rounds {
		order := rotate(r.sides, round)
		e.log.Info("perms round", "n", round+1, "of", e.opts.rounds, "order", strings.Join(order, ","))
		for _, side := range order {
			if err := r.leg(ctx, side, round); err != nil {
				return err
			}
		}
	}
	e.log.Info("done", "dur", time.Since(start).Round(time.Second))
	return r.report(ctx)
}

// setupGroup picks the group of the policy: "users" where it exists, else
// a group made for the run and removed by cleanup.
func (r *permsRun) setupGroup(ctx context.Context) (cleanup func(), err error) {
	cleanup = func() {}
	g, err := user.LookupGroup(permsGroup)
	if err != nil {
		if out, err := exec.CommandContext(ctx, "groupadd", permsBenchGroup).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("perms: groupadd %s: %w: %s", permsBenchGroup, err, out)
		}
		cleanup = func() {
			if out, err := exec.Command("groupdel", permsBenchGroup).CombinedOutput(); err != nil {
				r.e.log.Warn("groupdel", "group", permsBenchGroup, "err", err, "out", string(out))
			}
		}
		if g, err = user.LookupGroup(permsBenchGroup); err != nil {
			cleanup()
			return nil, fmt.Errorf("perms: %w", err)
		}
	}
	r.group = g.Name
	if r.gid, err = strconv.Atoi(g.Gid); err != nil {
		cleanup()
		return nil, fmt.Errorf("perms: gid of %s: %w", g.Name, err)
	}
	return cleanup, nil
}

// writeConfig writes ftpgate's config: one [[perms]] policy on the copy,
// unlimited rate.
func (r *permsRun) writeConfig() error {
	r.cfgPath = filepath.Join(r.dir, "ftpgate.toml")
	text := fmt.Sprintf(`# Written by ftpgate's bench (go run ./bench perms); removed with its scratch directory.
[storage]
root = %q
state_dir = %q

[[perms]]
path = %q
group = %q
file_mode = "%04o"
dir_mode = "%04o"
rate = 0
`, r.copy, filepath.Join(r.dir, "state"), r.copy, r.group, permsFileMode, permsDirMode)
	return os.WriteFile(r.cfgPath, []byte(text), 0o600)
}

// makeTree writes the master tree: a setgid top directory of the policy's
// group, so that everything below inherits it, then the wrong entries.
func (r *permsRun) makeTree() error {
	r.e.log.Info("generating the perms tree", "path", r.master, "files", permsFiles, "dirs", permsDirs)
	old := unix.Umask(0)
	defer unix.Umask(old)
	if err := os.Mkdir(r.master, 0o700); err != nil {
		return fmt.Errorf("perms tree: %w", err)
	}
	if err := os.Chown(r.master, 0, r.gid); err != nil {
		return fmt.Errorf("perms tree: %w", err)
	}
	if err := unix.Chmod(r.master, permsDirMode); err != nil {
		return fmt.Errorf("perms tree: %w", err)
	}
	rng := rand.New(rand.NewPCG(5, 2026))
	wrong := make(map[int]bool)
	for _, i := range rng.Perm(permsFiles + permsDirs)[:(permsFiles+permsDirs)/permsWrongEvery] {
		wrong[i] = true
	}
	entry := 0
	spoil := func(p string, dir bool) error {
		defer func() { entry++ }()
		if !wrong[entry] {
			return nil
		}
		r.wrong++
		if r.wrong%2 == 0 {
			return os.Lchown(p, 0, 0)
		}
		if dir {
			return unix.Chmod(p, permsWrongDir)
		}
		return unix.Chmod(p, permsWrongFile)
	}
	for d := range permsDirs {
		sub := filepath.Join(r.master, fmt.Sprintf("d%03d", d))
		if err := unix.Mkdir(sub, permsDirMode); err != nil {
			return fmt.Errorf("perms tree: mkdir %s: %w", sub, err)
		}
		for f := range permsPerDir {
			p := filepath.Join(sub, fmt.Sprintf("f%02d", f))
			fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, permsFileMode)
			if err != nil {
				return fmt.Errorf("perms tree: create %s: %w", p, err)
			}
			unix.Close(fd)
			if err := spoil(p, false); err != nil {
				return fmt.Errorf("perms tree: %w", err)
			}
		}
		if err := spoil(sub, true); err != nil {
			return fmt.Errorf("perms tree: %w", err)
		}
	}
	flushAll()
	return nil
}

// permsSnapshot is the ctime of every entry of a tree, in walk order, and
// how many entries deviate from the policy.
type permsSnapshot struct {
	ctimes []int64
	inodes []uint64
	wrong  int
}

// snapshot walks tree, lstat-ing every entry: it records the ctimes and
// warms the dentry and inode caches for the leg that follows.
func (r *permsRun) snapshot(tree string) (permsSnapshot, error) {
	var s permsSnapshot
	err := filepath.WalkDir(tree, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		s.ctimes = append(s.ctimes, st.Ctim.Nano())
		s.inodes = append(s.inodes, st.Ino)
		want := uint32(permsFileMode)
		if uint32(st.Mode)&unix.S_IFMT == unix.S_IFDIR {
			want = permsDirMode
		}
		if uint32(st.Mode)&0o7777 != want || int(st.Gid) != r.gid {
			s.wrong++
		}
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("perms: walk %s: %w", tree, err)
	}
	return s, nil
}

// leg copies the master, warms the copy, runs side on it (timed), and
// checks that every entry is right afterwards; it counts the entries whose
// ctime changed.
func (r *permsRun) leg(ctx context.Context, side string, round int) error {
	e := r.e
	label := fmt.Sprintf("%s-%d", strings.ReplaceAll(side, " ", "-"), round)
	if err := os.RemoveAll(r.copy); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", r.master, r.copy).CombinedOutput(); err != nil {
		return fmt.Errorf("perms: cp -a: %w: %s", err, out)
	}
	before, err := r.snapshot(r.copy)
	if err != nil {
		return err
	}
	if len(before.ctimes) != permsEntries || before.wrong != r.wrong {
		return fmt.Errorf("perms: the copy has %d entries, %d wrong; want %d, %d", len(before.ctimes), before.wrong, permsEntries, r.wrong)
	}
	var argv []string
	switch side {
	case permsGate:
		argv = []string{r.gateBin, "perms", "fix", "--config", r.cfgPath}
	case permsOld:
		argv = []string{"sh", "-c", permsOldScript, "sh", r.copy, r.group}
	case permsTuned:
		argv = []string{"sh", "-c", permsTunedScript, "sh", r.copy, r.group}
	}
	res, err := r.timed(ctx, label, argv)
	if err != nil {
		return err
	}
	syncStart := time.Now()
	flushAll()
	syncDur := time.Since(syncStart)
	after, err := r.snapshot(r.copy)
	if err != nil {
		return err
	}
	if len(after.ctimes) != len(before.ctimes) {
		return fmt.Errorf("perms: %s: the tree has %d entries after, %d before", side, len(after.ctimes), len(before.ctimes))
	}
	changed := 0
	for i := range after.ctimes {
		if after.inodes[i] != before.inodes[i] {
			return fmt.Errorf("perms: %s replaced entries of the tree", side)
		}
		if after.ctimes[i] != before.ctimes[i] {
			changed++
		}
	}
	if after.wrong != 0 {
		r.finding("%s, round %d: %d entries still wrong afterwards", side, round+1, after.wrong)
	}
	s := r.res[side]
	s.wall = append(s.wall, res.dur.Seconds())
	s.cpu = append(s.cpu, res.cpu.Seconds())
	s.sync = append(s.sync, syncDur.Seconds())
	s.ctimes = append(s.ctimes, changed)
	e.log.Info("perms leg", "side", side, "dur", res.dur.Round(time.Millisecond), "cpu", res.cpu.Round(time.Millisecond),
		"sync_after", syncDur.Round(time.Millisecond), "ctime_changed", changed)
	if side == permsGate && round == 0 {
		if i := strings.LastIndex(res.stdout, "\nperms fix:"); i >= 0 {
			e.log.Info("ftpgate perms fix summary (round 1)", "stdout", strings.TrimSpace(res.stdout[i:]))
		}
	}
	return os.RemoveAll(r.copy)
}

// permsResult is one timed command.
type permsResult struct {
	dur, cpu time.Duration
	stdout   string
}

// timed runs argv after sync(2) and once the CPUs are idle; its output
// goes to <dir>/logs/<label>.log.
func (r *permsRun) timed(ctx context.Context, label string, argv []string) (permsResult, error) {
	flushAll()
	r.timedStarts++
	if idle, ok := waitIdle(ctx, 10*time.Second); !ok {
		r.busyStarts++
		r.e.log.Warn("the machine stayed busy; this figure is noisy", "leg", label, "cpu_idle", fmt.Sprintf("%.0f%%", idle*100))
	}
	logPath := filepath.Join(r.dir, "logs", label+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return permsResult{}, err
	}
	defer f.Close()
	fmt.Fprintf(f, "$ %s\n", strings.Join(argv, " "))
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = cleanEnv()
	cmd.Stdout = io.MultiWriter(&stdout, f)
	cmd.Stderr = f
	dieWithParent(cmd)
	start := time.Now()
	err = cmd.Run()
	res := permsResult{dur: time.Since(start), stdout: stdout.String()}
	if ps := cmd.ProcessState; ps != nil {
		res.cpu = ps.UserTime() + ps.SystemTime()
	}
	if err != nil {
		return res, fmt.Errorf("%s: %s: %w\n%s", label, filepath.Base(argv[0]), err, tailFile(logPath, 25))
	}
	return res, nil
}

func (r *permsRun) finding(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.e.log.Warn(msg)
	r.findings = append(r.findings, msg)
}

// permsLine is one row of the report.
type permsLine struct {
	metric, gate, anchor, anchorIs, ratio, goal string
	pass                                        *bool
}

// report prints the table, the raw figures and the reproduce command; it
// returns errGoalMissed when a goal was missed.
func (r *permsRun) report(ctx context.Context) error {
	e := r.e
	med := func(side string, of func(*permsSeries) []float64) float64 {
		if s := r.res[side]; s != nil {
			return median(of(s))
		}
		return 0
	}
	wall := func(s *permsSeries) []float64 { return s.wall }
	cpu := func(s *permsSeries) []float64 { return s.cpu }
	anchors := []struct {
		side, is string
		goal     float64
		goalText string
	}{
		{permsOld, "(a) find -exec chmod, chgrp -R", 5, "≥ 5.00× faster"},
		{permsTuned, "(b) find ! -perm / ! -group -exec", 1, "≥ 1.00× (no slower)"},
	}
	var lines []permsLine
	for _, m := range []struct {
		metric string
		of     func(*permsSeries) []float64
		judged bool
	}{
		{"fix the tree, wall time", wall, true},
		{"  same + sync(2) after", (*permsSeries).wallSync, false},
		{"  CPU time (user + sys)", cpu, false},
	} {
		g := med(permsGate, m.of)
		for _, a := range anchors {
			an := med(a.side, m.of)
			l := permsLine{metric: m.metric, gate: permsSecs(g), anchor: permsSecs(an), anchorIs: a.is, ratio: "-", goal: "(no goal)"}
			if g > 0 && an > 0 {
				l.ratio = fmt.Sprintf("%.2f×", an/g)
				if m.judged {
					l.goal, l.pass = a.goalText, judge(an/g, a.goal, false)
				}
			}
			lines = append(lines, l)
		}
	}
	if s := r.res[permsGate]; s != nil && len(s.ctimes) > 0 {
		ok := true
		for _, c := range s.ctimes {
			ok = ok && c == r.wrong
		}
		l := permsLine{metric: "entries given a new ctime", gate: groupThousands(maxInt(s.ctimes)), anchor: "-", anchorIs: "-", ratio: "-",
			goal: "= " + groupThousands(r.wrong) + " (the wrong ones)", pass: &ok}
		if o := r.res[permsOld]; o != nil && len(o.ctimes) > 0 {
			l.anchor, l.anchorIs = groupThousands(maxInt(o.ctimes)), "(a)"
		}
		lines = append(lines, l)
	}

	out := e.out
	fmt.Fprintf(out, "\nperms benchmark: %s files in %s directories (%s entries), %s wrong (1 %%: half by mode, half by group);\n",
		groupThousands(permsFiles), groupThousands(permsDirs), groupThousands(permsEntries), groupThousands(r.wrong))
	fmt.Fprintf(out, "policy group %s, file_mode %04o, dir_mode %04o; %d round(s), median, order rotating; a fresh cp -a copy per leg\n",
		r.group, permsFileMode, permsDirMode, e.opts.rounds)
	fmt.Fprintf(out, "tools: %s\n", permsToolVersions(ctx))
	fmt.Fprintf(out, "scratch directory %s; load average (1 min) %s at the start, %s at the end, %d CPUs\n\n",
		e.workDir, r.loadStart, loadAverage(), runtime.NumCPU())
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tftpgate\tanchor\tanchor is\tratio\tgoal\tresult\t")
	missed := 0
	for _, l := range lines {
		result := "-"
		if l.pass != nil {
			result = "PASS"
			if !*l.pass {
				result = "MISS"
				missed++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", l.metric, l.gate, l.anchor, l.anchorIs, l.ratio, l.goal, result)
	}
	tw.Flush()
	fmt.Fprint(out, "\nratio: anchor time / ftpgate time (higher is better).\n\nraw figures:\n")
	for _, side := range r.sides {
		s := r.res[side]
		fmt.Fprintf(out, "  %-18s wall median %s  rounds %s\n", side, permsSecs(median(s.wall)), formatMillis(s.wall))
		fmt.Fprintf(out, "  %-18s cpu  median %s  sync(2) after median %s  new ctimes %s\n", "",
			permsSecs(median(s.cpu)), permsSecs(median(s.sync)), intSeries(s.ctimes))
	}
	fmt.Fprintf(out, `
notes:
  - ftpgate: %s perms fix --config (one [[perms]] policy on the tree, rate = 0), walking
    with GOMAXPROCS threads (%d here);
    (a) sh -c '%s'
    (b) sh -c '%s'
  - Every leg runs on a fresh `+"`cp -a`"+` copy of one tree made once per run. Before each timed
    run the copy is walked once (lstat of every entry), which records every ctime and leaves
    the dentry and inode caches warm for every side alike; the page cache is not dropped.
  - Each timed command starts after sync(2) and once the CPUs are idle; its time runs from
    process start to exit. "sync(2) after" is the writeback of its changes, timed apart;
    the goals are judged on the wall time alone.
  - "new ctimes" counts the entries whose ctime differs after the leg: the inodes it wrote.
`, filepath.Base(r.gateBin), runtime.GOMAXPROCS(0), permsOldScript, permsTunedScript)
	reportTail(out, r.findings, r.busyStarts, r.timedStarts, "commands")
	fmt.Fprintf(out, "\nreproduce: %s\n\n", reproduce(e.opts, "perms"))
	if missed > 0 || len(r.findings) > 0 {
		return fmt.Errorf("perms: %d goals missed, %d findings: %w", missed, len(r.findings), errGoalMissed)
	}
	return nil
}

// permsSecs prints seconds to the millisecond: the legs are short.
func permsSecs(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f s", v)
}

func maxInt(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// formatMillis prints per-round seconds to the millisecond.
func formatMillis(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(parts, " ") + " s"
}

func intSeries(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = groupThousands(x)
	}
	return strings.Join(parts, " ")
}

// permsToolVersions names find, chmod and chgrp as the anchors ran them.
func permsToolVersions(ctx context.Context) string {
	var v []string
	for _, tool := range []string{"find", "chmod"} {
		out, err := exec.CommandContext(ctx, tool, "--version").Output()
		if err != nil {
			v = append(v, tool)
			continue
		}
		first, _, _ := strings.Cut(string(out), "\n")
		v = append(v, first)
	}
	return strings.Join(v, ", ")
}
