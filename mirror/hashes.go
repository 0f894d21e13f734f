package mirror

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// hashesFile is the hash cache's name inside state_dir. It is a file of its
// own, not part of journal.db, so that `ftpgate verify` can run while
// `ftpgate serve` holds the journal.
const hashesFile = "hashes.db"

// hashesLockTimeout bounds the wait for another verify holding the cache.
const hashesLockTimeout = 30 * time.Second

// HashCache is the cache of local files' digests in state_dir/hashes.db,
// keyed by mapping and path and valid while the file's inode, size, mtime
// and ctime are unchanged. It is safe for concurrent use; one process at a
// time holds it.
type HashCache struct {
	db   *bolt.DB
	path string
}

// OpenHashCache opens (creating it when missing) the hash cache in
// stateDir, waiting up to 30 seconds for another process holding it.
func OpenHashCache(stateDir string) (*HashCache, error) {
	p := filepath.Join(stateDir, hashesFile)
	db, err := bolt.Open(p, 0o600, &bolt.Options{
		Timeout:        hashesLockTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("hash cache %s is in use by another ftpgate verify", p)
	}
	if err != nil {
		return nil, fmt.Errorf("open hash cache: %w", err)
	}
	return &HashCache{db: db, path: p}, nil
}

// Close closes the cache.
func (h *HashCache) Close() error {
	if err := h.db.Close(); err != nil {
		return fmt.Errorf("close hash cache %s: %w", h.path, err)
	}
	return nil
}

// digests are a local file's hashes and the stat they are valid for, and
// what is known of its object: the SHA-256 of the object with ETag
// objETag, so that a listing without metadata (cheaper on MinIO) is enough
// while the object keeps that ETag.
type digests struct {
	st      fileStat // size, mtime, ctime, inode
	sha     [32]byte
	md5     [16]byte
	hasMD5  bool
	local   bool     // sha (and md5 when hasMD5) are the local file's
	objETag string   // "" when nothing is known of the object
	objSHA  [32]byte // valid when objETag != "" and !objNoSHA
	// objNoSHA: the object with objETag has no X-Amz-Meta-Sha256 (its
	// MD5 ETag, if single-part, is what can be compared)
	objNoSHA bool
}

// digests encoding: four uint64s, two sums, flags, then when flagObject
// the object's SHA-256 and its ETag to the end.
const (
	digestsFixed = 8 + 8 + 8 + 8 + 32 + 16 + 1
	flagHasMD5   = 1 << 0
	flagLocal    = 1 << 1
	flagObject   = 1 << 2
	flagObjNoSHA = 1 << 3
)

func (d digests) encode() []byte {
	b := make([]byte, 0, digestsFixed+32+len(d.objETag))
	b = binary.BigEndian.AppendUint64(b, uint64(d.st.size))
	b = binary.BigEndian.AppendUint64(b, uint64(d.st.mtime))
	b = binary.BigEndian.AppendUint64(b, uint64(d.st.ctime))
	b = binary.BigEndian.AppendUint64(b, d.st.inode)
	b = append(b, d.sha[:]...)
	b = append(b, d.md5[:]...)
	var flags byte
	if d.hasMD5 {
		flags |= flagHasMD5
	}
	if d.local {
		flags |= flagLocal
	}
	if d.objETag != "" {
		flags |= flagObject
	}
	if d.objNoSHA {
		flags |= flagObjNoSHA
	}
	b = append(b, flags)
	if d.objETag != "" {
		b = append(b, d.objSHA[:]...)
		b = append(b, d.objETag...)
	}
	return b
}

func decodeDigests(b []byte) (digests, bool) {
	if len(b) < digestsFixed {
		return digests{}, false
	}
	var d digests
	d.st.size = int64(binary.BigEndian.Uint64(b[0:]))
	d.st.mtime = int64(binary.BigEndian.Uint64(b[8:]))
	d.st.ctime = int64(binary.BigEndian.Uint64(b[16:]))
	d.st.inode = binary.BigEndian.Uint64(b[24:])
	copy(d.sha[:], b[32:64])
	copy(d.md5[:], b[64:80])
	flags := b[80]
	d.hasMD5 = flags&flagHasMD5 != 0
	d.local = flags&flagLocal != 0
	if flags&flagObject != 0 {
		rest := b[digestsFixed:]
		if len(rest) <= 32 {
			return digests{}, false
		}
		copy(d.objSHA[:], rest[:32])
		d.objETag = string(rest[32:])
		d.objNoSHA = flags&flagObjNoSHA != 0
	}
	return d, true
}

// valid reports whether d's local sums still describe the file with stat
// st.
func (d digests) valid(st fileStat) bool {
	return d.local && d.st.size == st.size && d.st.mtime == st.mtime && d.st.ctime == st.ctime && d.st.inode == st.inode
}

// hashStream reads one mapping's cache entries in key order in short read
// transactions, like journalStream.
type hashStream struct {
	h      *HashCache
	name   string
	prefix string
	after  string
	buf    []kv
	i      int
	done   bool
	err    error
}

func (h *HashCache) stream(name, prefix string) *hashStream {
	return &hashStream{h: h, name: name, prefix: prefix}
}

func (s *hashStream) next() (kv, bool) {
	if s.i < len(s.buf) {
		s.i++
		return s.buf[s.i-1], true
	}
	if s.done || s.err != nil {
		return kv{}, false
	}
	s.buf, s.i = s.buf[:0], 0
	s.err = s.h.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(s.name))
		if b == nil {
			s.done = true
			return nil
		}
		c := b.Cursor()
		seek := s.prefix
		if s.after != "" {
			seek = s.after
		}
		k, v := c.Seek([]byte(seek))
		if k != nil && s.after != "" && string(k) == s.after {
			k, v = c.Next()
		}
		for ; k != nil && len(s.buf) < scanBatch; k, v = c.Next() {
			if len(k) < len(s.prefix) || string(k[:len(s.prefix)]) != s.prefix {
				s.done = true
				return nil
			}
			s.buf = append(s.buf, kv{k: string(k), v: append([]byte(nil), v...)})
		}
		if k == nil {
			s.done = true
		}
		return nil
	})
	if n := len(s.buf); n > 0 {
		s.after = s.buf[n-1].k
	}
	if s.i < len(s.buf) {
		s.i++
		return s.buf[s.i-1], true
	}
	return kv{}, false
}

