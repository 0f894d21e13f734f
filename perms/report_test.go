package perms

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReportLine: the line of each kind of finding in each mode.
func TestReportLine(t *testing.T) {
	t.Parallel()
	wrongAll := Finding{
		Path: "/srv/ftp/a", Wrong: WrongMode | WrongOwner | WrongGroup,
		Have: Attrs{Mode: 0o4755, UID: 4343, GID: 0}, Want: Attrs{Mode: 0o644, UID: 4242, GID: 4243},
	}
	errOnly := Finding{Path: "/srv/ftp/locked", Dir: true, Err: fmt.Errorf("open: %w", syscall.EACCES)}
	failed := Finding{Path: "/srv/ftp/d", Dir: true, Wrong: WrongMode, Have: Attrs{Mode: 0o755}, Want: Attrs{Mode: 0o2775},
		Err: fmt.Errorf("fchmod: %w", syscall.EPERM)}
	fixed := wrongAll
	fixed.Fixed = true
	tests := []struct {
		name string
		mode Mode
		f    Finding
		want string
	}{
		{"check", ModeCheck, wrongAll, "/srv/ftp/a: mode 4755, want 0644; owner 4343, want alice; group root, want ftp"},
		{"dry run", ModeDryRun, wrongAll, "/srv/ftp/a: would fix mode 4755 -> 0644; owner 4343 -> alice; group root -> ftp"},
		{"fixed", ModeFix, fixed, "/srv/ftp/a: fixed mode 4755 -> 0644; owner 4343 -> alice; group root -> ftp"},
		{"error only", ModeCheck, errOnly, "/srv/ftp/locked/: error: open: permission denied"},
		{"error only in fix", ModeFix, errOnly, "/srv/ftp/locked/: error: open: permission denied"},
		{"fix failed", ModeFix, failed, "/srv/ftp/d/: error: fchmod: operation not permitted; mode 0755, want 2775"},
		{"control character quoted", ModeCheck, Finding{Path: "/srv/a\tb", Wrong: WrongMode, Have: Attrs{Mode: 0o600}, Want: Attrs{Mode: 0o644}},
			`"/srv/a\tb": mode 0600, want 0644`},
		{"invalid UTF-8 quoted", ModeCheck, Finding{Path: "/srv/\xff", Dir: true, Wrong: WrongGroup, Have: Attrs{GID: 7}, Want: Attrs{GID: 4243}},
			`"/srv/\xff/": group 7, want ftp`},
		{"spaces and colons as they are", ModeCheck, Finding{Path: "/srv/Meeting: notes.txt", Wrong: WrongOwner, Have: Attrs{UID: 0}, Want: Attrs{UID: 4242}},
			"/srv/Meeting: notes.txt: owner root, want alice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := NewReport(nil, tc.mode)
			r.lookup = testLookup
			if got := r.Line(tc.f); got != tc.want {
				t.Errorf("Line =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func testLookup(id int, group bool) string {
	switch {
	case id == 0:
		return "root"
	case group && id == 4243:
		return "ftp"
	case !group && id == 4242:
		return "alice"
	}
	return ""
}

// TestReportNamesCached: each ID is looked up once per report.
func TestReportNamesCached(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	r := NewReport(&b, ModeCheck)
	calls := 0
	r.lookup = func(id int, group bool) string { calls++; return testLookup(id, group) }
	f := Finding{Path: "/x", Wrong: WrongOwner | WrongGroup, Have: Attrs{UID: 4242, GID: 4242}, Want: Attrs{UID: 0, GID: 0}}
	for range 3 {
		r.Finding(f)
	}
	if calls != 4 {
		t.Errorf("%d lookups for 2 users and 2 groups", calls)
	}
	if want := strings.Repeat("/x: owner alice, want root; group 4242, want root\n", 3); b.String() != want {
		t.Errorf("printed\n%s\nwant\n%s", b.String(), want)
	}
}

// TestSummaryLists: long lists of trees and mounts are cut, with a count.
func TestSummaryLists(t *testing.T) {
	t.Parallel()
	res := Result{Mode: ModeFix, Duration: 2 * time.Second, Checked: 1234567, Deviations: 1, Fixed: 1, SkippedMounts: 12}
	for i := range 7 {
		res.Trees = append(res.Trees, fmt.Sprintf("/t%d", i))
	}
	for i := range maxMounts {
		res.Mounts = append(res.Mounts, fmt.Sprintf("/m%d", i))
	}
	var b bytes.Buffer
	r := NewReport(&b, ModeFix)
	r.Summary(res)
	for _, want := range []string{
		"perms fix: 1,234,567 entries checked in 2s\n",
		"  trees           /t0, /t1, /t2, /t3, /t4 (+2 more)\n",
		"  skipped mounts  12: /m0, /m1, /m2, /m3, /m4, /m5, /m6, /m7, /m8, /m9 (+2 more)\n",
		"  result          all fixed\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}

// TestReportWriteError: the first write error is kept.
func TestReportWriteError(t *testing.T) {
	t.Parallel()
	r := NewReport(failWriter{}, ModeCheck)
	r.Finding(Finding{Path: "/x", Err: errors.New("boom")})
	r.Summary(Result{})
	if !errors.Is(r.Err(), errWrite) {
		t.Errorf("Err() = %v", r.Err())
	}
}

var errWrite = errors.New("write failed")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestResultOK(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		r    Result
		want bool
	}{
		{Result{Mode: ModeCheck}, true},
		{Result{Mode: ModeCheck, Deviations: 1}, false},
		{Result{Mode: ModeCheck, Errors: 1}, false},
		{Result{Mode: ModeFix, Deviations: 3, Fixed: 3}, true},
		{Result{Mode: ModeFix, Deviations: 3, Fixed: 2, Errors: 1}, false},
		{Result{Mode: ModeDryRun, Deviations: 3}, true},
		{Result{Mode: ModeDryRun, Errors: 1}, false},
	} {
		if got := tc.r.OK(); got != tc.want {
			t.Errorf("%+v.OK() = %v", tc.r, got)
		}
	}
}

func TestPlural(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]string{0: "0 entries", 1: "1 entry", 1000: "1,000 entries"} {
		if got := plural(n, "entry"); got != want {
			t.Errorf("plural(%d) = %q", n, got)
		}
	}
	if got := plural(2, "error"); got != "2 errors" {
		t.Errorf("plural(2, error) = %q", got)
	}
}
