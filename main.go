// Command ftpgate is an FTP/FTPS server on local storage with an
// event-driven mirror to S3-compatible buckets. See README.md.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/errgroup"
	"golang.org/x/term"

	"ftpgate/conf"
	"ftpgate/mirror"
	"ftpgate/server"
	"ftpgate/storage"
)

// version is ftpgate's release; builds from a checkout say so.
const version = "0.1.0"

// Exit codes, as documented in README.md.
const (
	exitOK      = 0
	exitProblem = 1 // the job ran and found a problem
	exitUsage   = 2 // bad usage, bad config, cannot run
)

// exitError carries an exit code to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(err error) error { return &exitError{exitUsage, err} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "ftpgate: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	// cobra's own errors: unknown command or flag
	return exitUsage
}

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "ftpgate",
		Short: "FTP/FTPS server on local storage, mirrored to S3/MinIO",
		Long: `ftpgate runs an FTP/FTPS server that writes uploads atomically into a local
tree with the configured Unix group and modes.

Start with "ftpgate serve": without a config file it runs the embedded default
(data in ./ftpgate-data, FTP on 127.0.0.1:2121, user "admin").
Write a config (see dist/ftpgate.toml), check it with "ftpgate config check",
and make password hashes with "ftpgate passwd".

Exit codes: 0 success, 1 the job ran and found a problem, 2 bad usage,
bad config or cannot run.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().String("config", "",
		"config file (default $FTPGATE_CONFIG, then /etc/ftpgate/ftpgate.toml)")
	root.AddCommand(
		newServeCmd(),
		newMirrorCmd(),
		newPullCmd(),
		newVerifyCmd(),
		newConfigCmd(),
		newPermsCmd(),
		newPasswdCmd(),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			Run: func(cmd *cobra.Command, _ []string) {
				fmt.Fprintf(cmd.OutOrStdout(), "ftpgate %s %s %s/%s\n", version, buildRev(), runtime.GOOS, runtime.GOARCH)
			},
		},
	)
	return root
}

func buildRev() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	return bi.GoVersion
}

// loadConfig reads the config named by --config, $FTPGATE_CONFIG or the
// default path. allowDefault lets serve fall back to the embedded default
// when no file was named and the default path does not exist.
func loadConfig(cmd *cobra.Command, allowDefault bool) (*conf.Config, error) {
	flag, _ := cmd.Flags().GetString("config")
	path, explicit := conf.Resolve(flag)
	cfg, err := conf.Load(path)
	if err == nil {
		return cfg, nil
	}
	if !explicit && allowDefault && errors.Is(err, fs.ErrNotExist) {
		return embeddedDefault(cmd.ErrOrStderr())
	}
	return nil, usageErr(err)
}

// defaultBucket is where the embedded default mirrors when
// $FTPGATE_S3_ENDPOINT names a store.
const defaultBucket = "ftpgate"

// embeddedDefault is the config of "ftpgate serve" with no file anywhere.
func embeddedDefault(stderr io.Writer) (*conf.Config, error) {
	pass := os.Getenv("FTPGATE_ADMIN_PASSWORD")
	if pass == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		pass = base64.RawURLEncoding.EncodeToString(b)
		fmt.Fprintf(stderr, "ftpgate: no config file; embedded default with user admin, password %s\n", pass)
		fmt.Fprintf(stderr, "ftpgate: (set FTPGATE_ADMIN_PASSWORD to choose it)\n")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.DefaultCost)
	if err != nil {
		return nil, fmt.Errorf("hash admin password: %w", err)
	}
	cfg := conf.Default(string(hash))
	if ep := os.Getenv("FTPGATE_S3_ENDPOINT"); ep != "" {
		// make run: mirror the whole data root to a local MinIO
		cfg.S3 = &conf.S3{
			Endpoint:  ep,
			AccessKey: os.Getenv("FTPGATE_S3_ACCESS_KEY"),
			SecretKey: os.Getenv(conf.EnvS3SecretKey),
		}
		cfg.Mirrors = []conf.Mirror{{
			Name: "data", Local: cfg.Storage.Root, Bucket: defaultBucket, Remove: true,
			Reconcile: time.Hour, MaxDelete: 1000, MaxDeleteRatio: 0.2,
		}}
	}
	for _, dir := range []string{cfg.Storage.Root, cfg.Storage.StateDir} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, usageErr(fmt.Errorf("create %s: %w", dir, err))
		}
	}
	return cfg, nil
}

func newLogger(w io.Writer, c conf.Log) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	if c.Format == conf.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func newServeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon: FTP server, mirror, schedules",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, true)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), cfg, newLogger(cmd.ErrOrStderr(), cfg.Log))
		},
	}
}

func storagePolicy(cfg *conf.Config) storage.Policy {
	return storage.Policy{
		GID:       cfg.Storage.GID,
		FileMode:  cfg.Storage.FileMode,
		DirMode:   cfg.Storage.DirMode,
		Fsync:     cfg.Storage.Fsync,
		ResumeTTL: cfg.Storage.ResumeTTL,
		StateDir:  cfg.Storage.StateDir,
		CommitLog: cfg.Storage.CommitLog,
	}
}

// logRecovery reports how uploads are made durable and what the commit
// log's recovery did.
func logRecovery(log *slog.Logger, rec storage.LogRecovery) {
	if !rec.Enabled {
		log.Info("commit log off: every upload is fsynced in place", "reason", rec.Reason)
		return
	}
	for _, p := range rec.Restored {
		log.Warn("commit log: restored an upload that the crash lost", "path", p)
	}
	for _, p := range rec.Kept {
		log.Info("commit log: kept a file changed after its upload", "path", p)
	}
	log.Info("commit log on", "records", rec.Records, "checked", rec.Checked, "restored", len(rec.Restored))
}

func serve(parent context.Context, cfg *conf.Config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.Storage.StateDir, 0o750); err != nil {
		return usageErr(fmt.Errorf("create state_dir: %w", err))
	}
	pol := storagePolicy(cfg)
	pol.Log = log.With("component", "storage")
	root, err := storage.Open(cfg.Storage.Root, pol)
	if err != nil {
		return usageErr(err)
	}
	defer func() {
		if commits, flushes := root.CommitLogStats(); commits > 0 {
			log.Info("commit log", "uploads", commits, "flushes", flushes)
		}
		if err := root.Close(); err != nil {
			log.Error("closing the storage root", "err", err)
		}
	}()
	logRecovery(log, root.Recovery())

	jobs, err := newDaemonJobs(cfg, log)
	if err != nil {
		return usageErr(err)
	}
	var notify server.Notifier = server.NopNotifier{}
	var mir *mirror.Mirror
	if cfg.S3 == nil || len(cfg.Mirrors) == 0 {
		log.Info("mirroring is off: the config has no [s3] section or no [[mirror]]")
	} else {
		// FTPGATE_TEST_OVERFLOW_AFTER is the integration tests' way to force
		// an inotify overflow; unset in production.
		overflow, _ := strconv.Atoi(os.Getenv("FTPGATE_TEST_OVERFLOW_AFTER"))
		j, store, m, err := openMirror(cfg, mirror.Options{
			AllowDeletes: -1, OverflowAfter: overflow, Lock: jobs.locks.Lock, PassDone: jobs.mirrorPassDone,
		}, log)
		if err != nil {
			return err
		}
		defer j.Close()
		mir = m
		notify = uploadNotifier{mir, cfg.Storage.Root}
		jobs.store, jobs.journal = store, j
		if err := jobs.schedulePulls(); err != nil {
			return usageErr(err)
		}
	}
	srv, err := server.New(cfg, root, notify, log)
	if err != nil {
		return usageErr(err)
	}
	if err := srv.Listen(); err != nil {
		return usageErr(err)
	}

	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx) })
	if mir != nil {
		g.Go(func() error { return mir.Run(ctx) })
	}
	if jobs.sched.Len() > 0 {
		g.Go(func() error { return jobs.sched.Run(ctx) })
	}
	if mir != nil && jobs.wantsFixes() {
		g.Go(func() error { return jobs.runFixes(ctx) })
	}
	g.Go(func() error {
		reloads(ctx, cfg.Path, srv, log)
		return nil
	})
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	err = g.Wait()
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	if err != nil {
		return &exitError{exitProblem, err}
	}
	log.Info("stopped")
	return nil
}

// uploadNotifier hands the FTP server's completed uploads to the mirror.
type uploadNotifier struct {
	m    *mirror.Mirror
	root string // storage.root: server.Upload paths are relative to it
}

func (n uploadNotifier) UploadCompleted(_ context.Context, u server.Upload) {
	n.m.Notify(filepath.Join(n.root, filepath.FromSlash(u.Path)), u.Size, u.SHA256, u.ModTime)
}

// openMirror opens the journal and the store and builds the mirror. The
// caller closes the journal.
func openMirror(cfg *conf.Config, opts mirror.Options, log *slog.Logger) (*mirror.Journal, *mirror.S3Store, *mirror.Mirror, error) {
	if err := os.MkdirAll(cfg.Storage.StateDir, 0o750); err != nil {
		return nil, nil, nil, usageErr(fmt.Errorf("create state_dir: %w", err))
	}
	j, err := mirror.OpenJournal(cfg.Storage.StateDir)
	if err != nil {
		return nil, nil, nil, usageErr(err)
	}
	store, err := mirror.NewS3Store(*cfg.S3)
	if err != nil {
		j.Close()
		return nil, nil, nil, usageErr(err)
	}
	if cfg.Path == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := store.EnsureBucket(ctx, defaultBucket)
		cancel()
		if err != nil {
			j.Close()
			return nil, nil, nil, usageErr(err)
		}
	}
	m, err := mirror.New(cfg, store, j, opts, log)
	if err != nil {
		j.Close()
		return nil, nil, nil, usageErr(err)
	}
	return j, store, m, nil
}

func newMirrorCmd() *cobra.Command {
	var (
		dryRun       bool
		allowDeletes int
	)
	cmd := &cobra.Command{
		Use:   "mirror [MAPPING...]",
		Short: "One full local-to-bucket pass of the named [[mirror]] mappings (all if none), then exit",
		Long: `One full pass: walk each mapping's local tree, compare it with the journal and
