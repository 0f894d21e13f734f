package mirror

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/minio/minio-go/v7"
)

var _ dirLister = (*S3Store)(nil)

// ListDir lists one level of prefix.
func (s *S3Store) ListDir(ctx context.Context, bucket, prefix string, withMeta bool, max int) ([]objectInfo, []string, bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	noOwner := false
	var objs []objectInfo
	var dirs []string
	for o := range s.c.ListObjects(ctx, bucket, minio.ListObjectsOptions{
		Prefix: prefix, Recursive: false, WithMetadata: withMeta, FetchOwner: &noOwner,
	}) {
		if o.Err != nil {
			return nil, nil, false, fmt.Errorf("list s3://%s/%s: %w", bucket, prefix, classifyS3(o.Err))
		}
		if len(objs)+len(dirs) >= max {
			return nil, nil, true, nil
		}
		if strings.HasSuffix(o.Key, "/") {
			// a common prefix, or a directory marker object of that name
			dirs = append(dirs, o.Key)
			continue
		}
		oi := objectInfo{key: o.Key, size: o.Size, etag: o.ETag}
		if withMeta && len(o.UserMetadata) > 0 {
			oi.setMeta(o.UserMetadataStripped)
		}
		objs = append(objs, oi)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, false, fmt.Errorf("list s3://%s/%s: %w", bucket, prefix, err)
	}
	slices.Sort(dirs)
	return objs, slices.Compact(dirs), false, nil
}
