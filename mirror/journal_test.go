package mirror

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRecordEncoding(t *testing.T) {
	sha := [32]byte{1, 2, 3, 31: 0xff}
	for _, tc := range []struct {
		name string
		rec  fileRecord
		max  int // encoded size bound
	}{
		{"md5-etag", fileRecord{size: 1 << 40, mtime: 1700000000123456789, ctime: 1700000001000000000, inode: 1 << 33, sha: sha, etag: "5eb63bbbe01eeed093cb22bb8f5acdc3"}, 80},
		{"multipart-etag", fileRecord{size: 5, mtime: 1, ctime: 2, inode: 3, sha: sha, etag: "86544270cdeee123ccf2071a6af2daf6-3"}, 80},
		{"unknown-etag", fileRecord{size: 0, mtime: -5, ctime: 0, inode: 0, sha: sha}, 50},
		{"uppercase-hex-kept-verbatim", fileRecord{etag: "5EB63BBBE01EEED093CB22BB8F5ACDC3"}, 80},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.rec.encode()
			if len(b) > tc.max {
				t.Fatalf("encoded in %d bytes, want at most %d", len(b), tc.max)
			}
			got, err := decodeRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.rec {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tc.rec)
			}
			for n := range len(b) {
				if _, err := decodeRecord(b[:n]); !errors.Is(err, errCorrupt) {
					t.Fatalf("truncated to %d: err %v", n, err)
				}
			}
			if _, err := decodeRecord(append(b, 0)); !errors.Is(err, errCorrupt) {
				t.Fatalf("trailing byte: err %v", err)
			}
		})
	}
	if _, err := decodeRecord([]byte{9, 0}); !errors.Is(err, errCorrupt) {
		t.Fatalf("unknown version: %v", err)
	}
}

func TestPendingEncoding(t *testing.T) {
	for _, p := range []pendingRecord{{opSync, 1700000000123456789}, {opDelete, 0}} {
		got, err := decodePending(p.encode())
		if err != nil || got != p {
			t.Fatalf("round trip %+v: %+v %v", p, got, err)
		}
	}
	for _, b := range [][]byte{nil, {1}, {7, 2}, {1, 2, 3}} {
		if _, err := decodePending(b); !errors.Is(err, errCorrupt) {
			t.Fatalf("decodePending(%v): %v", b, err)
		}
	}
}

func TestMtimeFormat(t *testing.T) {
	for _, tc := range []struct {
		ns int64
		s  string
	}{
		{1700000000123456789, "1700000000.123456789"},
		{1700000000500000000, "1700000000.5"},
		{1700000000000000000, "1700000000"},
		{1, "0.000000001"},
		{0, "0"},
		{-1500000000, "-1.5"},
	} {
		if got := formatMtime(tc.ns); got != tc.s {
			t.Errorf("formatMtime(%d) = %q, want %q", tc.ns, got, tc.s)
		}
		if got, err := parseMtime(tc.s); err != nil || got != tc.ns {
			t.Errorf("parseMtime(%q) = %d, %v, want %d", tc.s, got, err, tc.ns)
		}
	}
	// what other tools write
	for s, want := range map[string]int64{
		"1700000000.1234567891": 1700000000123456789, // more than ns: truncated
		"1700000000.":           1700000000000000000,
		".5":                    500000000,
	} {
		if got, err := parseMtime(s); err != nil || got != want {
			t.Errorf("parseMtime(%q) = %d, %v, want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "abc", "1e9", "1.2.3", "-"} {
		if _, err := parseMtime(s); err == nil {
			t.Errorf("parseMtime(%q): no error", s)
		}
	}
}

func TestJournalInUse(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	start := time.Now()
	_, err = OpenJournal(dir)
	if !errors.Is(err, ErrJournalInUse) {
		t.Fatalf("second open: %v", err)
	}
	want := "journal " + filepath.Join(dir, journalFile) + " is in use by another ftpgate process"
	if err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second open took %v", d)
	}
}

func TestJournalInodeIndexAndStreams(t *testing.T) {
	j, err := OpenJournal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	const n = 3*scanBatch + 7
	err = j.update("m", func(x *mtx) error {
		for i := range n {
			if err := x.putFile(fmt.Sprintf("d/%05d", i), fileRecord{size: int64(i), inode: uint64(1000 + i%5)}); err != nil {
				return err
			}
		}
		return x.putFile("e/x", fileRecord{inode: 1000})
	})
	if err != nil {
		t.Fatal(err)
	}
	// a stream sees every key under its prefix, in order, while writers
	// change the bucket between its reads
	st := j.stream("m", bucketFiles, "d/")
	count, last := 0, ""
	for {
		e, ok := st.next()
		if !ok {
			break
		}
		if e.k <= last || !strings.HasPrefix(e.k, "d/") {
			t.Fatalf("stream order: %q after %q", e.k, last)
		}
		last = e.k
		count++
		if count%scanBatch == 0 {
			if err := j.update("m", func(x *mtx) error { return x.putFile("d/zzz-new", fileRecord{}) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if st.err != nil || count != n+1 {
		t.Fatalf("stream: %d entries, err %v", count, st.err)
	}

	err = j.update("m", func(x *mtx) error {
		if got := len(x.byInode(1000)); got != n/5+1+1 {
			return fmt.Errorf("inode 1000: %d paths", got)
		}
		// a new inode moves the index entry; a delete drops it
		if err := x.putFile("e/x", fileRecord{inode: 2000}); err != nil {
			return err
		}
		if got := x.byInode(2000); len(got) != 1 || got[0] != "e/x" {
			return fmt.Errorf("inode 2000: %q", got)
		}
		if err := x.deleteFile("e/x"); err != nil {
			return err
		}
		if got := x.byInode(2000); len(got) != 0 {
			return fmt.Errorf("inode 2000 after delete: %q", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// a missing mapping reads as empty
	if err := j.view("other", func(x *mtx) error {
		if !x.empty() || x.byInode(1000) != nil {
			return errors.New("missing mapping not empty")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// The journal persists bbolt's freelist: without it every open reads every
// page of the file to rebuild it, and the daemon starts with the whole
// journal resident (170 MB at a million files). This reads the meta pages
// of bbolt's file format (version 2): page header 16 bytes, then magic,
// version, page size, flags (4 bytes each), root bucket (16), freelist
// page id (8), high water page id (8), transaction id (8), little endian
// on the machines we build for.
func TestJournalFreelistPersisted(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		err := j.update("m", func(x *mtx) error {
			for k := range 500 {
				if err := x.putFile(fmt.Sprintf("d%d/f%03d", i, k), fileRecord{size: int64(k), inode: uint64(i*1000 + k)}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, journalFile))
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if len(b) < 80 || le.Uint32(b[16:]) != 0xED0CDAED {
		t.Skip("not a little-endian bbolt file")
	}
	pageSize := int(le.Uint32(b[24:]))
	var freelist, txid uint64
	for _, off := range []int{0, pageSize} {
		m := b[off+16:]
		if tx := le.Uint64(m[48:]); tx >= txid {
			txid, freelist = tx, le.Uint64(m[32:])
		}
	}
	if freelist == ^uint64(0) {
		t.Fatal("the journal's freelist is not persisted: every open reads the whole file")
	}
}
