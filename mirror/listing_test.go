package mirror

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// dirFakeStore is a fakeStore that can list one level, as S3Store does.
type dirFakeStore struct {
	*fakeStore
	dirErr error // returned by ListDir when set
}

var _ dirLister = dirFakeStore{}

func (f dirFakeStore) ListDir(ctx context.Context, bucket, prefix string, withMeta bool, max int) ([]objectInfo, []string, bool, error) {
	if f.dirErr != nil {
		return nil, nil, false, f.dirErr
	}
	var objs []objectInfo
	var dirs []string
	for o, err := range f.List(ctx, bucket, prefix, withMeta) {
		if err != nil {
			return nil, nil, false, err
		}
		rest := strings.TrimPrefix(o.key, prefix)
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			d := prefix + rest[:i+1]
			if len(dirs) == 0 || dirs[len(dirs)-1] != d {
				dirs = append(dirs, d)
			}
			continue
		}
		objs = append(objs, o)
	}
	if len(objs)+len(dirs) > max {
		return nil, nil, true, nil
	}
	return objs, dirs, false, nil
}

func TestListOrdered(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "a.txt", "a0", "b", "b-", "c", "z", "ü", "a b"}
	tests := []struct {
		name   string
		prefix string
		keys   int
		depth  int
	}{
		{"flat", "", 50, 1},
		{"nested", "", 400, 4},
		{"under a prefix", "pre/", 300, 3},
		{"one top dir", "", 200, 5},
		{"empty", "", 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeStore()
			for i := range tt.keys {
				var parts []string
				if tt.name == "one top dir" {
					parts = append(parts, "uploads")
				}
				for range 1 + rng.IntN(tt.depth) {
					parts = append(parts, names[rng.IntN(len(names))])
				}
				parts[len(parts)-1] += fmt.Sprint(i % 7)
				fs.objects["b/"+tt.prefix+strings.Join(parts, "/")] = fakeObject{data: []byte{byte(i)}, etag: fmt.Sprint(i)}
			}
			fs.objects["b/other/x"] = fakeObject{}
			var want []string
			for o, err := range fs.List(t.Context(), "b", tt.prefix, false) {
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, o.key)
			}
			var got []string
			for o, err := range listOrdered(t.Context(), dirFakeStore{fakeStore: fs}, "b", tt.prefix, false) {
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, o.key)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("listOrdered gave %d keys, want %d in key order\ngot  %q\nwant %q", len(got), len(want), got, want)
			}
		})
	}
}

func TestListOrderedErrors(t *testing.T) {
	fs := newFakeStore()
	for i := range 50 {
		fs.objects[fmt.Sprintf("b/d%02d/f", i)] = fakeObject{}
	}
	boom := errors.New("boom")
	var err error
	for _, e := range listOrdered(t.Context(), dirFakeStore{fakeStore: fs, dirErr: boom}, "b", "", false) {
		err = e
	}
	if !errors.Is(err, boom) {
		t.Errorf("a failed plan: err %v, want boom", err)
	}
	fs.listErr = boom // every listing fails after its first object
	err = nil
	for _, e := range listOrdered(t.Context(), dirFakeStore{fakeStore: fs}, "b", "", false) {
		if e != nil {
			err = e
			break
		}
	}
	if !errors.Is(err, boom) {
		t.Errorf("a failed listing: err %v, want boom", err)
	}
	// stopping early leaves no goroutine behind (the race detector and
	// the test's leak check would see it)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for range listOrdered(ctx, dirFakeStore{fakeStore: newFakeStoreWith(200)}, "b", "", false) {
		cancel()
		break
	}
}

func newFakeStoreWith(n int) *fakeStore {
	fs := newFakeStore()
	for i := range n {
		fs.objects[fmt.Sprintf("b/d%03d/f%d", i%40, i)] = fakeObject{}
	}
	return fs
}