the bucket, upload what is new or changed, copy renamed files server-side, and
delete objects whose local file is gone (remove = true), unless a deletion guard
trips. Prints a summary. Exit 0 when everything was mirrored, 1 when an
operation failed or a guard stopped deletions, 2 when it cannot run.

A running "ftpgate serve" holds the journal: stop it first.`,
		RunE: func(cmd *cobra.Command, names []string) error {
			cfg, err := loadConfig(cmd, false)
			if err != nil {
				return err
			}
			if cfg.S3 == nil || len(cfg.Mirrors) == 0 {
				return usageErr(errors.New("nothing to mirror: the config has no [s3] section or no [[mirror]]"))
			}
			if err := knownMappings(cfg, names); err != nil {
				return usageErr(err)
			}
			if !cmd.Flags().Changed("allow-deletes") {
				allowDeletes = -1
			}
			log := newLogger(cmd.ErrOrStderr(), cfg.Log)
			locks, err := newLocker(cfg, log)
			if err != nil {
				return usageErr(err)
			}
			j, _, m, err := openMirror(cfg, mirror.Options{
				DryRun: dryRun, AllowDeletes: allowDeletes, Progress: cmd.ErrOrStderr(), Lock: locks.Lock,
			}, log)
			if err != nil {
				return err
			}
			defer j.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			sum, err := m.Pass(ctx, names)
			fmt.Fprint(cmd.OutOrStdout(), sum.String())
			if err != nil {
				return usageErr(err)
			}
			if !sum.OK() {
				return &exitError{exitProblem, errors.New("the pass found problems (see the summary)")}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "plan and report, change nothing")
	cmd.Flags().IntVar(&allowDeletes, "allow-deletes", 0,
		"let the max_delete/max_delete_ratio guards pass for a plan of at most N deletions")
	return cmd
}

func knownMappings(cfg *conf.Config, names []string) error {
	for _, n := range names {
		found := false
		for _, m := range cfg.Mirrors {
			found = found || m.Name == n
		}
		if !found {
			return fmt.Errorf("no [[mirror]] named %q", n)
		}
	}
	return nil
}

// reloads re-reads the config file on SIGHUP until ctx ends. A bad file is
// logged and the running config kept.
func reloads(ctx context.Context, path string, srv *server.Server, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if path == "" {
			log.Warn("reload: running the embedded default, no file to re-read")
			continue
		}
		_, _ = daemon.SdNotify(false, daemon.SdNotifyReloading)
		cfg, err := conf.Load(path)
		if err == nil {
			err = srv.Reload(cfg)
		}
		if err != nil {
			log.Error("reload failed, keeping the running config", "err", err)
		} else {
			log.Info("config reloaded", "path", path)
		}
		_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	}
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with the config file"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "Validate the config file: exit 0 if valid, 2 with the errors if not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, false)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", cfg.Path)
			return nil
		},
	})
	return cmd
}

func newPasswdCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "passwd",
		Short: "Read a password (terminal, no echo, or stdin) and print its bcrypt hash for password_hash",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pass, err := readPassword(cmd.InOrStdin(), cmd.ErrOrStderr())
			if err != nil {
				return usageErr(err)
			}
			hash, err := bcrypt.GenerateFromPassword(pass, bcrypt.DefaultCost)
			if err != nil {
				return usageErr(fmt.Errorf("hash password: %w", err))
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(hash))
			return nil
		},
	}
}

// readPassword asks twice on a terminal; from a pipe it takes the first line.
func readPassword(in io.Reader, prompt io.Writer) ([]byte, error) {
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(prompt, "Password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(prompt, "Again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		if string(p1) != string(p2) {
			return nil, errors.New("the passwords differ")
		}
		return checkPassword(p1)
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read password: %w", err)
	}
	return checkPassword([]byte(strings.TrimRight(line, "\r\n")))
}

func checkPassword(p []byte) ([]byte, error) {
	switch {
	case len(p) == 0:
		return nil, errors.New("empty password")
	case len(p) > 72:
		return nil, errors.New("password longer than 72 bytes (bcrypt's limit)")
	}
	return p, nil
}
