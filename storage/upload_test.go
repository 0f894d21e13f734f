package storage

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

func TestAtomicUpload(t *testing.T) {
	for _, c := range []struct {
		name         string
		fsync, named bool
	}{{"nofsync", false, false}, {"fsync", true, false}, {"nofsync/named", false, true}, {"fsync/named", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			fsync := c.fsync
			e := newEnv(t, func(p *Policy) { p.Fsync = fsync })
			if c.named {
				e.namedParts()
			}
			f := e.jail("uploads/dj1", "dj1", false)
			e.write("uploads/dj1/old.wav", "old content")

			for _, name := range []string{"/a.wav", "/old.wav"} {
				before := ""
				if e.exists("uploads/dj1" + name) {
					before = e.read("uploads/dj1" + name)
				}
				u, err := f.OpenUpload(name, 0, false)
				if err != nil {
					t.Fatal(err)
				}
				data := bytes.Repeat([]byte("0123456789abcdef"), 4096)
				if _, err := u.Write(data); err != nil {
					t.Fatal(err)
				}
				if pos, err := u.Seek(0, io.SeekCurrent); err != nil || pos != int64(len(data)) {
					t.Fatalf("Seek = %d, %v", pos, err)
				}
				// Until Commit, the final name holds what it held before,
				// and listings show no part.
				if before == "" && e.exists("uploads/dj1"+name) {
					t.Fatal("final name exists before Commit")
				}
				if before != "" && e.read("uploads/dj1"+name) != before {
					t.Fatal("final file changed before Commit")
				}
				infos, err := f.ReadDir("/")
				if err != nil {
					t.Fatal(err)
				}
				for _, fi := range infos {
					if IsPartName(fi.Name()) {
						t.Fatalf("ReadDir shows part %s", fi.Name())
					}
				}
				// A named part is registered; an anonymous one has
				// neither name nor entry.
				if want := map[bool]int{true: 1, false: 0}[c.named]; len(e.parts("uploads/dj1")) != want || e.entries() != want {
					t.Fatalf("parts %v, entries %d; want %d", e.parts("uploads/dj1"), e.entries(), want)
				}

				res, err := u.Commit()
				if err != nil {
					t.Fatal(err)
				}
				if got := e.read("uploads/dj1" + name); got != string(data) {
					t.Fatal("content differs after Commit")
				}
				fi, err := os.Stat(e.path("uploads/dj1" + name))
				if err != nil {
					t.Fatal(err)
				}
				want := Result{Path: "uploads/dj1" + name, Size: int64(len(data)), SHA256: sha256.Sum256(data), ModTime: fi.ModTime()}
				if res != want {
					t.Fatalf("Result = %+v, want %+v", res, want)
				}
				if len(e.parts("uploads/dj1")) != 0 || e.entries() != 0 {
					t.Fatal("part or registry entry left after Commit")
				}
				if _, err := u.Commit(); !errors.Is(err, fs.ErrClosed) {
					t.Fatalf("second Commit: %v", err)
				}
				if err := u.Abort(); err != nil {
					t.Fatalf("Abort after Commit: %v", err)
				}
			}
		})
	}
}

