package mirror

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"ftpgate/conf"
)

// testMinio is the MinIO server of this package's tests, started by
// TestMain from the binary `make` installs.
var testMinio *minioServer

type minioServer struct {
	endpoint string
	access   string
	secret   string
	cmd      *exec.Cmd
	dir      string
	logs     bytes.Buffer
	exited   chan struct{}
}

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	srv, err := startMinio()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mirror tests need a MinIO server (make deps installs bin/minio): %v\n", err)
		return 1
	}
	defer srv.stop()
	testMinio = srv
	return m.Run()
}

// minioBinary finds the server: $PATH (make test puts bin/ first), then
// the module's bin/.
func minioBinary() (string, error) {
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	p, err := filepath.Abs(filepath.Join("..", "bin", "minio"))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no minio in $PATH nor at %s", p)
	}
	return p, nil
}

func startMinio() (*minioServer, error) {
	bin, err := minioBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ftpgate-mirror-minio-")
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	s := &minioServer{endpoint: addr, access: "mirrortest", secret: "mirrortest-secret", dir: dir}
	s.cmd = exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", "127.0.0.1:0", filepath.Join(dir, "data"))
	s.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+s.access, "MINIO_ROOT_PASSWORD="+s.secret,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	s.cmd.Stdout, s.cmd.Stderr = &s.logs, &s.logs
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	s.exited = exited
	go func() {
		_ = s.cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-exited:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("%s exited: %s", bin, s.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s did not answer on %s within a minute", bin, addr)
		}
	}
}

func (s *minioServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}

