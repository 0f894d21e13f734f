package integration

// Mirror tests (issue 3): `ftpgate serve` and `ftpgate mirror` against real
// MinIO and versitygw servers. Every wait is a bounded poll; an object is
// right only when its bytes, X-Amz-Meta-Sha256 and X-Amz-Meta-Mtime are.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jlaffaye/ftp"
)

const (
	sentinelName = ".ftpgate-sentinel"
	cliTimeout   = 90 * time.Second // one `ftpgate mirror` run
	mapping      = "m1"             // the mapping every mirrorSetup has
)

// mirrorSetup is an ftpgate configuration with one mapping, m1, of
// <root>/uploads (or of a directory outside the root) to a fresh bucket,
// and an uploader dj1 whose home is uploads/dj1.
type mirrorSetup struct {
	*server
	st     *s3Store
	bucket string
	m      *testMirror
	u      *testUser
}

type setupOpts struct {
	endpoint string // S3 endpoint written into the config; "" = the store's
	outside  bool   // map <base>/data, outside the FTP root, instead of <root>/uploads
	mutate   func(*testConfig)
}

// newMirrorSetup prepares (does not start) an ftpgate for a mirror test.
func newMirrorSetup(t *testing.T, st *s3Store, o setupOpts) *mirrorSetup {
	t.Helper()
	ms := &mirrorSetup{st: st, bucket: st.newBucket(t)}
	ms.server = prepareServer(t, func(c *testConfig) {
		ms.u = c.addUser("dj1", "uploader", "")
		c.useStore(t, st, o.endpoint)
		local := filepath.Join(c.Root, c.Uploads)
		if o.outside {
			local = filepath.Join(filepath.Dir(c.Root), "data")
		}
		ms.m = c.addMirror(mapping, local, ms.bucket, "")
		if o.mutate != nil {
			o.mutate(c)
		}
	})
	// The state dir exists, as systemd's StateDirectory= makes it; the
	// CLI tests check a missing one on their own.
	for _, d := range []string{ms.m.Local, ms.cfg.StateDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	return ms
}

// local is the path of rel (slash-separated) in the mapping's local tree.
func (ms *mirrorSetup) local(rel string) string {
	return filepath.Join(ms.m.Local, filepath.FromSlash(rel))
}

func (ms *mirrorSetup) key(rel string) string { return ms.m.Prefix + rel }

// want is what the object of the local file rel must be.
func (ms *mirrorSetup) want(rel string) want {
	ms.t.Helper()
	return localWant(ms.t, ms.local(rel), ms.key(rel))
}

// wantTree lists every regular file of the local tree (but the sentinel).
func (ms *mirrorSetup) wantTree() []want {
	ms.t.Helper()
	var ws []want
	err := filepath.WalkDir(ms.m.Local, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && d.Name() != sentinelName {
			rel, _ := filepath.Rel(ms.m.Local, p)
			ws = append(ws, ms.want(filepath.ToSlash(rel)))
		}
		return nil
	})
	if err != nil {
		ms.t.Fatal(err)
	}
	return ws
}

// restarted replaces the exited process by a new one on the same config.
func (ms *mirrorSetup) restarted() {
	ms.t.Helper()
	ms.server = ms.restart()
}

// dataKeys are the keys of a snapshot without the mapping's sentinel, whose
// mirroring the contract leaves open.
func (ms *mirrorSetup) dataKeys(m map[string]objState) []string {
	return slices.DeleteFunc(keys(m), func(k string) bool { return k == ms.key(sentinelName) })
}

// checkKeys fails unless the bucket holds exactly the keys of ws: no part
// file, excluded file or stray key was published.
func (ms *mirrorSetup) checkKeys(t *testing.T, ws []want) {
	t.Helper()
	var exp []string
	for _, w := range ws {
		exp = append(exp, w.key)
	}
	slices.Sort(exp)
	if got := ms.dataKeys(ms.st.snapshot(t, ms.bucket)); !slices.Equal(got, exp) {
		t.Errorf("bucket keys:\n  %q\nwant:\n  %q", got, exp)
	}
}

// ---------------------------------------------------------------------------
// Log lines of the mirror

// mirrorOps are the `msg=mirrored` lines of mapping name with the given op
// ("" = any) among lines.
func mirrorOps(lines []string, name, op string) []logLine {
	var out []logLine
	for _, raw := range lines {
		l := parseLogLine(raw)
		if l.msg() == "mirrored" && l.get("mapping") == name && (op == "" || l.get("op") == op) {
			out = append(out, l)
		}
	}
	return out
}

// ops are the mirror ops of mapping name logged since line from.
func (s *server) ops(from int, name, op string) []logLine {
	lines := s.logs.snapshot()
	return mirrorOps(lines[min(from, len(lines)):], name, op)
}

func opKeys(ls []logLine) []string {
	var ks []string
	for _, l := range ls {
		ks = append(ks, l.get("key"))
	}
	return ks
}

