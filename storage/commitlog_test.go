package storage

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// logEnv is an env whose root commits uploads through a commit log of
// size bytes, opened with boot as the boot ID.
type logEnv struct {
	*env
	boot [16]byte
}

func newLogEnv(t *testing.T, size int64) *logEnv {
	t.Helper()
	e := newEnv(t, func(p *Policy) { p.Fsync = true })
	// Reopen the root with the commit log and a known boot ID.
	if err := e.root.Close(); err != nil {
		t.Fatal(err)
	}
	e.pol.CommitLog = size
	le := &logEnv{env: e, boot: [16]byte{1}}
	le.reopen()
	return le
}

// reopen opens the root again (after a crash or Close) as boot le.boot.
func (le *logEnv) reopen() {
	le.t.Helper()
	if err := le.reopenErr(); err != nil {
		le.t.Fatalf("open: %v", err)
	}
}

func (le *logEnv) reopenErr() error {
	r, err := open(le.data, le.pol, le.boot, time.Now)
	if err != nil {
		return err
	}
	le.t.Cleanup(func() {
		if r.log != nil {
			select {
			case <-r.log.stopped:
				return // crashed
			default:
			}
		}
		r.Close()
	})
	le.root = r
	return nil
}

// crash ends the root the way a power cut would as far as the log is
// concerned: no checkpoint, the checkpointer gone.
func (le *logEnv) crash() {
	le.t.Helper()
	l := le.root.log
	close(l.stop)
	<-l.stopped
	l.closeFiles()
	le.root.reg.close()
	le.root.root.Close()
}

// reboot makes the next reopen look like a new boot of the machine.
func (le *logEnv) reboot() { le.boot[0]++ }

// upload puts content to the root-relative name through an admin jail.
func (le *logEnv) upload(name, content string) Result {
	le.t.Helper()
	if err := os.MkdirAll(filepath.Dir(le.path(name)), 0o755); err != nil {
		le.t.Fatal(err)
	}
	f := le.jail(".", "admin", false)
	return put(le.t, f, "/"+name, content)
}

func (le *logEnv) checkFile(rel, content string) {
	le.t.Helper()
	if got := le.read(rel); got != content {
		le.t.Errorf("%s holds %q, want %q", rel, got, content)
	}
	fi, err := os.Stat(le.path(rel))
	if err != nil {
		le.t.Fatal(err)
	}
	if fi.Mode() != le.pol.FileMode {
		le.t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), le.pol.FileMode)
	}
}

