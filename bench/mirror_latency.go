package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/jlaffaye/ftp"
)

// The latency workload: 1 KiB files uploaded one at a time, each waited for
// in the bucket before the next one goes.
const (
	latencyFiles    = 100
	latencyWarmup   = 5
	latencyFileSize = 1 << 10
	latencyPoll     = 2 * time.Millisecond
	latencyLimit    = 10 * time.Second // a measured file not visible by then counts as lost
	warmupLimit     = 60 * time.Second // the first files also wait for the watcher to start
	latencyDir      = "lat"            // the watched directory, below the FTP user's login directory
	// lockWait is the call duration taken as a wait in MinIO's lock retry
	// loop (a sleep of up to 50 ms): idle calls take about a millisecond.
	lockWait = 10 * time.Millisecond
)

// probe is how the polling client asks whether an object is there.
type probe int

const (
	// probeStat is StatObject (a HEAD): what the goal is stated for.
	probeStat probe = iota
	// probeList is ListObjects of the key as a prefix: no object lock in
	// MinIO. A HEAD on a key that a PUT holds (or the other way round)
	// waits in MinIO's lock retry loop, which sleeps a random 0–50 ms
	// (internal/lsync lockRetryInterval), so 2 ms HEAD polls add that to
	// whichever side they collide with. Measured on an idle MinIO here:
	// objects became stat-able p50 19 ms / p99 50 ms after their PUT had
	// returned, listable p50 0.7 ms / p99 2-7 ms.
	probeList
)

// probeWarmup marks a warm-up file for uploadAndWait; it polls with
// StatObject.
const probeWarmup probe = -1

func (p probe) String() string {
	if p == probeList {
		return "ListObjects"
	}
	return "StatObject"
}

// latencySeries is one side's upload-complete → object-visible series.
type latencySeries struct {
	samples   []time.Duration // measured files, in upload order; a lost one counts as latencyLimit
	lost      int             // measured files not visible (with the right size) within latencyLimit
	earlyStat int             // polls that found the object with a wrong size (a partial upload)
	stats     []time.Duration // the duration of every probe call of the measured files
	polls     []int           // probe calls per measured file
	locked    int             // measured files with a call over lockWait
}

// latencySide is one running side of (a): an FTP server whose uploads into
// latencyDir some mirror copies to bucket, and the Go client logged in to it.
type latencySide struct {
	name   string
	bucket string
	conn   *ftp.ServerConn
	rng    *rand.ChaCha8
	series [2]latencySeries // by probe
	check  func() error     // reports a mirror that died; may be nil
	stop   func()           // stops what the side started
}

// latency is (a). Both sides run at the same time, idle but for the one
// file in flight, and the measured files alternate between them (the order
// flipping every file), so that both see the same machine: on a shared box
// a burst of load elsewhere otherwise lands on one side's series only.
func (r *mirrorRun) latency(ctx context.Context) error {
	var sides []*latencySide
	defer func() {
		for _, s := range sides {
			s.stop()
		}
	}()
	if r.wantAnchor {
		s, err := r.latencyAnchor(ctx)
		if err != nil {
			return err
		}
		sides = append(sides, s)
	}
	if r.wantGate {
		s, err := r.latencyGate(ctx)
		if err != nil {
			return err
		}
		sides = append(sides, s)
	}
	buf := make([]byte, latencyFileSize)
	for _, s := range sides {
		for i := range latencyWarmup {
			if _, err := r.uploadAndWait(ctx, s, fmt.Sprintf("warm%d.bin", i), buf, warmupLimit, probeWarmup); err != nil {
				return err
			}
		}
	}
	flushAll()
	r.timedStarts++
	if idle, ok := waitIdle(ctx, 30*time.Second); !ok {
		r.busyStarts++
		r.e.log.Warn("the machine stayed busy; the latency figures are noisy", "cpu_idle", fmt.Sprintf("%.0f%%", idle*100))
	}
	for _, p := range []probe{probeStat, probeList} {
		r.e.log.Info("latency: measuring", "files", latencyFiles, "sides", len(sides), "probe", p.String())
		for i := range latencyFiles {
			order := sides
			if i%2 == 1 {
				order = slices.Clone(sides)
				slices.Reverse(order)
			}
			for _, s := range order {
				name := fmt.Sprintf("%c%03d.bin", "sl"[p], i)
				if _, err := r.uploadAndWait(ctx, s, name, buf, latencyLimit, p); err != nil {
					return err
				}
			}
		}
	}
	for _, s := range sides {
		if s.check != nil {
			if err := s.check(); err != nil {
				return err
			}
		}
		switch s.name {
		case toolGate:
			r.res.latGate = s.series
		default:
			r.res.latAnchor = s.series
		}
		for _, p := range []probe{probeStat, probeList} {
			ls := s.series[p]
			r.e.log.Info("latency", "side", s.name, "probe", p.String(), "p50", ms(percentile(ls.samples, 50)), "p99", ms(percentile(ls.samples, 99)), "lost", ls.lost)
		}
	}
	return nil
}

