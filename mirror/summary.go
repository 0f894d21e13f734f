package mirror

import (
	"fmt"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// Summary is the result of Pass: one entry per mapping, in the order
// passed. A value owned by the caller.
type Summary struct {
	DryRun   bool
	Duration time.Duration
	Mappings []MappingSummary
}

// MappingSummary is one mapping's pass. In a dry run the counts are what
// the pass would have done.
type MappingSummary struct {
	Name    string
	Bucket  string
	Prefix  string
	Trigger string // "start-up", "reconcile", "rescan", "one-shot"

	Uploaded      int   // objects written (PUT or batch)
	UploadedBytes int64 // their bytes
	Copied        int   // renames done as server-side copies
	Deleted       int   // objects deleted
	Unchanged     int   // files already mirrored (including adopted objects)
	Adopted       int   // of Unchanged: objects recorded without upload
	Failed        int   // operations that failed; they stay pending
	Planned       int   // object deletions planned (before the guards)
	Scanned       int   // local files seen

	// Guard is the deletion guard that tripped, nil when none: then the
	// pass deleted nothing.
	Guard *GuardError
	// Err is why the pass could not complete, nil when it did.
	Err error
	// Failures are the first few failed operations, "key: error".
	Failures []string

	Duration time.Duration
}

// maxFailures is how many failures a summary keeps.
const maxFailures = 10

// OK reports whether every pass completed with no failed operation and no
// tripped guard: the one-shot command's exit 0.
func (s Summary) OK() bool {
	for _, m := range s.Mappings {
		if !m.OK() {
			return false
		}
	}
	return true
}

// OK reports whether the pass completed with no failure and no guard.
func (m MappingSummary) OK() bool { return m.Failed == 0 && m.Guard == nil && m.Err == nil }

// result is the one-word result for Status.
func (m MappingSummary) result() string {
	switch {
	case m.Err != nil:
		return "error"
	case m.Guard != nil:
		return "guard"
	case m.Failed > 0:
		return "failed"
	}
	return "ok"
}

// String is a one-screen summary for people.
func (s Summary) String() string {
	var b strings.Builder
	what := "mirror pass"
	if s.DryRun {
		what = "mirror dry run (nothing was changed; counts are what would be done)"
	}
	fmt.Fprintf(&b, "%s: %d mapping(s) in %s\n", what, len(s.Mappings), s.Duration.Round(time.Millisecond))
	for _, m := range s.Mappings {
		status := "ok"
		if !m.OK() {
			status = "PROBLEM"
		}
		fmt.Fprintf(&b, "  %s → s3://%s/%s  [%s]\n", m.Name, m.Bucket, m.Prefix, status)
		fmt.Fprintf(&b, "    uploaded %d (%s), copied %d, deleted %d, unchanged %d", m.Uploaded,
			humanize.IBytes(uint64(max(m.UploadedBytes, 0))), m.Copied, m.Deleted, m.Unchanged)
		if m.Adopted > 0 {
			fmt.Fprintf(&b, " (%d adopted)", m.Adopted)
		}
		fmt.Fprintf(&b, ", failed %d; %d local files, %s\n", m.Failed, m.Scanned, m.Duration.Round(time.Millisecond))
		if m.Guard != nil {
			fmt.Fprintf(&b, "    deletion guard %s: %s\n", m.Guard.Guard, m.Guard.Msg)
			if m.Planned > 0 {
				fmt.Fprintf(&b, "    %d deletion(s) planned, none done\n", m.Planned)
			}
		}
		if m.Err != nil {
			fmt.Fprintf(&b, "    error: %v\n", m.Err)
		}
		for _, f := range m.Failures {
			fmt.Fprintf(&b, "    failed: %s\n", f)
		}
		if m.Failed > len(m.Failures) {
			fmt.Fprintf(&b, "    … and %d more failures (see the log)\n", m.Failed-len(m.Failures))
		}
	}
	var failed, guards, errs int
	for _, m := range s.Mappings {
		failed += m.Failed
		if m.Guard != nil {
			guards++
		}
		if m.Err != nil {
			errs++
		}
	}
	var why []string
	if errs > 0 {
		why = append(why, fmt.Sprintf("%d pass(es) could not complete", errs))
	}
	if guards > 0 {
		why = append(why, fmt.Sprintf("%d deletion guard(s) tripped, nothing deleted there", guards))
	}
	if failed > 0 {
		why = append(why, fmt.Sprintf("%d operation(s) failed and stay pending for the next pass", failed))
	}
	if len(why) == 0 {
		b.WriteString("result: ok\n")
	} else {
		fmt.Fprintf(&b, "result: PROBLEM: %s\n", strings.Join(why, "; "))
	}
	return b.String()
}
