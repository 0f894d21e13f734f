package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// byteSize is a flag value in bytes that also accepts KiB, MiB and GiB.
type byteSize int64

func (b *byteSize) String() string { return formatBytes(int64(*b)) }

func (b *byteSize) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

// byteUnit is a suffix of a size and what it multiplies by.
type byteUnit struct {
	suffix string
	mult   int64
}

// byteUnits lists the suffixes parseBytes accepts, longest match first; the
// first three are the ones formatBytes prints.
func byteUnits() []byteUnit {
	return []byteUnit{
		{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1},
	}
}

// parseBytes reads "4096", "4KiB", "64MiB", "1GiB" (and K/M/G as the same
// binary units).
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits() {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with KiB, MiB or GiB", s)
	}
	return n * mult, nil
}

// formatBytes prints n with the largest binary unit that divides it exactly,
// else with two decimals.
func formatBytes(n int64) string {
	for _, u := range byteUnits()[:3] {
		if n >= u.mult {
			if n%u.mult == 0 {
				return fmt.Sprintf("%d %s", n/u.mult, u.suffix)
			}
			return fmt.Sprintf("%.2f %s", float64(n)/float64(u.mult), u.suffix)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// median of xs; NaN-free input assumed; 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// mibPerSec is the throughput of n bytes in secs seconds.
func mibPerSec(n int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / (1 << 20) / secs
}

// formatSeries prints per-round values for the raw-data lines of a report.
func formatSeries(xs []float64, unit string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(parts, " ") + " " + unit
}

// reportTail prints what looked wrong during a run (findings) and, when
// some timed commands started on a busy machine, a warning that the
// figures are noisy; what names the timed things ("commands").
func reportTail(out io.Writer, findings []string, busy, timed int, what string) {
	if len(findings) > 0 {
		fmt.Fprintf(out, "\nfindings:\n")
		for _, f := range findings {
			fmt.Fprintf(out, "  - %s\n", f)
		}
	}
	if busy > 0 {
		fmt.Fprintf(out, "\nWARNING: %d of %d timed %s started while the CPUs were busy with something else;\nthe figures are noisy. Run again on a quiet machine.\n", busy, timed, what)
	}
}
