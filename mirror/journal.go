package mirror

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// journalFile is the journal's name inside state_dir.
const journalFile = "journal.db"

// journalLockTimeout bounds the wait for bbolt's file lock, so that a
// second process gets a clear error instead of hanging.
const journalLockTimeout = time.Second

// ErrJournalInUse is returned by OpenJournal when another process holds the
// journal.
var ErrJournalInUse = errors.New("in use by another ftpgate process")

// Bucket names. Each mapping has a bucket under bucketMappings with one
// sub-bucket per kind of entry; keys are slash paths relative to the
// mapping's local root, so bbolt's byte order is S3 key order.
const (
	bucketMappings   = "mappings"
	bucketFiles      = "files"      // rel → fileRecord
	bucketInodes     = "inodes"     // inode (8 bytes BE) + rel → ""
	bucketPending    = "pending"    // rel → pendingRecord
	bucketTombstones = "tombstones" // rel → deletion time (varint ns)
	bucketMeta       = "meta"       // name → value
)

// Meta keys.
const (
	metaDevice   = "device"   // uvarint device id of the local root
	metaSentinel = "sentinel" // present once the sentinel was created
)

// Journal is the mirror's persistent state in state_dir/journal.db: what
// was mirrored, what is pending, tombstones of local deletions, and
// per-mapping meta. It is safe for concurrent use; only one process may
// hold it open.
type Journal struct {
	db   *bolt.DB
	path string
}

// OpenJournal opens (creating it when missing) the journal in stateDir.
// When another process holds it, the error says so and wraps
// ErrJournalInUse.
func OpenJournal(stateDir string) (*Journal, error) {
	p := filepath.Join(stateDir, journalFile)
	// The freelist is persisted: without it bbolt rebuilds it at every open
	// by reading every page of the file, which maps the whole journal into
	// the process (170 MB at a million files) before the first pass starts.
	// Writing it costs a page or two per commit.
	db, err := bolt.Open(p, 0o600, &bolt.Options{
		Timeout:      journalLockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("journal %s is %w", p, ErrJournalInUse)
	}
	if err != nil {
		// bbolt's error names the file already
		return nil, fmt.Errorf("open journal: %w", err)
	}
	j := &Journal{db: db, path: p}
	// a journal written before the freelist was persisted had it rebuilt
	// from every page just now: give those pages back
	j.releasePages()
	return j, nil
}

// Close closes the journal. The Mirror using it must have stopped.
func (j *Journal) Close() error {
	if err := j.db.Close(); err != nil {
		return fmt.Errorf("close journal %s: %w", j.path, err)
	}
	return nil
}

// Path is the journal's file.
func (j *Journal) Path() string { return j.path }

// fileRecord is what the journal knows of a mirrored file.
type fileRecord struct {
	size  int64
	mtime int64 // ns since the epoch
	ctime int64 // ns since the epoch
	inode uint64
	sha   [32]byte
	etag  string // "" when unknown (snowball): taken from the next listing
}

// sameFile reports whether st is the file this record describes, unchanged.
func (r fileRecord) sameFile(st fileStat) bool {
	return r.sameContentCandidate(st) && r.ctime == st.ctime
}

// sameContentCandidate reports whether size, mtime and inode match: the
// content is then unchanged unless someone restored the mtime, which only
// the ctime tells.
func (r fileRecord) sameContentCandidate(st fileStat) bool {
	return r.size == st.size && r.mtime == st.mtime && r.inode == st.inode
}

// Record encoding flags.
const (
	recVersion  = 1
	flagMD5ETag = 1 << 0 // the ETag is 32 hex digits, stored as 16 bytes
)

var errCorrupt = errors.New("journal entry corrupt")

func (r fileRecord) encode() []byte {
	b := make([]byte, 0, 2+4*binary.MaxVarintLen64+32+1+len(r.etag))
	var flags byte
	var md5 []byte
	if len(r.etag) == 32 {
		if d, err := hex.DecodeString(r.etag); err == nil && hex.EncodeToString(d) == r.etag {
			flags |= flagMD5ETag
			md5 = d
		}
	}
	b = append(b, recVersion, flags)
	b = binary.AppendUvarint(b, uint64(r.size))
	b = binary.AppendVarint(b, r.mtime)
	b = binary.AppendVarint(b, r.ctime)
	b = binary.AppendUvarint(b, r.inode)
	b = append(b, r.sha[:]...)
	if md5 != nil {
		return append(b, md5...)
	}
	b = binary.AppendUvarint(b, uint64(len(r.etag)))
	return append(b, r.etag...)
}

func decodeRecord(b []byte) (fileRecord, error) {
	var r fileRecord
	if len(b) < 2 || b[0] != recVersion {
		return r, errCorrupt
	}
	flags := b[1]
	d := decoder{b: b[2:]}
	r.size = int64(d.uvarint())
	r.mtime = d.varint()
	r.ctime = d.varint()
	r.inode = d.uvarint()
	copy(r.sha[:], d.bytes(32))
	if flags&flagMD5ETag != 0 {
		r.etag = hex.EncodeToString(d.bytes(16))
	} else {
		r.etag = string(d.bytes(int(d.uvarint())))
	}
	if d.err || len(d.b) != 0 {
		return fileRecord{}, errCorrupt
	}
	return r, nil
}

// opKind is what a pending operation does.
type opKind byte

const (
	opSync   opKind = 1 // make the object match the local file (put, copy or nothing)
	opDelete opKind = 2 // delete the object of a file removed locally
)

func (k opKind) String() string {
	switch k {
	case opSync:
		return "sync"
	case opDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", byte(k))
}

// pendingRecord is an operation committed before it runs and removed once
// it is done.
type pendingRecord struct {
	op       opKind
	enqueued int64 // ns since the epoch
}

func (p pendingRecord) encode() []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64)
	b = append(b, byte(p.op))
	return binary.AppendVarint(b, p.enqueued)
}

