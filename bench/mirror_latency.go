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
)

// latencySeries is one side's upload-complete → object-visible series.
type latencySeries struct {
	samples   []time.Duration // measured files, in upload order; a lost one counts as latencyLimit
	lost      int             // measured files not visible (with the right size) within latencyLimit
	earlyStat int             // polls that found the object with a wrong size (a partial upload)
}

// latencySide is one running side of (a): an FTP server whose uploads into
// latencyDir some mirror copies to bucket, and the Go client logged in to it.
type latencySide struct {
	name   string
	bucket string
	conn   *ftp.ServerConn
	rng    *rand.ChaCha8
	series latencySeries
	check  func() error // reports a mirror that died; may be nil
	stop   func()       // stops what the side started
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
			if _, err := r.uploadAndWait(ctx, s, fmt.Sprintf("warm%d.bin", i), buf, warmupLimit, true); err != nil {
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
	r.e.log.Info("latency: measuring", "files", latencyFiles, "sides", len(sides))
	for i := range latencyFiles {
		order := sides
		if i%2 == 1 {
			order = slices.Clone(sides)
			slices.Reverse(order)
		}
		for _, s := range order {
			if _, err := r.uploadAndWait(ctx, s, fmt.Sprintf("f%03d.bin", i), buf, latencyLimit, false); err != nil {
				return err
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
		r.e.log.Info("latency", "side", s.name, "p50", ms(percentile(s.series.samples, 50)), "p99", ms(percentile(s.series.samples, 99)), "lost", s.series.lost)
	}
	return nil
}

// uploadAndWait sends one file of fresh random bytes with STOR and polls
// the bucket for it with StatObject every latencyPoll from the moment STOR
// returned (the 226 reply was read). The object counts as visible once it
// has the full size. A warm-up file that does not show up is an error; a
// measured one is counted as lost.
func (r *mirrorRun) uploadAndWait(ctx context.Context, s *latencySide, name string, buf []byte, limit time.Duration, warm bool) (time.Duration, error) {
	_, _ = s.rng.Read(buf)
	if err := s.conn.Stor(path.Join(latencyDir, name), bytes.NewReader(buf)); err != nil {
		return 0, fmt.Errorf("%s: STOR %s: %w", s.name, name, err)
	}
	t0 := time.Now()
	d, ok, early, err := r.waitVisible(ctx, s.bucket, name, int64(len(buf)), t0, limit)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", s.name, err)
	}
	if warm {
		if !ok {
			return 0, fmt.Errorf("%s: warm-up file %s not in bucket %s within %s: the mirror does not run", s.name, name, s.bucket, limit)
		}
		return d, nil
	}
	s.series.earlyStat += early
	if !ok {
		s.series.lost++
		r.e.log.Warn("object not visible in time", "side", s.name, "key", name, "limit", limit)
	}
	s.series.samples = append(s.series.samples, d)
	return d, nil
}

// waitVisible polls StatObject at t0, t0+latencyPoll, t0+2·latencyPoll …
// (at once when a call ran late) until the object has size bytes, and
// returns the time from t0 to the return of the call that saw it.
func (r *mirrorRun) waitVisible(ctx context.Context, bucket, key string, size int64, t0 time.Time, limit time.Duration) (d time.Duration, ok bool, early int, err error) {
	for i := 1; ; i++ {
		got, exists, err := r.s3.statSize(ctx, bucket, key)
		if err != nil {
			return 0, false, early, err
		}
		if exists && got == size {
			return time.Since(t0), true, early, nil
		}
		if exists {
			early++
		}
		if time.Since(t0) >= limit {
			return limit, false, early, nil
		}
		if wait := time.Until(t0.Add(time.Duration(i) * latencyPoll)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return 0, false, early, ctx.Err()
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
