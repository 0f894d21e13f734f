package integration

// Reverse pull and verify tests (issue 4): `ftpgate pull`, `ftpgate verify`
// and the nightly pull of `ftpgate serve`, against a real MinIO server.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/")

// pullMtime is the X-Amz-Meta-Mtime another client sets on its object.
const pullMtime = "1000000000.123456789"

// putWithMtime writes an object as rclone would: X-Amz-Meta-Mtime set.
func (st *s3Store) putWithMtime(t *testing.T, bucket, key string, data []byte, mtime string) {
	t.Helper()
	ctx, cancel := s3ctx(t)
	defer cancel()
	if _, err := st.client.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{UserMetadata: map[string]string{"Mtime": mtime}}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// pullCLI writes the config and runs `ftpgate pull` on it.
func (s *server) pullCLI(args ...string) cliRun {
	s.t.Helper()
	s.writeConfig()
	return s.ftpgateCmd(cliTimeout, append([]string{"pull", "--config", s.cfgPath}, args...)...)
}

// verifyCLI writes the config and runs `ftpgate verify` on it.
func (s *server) verifyCLI(args ...string) cliRun {
	s.t.Helper()
	s.writeConfig()
	return s.ftpgateCmd(cliTimeout, append([]string{"verify", "--config", s.cfgPath}, args...)...)
}

// checkGolden compares got with testdata/name, or rewrites it with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test ./integration -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

// varyingJSON are the summary fields that change from run to run.
var varyingJSON = regexp.MustCompile(`"(bucket|local|start|end|duration_ns)":("[^"]*"|[0-9]+)`)

func normalizeJSON(s string) string {
	return varyingJSON.ReplaceAllString(s, `"$1":"…"`)
}

// durationLine is the duration line of a verify summary.
var durationLine = regexp.MustCompile(`(?m)^  [0-9.]+(ns|µs|ms|s|m[0-9.]+s)$`)

// normalizeSummary keeps the summary lines of a verify's stderr, with the
// paths, bucket and durations that change from run to run replaced.
func (ms *mirrorSetup) normalizeSummary(stderr string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(stderr, "\n") {
		if strings.HasPrefix(line, "time=") || strings.HasPrefix(line, "ftpgate: ") || line == "" {
			continue // log lines and the exit message
		}
		line = strings.ReplaceAll(line, ms.m.Local, "LOCAL")
		line = strings.ReplaceAll(line, ms.bucket, "BUCKET")
		b.WriteString(durationLine.ReplaceAllString(line, "  DURATION") + "\n")
	}
	return b.String()
}

// checkFile checks a pulled file's bytes, group, mode and mtime.
func checkFile(t *testing.T, path string, data []byte, mode fs.FileMode, mtime time.Time) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if !fi.IsDir() {
		if got := mustRead(t, path); !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes, want %d (content differs)", path, len(got), len(data))
		}
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Gid) != testGroup.gid {
		t.Errorf("%s: gid %d, want %d", path, st.Gid, testGroup.gid)
	}
	if got := fi.Mode() & (fs.ModePerm | fs.ModeSetgid); got != mode {
		t.Errorf("%s: mode %v, want %v", path, got, mode)
	}
	if !mtime.IsZero() && !fi.ModTime().Equal(mtime) {
		t.Errorf("%s: mtime %s, want %s", path, fi.ModTime().Format(time.RFC3339Nano), mtime.Format(time.RFC3339Nano))
	}
}