// empty reports whether the cache holds nothing for mapping name.
func (h *HashCache) empty(name string) bool {
	empty := true
	_ = h.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(name)); b != nil {
			k, _ := b.Cursor().First()
			empty = k == nil
		}
		return nil
	})
	return empty
}

// hashWrite is one change to the cache: a put, or a delete when d is nil.
type hashWrite struct {
	rel string
	d   *digests
}

// apply writes a batch of changes to mapping name's entries.
func (h *HashCache) apply(name string, ws []hashWrite) error {
	if len(ws) == 0 {
		return nil
	}
	err := h.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		b.FillPercent = journalFill
		for _, w := range ws {
			if w.d == nil {
				err = b.Delete([]byte(w.rel))
			} else {
				err = b.Put([]byte(w.rel), w.d.encode())
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("hash cache %s: %w", h.path, err)
	}
	return nil
}

// hashLocal reads the file at p once and returns its SHA-256 and MD5 with
// the stat they are valid for, and the bytes read. errChanged when the
// file changed while it was read.
func hashLocal(p string) (digests, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return digests{}, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return digests{}, 0, err
	}
	st := statOf(fi)
	hs, hm := sha256.New(), md5.New()
	n, err := io.Copy(io.MultiWriter(hs, hm), f)
	if err != nil {
		return digests{}, n, fmt.Errorf("read %s: %w", p, err)
	}
	if err := sameAfter(f, st); err != nil {
		return digests{}, n, err
	}
	d := digests{st: st, hasMD5: true, local: true}
	hs.Sum(d.sha[:0])
	hm.Sum(d.md5[:0])
	return d, n, nil
}
