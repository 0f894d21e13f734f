package mirror

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// rangeHarness is a harness whose journal records journal and whose
// bucket holds bucket (paths relative to the mapping), listed in ranges
// of size keys.
func rangeHarness(t *testing.T, size int, journal, bucket []string) *harness {
	t.Helper()
	h := newHarness(t, Options{}, nil)
	h.m.testRangeKeys = size
	err := h.j.update("m", func(x *mtx) error {
		for _, rel := range journal {
			if err := x.putFile(rel, fileRecord{size: 1, etag: etagOf([]byte("x"))}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range bucket {
		h.fake.objects[testBucket+"/pre/"+rel] = fakeObject{data: []byte("x"), etag: etagOf([]byte("x"))}
	}
	return h
}

// listAll reads a pass's whole listing of the mapping.
func listAll(t *testing.T, h *harness, sub string) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	next, stop := h.m.listBucket(ctx, h.m.mappings[0], sub, false)
	defer stop()
	var keys []string
	for {
		o, err, ok := next()
		if !ok {
			return keys, nil
		}
		if err != nil {
			return keys, err
		}
		keys = append(keys, strings.TrimPrefix(o.key, "pre/"))
	}
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

func TestListRanges(t *testing.T) {
	all := names("d/f", 20)
	for _, tc := range []struct {
		name            string
		journal, bucket []string
		pages           int // ListPage calls, when checked
	}{
		{name: "in sync", journal: all, bucket: all, pages: 7}, // 6 ranges of 3, the open rest
		{name: "empty journal", journal: nil, bucket: all, pages: 1},
		{name: "empty bucket", journal: all, bucket: nil, pages: 7},
		{name: "unknown keys everywhere", journal: all[5:15:15],
			bucket: slices.Concat([]string{"a", "d/", "d/f004x"}, all, []string{"d/f009a", "d/f009b", "d/f009c", "d/f009d", "z"})},
		{name: "boundaries gone from the bucket", journal: all, bucket: slices.DeleteFunc(slices.Clone(all), func(k string) bool {
			return k == "d/f002" || k == "d/f005" || k == "d/f017"
		})},
		{name: "bucket a subset", journal: all, bucket: all[7:9]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := rangeHarness(t, 3, tc.journal, tc.bucket)
			got, err := listAll(t, h, "")
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(tc.bucket)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("listing\n got %q\nwant %q", got, want)
			}
			if tc.pages > 0 && len(h.fake.pages) != tc.pages {
				t.Fatalf("%d pages asked, want %d: %+v", len(h.fake.pages), tc.pages, h.fake.pages)
			}
			for _, q := range h.fake.pages {
				if q.maxKeys > 0 && q.maxKeys != 3 {
					t.Fatalf("page of %d keys: %+v", q.maxKeys, q)
				}
			}
		})
	}
}

// A subtree pass lists only its subtree, split by the journal's keys in
// it.
func TestListRangesSubtree(t *testing.T) {
	keys := slices.Concat(names("a/f", 5), names("b/f", 10), names("c/f", 5))
	h := rangeHarness(t, 3, keys, keys)
	got, err := listAll(t, h, "b/")
	if err != nil {
		t.Fatal(err)
	}
	if want := names("b/f", 10); !slices.Equal(got, want) {
		t.Fatalf("listing\n got %q\nwant %q", got, want)
	}
	for _, q := range h.fake.pages {
		if q.prefix != "pre/b/" {
			t.Fatalf("page outside the subtree: %+v", q)
		}
	}
}

// Past a directory of more than bigDirPages ranges the rest is one open
// range, listed with continuation tokens: MinIO would read the directory
// again for every range that starts inside it.
func TestListRangesBigDirectory(t *testing.T) {
	keys := slices.Concat(names("a/f", 6), names("big/f", 3*bigDirPages+10), names("c/f", 9))
	h := rangeHarness(t, 3, keys, keys)
	got, err := listAll(t, h, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, keys) {
		t.Fatalf("listing\n got %q\nwant %q", got, keys)
	}
	inBig, open := 0, 0
	for _, q := range h.fake.pages {
		switch {
		case q.maxKeys == 0:
			// the open range: whole pages, continuation tokens
			open++
			if !strings.HasPrefix(q.startAfter, "pre/big/") {
				t.Fatalf("the open range starts at %q, want inside the big directory", q.startAfter)
			}
		case strings.HasPrefix(q.startAfter, "pre/big/"):
			inBig++
		case q.startAfter > "pre/big/":
			t.Fatalf("a range starts after the big directory: %+v", q)
		}
	}
	if inBig > bigDirPages {
		t.Fatalf("%d ranges start inside the big directory, want at most %d", inBig, bigDirPages)
	}
	if open != 1 {
		t.Fatalf("%d open ranges, want 1: %+v", open, h.fake.pages)
	}
}

func TestListRangesError(t *testing.T) {
	keys := names("d/f", 20)
	h := rangeHarness(t, 3, keys, keys)
	h.fake.listErr = errors.New("boom") // every page but the first fails
	got, err := listAll(t, h, "")
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v, want boom", err)
	}
	if !slices.Equal(got, keys[:1]) {
		t.Fatalf("objects before the error: %q, want %q", got, keys[:1])
	}
}

// Stopping a listing half read ends its goroutines (the race detector and
// the test's end would tell a leak that blocks).
func TestListRangesStop(t *testing.T) {
	keys := names("d/f", 200)
	h := rangeHarness(t, 3, keys, keys)
	next, stop := h.m.listBucket(context.Background(), h.m.mappings[0], "", false)
	for range 10 {
		if _, err, ok := next(); !ok || err != nil {
			t.Fatalf("next: %v %v", ok, err)
		}
	}
	stop()
}

// A canceled listing ends with an error, never as if it were complete.
func TestListRangesCanceled(t *testing.T) {
	keys := names("d/f", 200)
	h := rangeHarness(t, 3, keys, keys)
	ctx, cancel := context.WithCancel(context.Background())
	next, stop := h.m.listBucket(ctx, h.m.mappings[0], "", false)
	defer stop()
	if _, err, ok := next(); !ok || err != nil {
		t.Fatalf("next: %v %v", ok, err)
	}
	cancel()
	for range len(keys) {
		_, err, ok := next()
		if !ok {
			t.Fatal("the listing ended without an error after the cancel")
		}
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			return
		}
	}
	t.Fatal("no error after the cancel")
}

// Without pages (or with metadata and an empty journal) a pass reads List
// ahead in the same order.
func TestListAheadSequential(t *testing.T) {
	keys := names("d/f", 50)
	h := rangeHarness(t, 3, keys, keys)
	h.fake.noPages = true
	got, err := listAll(t, h, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, keys) {
		t.Fatalf("listing\n got %q\nwant %q", got, keys)
	}
	if len(h.fake.pages) != 0 {
		t.Fatalf("%d pages asked of a store without pages", len(h.fake.pages))
	}
	h.fake.listErr = errors.New("boom")
	if _, err := listAll(t, h, ""); err == nil {
		t.Fatal("no error from a failing List")
	}
}
