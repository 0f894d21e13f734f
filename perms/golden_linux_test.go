package perms

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ftpgate/conf"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// goldenRoot stands for the test's temporary tree in the golden files.
const goldenRoot = "/srv/ftp"

// testNames are the user and group names of the golden files, so that they
// do not depend on the machine's /etc/passwd.
func testNames(id int, group bool) string {
	users := map[int]string{0: "root", uidAlice: "alice"}
	groups := map[int]string{0: "root", gidFTP: "ftp", gidStaff: "staff"}
	if group {
		return groups[id]
	}
	return users[id]
}

// goldenTree builds the tree of the golden files: every kind of line the
// report prints. It returns the tree and its policies.
func goldenTree(t *testing.T) (string, []conf.Perms) {
	t.Helper()
	root := newTree(t,
		file("a.txt", 0o644, 0, gidFTP),             // mode
		file("b.txt", 0o664, 0, gidStaff),           // group
		file("c.txt", 0o600, uidBob, gidStaff),      // mode and group; owner not in the policy
		file("right.txt", 0o664, uidBob, gidFTP),    // right
		dir("upload", 0o775, 0, gidFTP),             // setgid missing
		file("upload/part.tmp", 0o600, 0, 0),        // excluded
		file("new\nline.txt", 0o644, 0, gidFTP),     // quoted
		symlink("passwd", "/etc/passwd"),            // left alone
		file("frozen.txt", 0o600, 0, gidFTP),        // cannot be fixed
		dir("minio", 0o750, uidAlice, gidFTP),       // nested policy: group
		file("minio/obj", 0o644, 0, 0),              // mode, owner, group
		file("minio/ok", 0o640, uidAlice, gidStaff), // right
		dir("mnt", 0o755, 0, gidFTP),                // a mount point
	)
	setAttrs(t, root, 0o2775, 0, gidFTP)
	frozen := filepath.Join(root, "frozen.txt")
	freeze(t, frozen)
	mnt := filepath.Join(root, "mnt")
	mountTmpfs(t, mnt)
	return root, []conf.Perms{
		pol(root, group(gidFTP), fileMode(0o664), dirMode(fs.ModeSetgid|0o775), exclude("*.tmp")),
		pol(filepath.Join(root, "minio"), owner(uidAlice), group(gidStaff), fileMode(0o640), dirMode(0o750)),
		pol(filepath.Join(root, "missing"), dirMode(0o755)), // a disk that did not mount
	}
}

// TestGolden runs check, a dry run and fix on the same kind of tree, with
// one worker and with four, and compares what a person reads with
// testdata/*.golden. Findings come in the filesystem's directory order,
// and with several workers interleaved; the comparison sorts them. The
// report function appends without a lock: the walk calls it one call at
// a time, whatever the workers.
func TestGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mode    Mode
		workers int
	}{
		{"check", ModeCheck, 1}, {"dry_run", ModeDryRun, 1}, {"fix", ModeFix, 1},
		{"check", ModeCheck, 4}, {"dry_run", ModeDryRun, 4}, {"fix", ModeFix, 4},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/workers=%d", tc.name, tc.workers), func(t *testing.T) {
			t.Parallel()
			root, policies := goldenTree(t)
			n := newNormaliser(t, Options{Workers: tc.workers}, policies...)
			var out bytes.Buffer
			rep := NewReport(&out, tc.mode)
			rep.lookup = testNames
			var lines []string
			report := func(f Finding) { lines = append(lines, rep.Line(f)) }
			var res Result
			var err error
			if tc.mode == ModeCheck {
				res, err = n.Check(testContext(t), nil, report)
			} else {
				res, err = n.Fix(testContext(t), nil, tc.mode == ModeDryRun, report)
			}
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(lines)
			for _, l := range lines {
				out.WriteString(l + "\n")
			}
			res.Duration = 1234 * time.Millisecond
			rep.Summary(res)
			if rep.Err() != nil {
				t.Fatal(rep.Err())
			}
			got := strings.ReplaceAll(out.String(), root, goldenRoot)
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./perms -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("output differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}
