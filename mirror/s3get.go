package mirror

import (
	"context"
	"fmt"
	"io"

	"github.com/minio/minio-go/v7"
)

// getStore is an objectStore that can read objects back: the reverse pull.
type getStore interface {
	// Get opens key for reading, with its size, ETag and metadata. With
	// matchETag set it fails with a precondition error when the object
	// changed since it was listed.
	Get(ctx context.Context, bucket, key, matchETag string) (io.ReadCloser, objectInfo, error)
}

var _ getStore = (*S3Store)(nil)

// Get opens key for reading.
func (s *S3Store) Get(ctx context.Context, bucket, key, matchETag string) (io.ReadCloser, objectInfo, error) {
	var opts minio.GetObjectOptions
	if matchETag != "" {
		if err := opts.SetMatchETag(matchETag); err != nil {
			return nil, objectInfo{}, fmt.Errorf("get s3://%s/%s: %w", bucket, key, err)
		}
	}
	obj, err := s.c.GetObject(ctx, bucket, key, opts)
	if err != nil {
		return nil, objectInfo{}, fmt.Errorf("get s3://%s/%s: %w", bucket, key, classifyS3(err))
	}
	st, err := obj.Stat()
	if err != nil {
		obj.Close()
		return nil, objectInfo{}, fmt.Errorf("get s3://%s/%s: %w", bucket, key, classifyS3(err))
	}
	oi := objectInfo{key: st.Key, size: st.Size, etag: st.ETag}
	oi.setMeta(st.UserMetadata)
	return obj, oi, nil
}
