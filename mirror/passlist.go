package mirror

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// A pass reads the bucket listing while it walks the tree and the journal:
// listing pages are fetched ahead, so that the store's work overlaps the
// pass's own. On a store that lists pages from any key (pageLister), the
// listing is also cut into key ranges at every rangeKeys-th key of the
// journal, which knows what the bucket holds, and several ranges are
// listed at once; on MinIO a listing is the server's work on each object's
// metadata, one page after the other, and it was most of the time of a
// pass with nothing to do. Each range is one page when the bucket matches
// the journal. The ranges cover the whole key space of the prefix,
// whatever the journal says: a key the journal does not know falls in one
// of them, so the listing is complete either way.
const (
	// rangeKeys is the journal keys per range: one page of the store.
	rangeKeys = 1000
	// rangeWorkers bounds the ranges listed at once.
	rangeWorkers = 3
	// rangeAhead is the pages a range may hold before the pass reads them.
	rangeAhead = 2
	// bigDirPages ends the splitting at a directory of more keys than
	// this many ranges: a listing from a key inside a directory makes
	// MinIO read all of the directory again, so the rest is listed as one
	// range instead (continuation tokens: the directory is read once).
	bigDirPages = 8
	// listAhead is the objects a sequential listing holds ahead.
	listAhead = 2 * rangeKeys
)

// listBucket starts the listing of mp's bucket under sub for a pass. next
// returns the objects in key order (full keys); after an error it returns
// nothing more. stop ends the listing and waits for its goroutines.
func (m *Mirror) listBucket(ctx context.Context, mp *mapping, sub string, withMeta bool) (next func() (objectInfo, error, bool), stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() {
		cancel()
		wg.Wait()
	}
	prefix := mp.prefix + sub
	pl, ok := m.store.(pageLister)
	if !ok || !pl.pagesSupported() {
		return m.listAheadSeq(ctx, &wg, mp.cfg.Bucket, prefix, withMeta), stop
	}
	size := rangeKeys
	if m.testRangeKeys > 0 {
		size = m.testRangeKeys
	}
	var bounds func() string
	if !withMeta {
		// withMeta is asked when the journal is empty: nothing to split by
		sc := &rangeScout{keys: m.j.keyStream(mp.name, bucketFiles, sub), prefix: mp.prefix, size: size}
		bounds = sc.next
	}
	return listRanges(ctx, &wg, pl, mp.cfg.Bucket, prefix, withMeta, size, bounds), stop
}

