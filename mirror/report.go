package mirror

import (
	"fmt"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// PullReport is the one-screen summary of a pull's results.
func PullReport(rs []PullResult) string {
	var b strings.Builder
	what := "pull"
	if len(rs) > 0 && rs[0].DryRun {
		what = "pull dry run (nothing was changed; counts are what would be done)"
	}
	fmt.Fprintf(&b, "%s: %d mapping(s)\n", what, len(rs))
	problems := 0
	for _, r := range rs {
		status := "ok"
		if !r.OK() {
			status = "PROBLEM"
			problems++
		}
		fmt.Fprintf(&b, "  s3://%s/%s → %s (%s)  [%s]\n", r.Bucket, r.Prefix, r.Local, r.Mapping, status)
		fmt.Fprintf(&b, "    downloaded %d (%s), already present %d, deleted locally (not brought back) %d, conflicts %d, unsafe keys %d, failed %d; %d objects, %s\n",
			r.Downloaded, humanize.IBytes(uint64(max(r.Bytes, 0))), r.Present, r.DeletedLocally,
			r.Conflicts, r.Unsafe, r.Failed, r.Objects, r.Dur.Round(time.Millisecond))
		if r.TempsRemoved > 0 {
			fmt.Fprintf(&b, "    removed %d temporary file(s) of an interrupted pull\n", r.TempsRemoved)
		}
		for _, c := range r.ConflictKeys {
			fmt.Fprintf(&b, "    conflict: %s\n", c)
		}
		if r.Conflicts > len(r.ConflictKeys) {
			fmt.Fprintf(&b, "    … and %d more conflicts (see the log)\n", r.Conflicts-len(r.ConflictKeys))
		}
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "    failed: %s\n", f)
		}
		if r.Failed > len(r.Failures) {
			fmt.Fprintf(&b, "    … and %d more failures (see the log)\n", r.Failed-len(r.Failures))
		}
		if r.Err != nil {
			fmt.Fprintf(&b, "    error: %v\n", r.Err)
		}
	}
	if problems == 0 {
		b.WriteString("result: ok\n")
	} else {
		fmt.Fprintf(&b, "result: PROBLEM in %d mapping(s): local files were left alone; see above\n", problems)
	}
	return b.String()
}

// VerifyReport is the one-screen summary of a verify's results.
func VerifyReport(rs []VerifyResult) string {
	var b strings.Builder
	drift, errs := 0, 0
	for _, r := range rs {
		fmt.Fprintf(&b, "verify %s: %s ↔ s3://%s/%s\n", r.Mapping, r.Local, r.Bucket, r.Prefix)
		fmt.Fprintf(&b, "  %d keys: %d same, %d missing in the bucket (-), %d missing locally (+), %d differ (*), %d errors (!)\n",
			r.Keys, r.Same, r.MissingInBucket, r.MissingLocally, r.Differ, r.Errors)
		if r.Checksum {
			fmt.Fprintf(&b, "  checksums: %d compared, %d not available (multipart objects without X-Amz-Meta-Sha256); %d files read (%s)\n",
				r.Compared, r.Unchecked, r.FilesRead, humanize.IBytes(uint64(max(r.BytesRead, 0))))
		} else {
			b.WriteString("  compared by size (--checksum compares SHA-256)\n")
		}
		switch {
		case r.Err != nil:
			errs++
			fmt.Fprintf(&b, "  error: %v\n", r.Err)
		case r.Errors > 0:
			errs++
		}
		if r.Drift() {
			drift++
		}
		fmt.Fprintf(&b, "  %s\n", r.Dur.Round(time.Millisecond))
	}
	switch {
	case errs > 0:
		fmt.Fprintf(&b, "result: ERROR in %d mapping(s)\n", errs)
	case drift > 0:
		fmt.Fprintf(&b, "result: DRIFT in %d mapping(s)\n", drift)
	default:
		b.WriteString("result: no drift\n")
	}
	return b.String()
}