// uploadAndWait sends one file of fresh random bytes with STOR and polls
// the bucket for it with StatObject every latencyPoll from the moment STOR
// returned (the 226 reply was read). The object counts as visible once it
// has the full size. A warm-up file (p = probeWarmup, polled with
// StatObject) that does not show up is an error; a measured one is counted
// as lost.
func (r *mirrorRun) uploadAndWait(ctx context.Context, s *latencySide, name string, buf []byte, limit time.Duration, p probe) (time.Duration, error) {
	warm := p == probeWarmup
	if warm {
		p = probeStat
	}
	_, _ = s.rng.Read(buf)
	if err := s.conn.Stor(path.Join(latencyDir, name), bytes.NewReader(buf)); err != nil {
		return 0, fmt.Errorf("%s: STOR %s: %w", s.name, name, err)
	}
	t0 := time.Now()
	v, err := r.waitVisible(ctx, p, s.bucket, name, int64(len(buf)), t0, limit)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", s.name, err)
	}
	d, ok := v.d, v.ok
	if warm {
		if !ok {
			return 0, fmt.Errorf("%s: warm-up file %s not in bucket %s within %s: the mirror does not run", s.name, name, s.bucket, limit)
		}
		return d, nil
	}
	ls := &s.series[p]
	ls.earlyStat += v.early
	ls.stats = append(ls.stats, v.stats...)
	ls.polls = append(ls.polls, len(v.stats))
	if slices.ContainsFunc(v.stats, func(d time.Duration) bool { return d > lockWait }) {
		ls.locked++
	}
	if !ok {
		ls.lost++
		r.e.log.Warn("object not visible in time", "side", s.name, "key", name, "limit", limit, "probe", p.String())
	}
	ls.samples = append(ls.samples, d)
	return d, nil
}

// visibility is the outcome of one waitVisible.
type visibility struct {
	d     time.Duration   // t0 until the return of the call that saw the object
	ok    bool            // seen within the limit
	early int             // calls that saw the object with another size
	stats []time.Duration // the duration of each probe call
}

// waitVisible asks with probe p at t0, t0+latencyPoll, t0+2·latencyPoll …
// (at once when a call ran late) until the object has size bytes.
func (r *mirrorRun) waitVisible(ctx context.Context, p probe, bucket, key string, size int64, t0 time.Time, limit time.Duration) (visibility, error) {
	var v visibility
	ask := r.s3.statSize
	if p == probeList {
		ask = r.s3.listSize
	}
	for i := 1; ; i++ {
		callStart := time.Now()
		got, exists, err := ask(ctx, bucket, key)
		v.stats = append(v.stats, time.Since(callStart))
		if err != nil {
			return v, err
		}
		if exists && got == size {
			v.d, v.ok = time.Since(t0), true
			return v, nil
		}
		if exists {
			v.early++
		}
		if time.Since(t0) >= limit {
			v.d = limit
			return v, nil
		}
		if wait := time.Until(t0.Add(time.Duration(i) * latencyPoll)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return v, ctx.Err()
			}
		}
	}
}