func decodePending(b []byte) (pendingRecord, error) {
	if len(b) < 2 {
		return pendingRecord{}, errCorrupt
	}
	p := pendingRecord{op: opKind(b[0])}
	d := decoder{b: b[1:]}
	p.enqueued = d.varint()
	if d.err || len(d.b) != 0 || (p.op != opSync && p.op != opDelete) {
		return pendingRecord{}, errCorrupt
	}
	return p, nil
}

func encodeTime(ns int64) []byte { return binary.AppendVarint(nil, ns) }

func decodeTime(b []byte) (int64, error) {
	d := decoder{b: b}
	ns := d.varint()
	if d.err || len(d.b) != 0 {
		return 0, errCorrupt
	}
	return ns, nil
}

// decoder reads varints and byte strings; any shortage sets err.
type decoder struct {
	b   []byte
	err bool
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n int) []byte {
	if n < 0 || n > len(d.b) {
		d.err, d.b = true, nil
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func inodeKey(inode uint64, rel string) []byte {
	k := make([]byte, 8, 8+len(rel))
	binary.BigEndian.PutUint64(k, inode)
	return append(k, rel...)
}

// mtx is one transaction on one mapping's buckets. In a read-only
// transaction the buckets may be missing; reads then find nothing.
type mtx struct {
	tx   *bolt.Tx
	m    *bolt.Bucket
	name string
}

func (t *mtx) sub(name string) *bolt.Bucket {
	if t.m == nil {
		return nil
	}
	return t.m.Bucket([]byte(name))
}

// view runs fn in a read-only transaction on mapping name.
func (j *Journal) view(name string, fn func(*mtx) error) error {
	return j.db.View(func(tx *bolt.Tx) error {
		return fn(openMtx(tx, name))
	})
}

// update runs fn in a read-write transaction on mapping name, creating its
// buckets when missing.
func (j *Journal) update(name string, fn func(*mtx) error) error {
	return j.db.Update(func(tx *bolt.Tx) error {
		t, err := createMtx(tx, name)
		if err != nil {
			return err
		}
		return fn(t)
	})
}

func openMtx(tx *bolt.Tx, name string) *mtx {
	t := &mtx{tx: tx, name: name}
	if root := tx.Bucket([]byte(bucketMappings)); root != nil {
		t.m = root.Bucket([]byte(name))
	}
	return t
}

func createMtx(tx *bolt.Tx, name string) (*mtx, error) {
	root, err := tx.CreateBucketIfNotExists([]byte(bucketMappings))
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	m, err := root.CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return nil, fmt.Errorf("journal mapping %s: %w", name, err)
	}
	for _, b := range []string{bucketFiles, bucketInodes, bucketPending, bucketTombstones, bucketMeta} {
		sub, err := m.CreateBucketIfNotExists([]byte(b))
		if err != nil {
			return nil, fmt.Errorf("journal mapping %s: %w", name, err)
		}
		// records mostly arrive in key order (passes walk in key order):
		// full pages keep the journal, and what a pass maps in, small
		sub.FillPercent = journalFill
	}
	return &mtx{tx: tx, m: m, name: name}, nil
}

func (t *mtx) file(rel string) (fileRecord, bool, error) {
	b := t.sub(bucketFiles)
	if b == nil {
		return fileRecord{}, false, nil
	}
	v := b.Get([]byte(rel))
	if v == nil {
		return fileRecord{}, false, nil
	}
	r, err := decodeRecord(v)
	if err != nil {
		return fileRecord{}, false, fmt.Errorf("journal %s %s: %w", t.name, rel, err)
	}
	return r, true, nil
}

// putFile stores rel's record, keeps the inode index in step and drops a
// tombstone: the path exists again.
func (t *mtx) putFile(rel string, r fileRecord) error {
	files := t.sub(bucketFiles)
	if old := files.Get([]byte(rel)); old != nil {
		if o, err := decodeRecord(old); err == nil && o.inode != r.inode {
			if err := t.sub(bucketInodes).Delete(inodeKey(o.inode, rel)); err != nil {
				return err
			}
		}
	}
	if err := files.Put([]byte(rel), r.encode()); err != nil {
		return fmt.Errorf("journal %s %s: %w", t.name, rel, err)
	}
	if r.inode != 0 {
		if err := t.sub(bucketInodes).Put(inodeKey(r.inode, rel), nil); err != nil {
			return err
		}
	}
	return t.sub(bucketTombstones).Delete([]byte(rel))
}

// deleteFile drops rel's record and its inode index entry.
func (t *mtx) deleteFile(rel string) error {
	files := t.sub(bucketFiles)
	old := files.Get([]byte(rel))
	if old == nil {
		return nil
	}
	if o, err := decodeRecord(old); err == nil {
		if err := t.sub(bucketInodes).Delete(inodeKey(o.inode, rel)); err != nil {
			return err
		}
	}
	return files.Delete([]byte(rel))
}

// byInode lists the paths whose record has inode.
func (t *mtx) byInode(inode uint64) []string {
	b := t.sub(bucketInodes)
	if b == nil || inode == 0 {
		return nil
	}
	var out []string
	prefix := inodeKey(inode, "")
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[8:]))
	}
	return out
}