// tempFiles are the pull's temporary files under dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".ftpgate-part-") {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestPullAndVerify(t *testing.T) {
	st := sharedStore(t, storeMinIO)
	ms := newMirrorSetup(t, st, setupOpts{outside: true, mutate: func(c *testConfig) {
		c.Mirrors[0].Remove = false // local deletions leave tombstones
	}})
	for name, data := range map[string]string{
		"same.txt":             "same on both sides\n",
		"conflict-size.txt":    "ten bytes\n",
		"conflict-content.txt": "AAAAAAAA",
		"deleted-tomb.txt":     "deleted, then a mirror pass\n",
		"deleted-rec.txt":      "deleted, no pass since\n",
	} {
		mustWrite(t, ms.local(name), []byte(data))
	}
	ms.mustMirror()
	if err := os.Remove(ms.local("deleted-tomb.txt")); err != nil {
		t.Fatal(err)
	}
	ms.mustMirror() // remove = false: a tombstone, the object stays
	if err := os.Remove(ms.local("deleted-rec.txt")); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, ms.local("local-only.txt"), []byte("not mirrored yet\n"))

	// another client writes into the bucket
	pulled := payload(300000, 41)
	st.putWithMtime(t, ms.bucket, "new/sub/pulled.bin", pulled, pullMtime)
	plain := []byte("no metadata at all\n")
	if err := st.tryPut(t.Context(), ms.bucket, "plain.txt", plain); err != nil {
		t.Fatal(err)
	}
	if err := st.tryPut(t.Context(), ms.bucket, "conflict-size.txt", []byte("twenty bytes, not 10")); err != nil {
		t.Fatal(err)
	}
	if err := st.tryPut(t.Context(), ms.bucket, "conflict-content.txt", []byte("BBBBBBBB")); err != nil {
		t.Fatal(err)
	}
	if err := st.tryPut(t.Context(), ms.bucket, "skip.tmp", []byte("excluded")); err != nil {
		t.Fatal(err)
	}

	t.Run("dry run", func(t *testing.T) {
		r := ms.pullCLI("--dry-run")
		if r.code != 1 || !strings.Contains(r.stdout, "pull dry run") || !strings.Contains(r.stdout, "downloaded 2 ") {
			t.Fatalf("want exit 1 (conflicts) and 2 downloads planned\n%s", r.cmdResult)
		}
		if _, err := os.Lstat(ms.local("new")); err == nil {
			t.Fatal("a dry run created new/")
		}
	})

	t.Run("pull", func(t *testing.T) {
		r := ms.pullCLI()
		if r.code != 1 {
			t.Fatalf("want exit 1 (two conflicts)\n%s", r.cmdResult)
		}
		for _, s := range []string{"downloaded 2 ", "deleted locally (not brought back) 2", "conflicts 2",
			"conflict: conflict-size.txt: size 10 locally, 20 in the bucket", "conflict: conflict-content.txt: content differs (MD5 ETag)"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("summary lacks %q\n%s", s, r.cmdResult)
			}
		}
		mt, _ := time.Parse(time.RFC3339Nano, "2001-09-09T01:46:40.123456789Z")
		checkFile(t, ms.local("new/sub/pulled.bin"), pulled, 0o664, mt)
		checkFile(t, ms.local("plain.txt"), plain, 0o664, time.Time{})
		for _, d := range []string{"new", "new/sub"} {
			checkFile(t, ms.local(d), nil, 0o775|fs.ModeSetgid, time.Time{})
		}
		if got := string(mustRead(t, ms.local("conflict-size.txt"))); got != "ten bytes\n" {
			t.Errorf("conflict-size.txt overwritten: %q", got)
		}
		if got := string(mustRead(t, ms.local("conflict-content.txt"))); got != "AAAAAAAA" {
			t.Errorf("conflict-content.txt overwritten: %q", got)
		}
		for _, gone := range []string{"deleted-tomb.txt", "deleted-rec.txt", "skip.tmp"} {
			if _, err := os.Lstat(ms.local(gone)); err == nil {
				t.Errorf("%s was pulled back", gone)
			}
		}
		if tf := tempFiles(t, ms.m.Local); len(tf) > 0 {
			t.Errorf("temporary files left: %q", tf)
		}
	})

	t.Run("verify", func(t *testing.T) {
		r := ms.verifyCLI()
		if r.code != 1 {
			t.Fatalf("want exit 1 (drift)\n%s", r.cmdResult)
		}
		checkGolden(t, "verify.golden", r.stdout)
		checkGolden(t, "verify-summary.golden", ms.normalizeSummary(r.stderr))
		r = ms.verifyCLI("--checksum", "--json")
		if r.code != 1 {
			t.Fatalf("want exit 1 (drift)\n%s", r.cmdResult)
		}
		checkGolden(t, "verify-checksum.golden", normalizeJSON(r.stdout))
		if read := summaryField(t, r.stdout, "files_read"); read == 0 {
			t.Errorf("the first --checksum run read no file")
		}
		r = ms.verifyCLI("--checksum", "--json")
		if got := summaryField(t, r.stdout, "files_read"); got != 0 || summaryField(t, r.stdout, "bytes_read") != 0 {
			t.Errorf("the second --checksum run read %v files: want none (hash cache)\n%s", got, r.cmdResult)
		}
		// listed without metadata, each object known by its ETag: no HEAD
		if got := summaryField(t, r.stdout, "heads"); got != 0 {
			t.Errorf("the second --checksum run sent %v HEADs, want none\n%s", got, r.cmdResult)
		}
		// an object replaced by one of the same size: its new ETag is seen
		// in the listing, its content compared, the local file not re-read
		if err := st.tryPut(t.Context(), ms.bucket, "same.txt", []byte("same on NEITHER side")[:19]); err != nil {
			t.Fatal(err)
		}
		r = ms.verifyCLI("--checksum", "--json")
		if r.code != 1 || !strings.Contains(r.stdout, `"key":"same.txt","status":"differs","reason":"md5"`) {
			t.Errorf("want same.txt to differ after the object was replaced\n%s", r.cmdResult)
		}
		if summaryField(t, r.stdout, "files_read") != 0 || summaryField(t, r.stdout, "heads") != 1 {
			t.Errorf("want one HEAD (the replaced object) and no file read\n%s", r.cmdResult)
		}
	})

	t.Run("mirror does not send pulled files back", func(t *testing.T) {
		r := ms.mustMirror()
		for _, l := range r.lines {
			if l.msg() == "mirrored" && (l.get("key") == "new/sub/pulled.bin" || l.get("key") == "plain.txt") {
				t.Errorf("the mirror re-sent a pulled file: %s", l.raw)
			}
		}
	})

	t.Run("clean", func(t *testing.T) {
		// the mirror made the bucket follow the local tree; the two
		// tombstoned objects are the remaining drift: remove them
		ctx, cancel := s3ctx(t)
		defer cancel()
		for _, k := range []string{"deleted-tomb.txt", "deleted-rec.txt"} {
			if err := st.client.RemoveObject(ctx, ms.bucket, k, minio.RemoveObjectOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		for _, args := range [][]string{nil, {"--checksum"}} {
			r := ms.verifyCLI(args...)
			if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "result: no drift") {
				t.Errorf("verify %q: want exit 0 and no lines\n%s", args, r.cmdResult)
			}
		}
		r := ms.verifyCLI("--all")
		if r.code != 0 || !strings.Contains(r.stdout, "= same.txt\n") {
			t.Errorf("verify --all: want = lines\n%s", r.cmdResult)
		}
	})

	t.Run("refused without the sentinel", func(t *testing.T) {
		// an empty mount point in place of the tree must not be filled
		if err := os.Remove(ms.local(sentinelName)); err != nil {
			t.Fatal(err)
		}
		st.putWithMtime(t, ms.bucket, "later.bin", []byte("x"), pullMtime)
		r := ms.pullCLI()
		if r.code != 2 || !strings.Contains(r.stderr, "pull refused") || !strings.Contains(r.stderr, "sentinel") {
			t.Errorf("want exit 2 naming the sentinel\n%s", r.cmdResult)
		}
		if _, err := os.Lstat(ms.local("later.bin")); err == nil {
			t.Error("pulled into a tree without its sentinel")
		}
	})
}

