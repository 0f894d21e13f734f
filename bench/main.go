package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// errGoalMissed is returned (wrapped) by a target that ran to the end but
// missed at least one of its goals.
var errGoalMissed = errors.New("goal missed")

// target is one benchmark of the registry.
type target struct {
	name string
	help string
	run  func(ctx context.Context, e *env) error
}

// targets is the registry, in the order "all" runs them. Later issues add
// mirror, verify and perms here.
func targets() []target {
	return []target{
		{name: "ftp", help: "1 GiB up/down and 2000 × 4 KiB files with lftp, ftpgate vs vsftpd", run: runFTP},
		{name: "mirror", help: "mirror latency, first sync, no-change pass (+ RSS at 1M files with -large) vs mc/rclone", run: runMirror},
		{name: "verify", help: "ftpgate verify vs rclone check over 100,000 objects, by size and by checksum", run: runVerify},
		{name: "perms", help: "ftpgate perms fix vs find -exec chmod + chgrp -R and a tuned find, 100,000 files, 1 % wrong", run: runPerms},
	}
}

// options are the command-line flags shared by every target.
type options struct {
	rounds   int
	size     byteSize // the large file
	files    int      // number of small files
	fileSize byteSize // size of each small file
	only     string   // "", "ftpgate" or "vsftpd": run one side only
	dir      string   // parent of the scratch directory; "" = choose
	keep     bool     // keep the scratch directory
	large    bool     // mirror: also measure the daemon's RSS at 1M files (slow)
}

// env is what every target gets. It is not safe for concurrent use.
type env struct {
	opts     options
	repoRoot string // the ftpgate module root
	workDir  string // this run's scratch directory
	out      io.Writer
	log      *slog.Logger
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	opts := defaultOptions()
	fset := flag.NewFlagSet("bench", flag.ContinueOnError)
	fset.IntVar(&opts.rounds, "rounds", opts.rounds, "rounds per measurement; the median is reported")
	fset.Var(&opts.size, "size", "size of the large file (bytes or KiB/MiB/GiB)")
	fset.IntVar(&opts.files, "files", opts.files, "number of small files")
	fset.Var(&opts.fileSize, "file-size", "size of each small file")
	fset.StringVar(&opts.only, "only", "", `run one side only: "ftpgate" or "vsftpd" (no ratios)`)
	fset.StringVar(&opts.dir, "dir", "", "parent of the scratch directory (default: $TMPDIR when it is on the repository's disk and not tmpfs, else ./ftpgate-bench)")
	fset.BoolVar(&opts.keep, "keep", false, "keep the scratch directory and server logs")
	fset.BoolVar(&opts.large, "large", false, "mirror: also run (d), the daemon's RSS tracking 1,000,000 files (slow; the tree is kept with -keep)")
	fset.Usage = func() {
		w := fset.Output()
		fmt.Fprintf(w, "usage: go run ./bench [flags] TARGET...\n\ntargets:\n")
		for _, t := range targets() {
			fmt.Fprintf(w, "  %-6s %s\n", t.name, t.help)
		}
		fmt.Fprintf(w, "  %-6s every target above, in order\n\nflags:\n", "all")
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		return 2
	}
	selected, err := selectTargets(fset.Args())
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		fset.Usage()
		return 2
	}
	if err := opts.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := moduleRoot(ctx)
	if err != nil {
		log.Error("cannot find the ftpgate module", "err", err)
		return 2
	}
	base, err := scratchParent(opts.dir, root)
	if err != nil {
		log.Error("cannot choose a scratch directory", "err", err)
		return 2
	}
	work, err := os.MkdirTemp(base, "bench-")
	if err != nil {
		log.Error("cannot create the scratch directory", "err", err)
		return 2
	}
	// vsftpd's local user must be able to reach its home inside it.
	if err := os.Chmod(work, 0o755); err != nil {
		log.Error("cannot open up the scratch directory", "path", work, "err", err)
		return 2
	}
	if opts.keep {
		log.Info("keeping the scratch directory", "path", work)
	} else {
		defer func() {
			if err := os.RemoveAll(work); err != nil {
				log.Warn("cannot remove the scratch directory", "path", work, "err", err)
			}
		}()
	}

	e := &env{opts: opts, repoRoot: root, workDir: work, out: os.Stdout, log: log}
	code := 0
	for _, t := range selected {
		e.log = log.With("target", t.name)
		err := t.run(ctx, e)
		switch {
		case err == nil:
		case errors.Is(err, errGoalMissed):
			code = 1
		default:
			e.log.Error("benchmark failed", "err", err)
			return 2
		}
	}
	return code
}

// selectTargets maps the command-line names onto the registry.
func selectTargets(names []string) ([]target, error) {
	if len(names) == 0 {
		return nil, errors.New("no target given")
	}
	all := targets()
	var out []target
	for _, name := range names {
		if name == "all" {
			out = append(out, all...)
			continue
		}
		found := false
		for _, t := range all {
			if t.name == name {
				out = append(out, t)
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown target %q", name)
		}
	}
	return out, nil
}

// defaultOptions are the figures the issues' goals are stated for.
func defaultOptions() options {
	return options{rounds: 5, size: 1 << 30, files: 2000, fileSize: 4 << 10}
}

// nonDefault renders the workload flags that differ from the defaults, for
// the reproduce line of a report.
func (o options) nonDefault() string {
	d := defaultOptions()
	var f []string
	if o.rounds != d.rounds {
		f = append(f, "-rounds "+strconv.Itoa(o.rounds))
	}
	if o.size != d.size {
		f = append(f, "-size "+strings.ReplaceAll(o.size.String(), " ", ""))
	}
	if o.files != d.files {
		f = append(f, "-files "+strconv.Itoa(o.files))
	}
	if o.fileSize != d.fileSize {
		f = append(f, "-file-size "+strings.ReplaceAll(o.fileSize.String(), " ", ""))
	}
	if o.only != "" {
		f = append(f, "-only "+o.only)
	}
	return strings.Join(f, " ")
}

func (o options) validate() error {
	switch {
	case o.rounds < 1:
		return fmt.Errorf("-rounds %d: need at least 1", o.rounds)
	case o.size < 1:
		return fmt.Errorf("-size %d: need at least 1 byte", o.size)
	case o.files < 1:
		return fmt.Errorf("-files %d: need at least 1", o.files)
	case o.fileSize < 0:
		return fmt.Errorf("-file-size %d: negative", o.fileSize)
	case o.only != "" && o.only != serverFTPGate && o.only != serverVsftpd:
		return fmt.Errorf("-only %q: want %q or %q", o.only, serverFTPGate, serverVsftpd)
	}
	return nil
}

// moduleRoot is the directory of the go.mod of the module bench runs in.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: run from the ftpgate repository")
	}
	return filepath.Dir(gomod), nil
}

// scratchParent picks where the scratch directory goes. Both servers write
// there, so it must be the disk the product runs on, never tmpfs: page-cache
// throughput would say nothing about fsync.
func scratchParent(flagDir, repoRoot string) (string, error) {
	if flagDir != "" {
		return flagDir, nil
	}
	tmp := os.TempDir()
	if ok, err := sameDisk(tmp, repoRoot); err == nil && ok {
		return tmp, nil
	}
	dir := filepath.Join(repoRoot, "ftpgate-bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	return dir, nil
}
