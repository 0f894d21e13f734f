package storage

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The commit log makes small uploads durable the way databases make
// transactions durable: the bytes of an upload, with where they go, are
// appended to a log in the state directory and the log is fdatasynced,
// once for every upload that commits at the same time, before the part gets
// its final name and the client its 226. The file and its
// directory entry are written out later, by one syncfs per checkpoint,
// after which the log's records of them are no longer needed.
//
// Without the log an upload costs an fsync of the file and one of its
// directory: on ext4 some seven writes and two cache flushes per file,
// each waited for in turn. With it, a small upload costs its share of one
// sequential write and one flush.
//
// A record is only needed after the machine went down: a killed process
// leaves everything it wrote in the page cache, which the kernel writes
// out. So records carry the boot ID, and at start-up the records of an
// earlier boot are checked against the tree and the files they describe
// restored where the crash lost them; those of this boot only need the
// checkpoint.
//
// File layout: two header slots of logSlotLen bytes (a checkpoint is
// written to the slot its generation picks, so a torn header write leaves
// the other one intact), then a ring of records. A record is written at
// the head of the ring, or at its start when it does not fit before the
// end; records carry consecutive sequence numbers and a CRC, so a reader
// starting at the checkpoint knows where they stop.
const (
	// logMaxFile is the largest upload that goes through the log; larger
	// ones are fsynced in place, where the flushes are a small part of
	// the cost and writing the bytes twice a large one.
	logMaxFile = 256 << 10
	// MinCommitLog is the smallest log Open accepts.
	MinCommitLog = 1 << 20

	logSlotLen   = 4096
	logRingStart = 2 * logSlotLen
	logRecMagic  = 0x4c434746 // "FGCL"
	logHdrMagic  = 0x48434746 // "FGCH"
	logVersion   = 1
	logRecHeader = 120
	logHdrLen    = 48

	// checkpointAfter is how long after the first record since the last
	// checkpoint the next one starts (sooner when half the ring is used).
	checkpointAfter = 2 * time.Second
)

// logName is the log's file in the state directory.
const logName = "commit.log"

// crc is the CRC-32C of b (hardware-assisted; MakeTable returns the
// package's one Castagnoli table).
func crc(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// errLogFull and errLogOff make an upload fall back to fsyncing in place.
var (
	errLogFull = errors.New("commit log full")
	errLogOff  = errors.New("commit log off after a write error")
)

// logRecord is one committed upload.
type logRecord struct {
	seq      uint64
	boot     [16]byte
	dev, ino uint64 // of the part, which becomes the final file
	size     int64
	mtime    int64 // ns
	at       int64 // wall clock at commit, ns
	mode     uint32
	gid      int32
	sum      [32]byte
	path     string // root-relative slash path of the final name
	data     []byte
	pos      int64 // where recovery found it in the log
}

func (r *logRecord) encodedLen() int { return logRecHeader + len(r.path) + len(r.data) }

func (r *logRecord) encode(b []byte) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], logRecMagic)
	le.PutUint32(b[8:], uint32(len(b)))
	le.PutUint32(b[12:], uint32(len(r.path)))
	le.PutUint64(b[16:], r.seq)
	copy(b[24:40], r.boot[:])
	le.PutUint64(b[40:], r.dev)
	le.PutUint64(b[48:], r.ino)
	le.PutUint64(b[56:], uint64(r.size))
	le.PutUint64(b[64:], uint64(r.mtime))
	le.PutUint64(b[72:], uint64(r.at))
	le.PutUint32(b[80:], r.mode)
	le.PutUint32(b[84:], uint32(r.gid))
	copy(b[88:120], r.sum[:])
	copy(b[logRecHeader:], r.path)
	copy(b[logRecHeader+len(r.path):], r.data)
	le.PutUint32(b[4:], crc(b[8:]))
}

