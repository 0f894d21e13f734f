package mirror

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestSummaryGolden(t *testing.T) {
	s := Summary{
		Duration: 3*time.Second + 250*time.Millisecond,
		Mappings: []MappingSummary{
			{
				Name: "genesisassets", Bucket: "genesisassets", Trigger: triggerOneShot,
				Uploaded: 120, UploadedBytes: 4 << 20, Copied: 2, Unchanged: 10000, Adopted: 3,
				Scanned: 10122, Duration: 3 * time.Second,
			},
			{
				Name: "archive", Bucket: "backup", Prefix: "archive/", Trigger: triggerOneShot,
				Uploaded: 1, UploadedBytes: 10, Failed: 2, Planned: 1500, Scanned: 2000,
				Guard: &GuardError{Mapping: "archive", Guard: GuardMaxDelete,
					Msg: "1500 deletions planned, max_delete is 1000; if intended, run: ftpgate mirror --allow-deletes 1500 archive"},
				Failures: []string{"archive/a.bin: put s3://backup/archive/a.bin: Access Denied."},
				Duration: 200 * time.Millisecond,
			},
			{
				Name: "gone", Bucket: "b3", Trigger: triggerOneShot,
				Err: errors.New("read journal of gone: journal entry corrupt"),
			},
		},
	}
	if s.OK() {
		t.Fatal("OK with failures")
	}
	compareGolden(t, "summary.golden", s.String())
	ok := Summary{DryRun: true, Mappings: []MappingSummary{{Name: "m", Bucket: "b", Uploaded: 1, UploadedBytes: 1}}}
	if !ok.OK() {
		t.Fatal("not OK without failures")
	}
	compareGolden(t, "summary_dryrun.golden", ok.String())
}

func compareGolden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("%s differs (go test -update rewrites it):\n--- got\n%s--- want\n%s", p, got, want)
	}
}

// Without a terminal, progress is a log line at intervals.
func TestProgressLogLines(t *testing.T) {
	var out bytes.Buffer // not a terminal
	h := newHarness(t, Options{Progress: &out}, nil)
	h.m.testProgressEvery = 5 * time.Millisecond
	for i := range 20 {
		h.write(fmt.Sprintf("f%d", i), "x", t0)
	}
	h.fake.putErr = func(string, int) error {
		time.Sleep(time.Millisecond) // a slow store, so that the pass outlasts a few intervals
		return nil
	}
	h.pass()
	if !h.logs.contains(`msg="mirror progress" component=mirror mapping=m files=`) {
		t.Fatalf("no progress line:\n%s", h.logs)
	}
	if out.Len() != 0 {
		t.Fatalf("progress bar drawn on a non-terminal: %q", out.String())
	}
}
