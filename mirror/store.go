package mirror

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// objectStore is what the mirror needs from a bucket. *S3Store implements
// it; tests use a fake. Implementations must be safe for concurrent use.
type objectStore interface {
	// Put stores size bytes from body under key with meta. body may be
	// read more than once when it is an io.Seeker. It returns the ETag.
	Put(ctx context.Context, bucket, key string, body io.Reader, size int64, meta objectMeta) (etag string, err error)
	// Copy copies src to dst server-side, keeping src's metadata. With
	// matchETag set, it fails with a precondition error if src changed.
	Copy(ctx context.Context, bucket, src, dst, matchETag string, size int64) (etag string, err error)
	// Delete removes key; a missing key is no error.
	Delete(ctx context.Context, bucket, key string) error
	// List yields the objects under prefix in key order, with their user
	// metadata when withMeta is set and the store can (MinIO). After an
	// error it yields nothing more.
	List(ctx context.Context, bucket, prefix string, withMeta bool) iter.Seq2[objectInfo, error]
}

// statStore is an objectStore that can read one object's metadata: used to
// adopt objects that a listing without metadata cannot vouch for.
type statStore interface {
	Stat(ctx context.Context, bucket, key string) (objectInfo, error)
}

// batchStore is an objectStore that can store many small objects in one
// request (MinIO's snowball auto-extract). PutBatch returns
// errBatchUnsupported when the store turns out not to extract archives.
type batchStore interface {
	PutBatch(ctx context.Context, bucket string, objs []batchObject) error
}

// uploadsAborter is an objectStore that can abort the incomplete
// multipart uploads a killed process left.
type uploadsAborter interface {
	AbortUploads(ctx context.Context, bucket, prefix string) (int, error)
}

// errBatchUnsupported says a store cannot take batches: the mirror then
// sends single PUTs to it for good.
var errBatchUnsupported = errors.New("store does not extract batch uploads")

// objectMeta is the user metadata of every object the mirror writes.
type objectMeta struct {
	mtime  int64    // ns since the epoch
	sha256 [32]byte // of the content
}

// Metadata names, as sent (the store adds nothing: the keys are complete).
const (
	metaMtime  = "X-Amz-Meta-Mtime"
	metaSHA256 = "X-Amz-Meta-Sha256"
)

// headers is the metadata as request headers.
func (m objectMeta) headers() map[string]string {
	return map[string]string{
		metaMtime:  formatMtime(m.mtime),
		metaSHA256: hex.EncodeToString(m.sha256[:]),
	}
}

// objectInfo is one object of a listing or a Stat.
type objectInfo struct {
	key  string
	size int64
	etag string
	// metadata, when the listing or Stat carried it
	hasMeta  bool  // the store returned user metadata (possibly empty)
	mtime    int64 // ns; valid when hasMtime
	hasMtime bool
	sha256   [32]byte
	hasSHA   bool
}

// setMeta fills the metadata fields from user metadata keyed by stripped
// names ("Mtime", "Sha256") in any case.
func (o *objectInfo) setMeta(m map[string]string) {
	o.hasMeta = true
	for k, v := range m {
		switch strings.ToLower(strings.TrimPrefix(strings.ToLower(k), "x-amz-meta-")) {
		case "mtime":
			if ns, err := parseMtime(v); err == nil {
				o.mtime, o.hasMtime = ns, true
			}
		case "sha256":
			if b, err := hex.DecodeString(v); err == nil && len(b) == 32 {
				copy(o.sha256[:], b)
				o.hasSHA = true
			}
		}
	}
}

// batchObject is one small object of a batch upload.
type batchObject struct {
	key  string
	data []byte
	meta objectMeta
}

// formatMtime writes ns in rclone's X-Amz-Meta-Mtime format: decimal
// seconds with up to nine fraction digits, trailing zeros dropped.
func formatMtime(ns int64) string {
	if ns < 0 {
		return "-" + formatMtime(-ns)
	}
	s := fmt.Sprintf("%010d", ns)
	whole, frac := s[:len(s)-9], strings.TrimRight(s[len(s)-9:], "0")
	if frac == "" {
		return whole
	}
	return whole + "." + frac
}

// parseMtime reads rclone's format exactly (no float rounding).
func parseMtime(s string) (int64, error) {
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" {
		return 0, fmt.Errorf("mtime %q: empty", s)
	}
	if len(frac) > 9 {
		frac = frac[:9]
	}
	frac += strings.Repeat("0", 9-len(frac))
	if whole == "" {
		whole = "0"
	}
	for _, c := range whole + frac {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("mtime %q: not decimal seconds", s)
		}
	}
	ns, err := strconv.ParseInt(whole+frac, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("mtime %q: %w", s, err)
	}
	if neg {
		ns = -ns
	}
	return ns, nil
}

// errClass is how the mirror reacts to an error from the store.
type errClass int

const (
	classFatal    errClass = iota // fail the operation; it stays pending
	classRetry                    // transient: back off and try again
	classGone                     // the copy source is missing or changed: upload instead
	classMismatch                 // the store saw other bytes than we hashed: re-read the file
	classCanceled                 // our context ended
)

// storeError is an error from a store with its class decided by the
// store, which knows its protocol. Errors that are not storeErrors are
// classified by behaviour in classify.
type storeError struct {
	class errClass
	err   error
}

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// classify decides what to do about err: by its storeError class, by
// context, or by behaviour (network errors and timeouts are transient).
func classify(err error) errClass {
	if err == nil {
		return classFatal
	}
	if errors.Is(err, context.Canceled) {
		return classCanceled
	}
	var se *storeError
	if errors.As(err, &se) {
		return se.class
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return classRetry
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return classRetry
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return classRetry
	}
	return classFatal
}

// Backoff parameters: exponential with full jitter.
const (
	backoffBase = 500 * time.Millisecond
	backoffCap  = time.Minute
)

// backoff is the wait before attempt+1 (attempt counts from 1): a uniform
// random duration in [0, min(cap, base·2^(attempt-1))).
func backoff(attempt int, rnd func(int64) int64) time.Duration {
	d := backoffBase
	for i := 1; i < attempt && d < backoffCap; i++ {
		d *= 2
	}
	d = min(d, backoffCap)
	return time.Duration(rnd(int64(d)))
}