// decodeRecord reads the record at the start of b (at most max bytes
// long); ok is false where there is none: zeros, a torn write, or bytes
// of something else.
func decodeRecord(b []byte) (r logRecord, n int, ok bool) {
	le := binary.LittleEndian
	if len(b) < logRecHeader || le.Uint32(b[0:]) != logRecMagic {
		return r, 0, false
	}
	n = int(le.Uint32(b[8:]))
	pl := int(le.Uint32(b[12:]))
	if n < logRecHeader || n > len(b) || pl > n-logRecHeader {
		return r, 0, false
	}
	if crc(b[8:n]) != le.Uint32(b[4:]) {
		return r, 0, false
	}
	r.seq = le.Uint64(b[16:])
	copy(r.boot[:], b[24:40])
	r.dev = le.Uint64(b[40:])
	r.ino = le.Uint64(b[48:])
	r.size = int64(le.Uint64(b[56:]))
	r.mtime = int64(le.Uint64(b[64:]))
	r.at = int64(le.Uint64(b[72:]))
	r.mode = le.Uint32(b[80:])
	r.gid = int32(le.Uint32(b[84:]))
	copy(r.sum[:], b[88:120])
	r.path = string(b[logRecHeader : logRecHeader+pl])
	r.data = b[logRecHeader+pl : n]
	if r.size != int64(len(r.data)) {
		return r, 0, false
	}
	return r, n, true
}

// readRecord reads the record at pos of a ring of ringSize bytes.
func (l *commitLog) readRecord(pos, ringSize int64) (logRecord, int, bool) {
	if pos+logRecHeader > ringSize {
		return logRecord{}, 0, false
	}
	head := make([]byte, logRecHeader)
	if _, err := l.f.ReadAt(head, pos); err != nil || binary.LittleEndian.Uint32(head) != logRecMagic {
		return logRecord{}, 0, false
	}
	n := int64(binary.LittleEndian.Uint32(head[8:]))
	if n < logRecHeader || n > ringSize-pos || n > logRecHeader+2*maxPath+logMaxFile {
		return logRecord{}, 0, false
	}
	b := make([]byte, n)
	if _, err := l.f.ReadAt(b, pos); err != nil {
		return logRecord{}, 0, false
	}
	return decodeRecord(b)
}

// recordData reads again the bytes of a record found by recovery.
func (l *commitLog) recordData(rec *logRecord, ringSize int64) ([]byte, error) {
	again, _, ok := l.readRecord(rec.pos, ringSize)
	if !ok || again.seq != rec.seq {
		return nil, fmt.Errorf("%s: the record at %d changed while read", l.f.Name(), rec.pos)
	}
	return again.data, nil
}

// logHeader is a checkpoint: records before tail are no longer needed,
// the one at tail (if any) has sequence number tailSeq.
type logHeader struct {
	gen      uint64
	ringSize int64
	tail     int64
	tailSeq  uint64
}

func (h logHeader) encode() []byte {
	b := make([]byte, logSlotLen)
	le := binary.LittleEndian
	le.PutUint32(b[0:], logHdrMagic)
	le.PutUint32(b[8:], logVersion)
	le.PutUint64(b[16:], h.gen)
	le.PutUint64(b[24:], uint64(h.ringSize))
	le.PutUint64(b[32:], uint64(h.tail))
	le.PutUint64(b[40:], h.tailSeq)
	le.PutUint32(b[4:], crc(b[8:logHdrLen]))
	return b
}

func decodeHeader(b []byte) (h logHeader, ok bool) {
	le := binary.LittleEndian
	if len(b) < logHdrLen || le.Uint32(b[0:]) != logHdrMagic || le.Uint32(b[8:]) != logVersion ||
		crc(b[8:logHdrLen]) != le.Uint32(b[4:]) {
		return h, false
	}
	h = logHeader{gen: le.Uint64(b[16:]), ringSize: int64(le.Uint64(b[24:])), tail: int64(le.Uint64(b[32:])), tailSeq: le.Uint64(b[40:])}
	if h.ringSize < MinCommitLog || h.tail < logRingStart || h.tail >= h.ringSize {
		return h, false
	}
	return h, true
}

// segment is appended bytes not yet written to the file.
type segment struct {
	pos int64
	b   []byte
}

