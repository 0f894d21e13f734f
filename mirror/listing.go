package mirror

import (
	"context"
	"iter"
	"slices"
	"strings"
	"sync"
)

// dirLister is an objectStore that can list one level of a prefix
// (delimiter "/"). It lets a listing of many objects run as several
// requests at once: a single listing is one request after the other, and
// on MinIO the server's work per page is most of a verify's time.
type dirLister interface {
	// ListDir returns the objects directly under prefix and the
	// "directories" (common prefixes, ending in "/") below it, each in
	// key order. It stops early with truncated set past max entries.
	ListDir(ctx context.Context, bucket, prefix string, withMeta bool, max int) (objs []objectInfo, dirs []string, truncated bool, err error)
}

// Shapes of a parallel listing.
const (
	listWorkers   = 4     // subtree listings in flight
	listLevelMax  = 10000 // entries held while planning; beyond, one plain listing
	listDepthMax  = 3     // levels split into subtrees at most
	listChunk     = 256   // objects a subtree listing may run ahead
	listMinSplits = 2 * listWorkers
)

// listSegment is one part of a planned listing: an object, or a subtree
// to list recursively.
type listSegment struct {
	obj *objectInfo
	dir string
}

func (s listSegment) key() string {
	if s.obj != nil {
		return s.obj.key
	}
	return s.dir
}

// listOrdered yields the objects under prefix in key order, as
// objectStore.List does, listing subtrees in parallel when the store can
// list one level at a time. Any key of a subtree "d/" sorts after every
// key before "d/" and before every key after it, so the subtrees can be
// concatenated in order.
func listOrdered(ctx context.Context, st objectStore, bucket, prefix string, withMeta bool) iter.Seq2[objectInfo, error] {
	dl, ok := st.(dirLister)
	if !ok {
		return st.List(ctx, bucket, prefix, withMeta)
	}
	return func(yield func(objectInfo, error) bool) {
		segs, ok, err := planListing(ctx, dl, bucket, prefix, withMeta)
		if err != nil {
			yield(objectInfo{}, err)
			return
		}
		if !ok {
			for o, err := range st.List(ctx, bucket, prefix, withMeta) {
				if !yield(o, err) {
					return
				}
			}
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		defer func() {
			cancel()
			wg.Wait()
		}()
		type item struct {
			o   objectInfo
			err error
		}
		// one channel per subtree, handed over in segment order; the
		// capacity of order bounds the listings in flight
		order := make(chan chan item, listWorkers-1)
		wg.Go(func() {
			defer close(order)
			for _, s := range segs {
				if s.obj != nil {
					continue
				}
				ch := make(chan item, listChunk)
				select {
				case order <- ch:
				case <-ctx.Done():
					return
				}
				dir := s.dir
				wg.Go(func() {
					defer close(ch)
					for o, err := range st.List(ctx, bucket, dir, withMeta) {
						select {
						case ch <- item{o, err}:
						case <-ctx.Done():
							return
						}
						if err != nil {
							return
						}
					}
				})
			}
		})
		for _, s := range segs {
			if s.obj != nil {
				if !yield(*s.obj, nil) {
					return
				}
				continue
			}
			ch, ok := <-order
			if !ok {
				yield(objectInfo{}, ctx.Err())
				return
			}
			for it := range ch {
				if !yield(it.o, it.err) || it.err != nil {
					return
				}
			}
			if err := ctx.Err(); err != nil {
				yield(objectInfo{}, err)
				return
			}
		}
	}
}

// planListing splits the listing of prefix into objects and subtrees,
// going down levels that have few subtrees; ok is false when a plain
// listing is better (a level with very many objects, or nothing to split).
func planListing(ctx context.Context, dl dirLister, bucket, prefix string, withMeta bool) ([]listSegment, bool, error) {
	segs := []listSegment{{dir: prefix}}
	for depth := 0; depth < listDepthMax; depth++ {
		dirs := 0
		for _, s := range segs {
			if s.obj == nil {
				dirs++
			}
		}
		if dirs == 0 || (depth > 0 && dirs >= listMinSplits) {
			break
		}
		var next []listSegment
		held := 0
		for _, s := range segs {
			if s.obj != nil {
				next = append(next, s)
				continue
			}
			objs, subs, truncated, err := dl.ListDir(ctx, bucket, s.dir, withMeta, listLevelMax-held)
			if err != nil {
				return nil, false, err
			}
			if truncated {
				return nil, false, nil
			}
			held += len(objs) + len(subs)
			for i := range objs {
				next = append(next, listSegment{obj: &objs[i]})
			}
			for _, d := range subs {
				next = append(next, listSegment{dir: d})
			}
		}
		slices.SortFunc(next, func(a, b listSegment) int { return strings.Compare(a.key(), b.key()) })
		segs = next
	}
	return segs, true, nil
}
