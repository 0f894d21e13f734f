package storage

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSweepParts(t *testing.T) {
	e := newEnv(t, nil)
	e.namedParts() // the upload in progress has a registered part too
	f := e.jail("uploads/dj1", "dj1", false)
	if err := f.Mkdir("/sub", 0); err != nil {
		t.Fatal(err)
	}
	interrupted(t, f, "/a.wav", 0, false, "partial a")
	interrupted(t, f, "/sub/b.wav", 0, false, "partial b")
	active, err := f.OpenUpload("/c.wav", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := active.Write([]byte("in progress")); err != nil {
		t.Fatal(err)
	}
	// Registry entries whose part is gone, or that were not written by
	// ftpgate, or a leftover temporary entry.
	if err := e.root.reg.put("uploads/dj1/" + PartPrefix + "gone"); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(e.pol.StateDir, "parts", "junk")
	if err := os.WriteFile(junk, []byte("../../etc/passwd"), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(e.pol.StateDir, "parts", tmpPrefix+"123")
	if err := os.WriteFile(tmp, []byte("uploads/dj1/x"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.write("uploads/dj1/keep.txt", "not a part")
	if e.entries() != 6 {
		t.Fatalf("entries = %d, want 6", e.entries())
	}

	now := time.Now()
	tests := []struct {
		name        string
		now         time.Time
		wantRemoved int
		wantParts   int // in uploads/dj1 and sub
		wantEntries int
		wantTmp     bool
	}{
		// Fresh parts stay; the dangling and the junk entries go.
		{"before the TTL", now, 0, 3, 4, true},
		{"just before the TTL", now.Add(testTTL - time.Minute), 0, 3, 4, true},
		// Expired parts and the stale temporary entry go; the upload in
		// progress stays.
		{"after the TTL", now.Add(testTTL + time.Minute), 2, 1, 1, false},
		{"again", now.Add(testTTL + time.Minute), 0, 1, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			removed, err := e.root.SweepParts(tt.now)
			if err != nil {
				t.Fatal(err)
			}
			parts := len(e.parts("uploads/dj1")) + len(e.parts("uploads/dj1/sub"))
			if removed != tt.wantRemoved || parts != tt.wantParts || e.entries() != tt.wantEntries {
				t.Fatalf("removed %d, parts %d, entries %d; want %d, %d, %d",
					removed, parts, e.entries(), tt.wantRemoved, tt.wantParts, tt.wantEntries)
			}
			if _, err := os.Stat(tmp); (err == nil) != tt.wantTmp {
				t.Fatalf("temporary entry: %v, want present %v", err, tt.wantTmp)
			}
		})
	}
	if e.read("uploads/dj1/keep.txt") != "not a part" {
		t.Fatal("the sweep touched a file")
	}
	if _, err := f.Stat("/a.wav"); err == nil {
		t.Fatal("an expired part is still offered for resume")
	}
	if _, err := active.Commit(); err != nil {
		t.Fatalf("Commit after the sweep: %v", err)
	}
	if e.read("uploads/dj1/c.wav") != "in progress" || e.entries() != 0 {
		t.Fatalf("after Commit: entries %d", e.entries())
	}
}

// TestRegistryJournal checks what the journal keeps across a restart: torn
// and foreign lines are dropped, the live keys survive a rewrite, an entry
// file of the one-file-per-part layout is still swept, and the journal is
// rewritten once it has grown enough.
func TestRegistryJournal(t *testing.T) {
	e := newEnv(t, nil)
	f := e.jail("uploads/dj1", "dj1", false)
	interrupted(t, f, "/a.wav", 0, false, "partial a")
	put(t, f, "/done.wav", "complete")
	journal := filepath.Join(e.pol.StateDir, "parts", journalName)
	keyA := "uploads/dj1/" + partName("dj1", "/a.wav")

	// A part left by the old layout, with its entry file.
	old := "uploads/dj1/" + partName("dj1", "/old.wav")
	e.write(old, "old partial")
	if err := os.WriteFile(filepath.Join(e.pol.StateDir, "parts", legacyEntry(old)), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	// Foreign lines, and a line torn by a crash.
	fj, err := os.OpenFile(journal, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fj.WriteString("+../../etc/passwd\n*junk\n+uploads/dj1/" + PartPrefix + "torn"); err != nil {
		t.Fatal(err)
	}
	fj.Close()

	// A restart rewrites the journal to the live keys.
	if err := e.root.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Open(e.data, e.pol)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	e.root = r
	e.namedParts() // so that the upload of c below is recorded
	if b, err := os.ReadFile(journal); err != nil || string(b) != "+"+keyA+"\n" {
		t.Fatalf("journal after Open = %q, %v", b, err)
	}
	if e.entries() != 2 {
		t.Fatalf("entries = %d, want 2", e.entries())
	}

	// Both kinds of entries are swept.
	removed, err := r.SweepParts(time.Now().Add(testTTL + time.Minute))
	if err != nil || removed != 2 || e.entries() != 0 || e.exists(old) || e.exists(keyA) {
		t.Fatalf("sweep removed %d, %v; entries %d", removed, err, e.entries())
	}

	// Once grown past compactAfter, the journal is rewritten: here when
	// the upload of c is recorded, so its removal follows.
	f = e.jail("uploads/dj1", "dj1", false)
	interrupted(t, f, "/b.wav", 0, false, "partial b")
	r.reg.mu.Lock()
	r.reg.appended = compactAfter - 1
	r.reg.mu.Unlock()
	put(t, f, "/c.wav", "complete")
	keyB := "uploads/dj1/" + partName("dj1", "/b.wav")
	keyC := "uploads/dj1/" + partName("dj1", "/c.wav")
	if b, err := os.ReadFile(journal); err != nil || string(b) != "+"+keyB+"\n+"+keyC+"\n-"+keyC+"\n" {
		t.Fatalf("journal after compaction = %q, %v", b, err)
	}
}