// commitLog is the log of one storage root. It is safe for concurrent use.
type commitLog struct {
	f    *os.File
	root *os.File // the storage root's directory: syncfs, and its device
	dev  uint64
	size int64
	boot [16]byte
	log  *slog.Logger

	mu sync.Mutex
	// syncfs writes out the root's filesystem; a field so tests can count
	// and fail it.
	syncfs   func() error
	cond     *sync.Cond
	head     int64  // where the next record goes
	seq      uint64 // the next record's sequence number
	tail     int64  // the oldest record still needed
	gen      uint64 // of the last checkpoint written
	pend     []segment
	durable  uint64 // records with a smaller seq are in the file and synced
	flushing bool
	failed   error
	inflight map[uint64]int64 // seq → pos of records whose upload is not done
	commits  int              // records made durable
	flushes  int              // flushes that did it
	armed    bool             // a checkpoint is due
	kick     chan struct{}
	stop     chan struct{}
	stopped  chan struct{}
	ckErr    error // the last checkpoint's error, for Close
}

// LogRecovery is what opening the commit log found.
type LogRecovery struct {
	Enabled  bool     // false: uploads are fsynced in place
	Reason   string   // why not enabled, when not
	Records  int      // records after the last checkpoint
	Checked  int      // of an earlier boot, checked against the tree
	Restored []string // root-relative paths written back from the log
	Kept     []string // paths changed after the commit, left as they are
}

// openCommitLog opens (creating it if needed) the log at p with a ring of
// size bytes, after recovering what an older one holds.
func (r *Root) openCommitLog(p string, size int64, boot [16]byte) (*commitLog, error) {
	rootDir, err := os.Open(r.root.Name())
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(rootDir.Fd()), &st); err != nil {
		rootDir.Close()
		return nil, err
	}
	l := &commitLog{
		root: rootDir, dev: uint64(st.Dev), size: size, boot: boot, log: r.pol.Log,
		inflight: map[uint64]int64{}, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	l.syncfs = func() error { return syncFS(int(rootDir.Fd())) }
	l.cond = sync.NewCond(&l.mu)
	ok := false
	defer func() {
		if !ok {
			l.closeFiles()
		}
	}()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := l.create(p, logHeader{gen: 1, ringSize: size, tail: logRingStart, tailSeq: 1}); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		l.f = f
		h, err := l.recover(r)
		if err != nil {
			return nil, err
		}
		if h.ringSize != size {
			// A new size: everything is checkpointed, so the old
			// file can go.
			l.f.Close()
			l.f = nil
			if err := l.create(p, logHeader{gen: h.gen + 1, ringSize: size, tail: logRingStart, tailSeq: h.tailSeq}); err != nil {
				return nil, err
			}
		}
	}
	go l.checkpointer()
	ok = true
	return l, nil
}

// create writes a new log file of l.size zero bytes with header h: zeros,
// so that writing a record later overwrites allocated blocks and the
// fdatasync after it has no metadata to write.
func (l *commitLog) create(p string, h logHeader) error {
	tmp := p + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	zero := make([]byte, 1<<20)
	for off := int64(0); off < h.ringSize; off += int64(len(zero)) {
		n := min(int64(len(zero)), h.ringSize-off)
		if _, err := f.WriteAt(zero[:n], off); err != nil {
			return fail(err)
		}
	}
	if _, err := f.WriteAt(h.encode(), slotPos(h.gen)); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fail(err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fail(err)
	}
	l.f = f
	l.size = h.ringSize
	l.head, l.tail, l.seq, l.durable, l.gen = h.tail, h.tail, h.tailSeq, h.tailSeq, h.gen
	return nil
}

func slotPos(gen uint64) int64 { return int64(gen%2) * logSlotLen }

