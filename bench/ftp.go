package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// ftpWorkload is the set of local files every round sends.
type ftpWorkload struct {
	big      string // the large file
	bigSize  int64
	bigSum   [sha256.Size]byte
	smallDir string // the directory of small files
	files    int
	fileSize int64
}

// ftpRun is one run of the ftp target. Not safe for concurrent use.
type ftpRun struct {
	e *env
	w *ftpWorkload
	// timedStarts counts the timed transfers; busyStarts those that began
	// while something else kept the CPUs busy.
	timedStarts, busyStarts int
	// lastCPU is the server CPU time of the last timed transfer, or -1
	// when it could not be measured.
	lastCPU time.Duration
}

// ftpSamples are one server's per-round measurements.
type ftpSamples struct {
	put       []float64 // MiB/s, ftpgate with fsync on
	get       []float64 // MiB/s
	small     []float64 // seconds for the whole mirror -R
	putNoSync []float64 // MiB/s, ftpgate with fsync off
	// smallNoSync: the small files again, ftpgate with fsync off (no
	// goal: it shows what durability costs).
	smallNoSync []float64

	// Server CPU seconds (user + system, session processes included) of
	// each transfer above, in the same order.
	putCPU, getCPU, smallCPU, putNoSyncCPU, smallNoSyncCPU []float64
}

// addCPU appends the last transfer's server CPU time to *to, if measured.
func (r *ftpRun) addCPU(to *[]float64) {
	if r.lastCPU >= 0 {
		*to = append(*to, r.lastCPU.Seconds())
	}
}

// runFTP is the "ftp" target (issue 2).
func runFTP(ctx context.Context, e *env) error {
	w, err := generateFTPWorkload(e)
	if err != nil {
		return err
	}
	r := &ftpRun{e: e, w: w}
	wantGate := e.opts.only != serverVsftpd
	wantVs := e.opts.only != serverFTPGate

	var bin string
	if wantGate {
		if bin, err = buildFTPGate(ctx, e); err != nil {
			return err
		}
	}
	var servers []*ftpServer
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	// Passive ranges are chosen apart from each other and from ftpgate's
	// default, which a `make run` started meanwhile would take.
	taken := []portRange{{30000, 30099}}
	if wantVs {
		vs, err := startVsftpd(ctx, e)
		if err != nil {
			return err
		}
		servers = append(servers, vs)
		taken = append(taken, vs.passive)
	}
	if wantGate {
		gate, err := startFTPGate(ctx, e, bin, "ftpgate-fsync", true, taken...)
		if err != nil {
			return err
		}
		servers = append([]*ftpServer{gate}, servers...)
	}
	samples := make(map[string]*ftpSamples, 2)
	for _, s := range servers {
		samples[s.name] = &ftpSamples{}
	}

	start := time.Now()
	for round := range e.opts.rounds {
		order := roundOrder(servers, round)
		e.log.Info("round", "n", round+1, "of", e.opts.rounds, "order", names(order))
		for _, s := range order {
			v, err := r.put(ctx, s, round == 0)
			if err != nil {
				return err
			}
			samples[s.name].put = append(samples[s.name].put, v)
			r.addCPU(&samples[s.name].putCPU)
		}
		for _, s := range order {
			v, err := r.get(ctx, s, round == 0)
			if err != nil {
				return err
			}
			samples[s.name].get = append(samples[s.name].get, v)
			r.addCPU(&samples[s.name].getCPU)
		}
		for _, s := range order {
			v, err := r.mirror(ctx, s, round)
			if err != nil {
				return err
			}
			samples[s.name].small = append(samples[s.name].small, v)
			r.addCPU(&samples[s.name].smallCPU)
		}
	}

	if wantGate {
		// Swap the durable ftpgate for one with storage.fsync = false.
		servers[0].stop()
		servers = servers[1:]
		gate, err := startFTPGate(ctx, e, bin, "ftpgate-nofsync", false, taken...)
		if err != nil {
			return err
		}
		servers = append([]*ftpServer{gate}, servers...)
		for round := range e.opts.rounds {
			order := roundOrder(servers, round)
			e.log.Info("upload round, ftpgate with fsync = false", "n", round+1, "of", e.opts.rounds, "order", names(order))
			for _, s := range order {
				v, err := r.put(ctx, s, false)
				if err != nil {
					return err
				}
				if err := os.Remove(filepath.Join(s.home, "big.bin")); err != nil {
					return fmt.Errorf("%s: remove upload: %w", s.name, err)
				}
				samples[s.name].putNoSync = append(samples[s.name].putNoSync, v)
				r.addCPU(&samples[s.name].putNoSyncCPU)
			}
			// The small files again: what durability costs ftpgate.
			for _, s := range order {
				v, err := r.mirror(ctx, s, e.opts.rounds+round)
				if err != nil {
					return err
				}
				samples[s.name].smallNoSync = append(samples[s.name].smallNoSync, v)
				r.addCPU(&samples[s.name].smallNoSyncCPU)
			}
		}
	}
	e.log.Info("done", "dur", time.Since(start).Round(time.Second))
	return r.report(ctx, samples)
}

