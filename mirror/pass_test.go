package mirror

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ftpgate/conf"
	"ftpgate/storage"
)

var t0 = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

func TestWalkKeyOrder(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	names := []string{"a", "a.txt", "a-b", "a0", "b/c", "a/b.txt", "a/b/c", "a/b-", "ab/x", "Z", "é", "a b"}
	// "a" is both a file and a directory name in S3; locally it must be
	// one of them: keep the directory.
	for _, n := range names {
		if n == "a" {
			continue
		}
		h.write(n, "x", time.Time{})
	}
	w := newWalker(h.root, "", excluder{}, nil)
	var got []string
	for {
		f, ok := w.next()
		if !ok {
			break
		}
		got = append(got, f.rel)
	}
	if err := w.err(); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(got)
	slices.Sort(want) // S3 key order is byte order of the full key
	if !slices.Equal(got, want) {
		t.Fatalf("walk order\n got %q\nwant %q", got, want)
	}
	if len(got) != len(names)-1 {
		t.Fatalf("walk found %d files, want %d: %q", len(got), len(names)-1, got)
	}
}

func TestPassFirstSyncThenNothing(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	h.write("a.txt", "hello", t0)
	h.write("dir/b.bin", strings.Repeat("b", 5000), t0.Add(time.Second))
	h.write("dir/sub/c", "", t0)

	s := h.pass()
	if s.Uploaded != 3 || s.Failed != 0 || s.Guard != nil || s.Err != nil {
		t.Fatalf("first pass: %+v\n%s", s, h.logs)
	}
	o, ok := h.object("a.txt")
	if !ok || string(o.data) != "hello" {
		t.Fatalf("object a.txt: %v %q", ok, o.data)
	}
	if o.meta.mtime != t0.UnixNano() || o.meta.sha256 != sha256.Sum256([]byte("hello")) {
		t.Fatalf("object a.txt metadata: %+v", o.meta)
	}
	if _, err := os.Stat(filepath.Join(h.root, SentinelName)); err != nil {
		t.Fatalf("sentinel not created: %v", err)
	}
	if _, ok := h.object(SentinelName); ok {
		t.Fatal("the sentinel was uploaded")
	}
	if n := h.logs.count(`msg=mirrored component=mirror mapping=m op=put key=pre/a.txt bytes=5 dur=`); n != 1 {
		t.Fatalf("want one log line for the put of a.txt, got %d:\n%s", n, h.logs)
	}

	puts, _, _ := h.fake.counts()
	s = h.pass()
	if s.Unchanged != 3 || s.Uploaded != 0 {
		t.Fatalf("second pass: %+v", s)
	}
	if p, _, _ := h.fake.counts(); p != puts {
		t.Fatalf("second pass sent %d PUTs", p-puts)
	}
	if pend := h.pendingIn(); len(pend) != 0 {
		t.Fatalf("pending left: %q", pend)
	}
}

// mc mirror decides by size and mtime: a same-size edit with an older
// mtime is never copied. The mirror must send it.
func TestPassSameSizeOlderMtime(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	h.write("f", "aaaa", t0)
	h.pass()
	h.write("f", "bbbb", t0.Add(-time.Hour))
	s := h.pass()
	if s.Uploaded != 1 {
		t.Fatalf("pass: %+v", s)
	}
	if o, _ := h.object("f"); string(o.data) != "bbbb" {
		t.Fatalf("object: %q", o.data)
	}
}

