package mirror

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"ftpgate/conf"
)

// Upload shapes.
const (
	// multipartMin is the size from which a file goes multipart.
	multipartMin = 64 << 20
	// partSize and partThreads shape a multipart upload: 16 MiB parts, four
	// in flight.
	partSize    = 16 << 20
	partThreads = 4
	// maxCopySize is the largest object a single CopyObject may copy; larger
	// ones are copied part by part (ComposeObject).
	maxCopySize = 5 << 30
	// cleanupTimeout bounds the abort of a failed multipart upload, run on
	// a fresh context since the upload's own may have ended.
	cleanupTimeout = 10 * time.Second
)

// S3Store is an objectStore on an S3 endpoint (MinIO, versitygw, AWS…)
// through minio-go. It is safe for concurrent use.
type S3Store struct {
	c        *minio.Client
	endpoint string
	http     *http.Client // short requests (the batch probe)
	lister   *http.Client // listing pages (s3pages.go); bounded by their context

	mu       sync.Mutex
	batch    batchSupport
	verified bool // a batch was seen extracted
}

type batchSupport int

const (
	batchUnknown batchSupport = iota
	batchYes
	batchNo
)

var (
	_ objectStore    = (*S3Store)(nil)
	_ statStore      = (*S3Store)(nil)
	_ batchStore     = (*S3Store)(nil)
	_ uploadsAborter = (*S3Store)(nil)
)

// NewS3Store makes a client for the [s3] section. It does not connect.
func NewS3Store(c conf.S3) (*S3Store, error) {
	tr, err := minio.DefaultTransport(c.Secure)
	if err != nil {
		return nil, fmt.Errorf("s3 transport: %w", err)
	}
	tr.MaxIdleConnsPerHost = 64
	cl, err := minio.New(c.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(c.AccessKey, c.SecretKey, ""),
		Secure: c.Secure,
		Region: c.Region,
		// Checksums (x-amz-checksum-*) need trailing-header support.
		TrailingHeaders: true,
		// A few quick retries inside minio-go save a multipart upload from
		// one dropped part; the mirror's own backoff handles outages.
		MaxRetries: 3,
		Transport:  tr,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 endpoint %s: %w", c.Endpoint, err)
	}
	return &S3Store{
		c:        cl,
		endpoint: cl.EndpointURL().String(),
		http:     &http.Client{Transport: tr, Timeout: 10 * time.Second},
		lister:   &http.Client{Transport: tr},
	}, nil
}

// Put stores body under key. Below 64 MiB it is one PUT carrying
// x-amz-checksum-sha256 = meta.sha256, so the store rejects bytes that do
// not hash to what the mirror hashed; from 64 MiB it is a multipart upload
// with 16 MiB parts, four at a time, each with a CRC32C the store checks.
// A failed multipart upload is aborted.
func (s *S3Store) Put(ctx context.Context, bucket, key string, body io.Reader, size int64, meta objectMeta) (string, error) {
	um := meta.headers()
	opts := minio.PutObjectOptions{
		UserMetadata:         um,
		ContentType:          "application/octet-stream",
		DisableContentSha256: true, // the checksum below covers the payload
	}
	multipart := size >= multipartMin
	if multipart {
		// an upload of this key left by a killed process: abort it (MinIO
		// lists incomplete uploads by exact key only)
		_ = s.c.RemoveIncompleteUpload(ctx, bucket, key)
		opts.Checksum = minio.ChecksumCRC32C
		opts.PartSize = partSize
		opts.NumThreads = partThreads
	} else {
		um["x-amz-checksum-sha256"] = base64.StdEncoding.EncodeToString(meta.sha256[:])
		opts.DisableMultipart = true
	}
	info, err := s.c.PutObject(ctx, bucket, key, body, size, opts)
	if err != nil {
		if multipart {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			_ = s.c.RemoveIncompleteUpload(cctx, bucket, key)
			cancel()
		}
		return "", fmt.Errorf("put s3://%s/%s: %w", bucket, key, classifyS3(err))
	}
	return info.ETag, nil
}