func (t *mtx) putPending(rel string, p pendingRecord) error {
	return t.sub(bucketPending).Put([]byte(rel), p.encode())
}

func (t *mtx) deletePending(rel string) error {
	return t.sub(bucketPending).Delete([]byte(rel))
}

func (t *mtx) putTombstone(rel string, ns int64) error {
	return t.sub(bucketTombstones).Put([]byte(rel), encodeTime(ns))
}

func (t *mtx) deleteTombstone(rel string) error {
	return t.sub(bucketTombstones).Delete([]byte(rel))
}

// tombstone reports when rel was seen deleted locally.
func (t *mtx) tombstone(rel string) (time.Time, bool) {
	b := t.sub(bucketTombstones)
	if b == nil {
		return time.Time{}, false
	}
	v := b.Get([]byte(rel))
	if v == nil {
		return time.Time{}, false
	}
	ns, err := decodeTime(v)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// empty reports whether the mapping has no file records.
func (t *mtx) empty() bool {
	b := t.sub(bucketFiles)
	if b == nil {
		return true
	}
	k, _ := b.Cursor().First()
	return k == nil
}

func (t *mtx) meta(key string) []byte {
	b := t.sub(bucketMeta)
	if b == nil {
		return nil
	}
	return b.Get([]byte(key))
}

func (t *mtx) setMeta(key string, value []byte) error {
	return t.sub(bucketMeta).Put([]byte(key), value)
}

// device is the recorded device of the local root; ok is false before the
// first pass recorded one.
func (t *mtx) device() (dev uint64, ok bool) {
	v := t.meta(metaDevice)
	if v == nil {
		return 0, false
	}
	d := decoder{b: v}
	dev = d.uvarint()
	return dev, !d.err
}

func (t *mtx) setDevice(dev uint64) error {
	return t.setMeta(metaDevice, binary.AppendUvarint(nil, dev))
}

// journalFill is how full bbolt fills pages when it splits them.
const journalFill = 0.9

// scanBatch is how many entries a journal stream reads per transaction:
// transactions stay short, so that writers are never held up by a pass.
const scanBatch = 512

// kv is one journal entry read by a stream; both slices are copies.
type kv struct {
	k string
	v []byte
}

// journalStream reads one sub-bucket of one mapping in key order, in
// short read transactions, from keys with prefix.
type journalStream struct {
	j        *Journal
	name     string
	sub      string
	prefix   string
	after    string
	buf      []kv
	i        int
	done     bool
	err      error
	reads    int
	keysOnly bool // entries come without their values
}

func (j *Journal) stream(name, sub, prefix string) *journalStream {
	return &journalStream{j: j, name: name, sub: sub, prefix: prefix}
}

// keyStream is stream without the values.
func (j *Journal) keyStream(name, sub, prefix string) *journalStream {
	return &journalStream{j: j, name: name, sub: sub, prefix: prefix, keysOnly: true}
}

// next returns the next entry; ok is false at the end or on error (Err).
func (s *journalStream) next() (kv, bool) {
	if s.i < len(s.buf) {
		e := s.buf[s.i]
		s.i++
		return e, true
	}
	if s.done || s.err != nil {
		return kv{}, false
	}
	s.fill()
	if s.i < len(s.buf) {
		e := s.buf[s.i]
		s.i++
		return e, true
	}
	return kv{}, false
}

func (s *journalStream) fill() {
	s.buf, s.i = s.buf[:0], 0
	s.reads++
	s.err = s.j.view(s.name, func(t *mtx) error {
		b := t.sub(s.sub)
		if b == nil {
			s.done = true
			return nil
		}
		c := b.Cursor()
		var k, v []byte
		if s.after == "" && s.reads == 1 {
			k, v = c.Seek([]byte(s.prefix))
		} else {
			k, v = c.Seek([]byte(s.after))
			if k != nil && string(k) == s.after {
				k, v = c.Next()
			}
		}
		for ; k != nil && len(s.buf) < scanBatch; k, v = c.Next() {
			if !bytes.HasPrefix(k, []byte(s.prefix)) {
				s.done = true
				return nil
			}
			e := kv{k: string(k)}
			if !s.keysOnly {
				e.v = bytes.Clone(v)
			}
			s.buf = append(s.buf, e)
		}
		if k == nil {
			s.done = true
		}
		return nil
	})
	if n := len(s.buf); n > 0 {
		s.after = s.buf[n-1].k
	}
	if s.reads%64 == 0 {
		s.j.releasePages()
	}
}

// releasePages drops the journal's mapped pages from the process's
// resident set: a pass reads the whole journal, and the kernel would
// otherwise count every page it touched against the daemon for good. The
// pages stay in the page cache. The read transaction keeps bbolt from
// remapping meanwhile.
func (j *Journal) releasePages() {
	_ = j.db.View(func(tx *bolt.Tx) error {
		releaseMapped(j.db.Info().Data, tx.Size())
		return nil
	})
}

// writeReq is one change for the journal writer.
type writeReq struct {
	name string
	fn   func(*mtx) error
	done func(error)
}

// journalWriter commits the mirror's journal changes in groups: it takes
// every request waiting, runs them in one transaction, and calls each
// done. Under load that is one fsync for many operations; alone, a request
// waits for no timer.
type journalWriter struct {
	j  *Journal
	in chan writeReq
}

func newJournalWriter(j *Journal) *journalWriter {
	return &journalWriter{j: j, in: make(chan writeReq, 1024)}
}

// submit queues fn; done (may be nil) is called after the commit.
func (w *journalWriter) submit(name string, fn func(*mtx) error, done func(error)) {
	w.in <- writeReq{name: name, fn: fn, done: done}
}

// do runs fn and waits for its commit.
func (w *journalWriter) do(name string, fn func(*mtx) error) error {
	ch := make(chan error, 1)
	w.submit(name, fn, func(err error) { ch <- err })
	return <-ch
}

// run commits until in is closed and drained.
func (w *journalWriter) run(closed <-chan struct{}) {
	const (
		maxGroup = 2048
		// releaseEvery is the commits after which the pages they read are
		// released: a first sync of a million files otherwise keeps every
		// page of the growing journal resident.
		releaseEvery = 64
	)
	group := make([]writeReq, 0, maxGroup)
	errs := make([]error, 0, maxGroup)
	for commits := 1; ; commits++ {
		if commits%releaseEvery == 0 {
			w.j.releasePages()
		}
		var first writeReq
		select {
		case first = <-w.in:
		case <-closed:
			select {
			case first = <-w.in:
			default:
				return
			}
		}
		group = append(group[:0], first)
	drain:
		for len(group) < maxGroup {
			select {
			case r := <-w.in:
				group = append(group, r)
			default:
				break drain
			}
		}
		errs = errs[:0]
		err := w.j.db.Update(func(tx *bolt.Tx) error {
			for _, r := range group {
				t, err := createMtx(tx, r.name)
				if err == nil {
					err = r.fn(t)
				}
				errs = append(errs, err)
			}
			return nil
		})
		for i, r := range group {
			e := err
			if e == nil {
				e = errs[i]
			}
			if r.done != nil {
				r.done(e)
			}
		}
	}
}
