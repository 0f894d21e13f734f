package mirror

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"ftpgate/conf"
)

func TestParseListPage(t *testing.T) {
	const head = `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`
	for _, tc := range []struct {
		name     string
		doc      string
		withMeta bool
		want     listPage
		err      bool
	}{
		{
			name: "MinIO, url-encoded keys, quoted ETags",
			doc: head + `<Name>b</Name><Prefix></Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>` +
				`<NextContinuationToken>tok+/=</NextContinuationToken><EncodingType>url</EncodingType>` +
				`<Contents><Key>a%20b%2Bc%25d</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>&#34;0123&#34;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>` +
				`<Contents><Key>dir%2F%C3%A9t%C3%A9</Key><ETag>&quot;4567-2&quot;</ETag><Size>0</Size><Owner><ID>x</ID><DisplayName/></Owner></Contents>` +
				`</ListBucketResult>`,
			want: listPage{next: "tok+/=", objects: []objectInfo{
				{key: "a b+c%d", size: 12, etag: "0123"},
				{key: "dir/été", size: 0, etag: "4567-2"},
			}},
		},
		{
			name: "pretty-printed, raw keys with entities, comments, CDATA, last page",
			doc: head + "\n  <!-- a comment -->\n  <Prefix/>\n  <IsTruncated>false</IsTruncated>\n" +
				"  <NextContinuationToken>ignored</NextContinuationToken>\n" +
				"  <Contents>\n    <Key>a&amp;b&lt;c&gt;&apos;&#x41;&#66;</Key>\n    <ETag>\"e\"</ETag>\n    <Size>7</Size>\n  </Contents>\n" +
				"  <Contents>\n    <Key><![CDATA[x<y]]>z</Key>\n    <Size>1</Size>\n  </Contents>\n" +
				"</ListBucketResult>\n",
			want: listPage{objects: []objectInfo{{key: "a&b<c>'AB", size: 7, etag: "e"}, {key: "x<yz", size: 1}}},
		},
		{
			name:     "MinIO user metadata",
			withMeta: true,
			doc: head + `<IsTruncated>false</IsTruncated><Contents><Key>k</Key><Size>3</Size><ETag>"e"</ETag>` +
				`<UserMetadata><X-Amz-Meta-Mtime>1700000000.5</X-Amz-Meta-Mtime><x-amz-meta-sha256>` + strings.Repeat("ab", 32) + `</x-amz-meta-sha256>` +
				`<content-type>text/plain</content-type></UserMetadata><UserTags/><Internal><K>1</K><M>1</M></Internal></Contents>` +
				`<Contents><Key>plain</Key><Size>1</Size><UserMetadata><content-type>x</content-type></UserMetadata></Contents>` +
				`<Contents><Key>none</Key><Size>1</Size></Contents></ListBucketResult>`,
			want: listPage{objects: []objectInfo{
				{key: "k", size: 3, etag: "e", hasMeta: true, mtime: 1700000000500000000, hasMtime: true, sha256: [32]byte(bytes.Repeat([]byte{0xab}, 32)), hasSHA: true},
				{key: "plain", size: 1},
				{key: "none", size: 1},
			}},
		},
		{
			name: "metadata not asked for",
			doc: head + `<IsTruncated>false</IsTruncated><Contents><Key>k</Key><Size>3</Size>` +
				`<UserMetadata><X-Amz-Meta-Mtime>1</X-Amz-Meta-Mtime></UserMetadata></Contents></ListBucketResult>`,
			want: listPage{objects: []objectInfo{{key: "k", size: 3}}},
		},
		{name: "empty", doc: head + `<IsTruncated>false</IsTruncated></ListBucketResult>`, want: listPage{}},
		{name: "truncated without a token", doc: head + `<IsTruncated>true</IsTruncated></ListBucketResult>`, err: true},
		{name: "cut short", doc: head + `<IsTruncated>false</IsTruncated><Contents><Key>k</Key>`, err: true},
		{name: "not a listing", doc: `<Error><Code>AccessDenied</Code></Error>`, err: true},
		{name: "bad size", doc: head + `<Contents><Key>k</Key><Size>x</Size></Contents></ListBucketResult>`, err: true},
		{name: "bad url encoding", doc: head + `<EncodingType>url</EncodingType><Contents><Key>%zz</Key></Contents></ListBucketResult>`, err: true},
		{name: "unterminated tag", doc: head + `<IsTruncated`, err: true},
		{name: "text after the end", doc: head + `</ListBucketResult>junk`, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseListPage([]byte(tc.doc), tc.withMeta)
			if tc.err {
				if err == nil || !errors.Is(err, errListing) {
					t.Fatalf("err = %v, want errListing; page %+v", err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.next != tc.want.next || !slices.Equal(got.objects, tc.want.objects) {
				t.Fatalf("page\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseListPage(f *testing.F) {
	f.Add([]byte(`<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>t</NextContinuationToken>`+
		`<Contents><Key>a%20b</Key><Size>1</Size><ETag>&#34;e&#34;</ETag><UserMetadata><X-Amz-Meta-Mtime>1</X-Amz-Meta-Mtime></UserMetadata></Contents></ListBucketResult>`), true)
	f.Add([]byte(`<a><![CDATA[x]]><!-- c --><?p?><b/></a>`), false)
	f.Fuzz(func(t *testing.T, doc []byte, withMeta bool) {
		p, err := parseListPage(doc, withMeta)
		if err == nil && !strings.Contains(string(doc), "ListBucketResult") {
			t.Fatalf("a page from %q: %+v", doc, p)
		}
	})
}

// ListPage and the List built on it read what minio-go reads, on keys that
// need escaping, with and without metadata, page by page from any key.
func TestListPageOnMinIO(t *testing.T) {
	st, bucket := newS3Store(t)
	checkListPages(t, st, bucket, true)
}

// versitygw (posix) lists without MinIO's metadata extension; pages from a
// key and continuation tokens work the same.
func TestListPageOnVersityGW(t *testing.T) {
	st, bucket := newVersityGW(t)
	checkListPages(t, st, bucket, false)
}

func checkListPages(t *testing.T, st *S3Store, bucket string, metaListed bool) {
	t.Helper()
	if !st.pagesSupported() {
		t.Fatal("pages unsupported on a local store")
	}
	ctx := t.Context()
	keys := []string{"a b", "a+b", "a%b", "a&b<c>", "é/ü", "dir/f", "q?x=1", "z\u00a0", "~t"}
	for i := range 7 {
		keys = append(keys, fmt.Sprintf("p/%02d", i))
	}
	for i, k := range keys {
		data := []byte(k)
		meta := objectMeta{mtime: int64(1700000000+i) * 1e9, sha256: sha256.Sum256(data)}
		if _, err := st.Put(ctx, bucket, k, bytes.NewReader(data), int64(len(data)), meta); err != nil {
			t.Fatal(err)
		}
	}
	for _, withMeta := range []bool{false, true} {
		var want []objectInfo
		noOwner := false
		for o := range st.c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true, WithMetadata: withMeta, FetchOwner: &noOwner}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			oi := objectInfo{key: o.Key, size: o.Size, etag: o.ETag}
			if withMeta && len(o.UserMetadata) > 0 {
				oi.setMeta(o.UserMetadataStripped)
			}
			want = append(want, oi)
		}
		if len(want) != len(keys) {
			t.Fatalf("minio-go listed %d objects, want %d", len(want), len(keys))
		}
		var got []objectInfo
		for o, err := range st.List(ctx, bucket, "", withMeta) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, o)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("withMeta %v: List\n got %+v\nwant %+v", withMeta, got, want)
		}
		if withMeta && metaListed && !got[0].hasMtime {
			t.Fatalf("no metadata in %+v", got[0])
		}
		// pages of 3, each from the last key of the one before
		var paged []objectInfo
		q := pageQuery{maxKeys: 3, withMeta: withMeta}
		for range 20 {
			p, err := st.ListPage(ctx, bucket, q)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.objects) > 3 {
				t.Fatalf("page of %d objects, asked for 3", len(p.objects))
			}
			paged = append(paged, p.objects...)
			if p.next == "" {
				break
			}
			q.startAfter = p.objects[len(p.objects)-1].key
		}
		if !slices.Equal(paged, want) {
			t.Fatalf("withMeta %v: pages from keys\n got %+v\nwant %+v", withMeta, paged, want)
		}
	}
	p, err := st.ListPage(ctx, bucket, pageQuery{prefix: "p/", startAfter: "p/02", maxKeys: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.objects) != 2 || p.objects[0].key != "p/03" || p.objects[1].key != "p/04" || p.next == "" {
		t.Fatalf("page after p/02: %+v", p)
	}
	p, err = st.ListPage(ctx, bucket, pageQuery{prefix: "p/", token: p.next})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.objects) != 2 || p.objects[0].key != "p/05" || p.next != "" {
		t.Fatalf("page after the token: %+v", p)
	}
	_, err = st.ListPage(ctx, "no-such-bucket-here", pageQuery{})
	var er minio.ErrorResponse
	if !errors.As(err, &er) || er.Code != minio.NoSuchBucket || classify(err) != classFatal {
		t.Fatalf("listing a missing bucket: %v", err)
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := st.ListPage(ctx2, bucket, pageQuery{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled listing: %v", err)
	}
}

// newVersityGW starts a versitygw (posix backend) for one test, from $PATH
// (make test puts bin/ first) or the module's bin/, and returns a store on
// it and a new bucket.
func newVersityGW(t *testing.T) (*S3Store, string) {
	t.Helper()
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		bin, err = filepath.Abs(filepath.Join("..", "bin", "versitygw"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("no versitygw in $PATH nor at %s (make deps installs it)", bin)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	data := t.TempDir()
	const access, secret = "vgwtest", "vgwtest-secret"
	var logs logBuffer
	cmd := exec.Command(bin, "--access", access, "--secret", secret, "--port", addr, "--quiet", "posix", data)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	st, err := NewS3Store(conf.S3{Endpoint: addr, AccessKey: access, SecretKey: secret})
	if err != nil {
		t.Fatal(err)
	}
	const bucket = "pages"
	deadline := time.Now().Add(testWait)
	for {
		err := st.c.MakeBucket(t.Context(), bucket, minio.MakeBucketOptions{})
		if err == nil {
			return st, bucket
		}
		select {
		case <-exited:
			t.Fatalf("versitygw exited: %s", logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw on %s: %v\n%s", addr, err, logs.String())
		}
	}
}