// summaryField reads a number from the summary object of `verify --json`.
func summaryField(t *testing.T, out, field string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["type"] != "summary" {
			continue
		}
		v, ok := m[field].(float64)
		if !ok {
			t.Fatalf("summary has no number %q: %s", field, line)
		}
		return v
	}
	t.Fatalf("no summary object in:\n%s", out)
	return 0
}

// TestPullKilled kills a pull in the middle of a download and checks that
// the next pull leaves no temporary file and completes the download.
func TestPullKilled(t *testing.T) {
	st := sharedStore(t, storeMinIO)
	fp := startFaultProxy(t, st)
	ms := newMirrorSetup(t, st, setupOpts{outside: true, endpoint: fp.addr})
	data := payload(1<<20, 7)
	st.putWithMtime(t, ms.bucket, "dir/big.bin", data, pullMtime)
	ms.writeConfig()

	fp.stallGets.Store(true)
	ctx, cancel := context.WithTimeout(t.Context(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "pull", "--config", ms.cfgPath)
	cmd.Env = append(os.Environ(), "FTPGATE_CONFIG=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a temporary file of the pull", func() (bool, string) {
		if _, err := os.Stat(ms.local("dir")); err != nil {
			return false, "no dir/ yet"
		}
		return len(tempFiles(t, ms.m.Local)) > 0, "none yet"
	})
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if _, err := os.Lstat(ms.local("dir/big.bin")); err == nil {
		t.Fatalf("the final name exists after a download was killed half-way; output:\n%s", out.String())
	}

	fp.stallGets.Store(false)
	r := ms.pullCLI()
	if r.code != 0 || !strings.Contains(r.stdout, "removed 1 temporary file(s)") || !strings.Contains(r.stdout, "downloaded 1 ") {
		t.Fatalf("want exit 0, the leftover removed and the file downloaded\n%s", r.cmdResult)
	}
	if tf := tempFiles(t, ms.m.Local); len(tf) > 0 {
		t.Errorf("temporary files left: %q", tf)
	}
	mt, _ := time.Parse(time.RFC3339Nano, "2001-09-09T01:46:40.123456789Z")
	checkFile(t, ms.local("dir/big.bin"), data, 0o664, mt)
}

// jobDone finds the `msg="job done"` line of kind for mapping name logged
// since line from, waiting for it.
func (s *server) jobDone(from int, kind, name string) logLine {
	s.t.Helper()
	l, ok := s.waitLog(from, func(l logLine) bool {
		return l.msg() == "job done" && l.get("kind") == kind && l.get("name") == name
	}, mirrorTimeout)
	if !ok {
		s.t.Fatalf("no msg=\"job done\" kind=%s name=%s line\n%s", kind, name, s.logs.tail(40))
	}
	return l
}

// jobTimes parses a job line's start and end.
func jobTimes(t *testing.T, l logLine) (start, end time.Time) {
	t.Helper()
	start, err1 := time.Parse(time.RFC3339Nano, l.get("start"))
	end, err2 := time.Parse(time.RFC3339Nano, l.get("end"))
	if err1 != nil || err2 != nil || end.Before(start) {
		t.Fatalf("job line with bad times: %s", l.raw)
	}
	return start, end
}

// TestServeScheduledPull runs the nightly pull of `ftpgate serve` on a
// short schedule: an object put by another client arrives locally, a
// verify follows the pull, the mirror does not send the file back, and no
// pull overlaps a mirror full pass.
func TestServeScheduledPull(t *testing.T) {
	st := sharedStore(t, storeMinIO)
	ms := newMirrorSetup(t, st, setupOpts{outside: true, mutate: func(c *testConfig) {
		c.Mirrors[0].Pull = "@every 1s"
	}})
	data := payload(5000, 3)
	st.putWithMtime(t, ms.bucket, "in/from-bucket.bin", data, pullMtime)
	ms.launch()
	pass := ms.waitPassDone(0, mapping, "start-up")
	_ = pass
	pull := ms.jobDone(0, "pull", mapping)
	eventually(t, mirrorTimeout, "the pulled file", func() (bool, string) {
		_, err := os.Stat(ms.local("in/from-bucket.bin"))
		return err == nil, "not there yet"
	})
	mt, _ := time.Parse(time.RFC3339Nano, "2001-09-09T01:46:40.123456789Z")
	checkFile(t, ms.local("in/from-bucket.bin"), data, 0o664, mt)
	verify := ms.jobDone(0, "verify", mapping)
	_, pullEnd := jobTimes(t, pull)
	verifyStart, _ := jobTimes(t, verify)
	if verifyStart.Before(pullEnd) {
		t.Errorf("verify started at %s, before the pull ended at %s", verifyStart, pullEnd)
	}
	mirrorJob := ms.jobDone(0, "mirror", mapping)
	ms0, me0 := jobTimes(t, mirrorJob)
	ps, pe := jobTimes(t, pull)
	if ps.Before(me0) && pe.After(ms0) {
		t.Errorf("pull %s–%s overlapped the mirror pass %s–%s", ps, pe, ms0, me0)
	}
	// the mirror's settle period (1s) has passed twice over: nothing sent back
	from := ms.logs.len()
	ms.jobDone(from, "pull", mapping)
	ms.jobDone(ms.logs.len(), "pull", mapping)
	for _, l := range ms.ops(0, mapping, "") {
		if l.get("key") == "in/from-bucket.bin" {
			t.Errorf("the mirror sent the pulled file back: %s", l.raw)
		}
	}
}

// TestServeAfterMirrorFix runs `ftpgate serve` with a mirror and a
// [[perms]] policy with after_mirror over its tree: a fix follows each full
// pass, starts only after the pass ended (from the recorded job times),
// and fixes the wrong entries.
func TestServeAfterMirrorFix(t *testing.T) {
	st := sharedStore(t, storeMinIO)
	var local string
	ms := newMirrorSetup(t, st, setupOpts{outside: true, mutate: func(c *testConfig) {
		c.Mirrors[0].Reconcile = "2s"
		local = c.Mirrors[0].Local
		c.Extra = fmt.Sprintf("\n[[perms]]\npath = %s\ngroup = %s\nfile_mode = \"0664\"\ndir_mode = \"2775\"\nafter_mirror = true\n",
			tomlString(local), tomlString(testGroup.name))
	}})
	for i := range 50 {
		mustWrite(t, ms.local(fmt.Sprintf("d%d/f%d.bin", i%5, i)), payload(2000, uint64(i)))
	}
	wrong := ms.local("d1/f1.bin")
	if err := os.Chmod(wrong, 0o600); err != nil {
		t.Fatal(err)
	}
	ms.launch()
	var mirrors, fixes []logLine
	eventually(t, mirrorTimeout, "two full passes each followed by a fix", func() (bool, string) {
		mirrors, fixes = nil, nil
		for _, raw := range ms.logs.snapshot() {
			l := parseLogLine(raw)
			if l.msg() != "job done" {
				continue
			}
			switch l.get("kind") {
			case "mirror":
				mirrors = append(mirrors, l)
			case "perms":
				fixes = append(fixes, l)
			}
		}
		return len(mirrors) >= 2 && len(fixes) >= 2, fmt.Sprintf("%d passes, %d fixes", len(mirrors), len(fixes))
	})
	fi, err := os.Stat(wrong)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o664 {
		t.Errorf("%s: mode %v after the fix, want 0664", wrong, got)
	}
	if fixes[0].get("fixed") == "0" || fixes[0].get("name") != local {
		t.Errorf("the first fix changed nothing or fixed another tree: %s", fixes[0].raw)
	}
	ms0, me0 := jobTimes(t, mirrors[0])
	fs0, _ := jobTimes(t, fixes[0])
	if fs0.Before(me0) {
		t.Errorf("the fix started at %s, before the first pass (%s–%s) ended", fs0, ms0, me0)
	}
	for _, m := range mirrors {
		a, b := jobTimes(t, m)
		for _, f := range fixes {
			c, d := jobTimes(t, f)
			if c.Before(b) && d.After(a) {
				t.Errorf("fix %s–%s overlapped the mirror pass %s–%s", c, d, a, b)
			}
		}
	}
}

// TestPullRestore: after the local tree is lost (every file and the
// sentinel gone, as on a replaced disk), a plain pull refuses it, and
// `pull --restore` brings every object back byte-exact with the policy,
// whatever the journal recorded, makes the sentinel again, and the next
// mirror pass deletes nothing and sends nothing back.
func TestPullRestore(t *testing.T) {
	st := sharedStore(t, storeMinIO)
	ms := newMirrorSetup(t, st, setupOpts{outside: true, mutate: func(c *testConfig) {
		c.Mirrors[0].Remove = true
	}})
	files := map[string][]byte{
		"a.txt":          []byte("alpha\n"),
		"deep/dir/b.bin": payload(200000, 61),
		"c.txt":          []byte("gamma\n"),
	}
	for name, data := range files {
		mustWrite(t, ms.local(name), data)
	}
	ms.mustMirror()

	// the disk dies; a new, empty one is mounted in its place
	entries, err := os.ReadDir(ms.m.Local)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(ms.local(e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	r := ms.pullCLI()
	if r.code != 2 || !strings.Contains(r.stderr, "sentinel") {
		t.Fatalf("plain pull: want exit 2 naming the sentinel\n%s", r.cmdResult)
	}
	r = ms.pullCLI("--restore")
	if r.code != 0 || !strings.Contains(r.stdout, "downloaded 3 ") {
		t.Fatalf("pull --restore: want exit 0 and 3 downloads\n%s", r.cmdResult)
	}
	for name, data := range files {
		checkFile(t, ms.local(name), data, 0o664, time.Time{})
	}
	if _, err := os.Lstat(ms.local(sentinelName)); err != nil {
		t.Fatalf("no sentinel after the restore: %v", err)
	}
	if tf := tempFiles(t, ms.m.Local); len(tf) > 0 {
		t.Errorf("temporary files left: %q", tf)
	}
	res := ms.mustMirror()
	for _, l := range res.lines {
		if l.msg() == "mirrored" && l.get("key") != ms.key(sentinelName) {
			t.Errorf("the mirror pass after the restore changed the bucket: %s", l.raw)
		}
	}
	ctx, cancel := s3ctx(t)
	defer cancel()
	for name, data := range files {
		o, err := st.getObject(ctx, ms.bucket, ms.key(name))
		if err != nil || o == nil || !bytes.Equal(o.data, data) {
			t.Errorf("object %s after the restore and a pass: %v, %v", name, o, err)
		}
	}
}
