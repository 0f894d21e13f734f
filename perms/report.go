package perms

import (
	"fmt"
	"io"
	"os/user"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dustin/go-humanize"
)

// Report prints a run for people: one line per Finding as it comes, then a
// summary. Owners and groups are shown by name when they have one. A
// Report belongs to one run; it is not safe for concurrent use (a run
// calls its report function from one goroutine).
//
// Lines, by mode (PATH ends in "/" for a directory, and is quoted when it
// holds control characters or invalid UTF-8):
//
//	check:     PATH: mode 0644, want 0664; owner 1001, want root; group staff, want ftp
//	fix:       PATH: fixed mode 0644 -> 0664; group staff -> ftp
//	dry run:   PATH: would fix mode 0644 -> 0664; group staff -> ftp
//	an error:  PATH: error: open: permission denied[; mode 0644, want 0664]
type Report struct {
	w      io.Writer
	mode   Mode
	users  map[int]string
	groups map[int]string
	// lookup names a uid (group false) or gid; "" when it has no name.
	lookup func(id int, group bool) string
	err    error
}

// NewReport prints the findings and summary of a run in mode to w.
func NewReport(w io.Writer, mode Mode) *Report {
	return &Report{w: w, mode: mode, users: map[int]string{}, groups: map[int]string{}, lookup: systemName}
}

// systemName looks an ID up in the user or group database.
func systemName(id int, group bool) string {
	if group {
		if g, err := user.LookupGroupId(strconv.Itoa(id)); err == nil {
			return g.Name
		}
		return ""
	}
	if u, err := user.LookupId(strconv.Itoa(id)); err == nil {
		return u.Username
	}
	return ""
}

// Err is the first error writing to the writer.
func (r *Report) Err() error { return r.err }

func (r *Report) printf(format string, args ...any) {
	if r.err == nil {
		_, r.err = fmt.Fprintf(r.w, format, args...)
	}
}

// Finding prints one finding.
func (r *Report) Finding(f Finding) {
	r.printf("%s\n", r.Line(f))
}

// Line is the text of one finding, without the newline.
func (r *Report) Line(f Finding) string {
	var b strings.Builder
	b.WriteString(displayPath(f.Path, f.Dir))
	b.WriteString(": ")
	switch {
	case f.Err != nil:
		b.WriteString("error: ")
		b.WriteString(f.Err.Error())
		if f.Wrong != 0 {
			b.WriteString("; ")
			r.wants(&b, f)
		}
	case r.mode == ModeFix && f.Fixed:
		b.WriteString("fixed ")
		r.changes(&b, f)
	case r.mode == ModeDryRun || r.mode == ModeFix:
		b.WriteString("would fix ")
		r.changes(&b, f)
	default:
		r.wants(&b, f)
	}
	return b.String()
}

// wants writes "mode 0644, want 0664; group staff, want ftp".
func (r *Report) wants(b *strings.Builder, f Finding) {
	r.attrs(b, f, ", want ")
}

// changes writes "mode 0644 -> 0664; group staff -> ftp".
func (r *Report) changes(b *strings.Builder, f Finding) {
	r.attrs(b, f, " -> ")
}

func (r *Report) attrs(b *strings.Builder, f Finding, sep string) {
	first := true
	item := func(name, have, want string) {
		if !first {
			b.WriteString("; ")
		}
		first = false
		b.WriteString(name)
		b.WriteByte(' ')
		b.WriteString(have)
		b.WriteString(sep)
		b.WriteString(want)
	}
	if f.Wrong&WrongMode != 0 {
		item("mode", fmt.Sprintf("%04o", f.Have.Mode), fmt.Sprintf("%04o", f.Want.Mode))
	}
	if f.Wrong&WrongOwner != 0 {
		item("owner", r.name(f.Have.UID, false), r.name(f.Want.UID, false))
	}
	if f.Wrong&WrongGroup != 0 {
		item("group", r.name(f.Have.GID, true), r.name(f.Want.GID, true))
	}
}