// Copy copies src to dst keeping src's metadata.
func (s *S3Store) Copy(ctx context.Context, bucket, src, dst, matchETag string, size int64) (string, error) {
	from := minio.CopySrcOptions{Bucket: bucket, Object: src, MatchETag: matchETag}
	to := minio.CopyDestOptions{Bucket: bucket, Object: dst}
	var info minio.UploadInfo
	var err error
	if size > maxCopySize {
		info, err = s.c.ComposeObject(ctx, to, from)
	} else {
		info, err = s.c.CopyObject(ctx, to, from)
	}
	if err != nil {
		return "", fmt.Errorf("copy s3://%s/%s to %s: %w", bucket, src, dst, classifyS3(err))
	}
	return info.ETag, nil
}

// Delete removes key.
func (s *S3Store) Delete(ctx context.Context, bucket, key string) error {
	if err := s.c.RemoveObject(ctx, bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("delete s3://%s/%s: %w", bucket, key, classifyS3(err))
	}
	return nil
}

// List lists prefix recursively in key order. withMeta asks for user
// metadata in the listing, a MinIO extension other stores ignore (their
// objects then come without metadata).
func (s *S3Store) List(ctx context.Context, bucket, prefix string, withMeta bool) iter.Seq2[objectInfo, error] {
	if s.pagesSupported() {
		return s.listPages(ctx, bucket, prefix, withMeta)
	}
	return func(yield func(objectInfo, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		noOwner := false
		ch := s.c.ListObjects(ctx, bucket, minio.ListObjectsOptions{
			Prefix: prefix, Recursive: true, WithMetadata: withMeta, FetchOwner: &noOwner,
		})
		for o := range ch {
			if o.Err != nil {
				yield(objectInfo{}, fmt.Errorf("list s3://%s/%s: %w", bucket, prefix, classifyS3(o.Err)))
				return
			}
			oi := objectInfo{key: o.Key, size: o.Size, etag: o.ETag}
			if withMeta && len(o.UserMetadata) > 0 {
				oi.setMeta(o.UserMetadataStripped)
			}
			if !yield(oi, nil) {
				return
			}
		}
		if err := ctx.Err(); err != nil {
			yield(objectInfo{}, fmt.Errorf("list s3://%s/%s: %w", bucket, prefix, err))
		}
	}
}

// listPages is List through ListPage, one page after the other.
func (s *S3Store) listPages(ctx context.Context, bucket, prefix string, withMeta bool) iter.Seq2[objectInfo, error] {
	return func(yield func(objectInfo, error) bool) {
		q := pageQuery{prefix: prefix, withMeta: withMeta}
		for {
			p, err := s.ListPage(ctx, bucket, q)
			if err != nil {
				yield(objectInfo{}, err)
				return
			}
			for _, o := range p.objects {
				if !yield(o, nil) {
					return
				}
			}
			if p.next == "" {
				return
			}
			q.token = p.next
		}
	}
}

// Stat reads one object's size, ETag and metadata.
func (s *S3Store) Stat(ctx context.Context, bucket, key string) (objectInfo, error) {
	o, err := s.c.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return objectInfo{}, fmt.Errorf("stat s3://%s/%s: %w", bucket, key, classifyS3(err))
	}
	oi := objectInfo{key: o.Key, size: o.Size, etag: o.ETag}
	oi.setMeta(o.UserMetadata)
	return oi, nil
}

// AbortUploads aborts the incomplete multipart uploads under prefix: what
// a killed process left behind (invisible, but it takes space). MinIO
// lists them by exact key only; Put aborts those of its key.
func (s *S3Store) AbortUploads(ctx context.Context, bucket, prefix string) (int, error) {
	seen := make(map[string]bool)
	for u := range s.c.ListIncompleteUploads(ctx, bucket, prefix, true) {
		if u.Err != nil {
			return len(seen), fmt.Errorf("list incomplete uploads s3://%s/%s: %w", bucket, prefix, classifyS3(u.Err))
		}
		if seen[u.Key] {
			continue
		}
		seen[u.Key] = true
		if err := s.c.RemoveIncompleteUpload(ctx, bucket, u.Key); err != nil {
			return len(seen), fmt.Errorf("abort upload s3://%s/%s: %w", bucket, u.Key, classifyS3(err))
		}
	}
	return len(seen), nil
}