// waitOp waits for the mirror op on key, logged since line from.
func (s *server) waitOp(from int, name, op, key string) logLine {
	s.t.Helper()
	l, ok := s.waitLog(from, func(l logLine) bool {
		return l.msg() == "mirrored" && l.get("mapping") == name && l.get("op") == op && l.get("key") == key
	}, mirrorTimeout)
	if !ok {
		s.t.Fatalf("no \"mirrored\" log line with mapping=%s op=%s key=%s\n%s", name, op, key, s.logs.tail(40))
	}
	return l
}

// waitPassDone waits for the `msg="mirror pass"` line that ends a full
// pass (not a subtree rescan) of mapping name with the given trigger ("" =
// any), logged since line from.
func (s *server) waitPassDone(from int, name, trigger string) logLine {
	s.t.Helper()
	l, ok := s.waitLog(from, func(l logLine) bool {
		return l.msg() == "mirror pass" && l.get("mapping") == name && l.get("subtree") == "" &&
			(trigger == "" || l.get("trigger") == trigger)
	}, mirrorTimeout)
	if !ok {
		s.t.Fatalf("no msg=\"mirror pass\" line (full pass, trigger %q) for mapping %s within %v\n%s", trigger, name, mirrorTimeout, s.logs.tail(40))
	}
	return l
}

// kill9 kills the server process with SIGKILL and waits until it is gone.
func (s *server) kill9() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		s.t.Fatalf("SIGKILL: %v", err)
	}
	select {
	case <-s.exited:
	case <-time.After(exitTimeout):
		s.t.Fatalf("ftpgate did not exit after SIGKILL")
	}
}

// ---------------------------------------------------------------------------
// The one-shot CLI

// cliRun is one finished ftpgate command; lines are its stdout and stderr
// parsed as log lines.
type cliRun struct {
	cmdResult
	lines []logLine
}

// ftpgateCmd runs the binary with the server's environment and a deadline.
func (s *server) ftpgateCmd(timeout time.Duration, args ...string) cliRun {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Dir = s.base
	cmd.Env = append(append(os.Environ(), "FTPGATE_CONFIG="), s.cfg.Env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cliRun{cmdResult: cmdResult{stdout: stdout.String(), stderr: stderr.String()}}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		s.t.Fatalf("ftpgate %q did not finish within %v\n%s", args, timeout, r.cmdResult)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		s.t.Fatalf("ftpgate %q: %v", args, err)
	}
	for _, out := range []string{r.stdout, r.stderr} {
		for line := range strings.SplitSeq(out, "\n") {
			if strings.TrimSpace(line) != "" {
				r.lines = append(r.lines, parseLogLine(line))
			}
		}
	}
	if p := (&logBuffer{lines: strings.Split(r.stdout+"\n"+r.stderr, "\n")}).panicText(); p != "" {
		s.t.Errorf("ftpgate %q printed a panic or fatal error:\n%s", args, p)
	}
	return r
}

// mirrorCLI writes the config and runs `ftpgate mirror` on it.
func (s *server) mirrorCLI(args ...string) cliRun {
	s.t.Helper()
	s.writeConfig()
	return s.ftpgateCmd(cliTimeout, append([]string{"mirror", "--config", s.cfgPath}, args...)...)
}

// mustMirror runs `ftpgate mirror` and requires exit 0.
func (s *server) mustMirror(args ...string) cliRun {
	s.t.Helper()
	r := s.mirrorCLI(args...)
	if r.code != 0 {
		s.t.Fatalf("ftpgate mirror %q: want exit 0\n%s", args, r.cmdResult)
	}
	return r
}

// guards are the guard names of the "deletion guard" lines of mapping name.
func (r cliRun) guards(name string) []string {
	var gs []string
	for _, l := range r.lines {
		if l.msg() == "deletion guard" && l.get("mapping") == name {
			gs = append(gs, l.get("level")+":"+l.get("guard"))
		}
	}
	return gs
}

// expectGuard fails unless the run exited 1 and logged the guard for m1.
func expectGuard(t *testing.T, r cliRun, guard string) {
	t.Helper()
	if r.code != 1 {
		t.Errorf("exit %d, want 1 (guard %s)", r.code, guard)
	}
	if gs := r.guards(mapping); !slices.Contains(gs, "ERROR:"+guard) {
		t.Errorf("want a `level=ERROR msg=\"deletion guard\" mapping=%s guard=%s` line; guard lines: %q\n%s", mapping, guard, gs, r.cmdResult)
	}
}

// ---------------------------------------------------------------------------
// Fixtures

// oldMtime is the mtime of the files of writeTree: far from the time of
// any upload, so that X-Amz-Meta-Mtime must be the file's, not the clock's.
var oldMtime = time.Date(2001, 9, 9, 1, 46, 40, 123456789, time.UTC)