// newS3Store returns a store on the test MinIO and a new bucket.
func newS3Store(t *testing.T) (*S3Store, string) {
	t.Helper()
	st, err := NewS3Store(conf.S3{Endpoint: testMinio.endpoint, AccessKey: testMinio.access, SecretKey: testMinio.secret})
	if err != nil {
		t.Fatal(err)
	}
	bucket := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(bucket) > 50 {
		bucket = bucket[:50]
	}
	bucket = strings.Trim(bucket, "-") + fmt.Sprintf("-%d", time.Now().UnixNano()%100000)
	if err := st.c.MakeBucket(t.Context(), bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	return st, bucket
}

func getObject(t *testing.T, st *S3Store, bucket, key string) []byte {
	t.Helper()
	o, err := st.c.GetObject(t.Context(), bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b
}

func TestS3StorePutChecksumAndMetadata(t *testing.T) {
	st, bucket := newS3Store(t)
	ctx := t.Context()
	data := []byte("hello, bucket")
	meta := objectMeta{mtime: t0.UnixNano(), sha256: sha256.Sum256(data)}
	etag, err := st.Put(ctx, bucket, "p/a.txt", bytes.NewReader(data), int64(len(data)), meta)
	if err != nil {
		t.Fatal(err)
	}
	if etag != etagOf(data) {
		t.Fatalf("etag %q, want %q", etag, etagOf(data))
	}
	oi, err := st.Stat(ctx, bucket, "p/a.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !oi.hasMtime || oi.mtime != meta.mtime || !oi.hasSHA || oi.sha256 != meta.sha256 || oi.size != int64(len(data)) {
		t.Fatalf("stat %+v", oi)
	}
	raw, err := st.c.StatObject(ctx, bucket, "p/a.txt", minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := raw.Metadata.Get("X-Amz-Meta-Mtime"); got != "1714979289.123456789" {
		t.Fatalf("X-Amz-Meta-Mtime %q", got)
	}
	// the store checks the bytes: a SHA-256 that does not match is refused
	bad := meta
	bad.sha256[0] ^= 1
	_, err = st.Put(ctx, bucket, "p/bad", bytes.NewReader(data), int64(len(data)), bad)
	if classify(err) != classMismatch {
		t.Fatalf("mismatched checksum: class %d, err %v", classify(err), err)
	}
	if _, err := st.Stat(ctx, bucket, "p/bad"); classify(err) != classGone {
		t.Fatalf("refused object exists: %v", err)
	}
	// empty file
	empty := objectMeta{mtime: 1, sha256: sha256.Sum256(nil)}
	if _, err := st.Put(ctx, bucket, "p/empty", bytes.NewReader(nil), 0, empty); err != nil {
		t.Fatal(err)
	}
}

func TestS3StoreMultipart(t *testing.T) {
	st, bucket := newS3Store(t)
	p := filepath.Join(t.TempDir(), "big")
	data := make([]byte, multipartMin+123)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	meta := objectMeta{mtime: t0.UnixNano(), sha256: sha256.Sum256(data)}
	etag, err := st.Put(t.Context(), bucket, "big", io.NewSectionReader(f, 0, int64(len(data))), int64(len(data)), meta)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(etag, fmt.Sprintf("-%d", (len(data)+partSize-1)/partSize)) {
		t.Fatalf("etag %q: not a multipart upload of %d MiB parts", etag, partSize>>20)
	}
	if got := getObject(t, st, bucket, "big"); !bytes.Equal(got, data) {
		t.Fatal("multipart object differs")
	}
	oi, err := st.Stat(t.Context(), bucket, "big")
	if err != nil || oi.sha256 != meta.sha256 || oi.mtime != meta.mtime {
		t.Fatalf("stat %+v %v", oi, err)
	}
	// a failed multipart upload leaves nothing behind
	_, err = st.Put(t.Context(), bucket, "torn", io.NewSectionReader(f, 0, int64(len(data))-1), int64(len(data)), meta)
	if err == nil {
		t.Fatal("short body accepted")
	}
	for u := range st.c.ListIncompleteUploads(t.Context(), bucket, "torn", true) {
		t.Fatalf("incomplete upload left: %+v", u)
	}
	if _, err := st.Stat(t.Context(), bucket, "torn"); classify(err) != classGone {
		t.Fatalf("torn object visible: %v", err)
	}
	// what a killed process leaves, an upload never completed nor aborted,
	// goes when the file is sent again
	core := minio.Core{Client: st.c}
	if _, err := core.NewMultipartUpload(t.Context(), bucket, "big", minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AbortUploads(t.Context(), bucket, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(t.Context(), bucket, "big", io.NewSectionReader(f, 0, int64(len(data))), int64(len(data)), meta); err != nil {
		t.Fatal(err)
	}
	for u := range st.c.ListIncompleteUploads(t.Context(), bucket, "big", true) {
		t.Fatalf("upload left: %+v", u)
	}
}

func TestS3StoreCopyDeleteList(t *testing.T) {
	st, bucket := newS3Store(t)
	ctx := t.Context()
	put := func(key, data string) string {
		t.Helper()
		e, err := st.Put(ctx, bucket, key, strings.NewReader(data), int64(len(data)),
			objectMeta{mtime: t0.UnixNano(), sha256: sha256.Sum256([]byte(data))})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	etag := put("p/src", "source")
	put("p/a/b", "b")
	put("p/a.txt", "a")
	put("other/x", "x")

	if _, err := st.Copy(ctx, bucket, "p/src", "p/dst", etag, 6); err != nil {
		t.Fatal(err)
	}
	oi, err := st.Stat(ctx, bucket, "p/dst")
	if err != nil || oi.mtime != t0.UnixNano() || !oi.hasSHA {
		t.Fatalf("copy lost metadata: %+v %v", oi, err)
	}
	if _, err := st.Copy(ctx, bucket, "p/src", "p/dst2", "0123456789abcdef0123456789abcdef", 6); classify(err) != classGone {
		t.Fatalf("copy with a stale ETag: %v", err)
	}
	if _, err := st.Copy(ctx, bucket, "p/none", "p/dst3", "", 6); classify(err) != classGone {
		t.Fatalf("copy of a missing key: %v", err)
	}
	if err := st.Delete(ctx, bucket, "p/src"); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, bucket, "p/src"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}

	for _, withMeta := range []bool{false, true} {
		var keys []string
		for o, err := range st.List(ctx, bucket, "p/", withMeta) {
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, o.key)
			if withMeta && (!o.hasMeta || o.mtime != t0.UnixNano() || !o.hasSHA) {
				t.Fatalf("listing metadata of %s: %+v", o.key, o)
			}
			if !withMeta && o.hasMeta {
				t.Fatalf("metadata without asking: %+v", o)
			}
		}
		if want := []string{"p/a.txt", "p/a/b", "p/dst"}; !slices.Equal(keys, want) {
			t.Fatalf("list %q, want %q", keys, want)
		}
	}
	for _, err := range st.List(ctx, "no-such-bucket-here", "", false) {
		if classify(err) != classFatal {
			t.Fatalf("listing a missing bucket: class %d %v", classify(err), err)
		}
	}
	_, err = st.Put(ctx, "no-such-bucket-here", "k", strings.NewReader("x"), 1, objectMeta{sha256: sha256.Sum256([]byte("x"))})
	var se *storeError
	if !errors.As(err, &se) || se.class != classFatal {
		t.Fatalf("put to a missing bucket: %v", err)
	}
}

func TestS3StoreBatch(t *testing.T) {
	st, bucket := newS3Store(t)
	var objs []batchObject
	for i := range 100 {
		d := []byte(fmt.Sprintf("small file %d", i))
		objs = append(objs, batchObject{key: fmt.Sprintf("s/%03d", i), data: d,
			meta: objectMeta{mtime: t0.UnixNano() + int64(i), sha256: sha256.Sum256(d)}})
	}
	if err := st.PutBatch(t.Context(), bucket, objs); err != nil {
		t.Fatal(err)
	}
	n := 0
	for o, err := range st.List(t.Context(), bucket, "s/", true) {
		if err != nil {
			t.Fatal(err)
		}
		want := objs[n]
		if o.key != want.key || o.size != int64(len(want.data)) || o.mtime != want.meta.mtime || o.sha256 != want.meta.sha256 {
			t.Fatalf("object %d: %+v, want %s", n, o, want.key)
		}
		if o.etag != etagOf(want.data) {
			t.Fatalf("object %d etag %q", n, o.etag)
		}
		n++
	}
	if n != len(objs) {
		t.Fatalf("%d objects listed, want %d", n, len(objs))
	}
	if got := getObject(t, st, bucket, "s/042"); string(got) != "small file 42" {
		t.Fatalf("content %q", got)
	}
}

// The whole mirror on a real MinIO: a first sync in batches, a pass with
// nothing to do, a rename.
func TestMirrorOnMinIO(t *testing.T) {
	st, bucket := newS3Store(t)
	h := newHarness(t, Options{}, func(m *conf.Mirror) { m.Bucket = bucket; m.Prefix = "" })
	h.store = st
	h.open()
	for i := range 150 {
		h.write(fmt.Sprintf("d%d/f%03d.txt", i%3, i), fmt.Sprintf("content %d", i), t0)
	}
	h.write("mid.bin", strings.Repeat("m", 3<<20), t0)
	s := h.pass()
	if s.Uploaded != 151 || !s.OK() {
		t.Fatalf("first pass: %+v\n%s", s, h.logs)
	}
	if !h.logs.contains("batch=") {
		t.Fatal("no batch upload in the first sync")
	}
	s = h.pass()
	if s.Unchanged != 151 || s.Uploaded != 0 || !s.OK() {
		t.Fatalf("second pass: %+v", s)
	}
	if err := os.Rename(h.abs("mid.bin"), h.abs("d0/moved.bin")); err != nil {
		t.Fatal(err)
	}
	s = h.pass()
	if s.Copied != 1 || s.Deleted != 1 || s.Uploaded != 0 || !s.OK() {
		t.Fatalf("rename pass: %+v\n%s", s, h.logs)
	}
	if got := getObject(t, st, bucket, "d0/moved.bin"); len(got) != 3<<20 {
		t.Fatalf("moved object: %d bytes", len(got))
	}
	if s := h.pass(); s.Unchanged != 151 || !s.OK() {
		t.Fatalf("last pass: %+v", s)
	}
}