// roundOrder alternates which server goes first, so that neither always
// inherits the other's writeback or warm caches.
func roundOrder(servers []*ftpServer, round int) []*ftpServer {
	order := slices.Clone(servers)
	if round%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

func names(servers []*ftpServer) string {
	var n []string
	for _, s := range servers {
		n = append(n, s.name)
	}
	return strings.Join(n, ",")
}

// generateFTPWorkload writes the large file and the small files once, from a
// fixed-seed stream (incompressible, reproducible).
func generateFTPWorkload(e *env) (*ftpWorkload, error) {
	dir := filepath.Join(e.workDir, "src")
	w := &ftpWorkload{
		big:      filepath.Join(dir, "big.bin"),
		bigSize:  int64(e.opts.size),
		smallDir: filepath.Join(dir, "small"),
		files:    e.opts.files,
		fileSize: int64(e.opts.fileSize),
	}
	if err := os.MkdirAll(w.smallDir, 0o755); err != nil {
		return nil, fmt.Errorf("workload: %w", err)
	}
	e.log.Info("generating the workload", "big", formatBytes(w.bigSize), "files", w.files, "file_size", formatBytes(w.fileSize))
	var seed [32]byte
	copy(seed[:], "ftpgate bench ftp workload v1")
	rng := rand.NewChaCha8(seed)

	f, err := os.Create(w.big)
	if err != nil {
		return nil, fmt.Errorf("workload: %w", err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rng, w.bigSize); err != nil {
		f.Close()
		return nil, fmt.Errorf("workload: write %s: %w", w.big, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("workload: write %s: %w", w.big, err)
	}
	h.Sum(w.bigSum[:0])

	buf := make([]byte, w.fileSize)
	for i := range w.files {
		_, _ = rng.Read(buf)
		p := filepath.Join(w.smallDir, fmt.Sprintf("f%05d.bin", i))
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			return nil, fmt.Errorf("workload: %w", err)
		}
	}
	flushAll()
	return w, nil
}

// put uploads the large file as big.bin into the server's login directory
// and returns the throughput in MiB/s. The upload stays for get.
func (r *ftpRun) put(ctx context.Context, s *ftpServer, checkSum bool) (float64, error) {
	e, w := r.e, r.w
	remote := filepath.Join(s.home, "big.bin")
	if err := removeIfExists(remote); err != nil {
		return 0, fmt.Errorf("%s: %w", s.name, err)
	}
	d, err := r.timed(ctx, s, w.bigSize, "put "+lftpQuote(w.big)+" -o big.bin")
	if err != nil {
		return 0, fmt.Errorf("%s: put: %w", s.name, err)
	}
	if err := checkFile(remote, w.bigSize, w.bigSum, checkSum); err != nil {
		return 0, fmt.Errorf("%s: put: %w", s.name, err)
	}
	v := mibPerSec(w.bigSize, d.Seconds())
	e.log.Info("put", "server", s.name, "dur", d.Round(time.Millisecond), "MiB/s", fmt.Sprintf("%.1f", v))
	return v, nil
}

// get downloads big.bin to a local file, checks it, and removes both.
func (r *ftpRun) get(ctx context.Context, s *ftpServer, checkSum bool) (float64, error) {
	e, w := r.e, r.w
	local := filepath.Join(e.workDir, "download.bin")
	if err := removeIfExists(local); err != nil {
		return 0, err
	}
	d, err := r.timed(ctx, s, w.bigSize, "get big.bin -o "+lftpQuote(local))
	if err != nil {
		return 0, fmt.Errorf("%s: get: %w", s.name, err)
	}
	if err := checkFile(local, w.bigSize, w.bigSum, checkSum); err != nil {
		return 0, fmt.Errorf("%s: get: %w", s.name, err)
	}
	for _, p := range []string{local, filepath.Join(s.home, "big.bin")} {
		if err := os.Remove(p); err != nil {
			return 0, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	v := mibPerSec(w.bigSize, d.Seconds())
	e.log.Info("get", "server", s.name, "dur", d.Round(time.Millisecond), "MiB/s", fmt.Sprintf("%.1f", v))
	return v, nil
}

// mirror sends the small files with `mirror -R -P4` into a fresh remote
// directory, checks them, removes them and returns the seconds it took.
func (r *ftpRun) mirror(ctx context.Context, s *ftpServer, round int) (float64, error) {
	e, w := r.e, r.w
	name := "small-" + strconv.Itoa(round)
	remote := filepath.Join(s.home, name)
	if err := os.RemoveAll(remote); err != nil {
		return 0, fmt.Errorf("%s: %w", s.name, err)
	}
	d, err := r.timed(ctx, s, int64(w.files)*w.fileSize, "mirror -R -P4 "+lftpQuote(w.smallDir)+" "+name)
	if err != nil {
		return 0, fmt.Errorf("%s: mirror -R: %w", s.name, err)
	}
	if err := checkDir(remote, w.files, w.fileSize); err != nil {
		return 0, fmt.Errorf("%s: mirror -R: %w", s.name, err)
	}
	// The files stay until the scratch directory goes. Deleting them here
	// made the next round's creates slow for whichever server came next:
	// ext4 without a journal (as on these VMs) skips inodes freed in the
	// last seconds (minutes while their table block is dirty), scanning
	// past each of them on every create, under the directory lock
	// (0.3 ms per file, half the round). That measured the bench's own
	// cleanup, not the servers.
	e.log.Info("mirror -R -P4", "server", s.name, "files", w.files, "dur", d.Round(time.Millisecond))
	return d.Seconds(), nil
}

// timed flushes dirty pages, waits for idle CPUs, recycles bytes of page cache (the size of
// what the command writes), logs in, then times one lftp command. Anything
// lftp prints during the command is logged: it is either an error (and lftp
// then exits) or a warning worth seeing. It also sets r.lastCPU, the CPU
// time the server spent on the command, which unlike the wall time hardly
// depends on what else the machine runs.
func (r *ftpRun) timed(ctx context.Context, s *ftpServer, bytes int64, command string) (time.Duration, error) {
	e := r.e
	flushAll()
	r.timedStarts++
	if idle, ok := waitIdle(ctx, 10*time.Second); !ok {
		r.busyStarts++
		e.log.Warn("the machine stayed busy; this figure is noisy", "server", s.name, "command", command, "cpu_idle", fmt.Sprintf("%.0f%%", idle*100))
	}
	if err := recyclePageCache(e.workDir, bytes); err != nil {
		return 0, err
	}
	sess, err := s.login(ctx)
	if err != nil {
		return 0, err
	}
	defer sess.close()
	r.lastCPU = -1
	cpu0, cpuErr := s.proc.cpu()
	d, out, err := sess.timed(ctx, command)
	if err != nil {
		return 0, err
	}
	if cpu1, err := s.proc.cpu(); cpuErr == nil && err == nil {
		r.lastCPU = cpu1 - cpu0
	}
	if len(out) > 0 {
		e.log.Warn("lftp printed something", "server", s.name, "command", command, "out", strings.Join(firstN(out, 5), " | "), "lines", len(out))
	}
	return d, nil
}

// recyclePageCache writes n bytes to a scratch file and removes it, just
// before a timed transfer. On a VM with free page reporting (virtio_balloon)
// memory freed a few seconds ago has gone back to the host, and faulting it in
// again costs up to 2 s per GiB of new page cache: whichever server went first
// after a pause paid for it (1 GiB downloads measured 250 vs 1250 MiB/s by
// position alone). Pages freed just now are reused at once, so every transfer
// starts with the same warm allocator.
func recyclePageCache(dir string, n int64) error {
	p := filepath.Join(dir, "recycle.tmp")
	f, err := os.Create(p)
	if err != nil {
		return fmt.Errorf("recycle page cache: %w", err)
	}
	buf := make([]byte, 1<<20)
	for left := n; left > 0; left -= int64(len(buf)) {
		chunk := buf[:min(int64(len(buf)), left)]
		if _, err := f.Write(chunk); err != nil {
			f.Close()
			os.Remove(p)
			return fmt.Errorf("recycle page cache: %w", err)
		}
	}
	if err := f.Close(); err != nil {
		os.Remove(p)
		return fmt.Errorf("recycle page cache: %w", err)
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("recycle page cache: %w", err)
	}
	return nil
}

func firstN(xs []string, n int) []string {
	if len(xs) > n {
		return xs[:n]
	}
	return xs
}

// lftpQuote quotes a local path for lftp's command parser.
func lftpQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// checkFile checks the size of p, and its SHA-256 when full is set.
func checkFile(p string, size int64, sum [sha256.Size]byte, full bool) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.Size() != size {
		return fmt.Errorf("%s: size %d, want %d", p, fi.Size(), size)
	}
	if !full {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, bufio.NewReaderSize(f, 1<<20)); err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, sum[:]) {
		return fmt.Errorf("%s: sha256 %x, want %x", p, got, sum)
	}
	return nil
}

// checkDir checks that dir holds n regular files of the given size.
func checkDir(dir string, n int, size int64) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	count := 0
	for _, de := range entries {
		if !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		if fi.Size() != size {
			return fmt.Errorf("%s: size %d, want %d", filepath.Join(dir, de.Name()), fi.Size(), size)
		}
		count++
	}
	if count != n {
		return fmt.Errorf("%s: %d files, want %d", dir, count, n)
	}
	return nil
}

// ftpLine is one row of the report.
type ftpLine struct {
	metric         string
	gate, vs       float64
	unit           string
	ratio          float64 // > 1 means ftpgate is better
	goal           float64
	gateRaw, vsRaw []float64
}

// report prints the medians, ratios and goals; it returns errGoalMissed
// when a ratio is under its goal.
func (r *ftpRun) report(ctx context.Context, samples map[string]*ftpSamples) error {
	e, w := r.e, r.w
	gate, vs := samples[serverFTPGate], samples[serverVsftpd]
	if gate == nil {
		gate = &ftpSamples{}
	}
	if vs == nil {
		vs = &ftpSamples{}
	}
	big := formatBytes(w.bigSize)
	lines := []ftpLine{
		{metric: "upload " + big + " (ftpgate fsync on)", gate: median(gate.put), vs: median(vs.put), unit: "MiB/s", goal: 0.9, gateRaw: gate.put, vsRaw: vs.put},
		{metric: "download " + big, gate: median(gate.get), vs: median(vs.get), unit: "MiB/s", goal: 1.0, gateRaw: gate.get, vsRaw: vs.get},
		{metric: fmt.Sprintf("%d × %s, mirror -R -P4", w.files, formatBytes(w.fileSize)), gate: median(gate.small), vs: median(vs.small), unit: "s", goal: 1.0, gateRaw: gate.small, vsRaw: vs.small},
		{metric: "upload " + big + " (ftpgate fsync off)", gate: median(gate.putNoSync), vs: median(vs.putNoSync), unit: "MiB/s", goal: 1.0, gateRaw: gate.putNoSync, vsRaw: vs.putNoSync},
		{metric: fmt.Sprintf("%d × %s (ftpgate fsync off)", w.files, formatBytes(w.fileSize)), gate: median(gate.smallNoSync), vs: median(vs.smallNoSync), unit: "s", gateRaw: gate.smallNoSync, vsRaw: vs.smallNoSync},
	}
	both := e.opts.only == ""
	for i := range lines {
		l := &lines[i]
		switch {
		case !both || l.gate == 0 || l.vs == 0:
		case l.unit == "s":
			l.ratio = l.vs / l.gate
		default:
			l.ratio = l.gate / l.vs
		}
	}

	out := e.out
	fmt.Fprintf(out, "\nftp benchmark: %d rounds, server order alternating; %s file, %d × %s files; %s\n",
		e.opts.rounds, big, w.files, formatBytes(w.fileSize), toolVersions(ctx))
	fmt.Fprintf(out, "scratch directory %s (both servers write to the same filesystem)\n\n", e.workDir)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tftpgate\tvsftpd\tratio\tgoal\tresult\t")
	missed := 0
	for _, l := range lines {
		if l.gate == 0 && l.vs == 0 {
			continue
		}
		ratio, goal, result := "-", fmt.Sprintf("≥ %.2f", l.goal), "-"
		if l.goal == 0 {
			goal = "-" // shown for comparison
		}
		if l.ratio > 0 {
			ratio = fmt.Sprintf("%.2f", l.ratio)
		}
		if l.ratio > 0 && l.goal > 0 {
			result = "PASS"
			if l.ratio < l.goal {
				result = "MISS"
				missed++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", l.metric, cell(l.gate, l.unit), cell(l.vs, l.unit), ratio, goal, result)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nratio = ftpgate/vsftpd throughput; for the small files vsftpd time / ftpgate time. Above 1 = ftpgate faster.\n")
	fmt.Fprintf(out, "\nper round (medians above):\n")
	for _, l := range lines {
		if len(l.gateRaw) > 0 {
			fmt.Fprintf(out, "  %-36s ftpgate %s\n", l.metric, formatSeries(l.gateRaw, l.unit))
		}
		if len(l.vsRaw) > 0 {
			fmt.Fprintf(out, "  %-36s vsftpd  %s\n", l.metric, formatSeries(l.vsRaw, l.unit))
		}
	}
	r.reportCPU(samples)
	fmt.Fprint(out, `
notes:
  - Timings cover the command only: lftp is started and logged in before the clock starts.
  - ftpgate computes the SHA-256 of every upload; with fsync = true every upload is
    durable before its 226 reply (a large file fsynced with its directory, a small one
    through the commit log: one flush shared by the uploads committing together).
    vsftpd never fsyncs: its uploads are in the page cache.
  - The small files of each round stay until the end of the run: deleting them made the
    next round's creates scan past the freed inodes (ext4 without a journal).
  - The page cache is not dropped between phases (not reliable, needs root, and in a
    container it is shared); every timed transfer starts after a sync(2) and after
    writing and deleting a scratch file of the transfer's size, so that both servers
    get freshly recycled page-cache memory (on VMs that hand free memory back to the
    host, first-touch costs otherwise favour whichever server goes second). The
    downloads read a file that was uploaded moments before, i.e. from memory, for both.
  - Round 1 checks the SHA-256 of the upload and the download; every round checks sizes.
`)
	reportTail(out, nil, r.busyStarts, r.timedStarts, "transfers")
	fmt.Fprintf(out, "\nreproduce: %s\n\n", reproduce(e.opts, "ftp"))
	if missed > 0 {
		return fmt.Errorf("ftp: %d of the goals: %w", missed, errGoalMissed)
	}
	return nil
}

// reportCPU prints the servers' CPU time per transfer: on a shared or busy
// machine the wall-clock ratios above are noisy, these are not.
func (r *ftpRun) reportCPU(samples map[string]*ftpSamples) {
	gate, vs := samples[serverFTPGate], samples[serverVsftpd]
	if gate == nil || vs == nil {
		return
	}
	big := formatBytes(r.w.bigSize)
	rows := []struct {
		metric         string
		gateRaw, vsRaw []float64
	}{
		{"upload " + big + " (ftpgate fsync on)", gate.putCPU, vs.putCPU},
		{"download " + big, gate.getCPU, vs.getCPU},
		{fmt.Sprintf("%d × %s, mirror -R -P4", r.w.files, formatBytes(r.w.fileSize)), gate.smallCPU, vs.smallCPU},
		{"upload " + big + " (ftpgate fsync off)", gate.putNoSyncCPU, vs.putNoSyncCPU},
		{fmt.Sprintf("%d × %s (ftpgate fsync off)", r.w.files, formatBytes(r.w.fileSize)), gate.smallNoSyncCPU, vs.smallNoSyncCPU},
	}
	out := r.e.out
	fmt.Fprintf(out, "\nserver CPU per command (user + system of the server and its session processes, clock ticks of 10 ms; medians):\n\n")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tftpgate\tvsftpd\tvsftpd/ftpgate\t")
	printed := false
	for _, row := range rows {
		g, v := median(row.gateRaw), median(row.vsRaw)
		if len(row.gateRaw) == 0 || len(row.vsRaw) == 0 {
			continue
		}
		ratio := "-"
		if g > 0 {
			ratio = fmt.Sprintf("%.2f", v/g)
		}
		fmt.Fprintf(tw, "%s\t%.2f s\t%.2f s\t%s\t\n", row.metric, g, v, ratio)
		printed = true
	}
	if !printed {
		fmt.Fprintln(out, "  (not measured on this system)")
		return
	}
	tw.Flush()
}

// reproduce is the make command that repeats this run.
func reproduce(o options, target string) string {
	cmd := "make bench-" + target
	if f := o.nonDefault(); f != "" {
		cmd += ` BENCH_FLAGS="` + f + `"`
	}
	return cmd
}

func cell(v float64, unit string) string {
	if v == 0 {
		return "-"
	}
	if unit == "s" {
		return fmt.Sprintf("%.2f s", v)
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

// toolVersions names the Debian packages of the clients and servers, when
// dpkg knows them.
func toolVersions(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Package} ${Version}, ", "lftp", "vsftpd").Output()
	if err != nil {
		return "lftp"
	}
	return strings.TrimSuffix(strings.TrimSpace(string(out)), ",")
}
