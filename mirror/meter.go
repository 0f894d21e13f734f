package mirror

import (
	"io"
	"log/slog"
	"time"

	"ftpgate/meter"
)

// newMeter reports a pull or a verify as it goes (see package meter): a
// spinner with status's line on a terminal, else a log line msg with its
// pairs every 5 seconds. status is called from the meter's goroutine and
// must be safe for that.
func newMeter(w io.Writer, log *slog.Logger, msg string, every time.Duration, status func() (string, []any)) *meter.Meter {
	var n int64
	return meter.Start(w, log, msg, msg+": starting", every, func() meter.Status {
		line, args := status()
		n++ // the spinner turns once per report
		return meter.Status{Line: line, Count: n, Args: args}
	})
}