func TestCommitLogUpload(t *testing.T) {
	le := newLogEnv(t, MinCommitLog)
	var syncs atomic.Int32
	le.root.log.mu.Lock()
	le.root.log.syncfs = func() error { syncs.Add(1); return nil }
	le.root.log.mu.Unlock()
	if !le.root.Recovery().Enabled {
		t.Fatalf("commit log not enabled: %s", le.root.Recovery().Reason)
	}
	res := le.upload("in/a.txt", "alpha")
	if res.Path != "in/a.txt" || res.Size != 5 || res.SHA256 != sha256.Sum256([]byte("alpha")) {
		t.Fatalf("Result = %+v", res)
	}
	le.checkFile("in/a.txt", "alpha")
	if len(le.parts("in")) != 0 || le.entries() != 0 {
		t.Fatal("part or registry entry left after Commit")
	}
	l := le.root.log
	l.mu.Lock()
	seq, inflight := l.seq, len(l.inflight)
	l.mu.Unlock()
	if seq != 2 || inflight != 0 {
		t.Fatalf("after one upload: seq %d, in flight %d; want 2, 0", seq, inflight)
	}
	// A file over logMaxFile and a resumed or appended one are fsynced in
	// place: no record.
	big := string(bytes.Repeat([]byte{'b'}, logMaxFile+1))
	le.upload("in/big.bin", big)
	le.checkFile("in/big.bin", big)
	f := le.jail(".", "admin", false)
	u, err := f.OpenUpload("/in/a.txt", 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write([]byte("+more")); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(); err != nil {
		t.Fatal(err)
	}
	le.checkFile("in/a.txt", "alpha+more")
	l.mu.Lock()
	seq = l.seq
	l.mu.Unlock()
	if seq != 2 {
		t.Fatalf("seq %d after a large and an appended upload, want 2 (no records)", seq)
	}
	// Close checkpoints: one syncfs, and a reopen finds no records.
	if err := le.root.Close(); err != nil {
		t.Fatal(err)
	}
	if syncs.Load() != 1 {
		t.Fatalf("%d syncfs at Close, want 1", syncs.Load())
	}
	le.reboot()
	le.reopen()
	if rec := le.root.Recovery(); rec.Records != 0 {
		t.Fatalf("after a clean Close: %+v", rec)
	}
}

func TestCommitLogRecovery(t *testing.T) {
	le := newLogEnv(t, MinCommitLog)
	le.write("keep/c.txt", "c before")
	le.write("old/d.txt", "d before")
	want := map[string]string{
		"lost/a.txt":      "a: deleted by the crash",
		"zeroed/b.txt":    "b: the inode survived, its bytes did not",
		"keep/c.txt":      "c: replaced after the commit",
		"old/d.txt":       "d: the rename was lost",
		"same/e.txt":      "e: intact",
		"gone/deep/f.txt": "f: the directory went too",
		"newer/g.txt":     "g: replaced by another file after the commit",
	}
	for _, name := range slices.Sorted(mapKeys(want)) {
		if name == "old/d.txt" {
			continue
		}
		le.upload(name, want[name])
	}
	// d's record says it was committed in an hour: whatever is at its
	// name now is older, so the rename is what the crash lost.
	le.root.now = func() time.Time { return time.Now().Add(time.Hour) }
	le.upload("old/d.txt", want["old/d.txt"])
	le.crash()

	if err := os.Remove(le.path("lost/a.txt")); err != nil {
		t.Fatal(err)
	}
	zeroed := le.path("zeroed/b.txt")
	fi, err := os.Stat(zeroed)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(zeroed, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(zeroed, fi.Size()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(zeroed, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	le.write("keep/c.txt", "c: someone's later version")
	le.write("newer/g.new", "g: a newer file")
	if err := os.Rename(le.path("newer/g.new"), le.path("newer/g.txt")); err != nil {
		t.Fatal(err)
	}
	// Another inode in d's place, as if the rename never happened.
	le.write("old/d.old", "d before")
	if err := os.Rename(le.path("old/d.old"), le.path("old/d.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(le.path("gone")); err != nil {
		t.Fatal(err)
	}

	le.reboot()
	le.reopen()
	rec := le.root.Recovery()
	slices.Sort(rec.Restored)
	wantRestored := []string{"gone/deep/f.txt", "lost/a.txt", "old/d.txt", "zeroed/b.txt"}
	slices.Sort(rec.Kept)
	if rec.Records != 7 || rec.Checked != 7 || !slices.Equal(rec.Restored, wantRestored) || !slices.Equal(rec.Kept, []string{"keep/c.txt", "newer/g.txt"}) {
		t.Fatalf("Recovery = %+v; want 7 records checked, restored %v, kept [keep/c.txt newer/g.txt]", rec, wantRestored)
	}
	for name, content := range want {
		switch name {
		case "keep/c.txt":
			content = "c: someone's later version"
		case "newer/g.txt":
			if got := le.read(name); got != "g: a newer file" {
				t.Errorf("%s holds %q: the newer file was not kept", name, got)
			}
			continue
		}
		le.checkFile(name, content)
	}
	fi, err = os.Stat(le.path("gone/deep"))
	if err != nil {
		t.Fatal(err)
	}
	if want := goMode(le.pol.DirMode) | fs.ModeDir; fi.Mode() != want {
		t.Errorf("recreated directory: mode %v, want %v", fi.Mode(), want)
	}
	if m, _ := filepath.Glob(filepath.Join(le.data, "*", ".ftpgate-restore-*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
	// The recovery checkpointed: another reboot finds nothing to do.
	le.crash()
	le.reboot()
	le.reopen()
	if rec := le.root.Recovery(); rec.Records != 0 {
		t.Fatalf("second recovery: %+v", rec)
	}
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// After a killed process (same boot) the kernel still has everything: a
// file deleted since its upload stays deleted.
func TestCommitLogSameBoot(t *testing.T) {
	le := newLogEnv(t, MinCommitLog)
	le.upload("a.txt", "a")
	le.upload("b.txt", "b")
	le.crash()
	if err := os.Remove(le.path("a.txt")); err != nil {
		t.Fatal(err)
	}
	le.reopen()
	rec := le.root.Recovery()
	if rec.Records != 2 || rec.Checked != 0 || len(rec.Restored) != 0 {
		t.Fatalf("Recovery = %+v; want 2 records, none checked", rec)
	}
	if le.exists("a.txt") {
		t.Fatal("a deleted file came back")
	}
}

// Records wrap around the ring; checkpoints keep up; after a crash only
// the records since the last checkpoint are replayed, in order.
func TestCommitLogWrap(t *testing.T) {
	le := newLogEnv(t, MinCommitLog)
	const n, size = 40, 100 << 10 // 40 × 100 KiB through a 1 MiB ring
	content := func(i int) string {
		return fmt.Sprintf("%03d", i) + string(bytes.Repeat([]byte{byte('a' + i%26)}, size-3))
	}
	for i := range n {
		le.upload(fmt.Sprintf("w/%03d", i), content(i))
	}
	// From here on checkpoints fail, so the records of the last
	// uploads stay (a checkpoint under way covers only earlier ones).
	l := le.root.log
	l.mu.Lock()
	l.syncfs = func() error { return syscall.EIO }
	l.mu.Unlock()
	for i := range 3 {
		le.upload(fmt.Sprintf("w/%03d", i), content(i))
	}
	// The file may be uploaded again: the last version wins.
	le.upload("w/000", "new 000")
	l.mu.Lock()
	wrapped := int64(l.seq-1)*size > l.size
	l.mu.Unlock()
	if !wrapped {
		t.Fatal("the ring did not wrap")
	}
	le.crash()
	for i := range n {
		if err := os.Remove(le.path(fmt.Sprintf("w/%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	le.reboot()
	le.reopen()
	rec := le.root.Recovery()
	if rec.Records < 4 || rec.Records > 10 || len(rec.Restored) != rec.Checked || !slices.Contains(rec.Restored, "w/000") {
		t.Fatalf("Recovery = %+v; want 4 to 10 records (what the ring holds), the last of each name restored", rec)
	}
	for _, p := range rec.Restored {
		var i int
		if _, err := fmt.Sscanf(p, "w/%03d", &i); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			le.checkFile(p, "new 000")
		} else {
			le.checkFile(p, content(i))
		}
	}
}

// When checkpoints fail the ring fills, and uploads fsync in place.
func TestCommitLogFull(t *testing.T) {
	le := newLogEnv(t, MinCommitLog)
	l := le.root.log
	l.mu.Lock()
	l.syncfs = func() error { return syscall.EIO }
	l.mu.Unlock()
	data := string(bytes.Repeat([]byte{'x'}, 200<<10))
	for i := range 12 {
		le.upload(fmt.Sprintf("f%02d", i), data)
	}
	for i := range 12 {
		le.checkFile(fmt.Sprintf("f%02d", i), data)
	}
	l.mu.Lock()
	seq, ckErr := l.seq, l.ckErr
	l.syncfs = func() error { return nil }
	l.mu.Unlock()
	if seq > 6 || !errors.Is(ckErr, syscall.EIO) {
		t.Fatalf("seq %d, checkpoint error %v; want at most 5 records and EIO", seq, ckErr)
	}
}

// A record torn by the crash, or bytes that are no record, end the log.
func TestCommitLogTorn(t *testing.T) {
	le := newLogEnv(t, MinCommitLog)
	le.upload("a.txt", "aaaa")
	le.upload("b.txt", "bbbb")
	l := le.root.log
	l.mu.Lock()
	last := l.head - 1
	l.mu.Unlock()
	le.crash()
	f, err := os.OpenFile(filepath.Join(le.pol.StateDir, logName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, last); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, name := range []string{"a.txt", "b.txt"} {
		if err := os.Remove(le.path(name)); err != nil {
			t.Fatal(err)
		}
	}
	le.reboot()
	le.reopen()
	if rec := le.root.Recovery(); rec.Records != 1 || !slices.Equal(rec.Restored, []string{"a.txt"}) {
		t.Fatalf("Recovery = %+v; want only a.txt", rec)
	}
	le.checkFile("a.txt", "aaaa")
}

// A log whose headers are both damaged stops the start with an error that
// says what to do; nothing is touched.
func TestCommitLogBadHeader(t *testing.T) {
	le := newLogEnv(t, MinCommitLog)
	le.upload("a.txt", "a")
	le.crash()
	p := filepath.Join(le.pol.StateDir, logName)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, logRingStart), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	err = le.reopenErr()
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("no valid header")) {
		t.Fatalf("open = %v, want the no-valid-header error", err)
	}
	le.checkFile("a.txt", "a")
}

// Uploads committing together share the log's flushes and all land.
func TestCommitLogConcurrent(t *testing.T) {
	le := newLogEnv(t, MinCommitLog)
	f := le.jail(".", "admin", false)
	le.write("c/.keep", "")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				name := fmt.Sprintf("/c/%d-%02d", g, i)
				u, err := f.OpenUpload(name, 0, false)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := u.Write([]byte(name)); err != nil {
					t.Error(err)
				}
				if _, err := u.Commit(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	l := le.root.log
	l.mu.Lock()
	flushes := l.flushes
	l.mu.Unlock()
	t.Logf("200 uploads, %d flushes", flushes)
	if flushes >= 200 {
		t.Errorf("%d flushes for 200 concurrent uploads: none shared", flushes)
	}
	for g := range 8 {
		for i := range 25 {
			name := fmt.Sprintf("c/%d-%02d", g, i)
			le.checkFile(name, "/"+name)
		}
	}
}

// A new size rewrites the log after recovering the old one.
func TestCommitLogResize(t *testing.T) {
	le := newLogEnv(t, MinCommitLog)
	le.upload("a.txt", "a")
	le.crash()
	if err := os.Remove(le.path("a.txt")); err != nil {
		t.Fatal(err)
	}
	le.pol.CommitLog = 2 * MinCommitLog
	le.reboot()
	le.reopen()
	if rec := le.root.Recovery(); !slices.Equal(rec.Restored, []string{"a.txt"}) {
		t.Fatalf("Recovery = %+v", rec)
	}
	fi, err := os.Stat(filepath.Join(le.pol.StateDir, logName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 2*MinCommitLog {
		t.Fatalf("log is %d bytes, want %d", fi.Size(), 2*MinCommitLog)
	}
	le.upload("b.txt", "b")
	le.checkFile("b.txt", "b")
}

// A write error turns the log off: the upload that met it and every later
// one are fsynced in place, and the error is logged once.
func TestCommitLogWriteError(t *testing.T) {
	le := newLogEnv(t, MinCommitLog)
	var buf syncBuffer
	l := le.root.log
	l.log = slog.New(slog.NewTextHandler(&buf, nil))
	if err := l.f.Close(); err != nil { // every write now fails
		t.Fatal(err)
	}
	le.upload("a.txt", "alpha")
	le.upload("b.txt", "beta")
	le.checkFile("a.txt", "alpha")
	le.checkFile("b.txt", "beta")
	l.mu.Lock()
	failed := l.failed
	l.mu.Unlock()
	if !errors.Is(failed, os.ErrClosed) {
		t.Fatalf("log error %v, want the closed file's", failed)
	}
	if n := strings.Count(buf.String(), "commit log: write failed"); n != 1 {
		t.Fatalf("%d error lines, want 1:\n%s", n, buf.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A checkpoint when the last record ended at the very end of the ring
// records the ring's start as the tail (a header with the end as its tail
// would not be read back), and the ring goes on from there.
func TestCommitLogCheckpointAtEnd(t *testing.T) {
	le := newLogEnv(t, MinCommitLog)
	l := le.root.log
	l.mu.Lock()
	l.head, l.tail = l.size-10, l.size-10 // as if a record had just filled it
	seq := l.seq
	l.mu.Unlock()
	if err := l.writeHeader(l.size-10, seq); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	head, tail := l.head, l.tail
	l.mu.Unlock()
	if head != logRingStart || tail != logRingStart {
		t.Fatalf("head %d, tail %d; want both at the ring's start %d", head, tail, logRingStart)
	}
	le.upload("a.txt", "after the end")
	le.crash()
	if err := os.Remove(le.path("a.txt")); err != nil {
		t.Fatal(err)
	}
	le.reboot()
	le.reopen()
	if rec := le.root.Recovery(); !slices.Equal(rec.Restored, []string{"a.txt"}) {
		t.Fatalf("Recovery = %+v; want a.txt restored", rec)
	}
	le.checkFile("a.txt", "after the end")
}

// Recovery checkpoints a log of another size with its own size: a crash
// before the resized file replaces it leaves a log that still opens.
func TestCommitLogResizeKeepsOldHeader(t *testing.T) {
	le := newLogEnv(t, MinCommitLog)
	le.upload("a.txt", "a")
	le.crash()
	p := filepath.Join(le.pol.StateDir, logName)
	// Recover the old log as a root asking for another size would,
	// stopping before the new file is made.
	l := &commitLog{size: 2 * MinCommitLog, boot: le.boot, log: slog.New(slog.DiscardHandler), inflight: map[uint64]int64{}}
	l.cond = sync.NewCond(&l.mu)
	l.syncfs = func() error { return nil }
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.f = f
	r, err := open(le.data, Policy{GID: -1, StateDir: t.TempDir()}, le.boot, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h, err := l.recover(r)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if h.ringSize != MinCommitLog {
		t.Fatalf("recovered ring size %d, want %d", h.ringSize, MinCommitLog)
	}
	le.reopen() // the old size again: the header written by recover is valid
	if rec := le.root.Recovery(); !rec.Enabled || rec.Records != 0 {
		t.Fatalf("Recovery = %+v", rec)
	}
}

// A state directory on tmpfs would not keep the log across the reboot it
// is for: the log is off, with the reason, and uploads are fsynced in
// place. /dev/shm is a tmpfs on every Linux this runs on.
func TestCommitLogOffOnTmpfs(t *testing.T) {
	state, err := os.MkdirTemp("/dev/shm", "ftpgate-state-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	d, err := os.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := memoryFS(int(d.Fd()))
	d.Close()
	if err != nil || !mem {
		t.Fatalf("/dev/shm: tmpfs %v, %v; the test needs it on tmpfs", mem, err)
	}
	e := newEnv(t, func(p *Policy) {
		p.Fsync, p.CommitLog, p.StateDir = true, MinCommitLog, state
	})
	rec := e.root.Recovery()
	if rec.Enabled || !strings.Contains(rec.Reason, "tmpfs") {
		t.Fatalf("Recovery = %+v; want the log off because of tmpfs", rec)
	}
	if _, err := os.Stat(filepath.Join(state, logName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("commit.log on tmpfs: %v", err)
	}
	f := e.jail(".", "admin", false)
	put(t, f, "/a.txt", "alpha")
	if got := e.read("a.txt"); got != "alpha" {
		t.Fatalf("a.txt = %q", got)
	}
}