// writeTree writes n files into dir, spread over nested subdirectories,
// each with an mtime of its own in 2001, and returns their slash-separated
// paths relative to dir.
func writeTree(t *testing.T, dir string, n int, seed uint64) []string {
	t.Helper()
	var rels []string
	for i := range n {
		rel := fmt.Sprintf("d%d/f%02d.bin", i%3, i)
		if i%2 == 1 {
			rel = fmt.Sprintf("d%d/e%d/f%02d.bin", i%3, i%4, i)
		}
		p := filepath.Join(dir, filepath.FromSlash(rel))
		mustWrite(t, p, payload(100+int(seed%7)*300+i*37, seed+uint64(i)))
		mt := oldMtime.Add(time.Duration(i) * time.Hour)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		rels = append(rels, rel)
	}
	return rels
}

// checkOpKeys fails if the mirror logged an op on a key outside allowed
// since line from: a part file or an excluded file reached the bucket,
// if only for a moment.
func (ms *mirrorSetup) checkOpKeys(t *testing.T, from int, allowed []string) {
	t.Helper()
	for _, l := range ms.ops(from, mapping, "") {
		if k := l.get("key"); !slices.Contains(allowed, k) && k != ms.key(sentinelName) {
			t.Errorf("op %s on unexpected key %q: %s", l.get("op"), k, l.raw)
		}
	}
}

// bigPayload is n bytes made of 1 MiB blocks of payload, each with its
// own number in front: distinct parts at a fraction of payload's cost.
func bigPayload(n int, seed uint64) []byte {
	block := payload(1<<20, seed)
	b := make([]byte, 0, n)
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "block %08d\n", i)
		b = append(b, block[:min(len(block), n-len(b))]...)
	}
	return b[:n]
}

// mkdirs runs MKD for each directory, in order.
func mkdirs(t *testing.T, c *ftp.ServerConn, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := c.MakeDir(d); err != nil {
			t.Fatalf("MKD %s: %v", d, err)
		}
	}
}

// ---------------------------------------------------------------------------
// The core suite, against every store

func TestMirrorCore(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		fn   func(*testing.T, *s3Store)
	}{
		{"FTPUpload", testMirrorFTPUpload},
		{"OtherPrograms", testMirrorOtherPrograms},
		{"Delete", testMirrorDelete},
		{"Rename", testMirrorRename},
		{"RestartNoResend", testMirrorRestart},
	}
	for _, kind := range []string{storeMinIO, storeVersityGW} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			st := sharedStore(t, kind)
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, st)
				})
			}
		})
	}
}

// testMirrorFTPUpload: what FTP clients upload is in the bucket with its
// bytes and both metadata, multipart included, and nothing else is.
func testMirrorFTPUpload(t *testing.T, st *s3Store) {
	ms := newMirrorSetup(t, st, setupOpts{})
	ms.launch()
	c := ms.login(ms.u)

	stor(t, c, "skip.tmp", []byte("excluded by *.tmp"))
	mark := ms.logs.len()
	stor(t, c, "first.bin", payload(1024, 1))
	sent := time.Now()
	st.waitObjects(t, ms.bucket, 5*time.Second, ms.want("dj1/first.bin"))
	t.Logf("%s: 1 KiB upload visible %v after its 226", st.kind, time.Since(sent).Round(time.Millisecond))
	if l := ms.waitOp(mark, mapping, "put", "dj1/first.bin"); l.get("bytes") != "1024" {
		t.Errorf("put line says bytes=%s, want 1024: %s", l.get("bytes"), l.raw)
	}

	mkdirs(t, c, "sub", "sub/deep")
	files := []struct {
		rel  string
		data []byte
	}{
		{"empty.txt", nil},
		{"sub/deep/c.dat", payload(300<<10, 2)},
		{"sub/name with spaces é+%.txt", []byte("odd name\n")},
		{"big.bin", bigPayload(65<<20, 3)}, // multipart from 64 MiB on
	}
	ws := []want{ms.want("dj1/first.bin")}
	for _, f := range files {
		stor(t, c, f.rel, f.data)
		ws = append(ws, ms.want("dj1/"+f.rel))
	}
	// 65 MiB to hash, send and read back on 2 busy cores: more room.
	st.waitObjects(t, ms.bucket, 4*mirrorTimeout, ws...)
	var wantKeys []string
	for _, w := range ws {
		ms.waitOp(mark, mapping, "put", w.key)
		wantKeys = append(wantKeys, w.key)
	}
	ms.checkKeys(t, ws)
	ms.checkOpKeys(t, 0, wantKeys)
	if _, err := os.Stat(ms.local(sentinelName)); err != nil {
		t.Errorf("the first pass did not create the sentinel: %v", err)
	}
}