func TestUploadEdgeCases(t *testing.T) {
	e := newEnv(t, nil)
	f := e.jail("u", "u", false)
	if err := f.Mkdir("/d", 0); err != nil {
		t.Fatal(err)
	}
	_, err := f.OpenUpload("/d", 0, false)
	wantErr(t, err, "/d", ErrIsDir)
	_, err = f.OpenUpload("/", 0, false)
	wantErr(t, err, "/", ErrIsDir)
	_, err = f.OpenUpload("/missing/x", 0, false)
	wantErr(t, err, "/missing/x", fs.ErrNotExist)
	_, err = f.OpenUpload("/x", -1, false)
	wantErr(t, err, "/x", fs.ErrInvalid)
	if e.entries() != 0 {
		t.Fatalf("refused uploads left %d registry entries", e.entries())
	}

	// The final name becomes a directory while the upload runs: Commit
	// fails and the part survives for a resume under the same name.
	u, err := f.OpenUpload("/x", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(u, "hello")
	if err := os.Mkdir(e.path("u/x"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = u.Commit()
	wantErr(t, err, "/x", ErrIsDir)
	if len(e.parts("u")) != 1 || e.entries() != 1 {
		t.Fatal("Commit onto a directory lost the part")
	}
	if err := os.Remove(e.path("u/x")); err != nil {
		t.Fatal(err)
	}
	u, err = f.OpenUpload("/x", 5, false)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(u, " world")
	if res, err := u.Commit(); err != nil || e.read("u/x") != "hello world" || res.SHA256 != sha256.Sum256([]byte("hello world")) {
		t.Fatalf("Commit after resume: %v", err)
	}

	// Only the current position can be sought.
	u, err = f.OpenUpload("/y", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Seek(3, io.SeekStart); !errors.Is(err, fs.ErrInvalid) {
		t.Fatalf("Seek(3) err = %v", err)
	}
	if n, err := u.Seek(0, io.SeekEnd); n != 0 || err != nil {
		t.Fatalf("Seek(0, end) = %d, %v", n, err)
	}
	// The same user may not upload the same name twice at once; others
	// may, and so may the same user once the first is over.
	_, err = f.OpenUpload("/y", 0, false)
	wantErr(t, err, "/y", ErrBusy)
	other, err := e.jail("u", "v", false).OpenUpload("/y", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	other.Abort()
	if err := u.Abort(); err != nil {
		t.Fatal(err)
	}
	u, err = f.OpenUpload("/y", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	// An empty upload commits an empty file; an empty abort leaves no part.
	if res, err := u.Commit(); err != nil || res.Size != 0 || res.SHA256 != sha256.Sum256(nil) {
		t.Fatalf("empty Commit = %+v, %v", res, err)
	}
	if _, err := u.Write([]byte("x")); !errors.Is(err, fs.ErrClosed) {
		t.Fatalf("Write after Commit: %v", err)
	}
	if len(e.parts("u")) != 0 || e.entries() != 0 {
		t.Fatalf("parts %v, entries %d", e.parts("u"), e.entries())
	}
}

// TestResume walks the ways a client continues an interrupted upload.
// full is the file the client means to upload; every path must end with
// exactly full and its SHA-256.
func TestResume(t *testing.T) {
	full := make([]byte, 3<<20+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range full {
		full[i] = byte(rng.Uint32())
	}
	half := int64(len(full) / 2)
	type step struct {
		offset     int64
		appendMode bool
		from, to   int64 // bytes of full this step sends
		commit     bool
	}
	tests := []struct {
		name  string
		final []byte // existing file before the first step
		steps []step
		want  []byte
	}{
		{
			name:  "REST at the part's size",
			steps: []step{{0, false, 0, half, false}, {half, false, half, int64(len(full)), true}},
			want:  full,
		},
		{
			name: "REST below the part's size cuts it",
			steps: []step{
				{0, false, 0, half + 1000, false},
				{half, false, half, int64(len(full)), true},
			},
			want: full,
		},
		{
			name: "two interruptions",
			steps: []step{
				{0, false, 0, 1000, false},
				{1000, false, 1000, half, false},
				{half, false, half, int64(len(full)), true},
			},
			want: full,
		},
		{
			name:  "APPE continues the part",
			steps: []step{{0, false, 0, half, false}, {0, true, half, int64(len(full)), true}},
			want:  full,
		},
		{
			name:  "APPE to an existing file",
			final: full[:half],
			steps: []step{{0, true, half, int64(len(full)), true}},
			want:  full,
		},
		{
			name:  "APPE interrupted then resumed",
			final: full[:1000],
			steps: []step{{0, true, 1000, half, false}, {half, false, half, int64(len(full)), true}},
			want:  full,
		},
		{
			name:  "APPE to nothing",
			steps: []step{{0, true, 0, int64(len(full)), true}},
			want:  full,
		},
		{
			name:  "STOR from 0 replaces an old part",
			final: []byte("old"),
			steps: []step{{0, false, 0, half, false}, {0, false, 0, int64(len(full)), true}},
			want:  full,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(p *Policy) { p.Fsync = true })
			if tt.final != nil {
				e.write("u/f.bin", string(tt.final))
			}
			f := e.jail("u", "dj", false)
			for i, s := range tt.steps {
				u, err := f.OpenUpload("/f.bin", s.offset, s.appendMode)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				// Write in odd-sized pieces, as a network would.
				for p := s.from; p < s.to; {
					n := min(s.to-p, 100_000+p%7777)
					if _, err := u.Write(full[p : p+n]); err != nil {
						t.Fatal(err)
					}
					p += n
				}
				if !s.commit {
					if err := u.Abort(); err != nil {
						t.Fatal(err)
					}
					// SIZE offers the resume: Stat shows the part under
					// the final name, and the final file is untouched.
					fi, err := f.Stat("/f.bin")
					if err != nil || fi.Size() != s.to || fi.Name() != "f.bin" {
						t.Fatalf("step %d: Stat = %v, %v; want size %d", i, fi, err, s.to)
					}
					if tt.final != nil && e.read("u/f.bin") != string(tt.final) {
						t.Fatalf("step %d: final file changed", i)
					}
					continue
				}
				res, err := u.Commit()
				if err != nil {
					t.Fatal(err)
				}
				if res.SHA256 != sha256.Sum256(tt.want) || res.Size != int64(len(tt.want)) {
					t.Fatalf("Result = %d bytes %x", res.Size, res.SHA256)
				}
			}
			if got := e.read("u/f.bin"); got != string(tt.want) {
				t.Fatalf("content: %d bytes, want %d", len(got), len(tt.want))
			}
			if len(e.parts("u")) != 0 || e.entries() != 0 {
				t.Fatal("part or registry entry left")
			}
		})
	}
}

func TestResumeRefused(t *testing.T) {
	e := newEnv(t, nil)
	e.write("u/f", "complete")
	f := e.jail("u", "dj", false)
	// No part: REST restarts from 0 (the client is told the part is gone).
	_, err := f.OpenUpload("/f", 3, false)
	wantErr(t, err, "/f", fs.ErrNotExist)
	_, err = f.OpenUpload("/g", 3, false)
	wantErr(t, err, "/g", fs.ErrNotExist)

	interrupted(t, f, "/f", 0, false, "part")
	_, err = f.OpenUpload("/f", 5, false)
	wantErr(t, err, "/f", fs.ErrNotExist)
	// Another user neither sees nor resumes dj's part.
	admin := e.jail(".", "admin", false)
	if fi, err := admin.Stat("/u/f"); err != nil || fi.Size() != int64(len("complete")) {
		t.Fatalf("admin Stat = %v, %v", fi, err)
	}
	_, err = admin.OpenUpload("/u/f", 4, false)
	wantErr(t, err, "/u/f", fs.ErrNotExist)
	if e.entries() != 1 || len(e.parts("u")) != 1 {
		t.Fatalf("entries %d, parts %v", e.entries(), e.parts("u"))
	}
}

// TestStatPart checks which of the final file and the part Stat reports.
func TestStatPart(t *testing.T) {
	e := newEnv(t, nil)
	f := e.jail("u", "dj", false)
	interrupted(t, f, "/new", 0, false, "12345")
	e.write("u/old", "complete file")
	interrupted(t, f, "/old", 0, false, "123")
	part := e.parts("u")
	if len(part) != 2 {
		t.Fatalf("parts = %v", part)
	}
	partOfOld := e.path("u/" + partName("dj", "/old"))
	past, future := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)

	fi, err := f.Stat("/new")
	if err != nil || fi.Size() != 5 || fi.Name() != "new" || !fi.Mode().IsRegular() {
		t.Fatalf("Stat(new) = %v, %v", fi, err)
	}
	for _, tt := range []struct {
		name           string
		final, partMod time.Time
		want           int64
	}{
		{"part newer", past, future, 3},
		{"final newer", future, past, int64(len("complete file"))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.Chtimes(e.path("u/old"), tt.final, tt.final); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(partOfOld, tt.partMod, tt.partMod); err != nil {
				t.Fatal(err)
			}
			fi, err := f.Stat("/old")
			if err != nil || fi.Size() != tt.want || fi.Name() != "old" {
				t.Fatalf("Stat = %v, %v; want size %d", fi, err, tt.want)
			}
		})
	}
	// Readers have no parts; the part's own name is not a file.
	r := e.jail("u", "dj", true)
	if _, err := r.Stat("/new"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("reader Stat(new) = %v", err)
	}
	_, err = f.Stat("/" + partName("dj", "/new"))
	wantErr(t, err, "", ErrInvalidName)
}

// TestWriteback uploads past several writeback chunks, with fsync on
// (writeback waited for) and off (only started), and checks that the bytes
// and the hash survive the range syncs.
func TestWriteback(t *testing.T) {
	for _, fsync := range []bool{true, false} {
		t.Run(map[bool]string{false: "nofsync", true: "fsync"}[fsync], func(t *testing.T) {
			e := newEnv(t, func(p *Policy) { p.Fsync = fsync })
			f := e.jail("u", "u", false)
			data := make([]byte, 3*writebackChunk+4321)
			for i := range data {
				data[i] = byte(i * 7)
			}
			u, err := f.OpenUpload("/big", 0, false)
			if err != nil {
				t.Fatal(err)
			}
			for p := 0; p < len(data); p += 1 << 20 {
				if _, err := u.Write(data[p:min(p+1<<20, len(data))]); err != nil {
					t.Fatal(err)
				}
			}
			if !u.wb || u.wbWait != fsync || u.wbNext != 3*writebackChunk || u.wbPrev != 2*writebackChunk {
				t.Fatalf("writeback state: on %v, wait %v, prev %d, next %d", u.wb, u.wbWait, u.wbPrev, u.wbNext)
			}
			res, err := u.Commit()
			if err != nil {
				t.Fatal(err)
			}
			if res.SHA256 != sha256.Sum256(data) || e.read("u/big") != string(data) {
				t.Fatal("content or hash differs")
			}
		})
	}
}

// TestReadFrom receives uploads through ReadFrom, the path io.Copy takes:
// in one chunk (hashed inline) and in many (hashed by a second goroutine),
// after a resume, and with a reader that fails halfway.
func TestReadFrom(t *testing.T) {
	e := newEnv(t, func(p *Policy) { p.Fsync = true })
	f := e.jail("u", "u", false)
	big := make([]byte, 2*writebackChunk+5*recvChunk+123)
	for i := range big {
		big[i] = byte(i * 13)
	}
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"small", []byte("four kilobytes, give or take")},
		{"one chunk", big[:recvChunk]},
		{"one chunk and a byte", big[:recvChunk+1]},
		{"many chunks", big},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, err := f.OpenUpload("/f", 0, false)
			if err != nil {
				t.Fatal(err)
			}
			// iotest-like small reads must not matter either.
			n, err := u.ReadFrom(&oddReader{data: tt.data})
			if err != nil || n != int64(len(tt.data)) {
				t.Fatalf("ReadFrom = %d, %v", n, err)
			}
			res, err := u.Commit()
			if err != nil {
				t.Fatal(err)
			}
			if res.Size != int64(len(tt.data)) || res.SHA256 != sha256.Sum256(tt.data) || e.read("u/f") != string(tt.data) {
				t.Fatal("content or hash differs")
			}
		})
	}

	t.Run("resumed", func(t *testing.T) {
		interrupted(t, f, "/r", 0, false, string(big[:1000]))
		u, err := f.OpenUpload("/r", 1000, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.ReadFrom(bytes.NewReader(big[1000:])); err != nil {
			t.Fatal(err)
		}
		if res, err := u.Commit(); err != nil || res.SHA256 != sha256.Sum256(big) || e.read("u/r") != string(big) {
			t.Fatalf("Commit after resume: %v", err)
		}
	})

	t.Run("reader fails", func(t *testing.T) {
		errBroken := errors.New("connection reset")
		u, err := f.OpenUpload("/broken", 0, false)
		if err != nil {
			t.Fatal(err)
		}
		n, err := u.ReadFrom(io.MultiReader(bytes.NewReader(big[:3*recvChunk+7]), &failReader{errBroken}))
		if !errors.Is(err, errBroken) || n != 3*recvChunk+7 {
			t.Fatalf("ReadFrom = %d, %v", n, err)
		}
		if err := u.Abort(); err != nil {
			t.Fatal(err)
		}
		// The part holds what was received, and a resume completes it.
		u, err = f.OpenUpload("/broken", n, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.ReadFrom(bytes.NewReader(big[n:])); err != nil {
			t.Fatal(err)
		}
		if res, err := u.Commit(); err != nil || res.SHA256 != sha256.Sum256(big) {
			t.Fatalf("Commit after resume: %v", err)
		}
	})

	t.Run("after Commit", func(t *testing.T) {
		u, err := f.OpenUpload("/g", 0, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.Commit(); err != nil {
			t.Fatal(err)
		}
		if _, err := u.ReadFrom(bytes.NewReader(big)); !errors.Is(err, fs.ErrClosed) {
			t.Fatalf("ReadFrom after Commit: %v", err)
		}
	})
}

// oddReader returns data in reads of varying, odd sizes.
type oddReader struct {
	data []byte
	n    int
}

func (r *oddReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	r.n++
	k := min(len(p), len(r.data), 1+r.n*7919%(3*recvChunk/2))
	copy(p, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

type failReader struct{ err error }

func (r *failReader) Read([]byte) (int, error) { return 0, r.err }

// TestPartCreatedOnFirstByte: a plain STOR creates its part when the first
// bytes arrive, not when it is opened, and still replaces an old part of
// the same name, whether it then receives bytes or not.
func TestPartCreatedOnFirstByte(t *testing.T) {
	for _, named := range []bool{true, false} {
		t.Run(map[bool]string{true: "named", false: "anonymous"}[named], func(t *testing.T) {
			testPartCreatedOnFirstByte(t, named)
		})
	}
}

// testPartCreatedOnFirstByte: a named part appears (registered) with the
// first bytes; an anonymous one never appears until an Abort names it.
func testPartCreatedOnFirstByte(t *testing.T, named bool) {
	e := newEnv(t, nil)
	if named {
		e.namedParts()
	}
	f := e.jail("u", "u", false)
	partPath := e.path("u/" + partName("u", "/f"))

	u, err := f.OpenUpload("/f", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.parts("u")) != 0 || e.entries() != 0 {
		t.Fatalf("before any byte: parts %v, entries %d", e.parts("u"), e.entries())
	}
	if _, err := io.WriteString(u, "abc"); err != nil {
		t.Fatal(err)
	}
	if want := map[bool]int{true: 1, false: 0}[named]; len(e.parts("u")) != want || e.entries() != want {
		t.Fatalf("after the first bytes: parts %v, entries %d; want %d", e.parts("u"), e.entries(), want)
	}
	if err := u.Abort(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(partPath); err != nil || string(b) != "abc" || e.entries() != 1 {
		t.Fatalf("after Abort: part %q, %v, entries %d; want \"abc\", 1", b, err, e.entries())
	}

	for _, tt := range []struct {
		name   string
		send   string
		commit bool
	}{
		{"aborted before any byte", "", false},
		{"aborted after bytes", "xy", false},
		{"empty commit", "", true},
		{"commit", "xyz", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_ = os.Remove(e.path("u/f"))
			interrupted(t, f, "/f", 0, false, "old part")
			u, err := f.OpenUpload("/f", 0, false)
			if err != nil {
				t.Fatal(err)
			}
			if tt.send != "" {
				if _, err := io.WriteString(u, tt.send); err != nil {
					t.Fatal(err)
				}
			}
			if tt.commit {
				res, err := u.Commit()
				if err != nil || res.Size != int64(len(tt.send)) || res.SHA256 != sha256.Sum256([]byte(tt.send)) {
					t.Fatalf("Commit = %+v, %v", res, err)
				}
				if !e.exists("u/f") || e.read("u/f") != tt.send {
					t.Fatalf("final file does not hold %q", tt.send)
				}
			} else if err := u.Abort(); err != nil {
				t.Fatal(err)
			}
			// The old part is gone in every case; only an aborted
			// upload that received bytes leaves its own.
			b, err := os.ReadFile(partPath)
			switch {
			case !tt.commit && tt.send != "":
				if string(b) != tt.send || e.entries() != 1 {
					t.Fatalf("part = %q, %v, entries %d; want %q", b, err, e.entries(), tt.send)
				}
			case err == nil || e.entries() != 0:
				t.Fatalf("part %q left (entries %d), want none", b, e.entries())
			}
		})
	}
}

// A file that appears under the final name during an upload is replaced
// at Commit, as rename would: the anonymous part goes through its part
// name.
func TestCommitOverNewFile(t *testing.T) {
	e := newEnv(t, nil)
	f := e.jail("u", "u", false)
	u, err := f.OpenUpload("/x", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(u, "upload"); err != nil {
		t.Fatal(err)
	}
	if !u.anon {
		t.Fatal("the part is not anonymous")
	}
	e.write("u/x", "someone else's")
	if _, err := u.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := e.read("u/x"); got != "upload" {
		t.Fatalf("x = %q", got)
	}
	if len(e.parts("u")) != 0 || e.entries() != 0 {
		t.Fatalf("parts %v, entries %d left", e.parts("u"), e.entries())
	}
}

// An anonymous part gets its name (and registry entry) once the upload
// reaches recvChunk bytes, so that a killed daemon leaves it resumable.
func TestLargeUploadNamesPart(t *testing.T) {
	e := newEnv(t, nil)
	f := e.jail("u", "u", false)
	u, err := f.OpenUpload("/big", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(make([]byte, recvChunk-1)); err != nil {
		t.Fatal(err)
	}
	if len(e.parts("u")) != 0 || e.entries() != 0 {
		t.Fatalf("below recvChunk: parts %v, entries %d", e.parts("u"), e.entries())
	}
	if _, err := u.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if len(e.parts("u")) != 1 || e.entries() != 1 {
		t.Fatalf("at recvChunk: parts %v, entries %d; want the named part", e.parts("u"), e.entries())
	}
	if _, err := u.Write([]byte{2}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(e.path("u/big")); err != nil || fi.Size() != recvChunk+1 {
		t.Fatalf("big: %v, %v", fi, err)
	}
	if len(e.parts("u")) != 0 || e.entries() != 0 {
		t.Fatalf("after Commit: parts %v, entries %d", e.parts("u"), e.entries())
	}
}