// An edit that puts the mtime back is seen through the ctime and decided
// by content; a chmod (ctime only) uploads nothing.
func TestPassCtimeDecidesByContent(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	h.write("same", "1234", t0)
	h.write("edited", "1234", t0)
	h.pass()
	puts, _, _ := h.fake.counts()

	if err := os.Chmod(h.abs("same"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.write("edited", "5678", t0)
	s := h.pass()
	if s.Uploaded != 1 || s.Unchanged != 1 {
		t.Fatalf("pass: %+v", s)
	}
	if p, _, _ := h.fake.counts(); p != puts+1 {
		t.Fatalf("%d PUTs, want 1", p-puts)
	}
	if o, _ := h.object("edited"); string(o.data) != "5678" {
		t.Fatalf("edited: %q", o.data)
	}
	// the chmod was recorded: a third pass reads nothing
	s = h.pass()
	if s.Unchanged != 2 {
		t.Fatalf("third pass: %+v", s)
	}
}

func TestPassObjectGoneOrChangedInBucket(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	h.write("a", "aaa", t0)
	h.write("b", "bbb", t0)
	h.pass()
	if err := h.fake.Delete(t.Context(), testBucket, "pre/a"); err != nil {
		t.Fatal(err)
	}
	h.fake.mu.Lock()
	h.fake.objects[testBucket+"/pre/b"] = fakeObject{data: []byte("xyz"), etag: etagOf([]byte("xyz"))}
	h.fake.mu.Unlock()
	s := h.pass()
	if s.Uploaded != 2 {
		t.Fatalf("pass: %+v", s)
	}
	if o, _ := h.object("b"); string(o.data) != "bbb" {
		t.Fatalf("b: %q", o.data)
	}
}

func TestPassRenameIsCopy(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	h.write("old/name.bin", strings.Repeat("x", 3000), t0)
	h.write("dir/a", "a", t0)
	h.write("dir/b", "b", t0)
	h.write("keep", "k", t0)
	h.pass()
	puts, _, _ := h.fake.counts()

	if err := os.Rename(h.abs("old/name.bin"), h.abs("new.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(h.abs("dir"), h.abs("zdir")); err != nil {
		t.Fatal(err)
	}
	s := h.pass()
	if s.Copied != 3 || s.Deleted != 3 || s.Uploaded != 0 || s.Guard != nil {
		t.Fatalf("pass: %+v\n%s", s, h.logs)
	}
	if p, _, _ := h.fake.counts(); p != puts {
		t.Fatalf("rename sent %d PUTs", p-puts)
	}
	want := []string{"pre/keep", "pre/new.bin", "pre/zdir/a", "pre/zdir/b"}
	if got := h.fake.keys(testBucket); !slices.Equal(got, want) {
		t.Fatalf("keys %q, want %q", got, want)
	}
	o, _ := h.object("new.bin")
	if o.meta.mtime != t0.UnixNano() {
		t.Fatalf("copy lost its metadata: %+v", o.meta)
	}
	if strings.Contains(h.logs.String(), "op=copy key=pre/new.bin") == false {
		t.Fatalf("no copy log line:\n%s", h.logs)
	}
}

// A lost journal: the objects are there with their metadata, nothing is
// uploaded again.
func TestPassAdoptsExistingObjects(t *testing.T) {
	for _, meta := range []bool{true, false} {
		t.Run(map[bool]string{true: "listing-metadata", false: "stat"}[meta], func(t *testing.T) {
			h := newHarness(t, Options{}, nil)
			h.fake.noMeta = !meta
			h.write("a", "aaa", t0)
			h.write("b/c", "ccc", t0)
			h.pass()
			puts, _, _ := h.fake.counts()
			if err := h.j.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(h.state, journalFile)); err != nil {
				t.Fatal(err)
			}
			h.j = nil
			h.open()
			h.write("a", "AAA", t0.Add(time.Minute)) // changed meanwhile: uploaded
			s := h.pass()
			if s.Adopted != 1 || s.Uploaded != 1 {
				t.Fatalf("pass: %+v\n%s", s, h.logs)
			}
			if p, _, _ := h.fake.counts(); p != puts+1 {
				t.Fatalf("%d PUTs, want 1", p-puts)
			}
			if s := h.pass(); s.Unchanged != 2 {
				t.Fatalf("next pass: %+v", s)
			}
		})
	}
}

func TestPassExcludes(t *testing.T) {
	h := newHarness(t, Options{}, func(m *conf.Mirror) { m.Exclude = []string{"*.tmp", "cache/*", ".~lock*"} })
	// the state directory inside the tree
	h.cfg.Storage.StateDir = filepath.Join(h.root, "var", "state")
	h.open()
	h.write("keep.txt", "k", t0)
	h.write("x.tmp", "t", t0)
	h.write("d/y.tmp", "t", t0)
	h.write(".~lock.doc#", "l", t0)
	h.write("cache/z", "c", t0)
	h.write("d/"+storage.PartPrefix+"abc", "part", t0)
	h.write("var/state/journal.db", "state", t0)
	s := h.pass()
	if s.Uploaded != 1 {
		t.Fatalf("pass: %+v", s)
	}
	if got := h.fake.keys(testBucket); !slices.Equal(got, []string{"pre/keep.txt"}) {
		t.Fatalf("keys %q", got)
	}
}

func TestPassDryRunChangesNothing(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	h.write("a", "a", t0)
	h.write("gone", "g", t0)
	h.pass()
	if err := os.Remove(h.abs("gone")); err != nil {
		t.Fatal(err)
	}
	h.write("b", "b", t0)
	h.write("a", "changed", t0)
	before := h.fake.keys(testBucket)
	puts, copies, deletes := h.fake.counts()
	journal, err := os.ReadFile(filepath.Join(h.state, journalFile))
	if err != nil {
		t.Fatal(err)
	}

	h.opts.DryRun = true
	h.open()
	s := h.pass()
	if s.Uploaded != 2 || s.Deleted != 1 {
		t.Fatalf("dry run: %+v\n%s", s, h.logs)
	}
	if p, c, d := h.fake.counts(); p != puts || c != copies || d != deletes {
		t.Fatal("the dry run wrote to the store")
	}
	if got := h.fake.keys(testBucket); !slices.Equal(got, before) {
		t.Fatalf("keys %q, want %q", got, before)
	}
	if err := h.j.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(filepath.Join(h.state, journalFile))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(journal, after) {
		t.Fatal("the dry run changed the journal")
	}
	if !strings.Contains(h.logs.String(), `msg="would mirror" component=mirror mapping=m op=delete key=pre/gone`) {
		t.Fatalf("no dry-run line for the delete:\n%s", h.logs)
	}
}

func TestPassDryRunFirstPassMakesNoSentinel(t *testing.T) {
	h := newHarness(t, Options{DryRun: true}, nil)
	h.write("a", "a", t0)
	if s := h.pass(); s.Uploaded != 1 {
		t.Fatalf("dry run: %+v", s)
	}
	if _, err := os.Stat(filepath.Join(h.root, SentinelName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the dry run created the sentinel: %v", err)
	}
}

func TestPassBatchesSmallFiles(t *testing.T) {
	for _, tc := range []struct {
		name        string
		files       int
		noBatch     bool
		wantBatches int
	}{
		{"below-threshold", batchMinFiles - 1, false, 0},
		{"batched", 2500, false, (2500 + batchMaxFiles - 1) / batchMaxFiles},
		{"unsupported", 100, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Options{}, nil)
			h.fake.noBatch = tc.noBatch
			for i := range tc.files {
				h.write(filepath.Join("d", string(rune('a'+i%26)), strings.Repeat("f", 1+i%7)+string(rune('0'+i/100%10))+string(rune('0'+i%100/10))+string(rune('0'+i%10))), "data", t0)
			}
			s := h.pass()
			if s.Uploaded != tc.files || s.Failed != 0 {
				t.Fatalf("pass: %+v\n%s", s, h.logs)
			}
			if h.fake.batches != tc.wantBatches {
				t.Fatalf("%d batches, want %d", h.fake.batches, tc.wantBatches)
			}
			if n := len(h.fake.keys(testBucket)); n != tc.files {
				t.Fatalf("%d objects, want %d", n, tc.files)
			}
			// batch records have no ETag: the next pass takes it from the
			// listing and uploads nothing
			puts, _, _ := h.fake.counts()
			if s := h.pass(); s.Unchanged != tc.files || s.Uploaded != 0 {
				t.Fatalf("second pass: %+v", s)
			}
			if p, _, _ := h.fake.counts(); p != puts {
				t.Fatalf("second pass sent %d PUTs", p-puts)
			}
			if tc.wantBatches > 0 {
				rec, _ := h.recordOf("d/a/f000")
				if rec.etag == "" {
					t.Fatal("ETag not filled in from the listing")
				}
			}
		})
	}
}

// A store that reports another ETag for the same content (compression,
// encryption, a copy): the metadata vouches for it, nothing is sent, and
// the store's ETag is recorded.
func TestPassETagDiffersSameContent(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	for i := range 5 {
		h.write(fmt.Sprintf("f%d", i), "same", t0)
	}
	h.pass()
	h.fake.mu.Lock()
	for k, o := range h.fake.objects {
		o.etag = "other-" + o.etag
		h.fake.objects[k] = o
	}
	h.fake.mu.Unlock()
	puts, _, _ := h.fake.counts()
	s := h.pass()
	if s.Uploaded != 0 || s.Unchanged != 5 {
		t.Fatalf("pass: %+v", s)
	}
	if p, _, _ := h.fake.counts(); p != puts {
		t.Fatalf("%d PUTs for unchanged content", p-puts)
	}
	stats := h.fake.stats
	if s := h.pass(); s.Unchanged != 5 || h.fake.stats != stats {
		t.Fatalf("third pass: %+v, %d more Stats", s, h.fake.stats-stats)
	}
	if rec, _ := h.recordOf("f0"); !strings.HasPrefix(rec.etag, "other-") {
		t.Fatalf("record etag %q", rec.etag)
	}
}

// A one-shot run logs a line per batch, not per file, and its first
// oneShotOpLines operations at INFO, the rest at DEBUG: a first sync of a
// million files is not a million lines.
func TestPassOneShotLogLines(t *testing.T) {
	t.Run("batches", func(t *testing.T) {
		h := newHarness(t, Options{}, nil)
		for i := range 150 {
			h.write(fmt.Sprintf("d/f%03d", i), "x", t0)
		}
		if s := h.pass(); s.Uploaded != 150 || !s.OK() {
			t.Fatalf("pass: %+v", s)
		}
		if n := h.logs.count(`msg=mirrored `); n != 0 {
			t.Fatalf("%d per-file lines for batched uploads:\n%s", n, h.logs)
		}
		if n := h.logs.count(`level=INFO msg="mirrored batch" component=mirror mapping=m op=put batch=`); n == 0 || n > 3 {
			t.Fatalf("%d batch lines for 150 files:\n%s", n, h.logs)
		}
		if !h.logs.contains(`first=pre/d/f000 last=`) {
			t.Fatalf("the first batch does not name its first key:\n%s", h.logs)
		}
	})
	t.Run("many single uploads", func(t *testing.T) {
		h := newHarness(t, Options{}, nil)
		h.store = onlyStore{h.fake} // single PUTs
		h.open()
		n := oneShotOpLines + 5
		for i := range n {
			h.write(fmt.Sprintf("f%04d", i), "x", t0)
		}
		if s := h.pass(); s.Uploaded != n || !s.OK() {
			t.Fatalf("pass: %+v", s)
		}
		if got := h.logs.count(`level=INFO msg=mirrored `); got != oneShotOpLines {
			t.Fatalf("%d INFO operation lines, want %d", got, oneShotOpLines)
		}
		if got := h.logs.count(`level=DEBUG msg=mirrored `); got != 5 {
			t.Fatalf("%d DEBUG operation lines, want 5", got)
		}
		if got := h.logs.count(`msg="further operations are logged at debug level`); got != 1 {
			t.Fatalf("%d notes about the debug level, want 1", got)
		}
		// the next run starts counting again
		h.write("late", "y", t0)
		h.pass()
		if !h.logs.contains(`level=INFO msg=mirrored component=mirror mapping=m op=put key=pre/late `) {
			t.Fatalf("the next run's operation is not at INFO:\n%s", h.logs.String()[max(0, len(h.logs.String())-2000):])
		}
	})
}

// The first pass creates the sentinel even when the journal already holds
// records: an upload the FTP server announced before that pass (at
// start-up) is mirrored first. Otherwise the mapping would refuse every
// deletion for good.
func TestSentinelAfterAnnouncedUpload(t *testing.T) {
	h := newHarness(t, Options{}, nil)
	h.write("early.txt", "early", t0)
	if err := h.m.j.update("m", func(x *mtx) error {
		return x.putFile("early.txt", fileRecord{size: 5, mtime: t0.UnixNano()})
	}); err != nil {
		t.Fatal(err)
	}
	if s := h.pass(); s.Err != nil || s.Guard != nil {
		t.Fatalf("first pass: %+v\n%s", s, h.logs)
	}
	if _, err := os.Stat(filepath.Join(h.root, SentinelName)); err != nil {
		t.Fatalf("sentinel not created: %v\n%s", err, h.logs)
	}
	if err := os.Remove(h.abs("early.txt")); err != nil {
		t.Fatal(err)
	}
	if s := h.pass(); s.Guard != nil || s.Err != nil {
		t.Fatalf("a deletion after the first pass: %+v\n%s", s, h.logs)
	}
}
