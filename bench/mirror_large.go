package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The (d) workload: largeDirs × largePerDir empty files, kept between runs
// (with -keep) under the scratch parent, since making it takes minutes.
const (
	largeDirs   = 1000
	largePerDir = 1000
	largeFiles  = largeDirs * largePerDir
	largeName   = "ftpgate-bench-mirror-1m"
)

// largeResult is what (d) measured.
type largeResult struct {
	files     int
	fill      time.Duration // the one-shot `ftpgate mirror` that filled the journal
	fillRSS   int64         // its peak RSS
	fillLines int           // the lines it wrote (log and summary)
	startup   time.Duration // `ftpgate serve` start until its start-up pass ended
	doneBy    string        // how the end of the start-up pass was recognised
	rss       int64         // VmRSS once settled after the pass
	anon      int64         // RssAnon then
	file      int64         // RssFile then (the journal's mmap among it)
	hwm       int64         // VmHWM: the peak over the daemon's life
	peak      procMem       // the 1 s sample with the highest VmRSS during the start-up pass
	peakAt    time.Duration // when it was taken, from the start
}

// largeRSS is (d): a one-shot `ftpgate mirror` uploads the 1M-file tree to
// a fresh bucket, which fills the journal; then `ftpgate serve` starts on
// the same state_dir, runs its start-up pass over the 1M tracked files, and
// its memory is read from /proc once it is quiet.
func (r *mirrorRun) largeRSS(ctx context.Context) (*largeResult, error) {
	e := r.e
	base := filepath.Join(filepath.Dir(e.workDir), largeName)
	tree := filepath.Join(base, "tree")
	if err := makeLargeTree(ctx, e, base, tree); err != nil {
		return nil, err
	}
	if e.opts.keep {
		e.log.Info("keeping the 1M-file tree for the next run", "path", base)
	} else {
		defer func() {
			e.log.Info("removing the 1M-file tree (-keep keeps it)", "path", base)
			if err := os.RemoveAll(base); err != nil {
				e.log.Warn("cannot remove the 1M-file tree", "path", base, "err", err)
			}
		}()
	}
	// A sentinel from an earlier run's journal means nothing to a fresh one.
	if err := removeIfExists(filepath.Join(tree, gateSentinel)); err != nil {
		return nil, err
	}
	bucket := "large-ftpgate"
	if err := r.s3.makeBucket(ctx, bucket); err != nil {
		return nil, err
	}
	g, err := r.writeGateConfig("large-ftpgate", tree, bucket)
	if err != nil {
		return nil, err
	}
	res := &largeResult{files: largeFiles}

	e.log.Info("(d) filling the journal: ftpgate mirror of the 1M-file tree (long)", "tree", tree, "bucket", bucket,
		"log", filepath.Join(r.dir, "logs", "large-fill.log"))
	stopTicker := r.logElapsed("(d) journal fill running")
	fill, err := r.runCommand(ctx, "large-fill", cleanEnv(), r.gateBin, "mirror", "--config", g.cfgPath, gateMapping)
	stopTicker()
	if err != nil {
		return nil, err
	}
	res.fill, res.fillRSS = fill.dur, fill.maxRSS
	if res.fillLines, err = countLines(filepath.Join(r.dir, "logs", "large-fill.log")); err != nil {
		return nil, err
	}
	e.log.Info("(d) journal filled", "dur", fill.dur.Round(time.Second), "max_rss", mb(fill.maxRSS), "stdout", strings.TrimSpace(fill.stdout))
	if fill.dur > 15*time.Minute {
		r.finding("(d) the one-shot first sync of %s files took %s (over 15 min)", groupThousands(largeFiles), fill.dur.Round(time.Second))
	}
	sum, err := r.s3.summarize(ctx, bucket, 0, gateSentinel)
	if err != nil {
		return nil, err
	}
	if sum.objects != largeFiles {
		r.finding("(d) after the journal fill bucket %s holds %d objects, want %d", bucket, sum.objects, largeFiles)
	}

	flushAll()
	waitIdle(ctx, 30*time.Second)
	start := time.Now()
	proc, err := r.startServe(ctx, g, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	defer proc.stop(30 * time.Second)
	pid := proc.cmd.Process.Pid
	e.log.Info("(d) ftpgate serve started; waiting for its start-up pass", "pid", pid, "log", proc.logPath)
	if res.doneBy, res.peak, res.peakAt, err = waitStartupPass(ctx, proc, gateMapping, time.Hour); err != nil {
		return nil, err
	}
	res.startup = time.Since(start)
	e.log.Info("(d) start-up pass over", "dur", res.startup.Round(time.Second), "by", res.doneBy)
	// Let the heap settle (a GC cycle or two) before the steady reading.
	var st procMem
	for range 10 {
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if st, err = readProcMem(pid); err != nil {
			return nil, fmt.Errorf("ftpgate serve (pid %d): %w\n%s", pid, err, proc.logTail(20))
		}
	}
	res.rss, res.hwm, res.anon, res.file = st.rss, st.hwm, st.anon, st.file
	e.log.Info("(d) ftpgate serve memory", "VmRSS", mb(st.rss), "VmHWM", mb(st.hwm), "RssAnon", mb(st.anon), "RssFile", mb(st.file))
	return res, nil
}

// countLines is the number of lines of a file.
func countLines(p string) (int, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	buf := make([]byte, 64<<10)
	for {
		k, err := f.Read(buf)
		n += strings.Count(string(buf[:k]), "\n")
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// logElapsed logs msg with the elapsed time every minute until the returned
// function is called; that function waits for the logging goroutine.
func (r *mirrorRun) logElapsed(msg string) func() {
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				r.e.log.Info(msg, "elapsed", time.Since(start).Round(time.Second))
			}
		}
	})
	return func() {
		close(stop)
		wg.Wait()
	}
}