// listAheadSeq reads List in a goroutine, listAhead objects ahead.
func (m *Mirror) listAheadSeq(ctx context.Context, wg *sync.WaitGroup, bucket, prefix string, withMeta bool) func() (objectInfo, error, bool) {
	type item struct {
		o   objectInfo
		err error
	}
	ch := make(chan item, listAhead)
	wg.Go(func() {
		defer close(ch)
		for o, err := range m.store.List(ctx, bucket, prefix, withMeta) {
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
	done := false
	return func() (objectInfo, error, bool) {
		if done {
			return objectInfo{}, nil, false
		}
		it, ok := <-ch
		switch {
		case !ok && ctx.Err() != nil:
			done = true
			return objectInfo{}, fmt.Errorf("list s3://%s/%s: %w", bucket, prefix, ctx.Err()), true
		case !ok:
			done = true
			return objectInfo{}, nil, false
		case it.err != nil:
			done = true
		}
		return it.o, it.err, true
	}
}

// keyRange is the keys after after, up to and including last ("" = to the
// end of the prefix).
type keyRange struct {
	after, last string
	pages       chan rangePage // closed by the fetcher when done
}

type rangePage struct {
	objs []objectInfo
	err  error
}

// listRanges lists prefix in the ranges bounds yields (each call the next
// range's last key, "" for an open end; nil bounds: one open range), up to
// rangeWorkers ranges at once, pages of size keys, and returns the objects
// in order.
func listRanges(ctx context.Context, wg *sync.WaitGroup, pl pageLister, bucket, prefix string, withMeta bool, size int, bounds func() string) func() (objectInfo, error, bool) {
	ranges := make(chan *keyRange, rangeWorkers)
	sem := make(chan struct{}, rangeWorkers)
	wg.Go(func() {
		defer close(ranges)
		after := ""
		for {
			last := ""
			if bounds != nil {
				last = bounds()
			}
			r := &keyRange{after: after, last: last, pages: make(chan rangePage, rangeAhead)}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Go(func() {
				defer func() { <-sem }()
				defer close(r.pages)
				fetchRange(ctx, pl, bucket, prefix, withMeta, size, r)
			})
			select {
			case ranges <- r:
			case <-ctx.Done():
				return
			}
			if last == "" {
				return
			}
			after = last
		}
	})
	var (
		cur  *keyRange
		buf  []objectInfo
		done bool
	)
	return func() (objectInfo, error, bool) {
		for !done {
			if len(buf) > 0 {
				o := buf[0]
				buf = buf[1:]
				return o, nil, true
			}
			if cur == nil {
				r, ok := <-ranges
				if !ok {
					done = true
					if err := ctx.Err(); err != nil {
						return objectInfo{}, fmt.Errorf("list s3://%s/%s: %w", bucket, prefix, err), true
					}
					return objectInfo{}, nil, false
				}
				cur = r
			}
			pg, ok := <-cur.pages
			switch {
			case !ok:
				cur = nil
			case pg.err != nil:
				done = true
				return objectInfo{}, pg.err, true
			default:
				buf = pg.objs
			}
		}
		return objectInfo{}, nil, false
	}
}

// fetchRange lists r into r.pages: a bounded range one page of size keys
// at a time from a key (the pages after the first only when the bucket
// holds keys the journal does not know), an open one with continuation
// tokens.
func fetchRange(ctx context.Context, pl pageLister, bucket, prefix string, withMeta bool, size int, r *keyRange) {
	q := pageQuery{prefix: prefix, startAfter: r.after, withMeta: withMeta}
	if r.last != "" {
		q.maxKeys = size
	}
	send := func(pg rangePage) bool {
		select {
		case r.pages <- pg:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		p, err := pl.ListPage(ctx, bucket, q)
		if err != nil {
			send(rangePage{err: err})
			return
		}
		objs, more := p.objects, p.next != ""
		if r.last != "" {
			i := sort.Search(len(objs), func(i int) bool { return objs[i].key > r.last })
			if i < len(objs) || (i > 0 && objs[i-1].key == r.last) {
				// the range ends on this page
				objs, more = objs[:i], false
			}
		}
		if len(objs) > 0 && !send(rangePage{objs: objs}) {
			return
		}
		if !more {
			return
		}
		if r.last != "" && len(objs) > 0 {
			q = pageQuery{prefix: prefix, startAfter: objs[len(objs)-1].key, maxKeys: size, withMeta: withMeta}
		} else {
			q.token = p.next
		}
	}
}

// rangeScout finds the range boundaries of a pass's listing in the
// journal: every size-th key, until a directory of more than 8 × size
// keys.
type rangeScout struct {
	keys   *journalStream
	prefix string // the mapping's key prefix
	size   int
	dir    string // directory of the last key read
	inDir  int    // keys read in dir
	done   bool
}

// next returns the next boundary as a full key, "" when the rest is one
// range.
func (s *rangeScout) next() string {
	if s.done {
		return ""
	}
	for n := 0; ; {
		e, ok := s.keys.next()
		if !ok {
			// the end of the journal (or an error reading it: the listing
			// is complete all the same, only less parallel)
			s.done = true
			return ""
		}
		dir := e.k[:strings.LastIndexByte(e.k, '/')+1]
		if dir == s.dir {
			s.inDir++
		} else {
			s.dir, s.inDir = dir, 1
		}
		if s.inDir > bigDirPages*s.size {
			s.done = true
			return ""
		}
		n++
		if n == s.size {
			return s.prefix + e.k
		}
	}
}