// PutBatch stores objs with one request: a tar that MinIO extracts
// (snowball), each entry with its own metadata. Only MinIO does this, so
// the store is asked first (its health endpoint), and the first batch is
// checked by a Stat of one of its keys; errBatchUnsupported says to use
// single PUTs. The store verifies the archive as a whole by its
// Content-MD5.
func (s *S3Store) PutBatch(ctx context.Context, bucket string, objs []batchObject) error {
	if len(objs) == 0 {
		return nil
	}
	if err := s.batchProbe(ctx); err != nil {
		return err
	}
	ch := make(chan minio.SnowballObject, len(objs))
	for _, o := range objs {
		h := make(http.Header, 2)
		for k, v := range o.meta.headers() {
			h.Set(k, v)
		}
		ch <- minio.SnowballObject{Key: o.key, Size: int64(len(o.data)), Content: bytes.NewReader(o.data), Headers: h}
	}
	close(ch)
	err := s.c.PutObjectsSnowball(ctx, bucket, minio.SnowballOptions{
		InMemory: true,
		// Content-MD5 over the archive, no payload signing: MinIO's snowball
		// handler does not decode unsigned trailers, and a streaming
		// signature costs a SHA-256 of the archive on both sides.
		Opts: minio.PutObjectOptions{SendContentMd5: true, DisableContentSha256: true},
	}, ch)
	if err != nil {
		return fmt.Errorf("batch put s3://%s (%d objects): %w", bucket, len(objs), classifyS3(err))
	}
	s.mu.Lock()
	verified := s.verified
	s.mu.Unlock()
	if verified {
		return nil
	}
	if _, err := s.Stat(ctx, bucket, objs[0].key); err != nil {
		if classify(err) == classGone {
			s.mu.Lock()
			s.batch = batchNo
			s.mu.Unlock()
			return fmt.Errorf("batch put s3://%s: %s missing after the upload: %w", bucket, objs[0].key, errBatchUnsupported)
		}
		return fmt.Errorf("batch put s3://%s: check %s: %w", bucket, objs[0].key, err)
	}
	s.mu.Lock()
	s.verified = true
	s.mu.Unlock()
	return nil
}

// batchProbe asks once whether the store is MinIO: only MinIO answers 200
// on /minio/health/live.
func (s *S3Store) batchProbe(ctx context.Context) error {
	s.mu.Lock()
	st := s.batch
	s.mu.Unlock()
	switch st {
	case batchYes:
		return nil
	case batchNo:
		return errBatchUnsupported
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.endpoint+"/minio/health/live", nil)
	if err != nil {
		return fmt.Errorf("batch probe: %w", err)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("batch probe %s: %w", s.endpoint, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	st = batchNo
	if resp.StatusCode == http.StatusOK {
		st = batchYes
	}
	s.mu.Lock()
	s.batch = st
	s.mu.Unlock()
	if st == batchNo {
		return errBatchUnsupported
	}
	return nil
}

// classifyS3 wraps an S3 error response in a storeError that says what to
// do about it. Errors without a response (network) are left to classify.
func classifyS3(err error) error {
	var er minio.ErrorResponse
	if !errors.As(err, &er) {
		return err
	}
	class := classFatal
	switch {
	case er.Code == minio.NoSuchKey || er.Code == "PreconditionFailed" || er.StatusCode == http.StatusPreconditionFailed:
		class = classGone
	case er.Code == "BadDigest" || er.Code == "XAmzContentChecksumMismatch" || er.Code == "InvalidDigest" ||
		er.Code == "IncompleteBody" || er.Code == "XAmzContentSHA256Mismatch":
		class = classMismatch
	case er.StatusCode >= 500 || er.StatusCode == http.StatusTooManyRequests ||
		er.StatusCode == http.StatusRequestTimeout ||
		er.Code == "SlowDown" || er.Code == "RequestTimeout" || er.Code == "InternalError" ||
		er.Code == "ServiceUnavailable" || er.Code == "XMinioServerNotInitialized" ||
		er.Code == "OperationAborted" || er.Code == "RequestTimeTooSkewed":
		class = classRetry
	}
	return &storeError{class: class, err: err}
}
