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

// ftpLogin is what the Go FTP client needs to log in.
type ftpLogin struct {
	addr, user, password string
}

// measureLatency uploads the warm-up files and then the measured ones with
// jlaffaye/ftp into latencyDir, and polls the bucket for each with
// StatObject every latencyPoll from the moment STOR returned (the 226 reply
// was read). An object counts as visible once it has the full size.
func (r *mirrorRun) measureLatency(ctx context.Context, side string, login ftpLogin, bucket string) (latencySeries, error) {
	var s latencySeries
	c, err := ftp.Dial(login.addr, ftp.DialWithTimeout(10*time.Second), ftp.DialWithContext(ctx))
	if err != nil {
		return s, fmt.Errorf("%s: dial %s: %w", side, login.addr, err)
	}
	defer c.Quit()
	if err := c.Login(login.user, login.password); err != nil {
		return s, fmt.Errorf("%s: login as %s: %w", side, login.user, err)
	}
	var seed [32]byte
	copy(seed[:], "ftpgate bench mirror latency "+side)
	rng := rand.NewChaCha8(seed)
	buf := make([]byte, latencyFileSize)
	for i := range latencyWarmup + latencyFiles {
		warm := i < latencyWarmup
		name := fmt.Sprintf("f%03d.bin", i-latencyWarmup)
		limit := latencyLimit
		if warm {
			name, limit = fmt.Sprintf("warm%d.bin", i), warmupLimit
		}
		_, _ = rng.Read(buf)
		if err := c.Stor(path.Join(latencyDir, name), bytes.NewReader(buf)); err != nil {
			return s, fmt.Errorf("%s: STOR %s: %w", side, name, err)
		}
		t0 := time.Now()
		d, ok, early, err := r.waitVisible(ctx, bucket, name, latencyFileSize, t0, limit)
		if err != nil {
			return s, fmt.Errorf("%s: %w", side, err)
		}
		if warm {
			if !ok {
				return s, fmt.Errorf("%s: warm-up file %s not in bucket %s within %s: the mirror does not run", side, name, bucket, limit)
			}
			continue
		}
		s.earlyStat += early
		if !ok {
			s.lost++
			r.e.log.Warn("object not visible in time", "side", side, "key", name, "limit", limit)
		}
		s.samples = append(s.samples, d)
	}
	return s, nil
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
// smallest value that at least p % of the samples do not exceed.
func percentile(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// latencyAnchor is the vsftpd + `mc mirror --watch` side of (a): vsftpd
// writes into <home>/lat, which mc watches and mirrors to a fresh bucket.
func (r *mirrorRun) latencyAnchor(ctx context.Context) (latencySeries, error) {
	e := r.e
	vs, err := startVsftpd(ctx, e, portRange{30000, 30099})
	if err != nil {
		return latencySeries{}, err
	}
	defer vs.stop()
	r.vsPassive = vs.passive
	defer func() { r.vsPassive = portRange{} }()
	watched := filepath.Join(vs.home, latencyDir)
	if err := os.RemoveAll(watched); err != nil {
		return latencySeries{}, err
	}
	if err := os.Mkdir(watched, 0o755); err != nil {
		return latencySeries{}, err
	}
	if err := chownTo(watched, vsftpdUser); err != nil {
		return latencySeries{}, err
	}
	bucket := "lat-mc"
	if err := r.s3.makeBucket(ctx, bucket); err != nil {
		return latencySeries{}, err
	}
	mc, err := startProcess("mc", filepath.Join(r.dir, "logs", "lat-mc-watch.log"), r.mcEnv(),
		r.mcBin, "--quiet", "mirror", "--watch", "--overwrite", "--remove", watched, mcAlias+"/"+bucket)
	if err != nil {
		return latencySeries{}, err
	}
	defer mc.stop(5 * time.Second)
	e.log.Info("latency: vsftpd + mc mirror --watch", "watched", watched, "bucket", bucket)
	s, err := r.measureLatency(ctx, "vsftpd+mc", ftpLogin{addr: vs.addr, user: vs.user, password: vs.password}, bucket)
	if err != nil {
		return s, fmt.Errorf("%w\n%s", err, mc.logTail(20))
	}
	select {
	case <-mc.done:
		return s, fmt.Errorf("mc mirror --watch exited during the run: %v\n%s", mc.err, mc.logTail(20))
	default:
	}
	return s, nil
}

// latencyGate is the ftpgate side of (a): `ftpgate serve` with its root's
// lat/ mapped to a fresh bucket, the admin user uploading into it.
func (r *mirrorRun) latencyGate(ctx context.Context) (latencySeries, error) {
	bucket := "lat-ftpgate"
	if err := r.s3.makeBucket(ctx, bucket); err != nil {
		return latencySeries{}, err
	}
	const label = "lat-ftpgate"
	g, err := r.writeGateConfig(label, filepath.Join(r.dir, label, "root", latencyDir), bucket)
	if err != nil {
		return latencySeries{}, err
	}
	proc, err := r.startServe(ctx, g, 60*time.Second)
	if err != nil {
		return latencySeries{}, err
	}
	defer proc.stop(10 * time.Second)
	r.e.log.Info("latency: ftpgate serve", "addr", g.ftpAddr, "bucket", bucket, "log", proc.logPath)
	s, err := r.measureLatency(ctx, serverFTPGate, ftpLogin{addr: g.ftpAddr, user: "bench", password: r.adminPassword}, bucket)
	if err != nil {
		return s, fmt.Errorf("%w\n%s", err, proc.logTail(20))
	}
	return s, nil
}