// recover reads the log, checks the records of an earlier boot against
// the tree and restores what the crash lost, makes it all durable, and
// leaves l ready to append after the last record. A file that cannot be
// restored is an error: the log keeps its record for the next start.
func (l *commitLog) recover(r *Root) (logHeader, error) {
	var h logHeader
	found := false
	for _, pos := range []int64{0, logSlotLen} {
		b := make([]byte, logHdrLen)
		if _, err := l.f.ReadAt(b, pos); err != nil {
			continue
		}
		if c, ok := decodeHeader(b); ok && (!found || c.gen > h.gen) {
			h, found = c, true
		}
	}
	if !found {
		return h, fmt.Errorf("%s: no valid header: not a commit log, or damaged (move it away to start without it, after checking the uploads of the last seconds before the crash)", l.f.Name())
	}
	fi, err := l.f.Stat()
	if err != nil {
		return h, err
	}
	if fi.Size() < h.ringSize {
		return h, fmt.Errorf("%s: %d bytes, its header says %d: truncated", l.f.Name(), fi.Size(), h.ringSize)
	}
	l.size = h.ringSize // until a new size replaces the file
	// Records are read one at a time and their bytes dropped once
	// checked: what recovery keeps is their headers, and the bytes of the
	// few it restores are read again.
	var recs []logRecord
	pos, seq := h.tail, h.tailSeq
	for {
		rec, n, ok := l.readRecord(pos, h.ringSize)
		if !ok || rec.seq != seq {
			// The writer goes back to the ring's start when a
			// record does not fit before the end.
			if pos == logRingStart {
				break
			}
			if rec, n, ok = l.readRecord(logRingStart, h.ringSize); !ok || rec.seq != seq {
				break
			}
			pos = logRingStart
		}
		rec.pos, rec.data = pos, nil
		recs = append(recs, rec)
		pos += int64(n)
		seq++
	}
	rep := &r.recovery
	rep.Records = len(recs)
	last := make(map[string]int, len(recs)) // a later upload of a name supersedes earlier ones
	for i := range recs {
		last[recs[i].path] = i
	}
	for i := range recs {
		rec := &recs[i]
		if rec.boot == l.boot || last[rec.path] != i {
			// The kernel still has what this boot wrote; an
			// earlier upload of the name is not what it holds.
			continue
		}
		rep.Checked++
		restored, kept, err := r.checkRecord(rec, func() ([]byte, error) { return l.recordData(rec, h.ringSize) })
		if err != nil {
			return h, fmt.Errorf("commit log: cannot restore %s (committed %s): %w", rec.path, time.Unix(0, rec.at).UTC().Format(time.RFC3339), err)
		}
		if restored {
			rep.Restored = append(rep.Restored, rec.path)
		}
		if kept {
			rep.Kept = append(rep.Kept, rec.path)
		}
	}
	l.head, l.tail, l.seq, l.durable, l.gen = pos, pos, seq, seq, h.gen
	if len(recs) > 0 {
		if err := l.syncfs(); err != nil {
			return h, fmt.Errorf("commit log: syncfs: %w", err)
		}
		if err := l.writeHeader(l.head, l.seq); err != nil {
			return h, err
		}
	}
	h.tail, h.tailSeq = l.tail, l.seq
	return h, nil
}

// checkRecord compares the tree with a record of an earlier boot and
// restores the file when the crash lost it: missing, or still the inode
// the upload made with the mtime it had but other bytes, or an older file
// in its place (changed before the commit: the rename was lost). A file
// changed after the commit is someone's later work and is kept.
func (r *Root) checkRecord(rec *logRecord, data func() ([]byte, error)) (restored, kept bool, err error) {
	if !fs.ValidPath(rec.path) || rec.path == "." {
		return false, false, fmt.Errorf("invalid path in the log")
	}
	fi, err := r.root.Lstat(rec.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true, false, r.restore(rec, data)
	case err != nil:
		return false, false, err
	case !fi.Mode().IsRegular():
		return false, true, nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false, false, errors.ErrUnsupported
	}
	ctime := statCtime(st)
	switch {
	case uint64(st.Ino) == rec.ino && fi.ModTime().UnixNano() == rec.mtime:
		if fi.Size() == rec.size {
			same, err := r.sameContent(rec)
			if err != nil || same {
				return false, false, err
			}
		}
		return true, false, r.restore(rec, data)
	case uint64(st.Ino) == rec.ino, ctime > rec.at:
		return false, true, nil
	default:
		return true, false, r.restore(rec, data)
	}
}