// percentile is the nearest-rank percentile p (0 < p ≤ 100) of xs: the
// smallest value that at least p % of the samples do not exceed; p = 0
// gives the minimum.
func percentile(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// dialSide logs the Go FTP client in to a side.
func dialSide(ctx context.Context, name, addr, user, password string) (*ftp.ServerConn, error) {
	c, err := ftp.Dial(addr, ftp.DialWithTimeout(10*time.Second), ftp.DialWithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("%s: dial %s: %w", name, addr, err)
	}
	if err := c.Login(user, password); err != nil {
		c.Quit()
		return nil, fmt.Errorf("%s: login as %s: %w", name, user, err)
	}
	return c, nil
}

func sideRNG(name string) *rand.ChaCha8 {
	var seed [32]byte
	copy(seed[:], "ftpgate bench mirror latency "+name)
	return rand.NewChaCha8(seed)
}

// latencyAnchor starts the vsftpd + `mc mirror --watch` side of (a):
// vsftpd writes into <home>/lat, which mc watches and mirrors to a fresh
// bucket.
func (r *mirrorRun) latencyAnchor(ctx context.Context) (s *latencySide, err error) {
	const name = "vsftpd+mc"
	var undo []func()
	defer func() {
		if err != nil {
			for _, f := range slices.Backward(undo) {
				f()
			}
		}
	}()
	vs, err := startVsftpd(ctx, r.e, portRange{30000, 30099})
	if err != nil {
		return nil, err
	}
	undo = append(undo, vs.stop)
	r.vsPassive = vs.passive
	watched := filepath.Join(vs.home, latencyDir)
	if err := os.RemoveAll(watched); err != nil {
		return nil, err
	}
	if err := os.Mkdir(watched, 0o755); err != nil {
		return nil, err
	}
	if err := chownTo(watched, vsftpdUser); err != nil {
		return nil, err
	}
	bucket := "lat-mc"
	if err := r.s3.makeBucket(ctx, bucket); err != nil {
		return nil, err
	}
	mc, err := startProcess("mc", filepath.Join(r.dir, "logs", "lat-mc-watch.log"), r.mcEnv(),
		r.mcBin, "--quiet", "mirror", "--watch", "--overwrite", "--remove", watched, mcAlias+"/"+bucket)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { mc.stop(5 * time.Second) })
	conn, err := dialSide(ctx, name, vs.addr, vs.user, vs.password)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { conn.Quit() })
	r.e.log.Info("latency: vsftpd + mc mirror --watch", "ftp", vs.addr, "watched", watched, "bucket", bucket)
	return &latencySide{
		name: name, bucket: bucket, conn: conn, rng: sideRNG(name),
		check: func() error { return exitedEarly(mc, "mc mirror --watch") },
		stop: func() {
			for _, f := range slices.Backward(undo) {
				f()
			}
			r.vsPassive = portRange{}
		},
	}, nil
}

// latencyGate starts the ftpgate side of (a): `ftpgate serve` with its
// root's lat/ mapped to a fresh bucket, the admin user uploading into it.
func (r *mirrorRun) latencyGate(ctx context.Context) (*latencySide, error) {
	bucket := "lat-ftpgate"
	if err := r.s3.makeBucket(ctx, bucket); err != nil {
		return nil, err
	}
	const label = "lat-ftpgate"
	g, err := r.writeGateConfig(label, filepath.Join(r.dir, label, "root", latencyDir), bucket)
	if err != nil {
		return nil, err
	}
	proc, err := r.startServe(ctx, g, 60*time.Second)
	if err != nil {
		return nil, err
	}
	conn, err := dialSide(ctx, toolGate, g.ftpAddr, "bench", r.adminPassword)
	if err != nil {
		proc.stop(10 * time.Second)
		return nil, err
	}
	r.e.log.Info("latency: ftpgate serve", "ftp", g.ftpAddr, "bucket", bucket, "log", proc.logPath)
	return &latencySide{
		name: toolGate, bucket: bucket, conn: conn, rng: sideRNG(toolGate),
		check: func() error { return exitedEarly(proc, "ftpgate serve") },
		stop: func() {
			conn.Quit()
			proc.stop(10 * time.Second)
		},
	}, nil
}

// exitedEarly is an error when p, which should still run, has exited.
func exitedEarly(p *process, what string) error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited during the run: %v\n%s", what, p.err, p.logTail(20))
	default:
		return nil
	}
}
