package mirror

import (
	"context"
	"fmt"

	"github.com/minio/minio-go/v7"
)

// EnsureBucket creates bucket when it does not exist. Only the embedded
// default (make run) uses it: for a configured mapping a missing bucket is
// more likely a typo, which the first pass reports.
func (s *S3Store) EnsureBucket(ctx context.Context, bucket string) error {
	ok, err := s.c.BucketExists(ctx, bucket)
	if err != nil {
		return fmt.Errorf("check bucket %s on %s: %w", bucket, s.endpoint, err)
	}
	if ok {
		return nil
	}
	if err := s.c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		return fmt.Errorf("create bucket %s on %s: %w", bucket, s.endpoint, err)
	}
	return nil
}