func (r *Root) sameContent(rec *logRecord) (bool, error) {
	f, err := r.root.Open(rec.path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	return [32]byte(h.Sum(nil)) == rec.sum, nil
}

// restore writes rec's bytes to its path the way an upload does: a
// temporary file with the recorded group, mode and mtime, fsynced, renamed
// over the name, the directory fsynced. Missing directories are made with
// the policy.
func (r *Root) restore(rec *logRecord, data func() ([]byte, error)) error {
	b, err := data()
	if err != nil {
		return err
	}
	rec.data = b
	dir, base := path.Dir(rec.path), path.Base(rec.path)
	if dir != "." {
		if err := r.mkdirAll(r.root, dir); err != nil {
			return err
		}
	}
	d, err := r.root.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	tmp := fmt.Sprintf(".ftpgate-restore-%d", rec.seq)
	return control(d, func(dfd int) error {
		_ = unix.Unlinkat(dfd, tmp, 0)
		fd, err := openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), tmp)
		err = writeRestored(f, rec)
		if err == nil {
			// Set through the directory by name: UTIME_OMIT-free and
			// without following a link, before the fsync below.
			mt := unix.NsecToTimespec(rec.mtime)
			err = unix.UtimesNanoAt(dfd, tmp, []unix.Timespec{mt, mt}, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = unix.Renameat(dfd, tmp, dfd, base)
		}
		if err != nil {
			_ = unix.Unlinkat(dfd, tmp, 0)
			return err
		}
		return unix.Fsync(dfd)
	})
}

func writeRestored(f *os.File, rec *logRecord) error {
	if _, err := f.Write(rec.data); err != nil {
		return err
	}
	if rec.gid >= 0 {
		if err := f.Chown(-1, int(rec.gid)); err != nil {
			return err
		}
	}
	return f.Chmod(fs.FileMode(rec.mode).Perm())
}

// append adds rec to the log and returns once it is durable, with its
// sequence number, which the caller hands to done when the upload is
// renamed (or failed). errLogFull and errLogOff mean: fsync in place.
func (l *commitLog) append(rec *logRecord) (uint64, error) {
	b := make([]byte, rec.encodedLen())
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed != nil {
		return 0, errLogOff
	}
	pos, ok := l.reserve(int64(len(b)))
	if !ok {
		l.poke()
		return 0, errLogFull
	}
	rec.seq = l.seq
	l.seq++
	rec.encode(b)
	if n := len(l.pend); n > 0 && l.pend[n-1].pos+int64(len(l.pend[n-1].b)) == pos {
		l.pend[n-1].b = append(l.pend[n-1].b, b...)
	} else {
		l.pend = append(l.pend, segment{pos, b})
	}
	l.inflight[rec.seq] = pos
	if !l.armed {
		l.armed = true
		time.AfterFunc(checkpointAfter, l.poke)
	}
	if l.used() > (l.size-logRingStart)/2 {
		l.poke()
	}
	for l.durable <= rec.seq {
		if l.failed != nil {
			delete(l.inflight, rec.seq)
			return 0, errLogOff
		}
		if l.flushing {
			l.cond.Wait()
			continue
		}
		l.flushing = true
		segs, upto := l.pend, l.seq
		l.pend = nil
		l.mu.Unlock()
		err := l.write(segs)
		l.mu.Lock()
		l.flushing = false
		l.flushes++
		if err != nil {
			l.failed = err
			l.log.Error("commit log: write failed; small uploads are fsynced in place until the next start", "path", l.f.Name(), "err", err)
		} else {
			l.commits += int(upto - l.durable)
			l.durable = upto
		}
		l.cond.Broadcast()
	}
	return rec.seq, nil
}

func (l *commitLog) write(segs []segment) error {
	for _, s := range segs {
		if _, err := l.f.WriteAt(s.b, s.pos); err != nil {
			return err
		}
	}
	return fdatasync(l.f)
}