// testMirrorOtherPrograms: files written by other programs, in new nested
// directories made right before, copied in with cp -r, and a directory
// moved in from outside the mapping all reach the bucket.
func testMirrorOtherPrograms(t *testing.T, st *s3Store) {
	requireTool(t, "cp")
	ms := newMirrorSetup(t, st, setupOpts{})
	ms.launch()

	mustWrite(t, ms.local("plain.txt"), []byte("written by another program\n"))
	if err := os.MkdirAll(ms.local("new/a/b/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, rel := range []string{"new/a/x.txt", "new/a/b/c/y.txt", "new/a/b/z.txt"} {
		if err := os.WriteFile(ms.local(rel), payload(500+i, uint64(10+i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tree := filepath.Join(ms.outside, "tree")
	writeTree(t, tree, 12, 20)
	if r := run(t, "", "cp", "-rp", tree, ms.local("copied")); r.code != 0 {
		t.Fatalf("cp -rp: %s", r)
	}
	moved := filepath.Join(ms.outside, "moved")
	writeTree(t, moved, 9, 40)
	if err := os.Rename(moved, ms.local("moved-in")); err != nil {
		t.Fatal(err)
	}

	ws := ms.wantTree()
	if len(ws) != 1+3+12+9 {
		t.Fatalf("fixture: %d local files, want 25", len(ws))
	}
	st.waitObjects(t, ms.bucket, mirrorTimeout, ws...)
	ms.checkKeys(t, ws)
}

// testMirrorDelete: a delete removes the object when remove = true (one
// file over FTP, a tree by another program) and keeps it when false.
func testMirrorDelete(t *testing.T, st *s3Store) {
	keepBucket := st.newBucket(t)
	var keep *testMirror
	ms := newMirrorSetup(t, st, setupOpts{mutate: func(c *testConfig) {
		keep = c.addMirror("keep", filepath.Join(filepath.Dir(c.Root), "keep"), keepBucket, "pre/")
		keep.Remove = false
	}})
	if err := os.MkdirAll(keep.Local, 0o755); err != nil {
		t.Fatal(err)
	}
	ms.launch()
	c := ms.login(ms.u)
	mkdirs(t, c, "dir", "dir/b")
	for _, rel := range []string{"del.txt", "stays.txt", "dir/a.txt", "dir/b/c.txt"} {
		stor(t, c, rel, []byte("content of "+rel))
	}
	mustWrite(t, filepath.Join(keep.Local, "k.txt"), []byte("kept in the bucket"))
	st.waitObjects(t, ms.bucket, mirrorTimeout, ms.wantTree()...)
	st.waitObjects(t, keepBucket, mirrorTimeout, localWant(t, filepath.Join(keep.Local, "k.txt"), "pre/k.txt"))

	mark := ms.logs.len()
	if err := c.Delete("del.txt"); err != nil {
		t.Fatalf("DELE: %v", err)
	}
	if err := os.RemoveAll(ms.local("dj1/dir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(keep.Local, "k.txt")); err != nil {
		t.Fatal(err)
	}
	st.waitGone(t, ms.bucket, mirrorTimeout, "dj1/del.txt", "dj1/dir/a.txt", "dj1/dir/b/c.txt")
	// A later change of the keep mapping is through: its delete was seen.
	mustWrite(t, filepath.Join(keep.Local, "marker.txt"), []byte("after the delete"))
	st.waitObjects(t, keepBucket, mirrorTimeout, localWant(t, filepath.Join(keep.Local, "marker.txt"), "pre/marker.txt"))
	if snap := st.snapshot(t, keepBucket); !slices.Contains(keys(snap), "pre/k.txt") {
		t.Errorf("remove = false, yet pre/k.txt was deleted; keys %q", keys(snap))
	}
	if dels := ms.ops(mark, "keep", "delete"); len(dels) > 0 {
		t.Errorf("remove = false, yet delete ops: %q", opKeys(dels))
	}
	ms.checkKeys(t, ms.wantTree())
}

// testMirrorRename: renaming a file (over FTP) and a directory (by another
// program) moves the objects with server-side copies, not new PUTs.
func testMirrorRename(t *testing.T, st *s3Store) {
	ms := newMirrorSetup(t, st, setupOpts{})
	ms.launch()
	c := ms.login(ms.u)
	mark := ms.logs.len()
	mkdirs(t, c, "dir1", "dir1/sub")
	old := []string{"dj1/r1.bin", "dj1/dir1/a.txt", "dj1/dir1/sub/b.txt"}
	for i, k := range old {
		stor(t, c, strings.TrimPrefix(k, "dj1/"), payload(200<<10+i, uint64(50+i)))
	}
	st.waitObjects(t, ms.bucket, mirrorTimeout, ms.wantTree()...)
	for _, k := range old {
		ms.waitOp(mark, mapping, "put", k)
	}

	mark = ms.logs.len()
	if err := c.Rename("r1.bin", "r2.bin"); err != nil {
		t.Fatalf("RNFR/RNTO: %v", err)
	}
	if err := os.Rename(ms.local("dj1/dir1"), ms.local("dj1/dir2")); err != nil {
		t.Fatal(err)
	}
	renamed := []string{"dj1/r2.bin", "dj1/dir2/a.txt", "dj1/dir2/sub/b.txt"}
	var ws []want
	for _, k := range renamed {
		ws = append(ws, ms.want(k))
	}
	st.waitObjects(t, ms.bucket, mirrorTimeout, ws...)
	st.waitGone(t, ms.bucket, mirrorTimeout, old...)
	for _, k := range renamed {
		ms.waitOp(mark, mapping, "copy", k)
	}
	if puts := ms.ops(mark, mapping, "put"); len(puts) > 0 {
		t.Errorf("renames were uploaded again: put ops %q", opKeys(puts))
	}
	ms.checkKeys(t, ms.wantTree())
}

// testMirrorRestart: after a clean stop and a restart, the start-up pass
// sends what changed while the daemon was down and nothing else.
func testMirrorRestart(t *testing.T, st *s3Store) {
	ms := newMirrorSetup(t, st, setupOpts{})
	ms.launch()
	c := ms.login(ms.u)
	for i := range 8 {
		stor(t, c, fmt.Sprintf("f%d.bin", i), payload(3000+i, uint64(60+i)))
	}
	st.waitObjects(t, ms.bucket, mirrorTimeout, ms.wantTree()...)
	before := st.snapshot(t, ms.bucket)
	_ = c.Quit()

	ms.signal(syscall.SIGTERM)
	if code := ms.waitExit(exitTimeout); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	mustWrite(t, ms.local("offline.txt"), []byte("written while ftpgate was down\n"))
	if err := os.Remove(ms.local("dj1/f0.bin")); err != nil {
		t.Fatal(err)
	}

	ms.restarted()
	st.waitObjects(t, ms.bucket, mirrorTimeout, ms.want("offline.txt"))
	st.waitGone(t, ms.bucket, mirrorTimeout, "dj1/f0.bin")
	ms.waitPassDone(0, mapping, "start-up")
	if puts := opKeys(ms.ops(0, mapping, "put")); !slices.Equal(puts, []string{"offline.txt"}) {
		t.Errorf("put ops after the restart: %q, want only offline.txt", puts)
	}
	after := st.snapshot(t, ms.bucket)
	delete(before, "dj1/f0.bin")
	for k, b := range before {
		if a := after[k]; a != b {
			t.Errorf("%s was written again: %v -> %v", k, b, a)
		}
	}
	ms.checkKeys(t, ms.wantTree())
}

// ---------------------------------------------------------------------------
// MinIO only: overflow, outage, crash

// TestMirrorOverflow: when the watcher overflows (forced by the test hook
// after a few events) a full pass picks up every change, and changes after
// it are still seen.
func TestMirrorOverflow(t *testing.T) {
	t.Parallel()
	st := sharedStore(t, storeMinIO)
	ms := newMirrorSetup(t, st, setupOpts{mutate: func(c *testConfig) {
		c.Env = append(c.Env, "FTPGATE_TEST_OVERFLOW_AFTER=5")
	}})
	ms.launch()
	c := ms.login(ms.u)
	writeTree(t, ms.local("burst"), 30, 70)
	for i := range 5 {
		stor(t, c, fmt.Sprintf("ftp%d.bin", i), payload(700+i, uint64(80+i)))
	}
	st.waitObjects(t, ms.bucket, mirrorTimeout, ms.wantTree()...)
	if _, ok := ms.waitLog(0, func(l logLine) bool { return strings.Contains(strings.ToLower(l.msg()), "overflow") }, logTimeout); !ok {
		t.Errorf("no log message mentions the overflow: was FTPGATE_TEST_OVERFLOW_AFTER honoured?")
	}
	mustWrite(t, ms.local("burst/after/late.txt"), []byte("after the overflow\n"))
	st.waitObjects(t, ms.bucket, mirrorTimeout, ms.want("burst/after/late.txt"))
	ms.checkKeys(t, ms.wantTree())
}

// TestMirrorStorePaused: with the store frozen (SIGSTOP), FTP uploads
// still get their 226 at once; when it thaws, the backlog arrives.
func TestMirrorStorePaused(t *testing.T) {
	t.Parallel()
	st := privateStore(t, storeMinIO)
	ms := newMirrorSetup(t, st, setupOpts{})
	ms.launch()
	c := ms.login(ms.u)
	stor(t, c, "before.bin", payload(2000, 90))
	st.waitObjects(t, ms.bucket, mirrorTimeout, ms.want("dj1/before.bin"))

	st.pause(t)
	const n, perUpload, total = 40, 5 * time.Second, 30 * time.Second
	type result struct {
		name string
		err  error
		dur  time.Duration
	}
	results := make(chan result, n)
	go func() {
		for i := range n {
			name := fmt.Sprintf("paused%02d.bin", i)
			t0 := time.Now()
			err := c.Stor(name, bytes.NewReader(payload(4000+i, uint64(100+i))))
			results <- result{name, err, time.Since(t0)}
			if err != nil {
				return
			}
		}
	}()
	deadline := time.After(total)
	for range n {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("STOR %s with the store paused: %v", r.name, r.err)
			}
			if r.dur > perUpload {
				t.Errorf("STOR %s with the store paused took %v (limit %v)", r.name, r.dur, perUpload)
			}
		case <-deadline:
			t.Fatalf("FTP uploads with the store paused did not all end within %v", total)
		}
	}
	ws := ms.wantTree() // every upload is on disk
	st.resume(t)
	st.waitObjects(t, ms.bucket, 2*time.Minute, ws...)
	ms.checkKeys(t, ws)
}

// TestMirrorKill9: kill -9 in the middle of a burst of 200 FTP uploads;
// after a restart every local file is in the bucket byte-exact, nothing
// partial was published, and what was mirrored before is not sent again.
func TestMirrorKill9(t *testing.T) {
	t.Parallel()
	st := sharedStore(t, storeMinIO)
	ms := newMirrorSetup(t, st, setupOpts{})
	ms.launch()

	const conns, perConn = 4, 50
	names := map[string]bool{} // relative to dj1's home
	type outcome struct {
		name string
		err  error
	}
	outcomes := make(chan outcome, conns*perConn)
	var wg sync.WaitGroup
	for i := range conns {
		c := ms.login(ms.u)
		dir := fmt.Sprintf("burst%d", i)
		mkdirs(t, c, dir)
		var files []string
		for j := range perConn {
			files = append(files, fmt.Sprintf("%s/f%03d.bin", dir, j))
		}
		for _, f := range files {
			names[f] = true
		}
		wg.Go(func() {
			for j, f := range files {
				err := c.Stor(f, bytes.NewReader(payload(1000+j*13, uint64(1000*i+j))))
				outcomes <- outcome{f, err}
				if err != nil {
					return
				}
			}
		})
	}
	// Kill once a quarter of the burst is mirrored.
	count := 0
	if _, ok := ms.waitLog(0, func(l logLine) bool {
		if l.msg() == "mirrored" && l.get("op") == "put" {
			count++
		}
		return count >= conns*perConn/4
	}, mirrorTimeout); !ok {
		t.Fatalf("only %d put ops before the deadline\n%s", count, ms.logs.tail(40))
	}
	ms.kill9()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(ioTimeout + 5*time.Second):
		t.Fatal("FTP uploads did not end after the kill")
	}
	close(outcomes)
	acked := 0
	for o := range outcomes {
		if o.err == nil {
			acked++
			if _, err := os.Stat(ms.local("dj1/" + o.name)); err != nil {
				t.Errorf("%s got its 226 but is not on disk after kill -9: %v", o.name, err)
			}
		}
	}
	atKill := st.snapshot(t, ms.bucket)

	// The final files on disk: the names the test uploaded, not part files.
	var ws []want
	for n := range names {
		if _, err := os.Stat(ms.local("dj1/" + n)); err == nil {
			ws = append(ws, ms.want("dj1/"+n))
		}
	}
	mirrored := 0
	for _, w := range ws {
		if _, ok := atKill[w.key]; ok {
			mirrored++
		}
	}
	t.Logf("kill -9 after %d put ops: %d uploads acknowledged, %d final files on disk, %d objects in the bucket",
		count, acked, len(ws), mirrored)

	var allowed []string
	for _, w := range ws {
		allowed = append(allowed, w.key)
	}
	ms.checkOpKeys(t, 0, allowed)

	ms.restarted()
	st.waitObjects(t, ms.bucket, mirrorTimeout, ws...)
	ms.waitPassDone(0, mapping, "start-up")
	ms.checkOpKeys(t, 0, allowed)
	puts := opKeys(ms.ops(0, mapping, "put"))
	if len(puts) > len(ws)-mirrored {
		t.Errorf("%d put ops after the restart, but only %d files were not mirrored yet", len(puts), len(ws)-mirrored)
	}
	after := st.snapshot(t, ms.bucket)
	for k, b := range atKill {
		if slices.Contains(puts, k) {
			t.Errorf("%s was in the bucket before the kill and was PUT again", k)
		}
		if a := after[k]; a != b {
			t.Errorf("%s changed after the restart: %v -> %v", k, b, a)
		}
	}
	ms.checkKeys(t, ws)
}

// ---------------------------------------------------------------------------
// The one-shot pass: deletion guards, dry run, CLI errors

// TestMirrorGuards trips every deletion guard with `ftpgate mirror`: exit
// 1, a log line naming the guard, and the bucket as it was. The count
// guards then give way to --allow-deletes.
func TestMirrorGuards(t *testing.T) {
	t.Parallel()
	st := sharedStore(t, storeMinIO)

	// setup syncs n files of a mapping outside the FTP root and returns
	// the bucket as it is then.
	setup := func(t *testing.T, n int, o setupOpts) (*mirrorSetup, map[string]objState) {
		ms := newMirrorSetup(t, st, setupOpts{endpoint: o.endpoint, outside: true, mutate: o.mutate})
		writeTree(t, ms.m.Local, n, 7)
		ms.mustMirror()
		st.waitObjects(t, ms.bucket, 5*time.Second, ms.wantTree()...)
		if _, err := os.Stat(ms.local(sentinelName)); err != nil {
			t.Fatalf("the first pass did not create the sentinel: %v", err)
		}
		return ms, st.snapshot(t, ms.bucket)
	}
	untouched := func(t *testing.T, ms *mirrorSetup, before map[string]objState) {
		t.Helper()
		if d := diffSnapshots(before, st.snapshot(t, ms.bucket)); d != "" {
			t.Errorf("the bucket changed although a guard tripped:\n%s", d)
		}
	}
	removeFiles := func(t *testing.T, ms *mirrorSetup, n int) []string {
		var gone []string
		for _, w := range ms.wantTree()[:n] {
			if err := os.Remove(ms.local(w.key)); err != nil {
				t.Fatal(err)
			}
			gone = append(gone, w.key)
		}
		return gone
	}

	t.Run("root_missing", func(t *testing.T) {
		t.Parallel()
		ms, before := setup(t, 10, setupOpts{})
		if err := os.Rename(ms.m.Local, ms.m.Local+".away"); err != nil {
			t.Fatal(err)
		}
		expectGuard(t, ms.mirrorCLI(), "root_missing")
		untouched(t, ms, before)
	})
	t.Run("root_not_dir", func(t *testing.T) {
		t.Parallel()
		ms, before := setup(t, 10, setupOpts{})
		if err := os.Rename(ms.m.Local, ms.m.Local+".away"); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, ms.m.Local, []byte("a file where the tree was\n"))
		expectGuard(t, ms.mirrorCLI(), "root_not_dir")
		untouched(t, ms, before)
	})
	t.Run("sentinel_missing", func(t *testing.T) {
		t.Parallel()
		ms, before := setup(t, 10, setupOpts{})
		removeFiles(t, ms, 1)
		if err := os.Remove(ms.local(sentinelName)); err != nil {
			t.Fatal(err)
		}
		expectGuard(t, ms.mirrorCLI(), "sentinel_missing")
		untouched(t, ms, before)
	})
	t.Run("device_changed", func(t *testing.T) {
		t.Parallel()
		if os.Geteuid() != 0 {
			t.Skip("mounting a tmpfs over the mapping needs root (CI runs as root)")
		}
		ms, before := setup(t, 10, setupOpts{})
		sentinel := mustRead(t, ms.local(sentinelName))
		if err := syscall.Mount("tmpfs", ms.m.Local, "tmpfs", 0, "size=8m,mode=0755"); err != nil {
			t.Fatalf("mount tmpfs on %s: %v", ms.m.Local, err)
		}
		mounted := true
		unmount := func() {
			if mounted {
				if err := syscall.Unmount(ms.m.Local, syscall.MNT_DETACH); err != nil {
					t.Errorf("umount %s: %v", ms.m.Local, err)
				}
				mounted = false
			}
		}
		t.Cleanup(unmount)
		// The sentinel is there (copied), only the device is not the one
		// the first pass recorded.
		if err := os.WriteFile(ms.local(sentinelName), sentinel, 0o644); err != nil {
			t.Fatal(err)
		}
		expectGuard(t, ms.mirrorCLI(), "device_changed")
		untouched(t, ms, before)
		unmount()
		ms.mustMirror()
		untouched(t, ms, before)
	})
	t.Run("max_delete", func(t *testing.T) {
		t.Parallel()
		ms, before := setup(t, 10, setupOpts{mutate: func(c *testConfig) { c.Mirrors[0].MaxDelete = 3 }})
		gone := removeFiles(t, ms, 5)
		expectGuard(t, ms.mirrorCLI(), "max_delete")
		untouched(t, ms, before)
		expectGuard(t, ms.mirrorCLI("--allow-deletes", "4"), "max_delete")
		untouched(t, ms, before)
		ms.mustMirror("--allow-deletes", "5")
		st.waitGone(t, ms.bucket, time.Second, gone...)
		ms.checkKeys(t, ms.wantTree())
	})
	t.Run("max_delete_ratio", func(t *testing.T) {
		t.Parallel()
		// 12 of 40: over the ratio, and a mass deletion by any measure
		// (the mirror ignores ratios of ten deletions or fewer).
		ms, before := setup(t, 40, setupOpts{mutate: func(c *testConfig) { c.Mirrors[0].MaxDeleteRatio = 0.2 }})
		gone := removeFiles(t, ms, 12)
		expectGuard(t, ms.mirrorCLI(), "max_delete_ratio")
		untouched(t, ms, before)
		ms.mustMirror("--allow-deletes", "12")
		st.waitGone(t, ms.bucket, time.Second, gone...)
		ms.checkKeys(t, ms.wantTree())
	})
	t.Run("listing_errors", func(t *testing.T) {
		t.Parallel()
		proxy := startFaultProxy(t, st)
		ms, _ := setup(t, 10, setupOpts{endpoint: proxy.addr})
		// 1000 objects with no local file: deletion candidates that span
		// more than one listing page (MinIO pages by 1000 at most).
		putOrphans(t, st, ms.bucket, 1000)
		before := st.snapshot(t, ms.bucket)
		proxy.failContinued.Store(true)
		expectGuard(t, ms.mirrorCLI(), "listing_errors")
		if proxy.refused.Load() == 0 {
			t.Errorf("the pass never asked for a second listing page")
		}
		untouched(t, ms, before)
		proxy.failContinued.Store(false)
		ms.mustMirror()
		ms.checkKeys(t, ms.wantTree())
	})
}

// putOrphans writes n small objects under orphans/ past the mirror.
func putOrphans(t *testing.T, st *s3Store, bucket string, n int) {
	t.Helper()
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Go(func() {
			for i := range work {
				if err := st.tryPut(t.Context(), bucket, fmt.Sprintf("orphans/%04d", i), []byte("orphan")); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("put orphans: %v", firstErr)
	}
}

// TestMirrorDryRun: --dry-run changes nothing in the bucket, on a first
// pass and on a pass with new, changed and deleted files.
func TestMirrorDryRun(t *testing.T) {
	t.Parallel()
	st := sharedStore(t, storeMinIO)
	ms := newMirrorSetup(t, st, setupOpts{outside: true})
	writeTree(t, ms.m.Local, 6, 5)

	r := ms.mirrorCLI("--dry-run")
	if r.code != 0 {
		t.Fatalf("first --dry-run: want exit 0\n%s", r.cmdResult)
	}
	if strings.TrimSpace(r.stdout) == "" {
		t.Errorf("--dry-run printed no summary on stdout")
	}
	if snap := st.snapshot(t, ms.bucket); len(snap) != 0 {
		t.Errorf("--dry-run wrote to an empty bucket: %q", keys(snap))
	}

	ms.mustMirror()
	ms.checkKeys(t, ms.wantTree())
	st.waitObjects(t, ms.bucket, time.Second, ms.wantTree()...)

	ws := ms.wantTree()
	mustWrite(t, ms.local("added/one.txt"), []byte("new\n"))
	mustWrite(t, ms.local("added/two.txt"), []byte("new too\n"))
	mustWrite(t, ms.local(ws[0].key), []byte("changed content, another size\n"))
	if err := os.Remove(ms.local(ws[1].key)); err != nil {
		t.Fatal(err)
	}
	before := st.snapshot(t, ms.bucket)
	if r := ms.mirrorCLI("--dry-run"); r.code != 0 {
		t.Fatalf("second --dry-run: want exit 0\n%s", r.cmdResult)
	}
	if d := diffSnapshots(before, st.snapshot(t, ms.bucket)); d != "" {
		t.Errorf("--dry-run changed the bucket:\n%s", d)
	}

	ms.mustMirror()
	st.waitObjects(t, ms.bucket, time.Second, ms.wantTree()...)
	ms.checkKeys(t, ms.wantTree())
}

// TestMirrorCLIErrors: a second process on a busy state dir, an unknown
// mapping and a config without [s3] exit 2; naming a mapping runs only it.
func TestMirrorCLIErrors(t *testing.T) {
	t.Parallel()
	st := sharedStore(t, storeMinIO)
	otherBucket := st.newBucket(t)
	var other *testMirror
	ms := newMirrorSetup(t, st, setupOpts{outside: true, mutate: func(c *testConfig) {
		other = c.addMirror("m2", filepath.Join(filepath.Dir(c.Root), "other"), otherBucket, "x/")
	}})
	mustWrite(t, ms.local("one.txt"), []byte("m1\n"))
	mustWrite(t, filepath.Join(other.Local, "two.txt"), []byte("m2\n"))

	t.Run("unknown mapping", func(t *testing.T) {
		if r := ms.with(t).mirrorCLI("nosuchmapping"); r.code != 2 {
			t.Errorf("want exit 2\n%s", r.cmdResult)
		}
	})
	t.Run("named mapping only, fresh state dir", func(t *testing.T) {
		// The first command on a new host: nothing has made state_dir yet.
		if err := os.RemoveAll(ms.cfg.StateDir); err != nil {
			t.Fatal(err)
		}
		ms.with(t).mustMirror("m2")
		if snap := st.snapshot(t, ms.bucket); len(snap) != 0 {
			t.Errorf("`ftpgate mirror m2` wrote to m1's bucket: %q", keys(snap))
		}
		st.waitObjects(t, otherBucket, time.Second, localWant(t, filepath.Join(other.Local, "two.txt"), "x/two.txt"))
	})
	t.Run("state dir in use", func(t *testing.T) {
		s := ms.with(t)
		s.launch()
		if r := s.ftpgateCmd(30*time.Second, "mirror", "--config", s.cfgPath); r.code != 2 {
			t.Errorf("a second process on the same state_dir: want exit 2\n%s", r.cmdResult)
		}
		s.signal(syscall.SIGTERM)
		s.waitExit(exitTimeout)
	})
	t.Run("no s3 section", func(t *testing.T) {
		s := ms.with(t)
		s3, mirrors := s.cfg.S3, s.cfg.Mirrors
		s.cfg.S3, s.cfg.Mirrors = nil, nil
		defer func() { s.cfg.S3, s.cfg.Mirrors = s3, mirrors }()
		if r := s.mirrorCLI(); r.code != 2 {
			t.Errorf("mirror without [s3]: want exit 2\n%s", r.cmdResult)
		}
	})
}