// name is the user or group name of id, or the number when it has none.
func (r *Report) name(id int, group bool) string {
	cache := r.users
	if group {
		cache = r.groups
	}
	n, ok := cache[id]
	if !ok {
		if n = r.lookup(id, group); n == "" {
			n = strconv.Itoa(id)
		}
		cache[id] = n
	}
	return n
}

// displayPath is p as a line shows it.
func displayPath(p string, dir bool) string {
	if dir && !strings.HasSuffix(p, "/") {
		p += "/"
	}
	if !utf8.ValidString(p) || strings.ContainsFunc(p, unicode.IsControl) {
		return strconv.Quote(p)
	}
	return p
}

// maxTrees is how many trees the summary names.
const maxTrees = 5

// Summary prints the one-screen summary of res.
func (r *Report) Summary(res Result) {
	dur := res.Duration.Round(time.Millisecond)
	if res.Duration < time.Millisecond {
		dur = res.Duration.Round(time.Microsecond)
	}
	r.printf("\nperms %s: %s entries checked in %s\n", res.Mode, humanize.Comma(int64(res.Checked)), dur)
	r.printf("  %-15s %s\n", "trees", list(res.Trees, len(res.Trees), maxTrees))
	dev := humanize.Comma(int64(res.Deviations))
	if res.Mode == ModeDryRun {
		dev += " (dry run: nothing changed)"
	}
	r.printf("  %-15s %s\n", "deviations", dev)
	if res.Mode == ModeFix {
		r.printf("  %-15s %s\n", "fixed", humanize.Comma(int64(res.Fixed)))
	}
	r.printf("  %-15s %s\n", "errors", humanize.Comma(int64(res.Errors)))
	r.printf("  %-15s %s\n", "excluded", humanize.Comma(int64(res.Excluded)))
	r.printf("  %-15s %s (symlinks, fifos, sockets, devices: never changed)\n", "left alone", humanize.Comma(int64(res.LeftAlone)))
	mounts := humanize.Comma(int64(res.SkippedMounts))
	if res.SkippedMounts > 0 {
		mounts += ": " + list(res.Mounts, res.SkippedMounts, maxMounts)
	}
	r.printf("  %-15s %s\n", "skipped mounts", mounts)
	r.printf("  %-15s %s (removed or replaced during the walk)\n", "vanished", humanize.Comma(int64(res.Vanished)))
	r.printf("  %-15s %s\n", "result", verdict(res))
}

// verdict is the summary's last line.
func verdict(res Result) string {
	switch {
	case res.Mode == ModeCheck && res.OK():
		return "every entry matches its policy"
	case res.Mode == ModeCheck:
		return plural(res.Deviations, "deviation") + ", " + plural(res.Errors, "error")
	case res.Mode == ModeDryRun && res.OK():
		return "fix would change " + plural(res.Deviations, "entry")
	case res.Mode == ModeDryRun:
		return "fix would change " + plural(res.Deviations, "entry") + "; " + plural(res.Errors, "error")
	case res.OK() && res.Fixed == 0:
		return "nothing to fix"
	case res.OK():
		return "all fixed"
	}
	return plural(res.Errors, "error") + ": some entries could not be checked or fixed"
}

// plural is "1 error", "2 errors", "1 entry", "1,000 entries".
func plural(n int, word string) string {
	s := humanize.Comma(int64(n)) + " " + word
	switch {
	case n == 1:
		return s
	case strings.HasSuffix(word, "y"):
		return s[:len(s)-1] + "ies"
	}
	return s + "s"
}

// list joins the first max of items, noting how many of total are left out.
func list(items []string, total, max int) string {
	if len(items) > max {
		items = items[:max]
	}
	s := strings.Join(items, ", ")
	if total > len(items) {
		s += fmt.Sprintf(" (+%d more)", total-len(items))
	}
	return s
}