// makeLargeTree creates largeDirs × largePerDir empty files under tree with
// parallel writers, unless base already holds a complete one.
func makeLargeTree(ctx context.Context, e *env, base, tree string) error {
	marker := filepath.Join(base, "complete")
	want := fmt.Sprintf("%d x %d empty files\n", largeDirs, largePerDir)
	if b, err := os.ReadFile(marker); err == nil && string(b) == want {
		if ok, err := isDir(tree); err == nil && ok {
			e.log.Info("reusing the 1M-file tree", "path", tree)
			return nil
		}
	}
	if err := os.RemoveAll(base); err != nil {
		return fmt.Errorf("1M-file tree: %w", err)
	}
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return fmt.Errorf("1M-file tree: %w", err)
	}
	if free, err := freeInodes(base); err == nil && free < 3*largeFiles {
		// MinIO needs about two inodes per object on the same disk.
		return fmt.Errorf("1M-file tree: %s has %d free inodes; need about %d (use -dir)", base, free, 3*largeFiles)
	}
	start := time.Now()
	e.log.Info("generating the 1M-file tree (once; -keep keeps it)", "path", tree)
	dirs := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 4 * runtime.NumCPU() {
		wg.Go(func() {
			for d := range dirs {
				if err := writeEmptyDir(filepath.Join(tree, fmt.Sprintf("d%03d", d)), largePerDir); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	var err error
feed:
	for d := range largeDirs {
		select {
		case dirs <- d:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(dirs)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	if err != nil {
		return fmt.Errorf("1M-file tree: %w", err)
	}
	flushAll()
	if err := os.WriteFile(marker, []byte(want), 0o644); err != nil {
		return fmt.Errorf("1M-file tree: %w", err)
	}
	e.log.Info("1M-file tree written", "dur", time.Since(start).Round(time.Second))
	return nil
}

func writeEmptyDir(dir string, n int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := range n {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

// waitStartupPass waits until the daemon's first full pass is over: the
// end-of-pass log line of mapping (see isPassDoneLine), or else the process
// and the machine quiet for five seconds in a row. It samples the memory of
// the process every second meanwhile and returns the sample with the
// highest VmRSS (the composition of the peak that VmHWM alone hides).
func waitStartupPass(ctx context.Context, proc *process, mapping string, limit time.Duration) (doneBy string, peak procMem, peakAt time.Duration, err error) {
	start := time.Now()
	pid := proc.cmd.Process.Pid
	scan := &logScanner{path: proc.logPath}
	prevCPU, _ := proc.cpu()
	prevIdle, prevTotal, _ := cpuTimes()
	quiet := 0
	for {
		select {
		case <-proc.done:
			return "", peak, 0, fmt.Errorf("ftpgate serve exited during its start-up pass: %v\n%s", proc.err, proc.logTail(20))
		case <-ctx.Done():
			return "", peak, 0, ctx.Err()
		case <-time.After(time.Second):
		}
		if m, err := readProcMem(pid); err == nil && m.rss > peak.rss {
			peak, peakAt = m, time.Since(start)
		}
		lines, err := scan.next()
		if err != nil {
			return "", peak, 0, err
		}
		for _, l := range lines {
			if isPassDoneLine(l, mapping) {
				return "its end-of-pass log line, pass dur=" + logValue(l, "dur"), peak, peakAt, nil
			}
		}
		cpu, err := proc.cpu()
		if err != nil {
			return "", peak, 0, err
		}
		idle, total, err := cpuTimes()
		if err != nil {
			return "", peak, 0, err
		}
		machineIdle := 1.0
		if total > prevTotal {
			machineIdle = float64(idle-prevIdle) / float64(total-prevTotal)
		}
		// 20 ms a second is 2 % of one core.
		if cpu-prevCPU <= 20*time.Millisecond && machineIdle >= idleTarget {
			quiet++
		} else {
			quiet = 0
		}
		prevCPU, prevIdle, prevTotal = cpu, idle, total
		if quiet >= 5 && time.Since(start) > 10*time.Second {
			return "the process and the CPUs idle for 5 s (no end-of-pass log line seen)", peak, peakAt, nil
		}
		if time.Since(start) > limit {
			return "", peak, 0, fmt.Errorf("ftpgate serve: start-up pass not over after %s\n%s", limit, proc.logTail(20))
		}
	}
}

// logScanner returns the complete lines appended to a file since its last
// call.
type logScanner struct {
	path string
	off  int64
	part string
}

func (s *logScanner) next() ([]string, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(s.off, io.SeekStart); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	s.off += int64(len(b))
	text := s.part + string(b)
	lines := strings.Split(text, "\n")
	s.part = lines[len(lines)-1]
	return lines[:len(lines)-1], nil
}

// isPassDoneLine reports whether a slog text line ends a full pass of
// mapping (mapping=<mapping>, no subtree=): ftpgate's `msg="mirror pass"
// result=...`, or any msg with "pass" and "done", "finished" or "complete".
func isPassDoneLine(line, mapping string) bool {
	if logValue(line, "mapping") != mapping {
		return false
	}
	msg := strings.ToLower(logValue(line, "msg"))
	if logValue(line, "subtree") != "" {
		return false // a pass over part of the tree
	}
	if msg == "mirror pass" && logValue(line, "result") != "" {
		return true
	}
	return strings.Contains(msg, "pass") &&
		(strings.Contains(msg, "done") || strings.Contains(msg, "finished") || strings.Contains(msg, "complete"))
}

// logValue is the value of key in a logfmt (slog text) line, unquoted; ""
// when the key is absent.
func logValue(line, key string) string {
	for i := 0; i < len(line); {
		j := strings.IndexByte(line[i:], '=')
		if j < 0 {
			return ""
		}
		k := line[i : i+j]
		if sp := strings.LastIndexByte(k, ' '); sp >= 0 {
			k = k[sp+1:]
		}
		v := line[i+j+1:]
		var val string
		var rest int
		if strings.HasPrefix(v, `"`) {
			if q, err := strconv.QuotedPrefix(v); err == nil {
				val, _ = strconv.Unquote(q)
				rest = len(q)
			} else {
				val, rest = v, len(v)
			}
		} else {
			end := strings.IndexByte(v, ' ')
			if end < 0 {
				end = len(v)
			}
			val, rest = v[:end], end
		}
		if k == key {
			return val
		}
		i += j + 1 + rest
	}
	return ""
}

// procMem is a process's memory from /proc/PID/status, in bytes.
type procMem struct {
	rss, hwm, anon, file int64
}

func readProcMem(pid int) (procMem, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return procMem{}, err
	}
	defer f.Close()
	var m procMem
	fields := map[string]*int64{"VmRSS:": &m.rss, "VmHWM:": &m.hwm, "RssAnon:": &m.anon, "RssFile:": &m.file}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Fields(sc.Text())
		if len(parts) != 3 || parts[2] != "kB" {
			continue
		}
		if p, ok := fields[parts[0]]; ok {
			v, err := strconv.ParseInt(parts[1], 10, 64)
			if err != nil {
				return procMem{}, fmt.Errorf("/proc/%d/status: %s: %w", pid, parts[0], err)
			}
			*p = v << 10
		}
	}
	if err := sc.Err(); err != nil {
		return procMem{}, err
	}
	if m.rss == 0 || m.hwm == 0 {
		return procMem{}, errors.New("/proc/" + strconv.Itoa(pid) + "/status: no VmRSS/VmHWM")
	}
	return m, nil
}