// reserve finds room for n bytes at the head; with l.mu held.
func (l *commitLog) reserve(n int64) (int64, bool) {
	if l.head >= l.tail {
		if l.head+n <= l.size {
			pos := l.head
			l.head += n
			return pos, true
		}
		if logRingStart+n < l.tail {
			l.head = logRingStart + n
			return logRingStart, true
		}
		return 0, false
	}
	if l.head+n < l.tail {
		pos := l.head
		l.head += n
		return pos, true
	}
	return 0, false
}

// used is the ring's bytes between tail and head; with l.mu held.
func (l *commitLog) used() int64 {
	if l.head >= l.tail {
		return l.head - l.tail
	}
	return l.size - l.tail + l.head - logRingStart
}

// done tells the log that the upload of record seq has been renamed, or
// has failed: the next checkpoint may pass it.
func (l *commitLog) done(seq uint64) {
	l.mu.Lock()
	delete(l.inflight, seq)
	l.mu.Unlock()
}

// poke asks the checkpointer for a checkpoint.
func (l *commitLog) poke() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *commitLog) checkpointer() {
	defer close(l.stopped)
	for {
		select {
		case <-l.stop:
			return
		case <-l.kick:
		}
		l.mu.Lock()
		l.armed = false
		l.mu.Unlock()
		if err := l.checkpoint(); err != nil {
			// Records stay until a checkpoint succeeds; when the ring
			// fills, uploads fsync in place.
			l.mu.Lock()
			first := l.ckErr == nil
			l.ckErr = err
			l.mu.Unlock()
			if first {
				l.log.Warn("commit log: checkpoint failed; records are kept and it is tried again", "err", err)
			}
		}
	}
}

// checkpoint makes every finished upload durable in the tree with one
// syncfs and moves the tail past their records.
func (l *commitLog) checkpoint() error {
	l.mu.Lock()
	target, tseq, syncfs := l.head, l.seq, l.syncfs
	for s, pos := range l.inflight {
		if s < tseq {
			target, tseq = pos, s
		}
	}
	if target == l.tail {
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	if err := syncfs(); err != nil {
		return fmt.Errorf("commit log checkpoint: syncfs: %w", err)
	}
	return l.writeHeader(target, tseq)
}

// writeHeader records a checkpoint at tail, making it durable.
func (l *commitLog) writeHeader(tail int64, tailSeq uint64) error {
	l.mu.Lock()
	if tail+logRecHeader > l.size {
		// No record starts this close to the end: the next one, when
		// it comes, is at the ring's start. An empty ring starts there.
		if l.head == tail {
			l.head = logRingStart
		}
		tail = logRingStart
	}
	h := logHeader{gen: l.gen + 1, ringSize: l.size, tail: tail, tailSeq: tailSeq}
	l.mu.Unlock()
	if _, err := l.f.WriteAt(h.encode(), slotPos(h.gen)); err != nil {
		return err
	}
	if err := fdatasync(l.f); err != nil {
		return err
	}
	l.mu.Lock()
	l.gen, l.tail = h.gen, tail
	l.ckErr = nil
	l.mu.Unlock()
	return nil
}

// close stops the checkpointer and checkpoints what is left.
func (l *commitLog) close() error {
	close(l.stop)
	<-l.stopped
	err := l.checkpoint()
	if cerr := l.closeFiles(); err == nil {
		err = cerr
	}
	return err
}

func (l *commitLog) closeFiles() error {
	var err error
	if l.f != nil {
		err = l.f.Close()
	}
	if cerr := l.root.Close(); err == nil {
		err = cerr
	}
	return err
}

// bootID is the kernel's ID of this boot; a random one where there is
// none, so that every start checks the records it finds.
func bootID() [16]byte {
	var id [16]byte
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err == nil {
		if raw, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(string(b)), "-", "")); err == nil && len(raw) == 16 {
			return [16]byte(raw)
		}
	}
	_, _ = rand.Read(id[:])
	return id
}

// syncDir fsyncs the directory dir, making the entries made in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
