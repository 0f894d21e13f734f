package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// minioServer is the one MinIO server of a mirror run, started from the
// binary `make deps-bench` installs. Its client is safe for concurrent use;
// the rest is not.
type minioServer struct {
	bin       string
	endpoint  string // 127.0.0.1:port of the S3 API
	accessKey string
	secretKey string
	proc      *process
	client    *minio.Client
}

// toolPath finds a program bench drives: the repository's bin/ (where the
// Makefile installs it) first, then $PATH.
func toolPath(e *env, name string) (string, error) {
	p := filepath.Join(e.repoRoot, "bin", name)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found in %s or $PATH (make deps-bench installs it)", name, filepath.Join(e.repoRoot, "bin"))
}

// startMinIO runs MinIO on a free loopback port with its data under dir and
// waits until it serves an authenticated request.
func startMinIO(ctx context.Context, e *env, dir string) (*minioServer, error) {
	bin, err := toolPath(e, "minio")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, fmt.Errorf("minio: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &minioServer{
		bin:       bin,
		endpoint:  "127.0.0.1:" + strconv.Itoa(port),
		accessKey: "benchadmin",
		secretKey: rand.Text(),
	}
	env := append(os.Environ(), "MINIO_ROOT_USER="+s.accessKey, "MINIO_ROOT_PASSWORD="+s.secretKey, "MINIO_BROWSER=off")
	s.proc, err = startProcess("minio", filepath.Join(dir, "minio.log"), env,
		bin, "server", "--quiet", "--address", s.endpoint, "--console-address", "127.0.0.1:0", data)
	if err != nil {
		return nil, err
	}
	s.client, err = minio.New(s.endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(s.accessKey, s.secretKey, ""),
		Region: "us-east-1", // no bucket-location look-ups in the timed polls
	})
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("minio client: %w", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := s.ready(ctx)
		if err == nil {
			break
		}
		select {
		case <-s.proc.done:
			return nil, fmt.Errorf("minio exited during start-up: %v\n%s", s.proc.err, s.proc.logTail(20))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("minio on %s not ready within 60s: %w\n%s", s.endpoint, err, s.proc.logTail(20))
		}
	}
	e.log.Info("minio ready", "endpoint", s.endpoint, "data", data)
	return s, nil
}

// ready reports whether MinIO is live and answers an authenticated call.
func (s *minioServer) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.endpoint+"/minio/health/live", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health/live: %s", resp.Status)
	}
	_, err = s.client.ListBuckets(ctx)
	return err
}

func (s *minioServer) stop() { s.proc.stop(10 * time.Second) }

// url is the endpoint with the root credentials, as mc's MC_HOST_<alias>
// takes it.
func (s *minioServer) url() string {
	return "http://" + s.accessKey + ":" + s.secretKey + "@" + s.endpoint
}

func (s *minioServer) makeBucket(ctx context.Context, name string) error {
	if err := s.client.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		return fmt.Errorf("make bucket %s: %w", name, err)
	}
	return nil
}

// dropBucket removes a bucket and everything in it (MinIO's force delete).
func (s *minioServer) dropBucket(ctx context.Context, name string) error {
	if err := s.client.RemoveBucketWithOptions(ctx, name, minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
		return fmt.Errorf("remove bucket %s: %w", name, err)
	}
	return nil
}

// bucketSummary is what a listing of a bucket found.
type bucketSummary struct {
	objects  int       // every object
	sized    int       // objects of the expected size
	newest   time.Time // latest LastModified
	newestAt string    // its key
}

// summarize lists bucket and counts the objects of the given size, leaving
// out the keys in skip.
func (s *minioServer) summarize(ctx context.Context, bucket string, size int64, skip ...string) (bucketSummary, error) {
	var sum bucketSummary
	for o := range s.client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			return sum, fmt.Errorf("list %s: %w", bucket, o.Err)
		}
		if skipped(o.Key, skip) {
			continue
		}
		sum.objects++
		if o.Size == size {
			sum.sized++
		}
		if o.LastModified.After(sum.newest) {
			sum.newest, sum.newestAt = o.LastModified, o.Key
		}
	}
	return sum, nil
}

func skipped(key string, skip []string) bool {
	for _, s := range skip {
		if key == s || strings.HasSuffix(key, "/"+s) {
			return true
		}
	}
	return false
}

// statSize is the size of an object, or ok = false while it does not exist.
func (s *minioServer) statSize(ctx context.Context, bucket, key string) (size int64, ok bool, err error) {
	info, err := s.client.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
	if err != nil {
		var er minio.ErrorResponse
		if errors.As(err, &er) && (er.StatusCode == http.StatusNotFound || er.Code == minio.NoSuchKey) {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("stat %s/%s: %w", bucket, key, err)
	}
	return info.Size, true, nil
}

// listSize is statSize through a listing of the key as a prefix (one key at
// most). MinIO serves a listing without the per-object lock that a HEAD
// takes, so polling this way does not slow down, nor get slowed down by, a
// PUT of the same key.
func (s *minioServer) listSize(ctx context.Context, bucket, key string) (size int64, ok bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range s.client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: key, MaxKeys: 1}) {
		if o.Err != nil {
			return 0, false, fmt.Errorf("list %s/%s: %w", bucket, key, o.Err)
		}
		if o.Key == key {
			return o.Size, true, nil
		}
	}
	return 0, false, nil
}
