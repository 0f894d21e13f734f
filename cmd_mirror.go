package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"ftpgate/conf"
	"ftpgate/job"
	"ftpgate/mirror"
)

// mirrorConfig loads the config of a mirror CLI job and checks it has
// mappings and that names are among them.
func mirrorConfig(cmd *cobra.Command, names []string) (*conf.Config, error) {
	cfg, err := loadConfig(cmd, false)
	if err != nil {
		return nil, err
	}
	if cfg.S3 == nil || len(cfg.Mirrors) == 0 {
		return nil, usageErr(errors.New("no mappings: the config has no [s3] section or no [[mirror]]"))
	}
	if err := knownMappings(cfg, names); err != nil {
		return nil, usageErr(err)
	}
	if err := os.MkdirAll(cfg.Storage.StateDir, 0o750); err != nil {
		return nil, usageErr(fmt.Errorf("create state_dir: %w", err))
	}
	return cfg, nil
}

// newLocker is the job lock of the CLI jobs, which logs while it waits.
func newLocker(cfg *conf.Config, log *slog.Logger) (*job.Locker, error) {
	if err := os.MkdirAll(cfg.Storage.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("create state_dir: %w", err)
	}
	locks, err := job.NewLocker(cfg.Storage.StateDir)
	if err != nil {
		return nil, err
	}
	locks.Waiting = func(tree, heldBy string) {
		log.Info("waiting for another job on the tree", "path", tree, "held_by", heldBy)
	}
	return locks, nil
}

func newPullCmd() *cobra.Command {
	var dryRun, restore bool
	cmd := &cobra.Command{
		Use:   "pull [MAPPING...]",
		Short: "One bucket-to-local pass of the named [[mirror]] mappings (all if none), then exit",
		Long: `Download the objects that have no local file and no record of a local
deletion in the journal. A pull never deletes and never overwrites a local
file: a key whose content differs on the two sides is a conflict, reported and
left alone. Downloads are checked against X-Amz-Meta-Sha256, fsynced, given the
group and mode of the policy ([[perms]] or [storage]) and the object's mtime,
renamed into place and recorded in the journal, so the mirror does not send
them back. Exit 0 when all went well, 1 on conflicts or failed downloads, 2
when it cannot run.

With --restore, for a local tree that was lost (a replaced disk), every
object without a local file is downloaded, whatever the journal recorded of
local files and deletions, and a root without its sentinel or on another
device is accepted; after a restore without failures the sentinel is made
again, and the mirror's next pass records the new device.

"ftpgate serve" pulls on each mapping's "pull" schedule and holds the journal:
stop it to pull by hand.`,
		RunE: func(cmd *cobra.Command, names []string) error {
			cfg, err := mirrorConfig(cmd, names)
			if err != nil {
				return err
			}
			log := newLogger(cmd.ErrOrStderr(), cfg.Log)
			j, err := mirror.OpenJournal(cfg.Storage.StateDir)
			if err != nil {
				return usageErr(err)
			}
			defer j.Close()
			store, err := mirror.NewS3Store(*cfg.S3)
			if err != nil {
				return usageErr(err)
			}
			locks, err := newLocker(cfg, log)
			if err != nil {
				return usageErr(err)
			}
			p, err := mirror.NewPuller(cfg, store, j, mirror.PullOptions{
				DryRun: dryRun, Progress: cmd.ErrOrStderr(), Lock: locks.Lock, Restore: restore,
			}, log)
			if err != nil {
				return usageErr(err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			rs, err := p.Run(ctx, names)
			fmt.Fprint(cmd.OutOrStdout(), mirror.PullReport(rs))
			if err != nil {
				return usageErr(err)
			}
			for _, r := range rs {
				if r.Err != nil {
					return usageErr(fmt.Errorf("pull %s: %w", r.Mapping, r.Err))
				}
			}
			for _, r := range rs {
				if !r.OK() {
					return &exitError{exitProblem, errors.New("the pull found problems (see the summary)")}
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be downloaded, change nothing")
	cmd.Flags().BoolVar(&restore, "restore", false, "restore a lost local tree: download every object without a local file, whatever the journal recorded")
	return cmd
}

func newVerifyCmd() *cobra.Command {
	var checksum, asJSON, all bool
	cmd := &cobra.Command{
		Use:   "verify [MAPPING...]",
		Short: "Compare the named [[mirror]] mappings (all if none) with their buckets",
		Long: `List each bucket in one stream, walk the local tree, and print one line per
differing key, as rclone check does:
  - KEY   missing in the bucket
  + KEY   missing locally
  * KEY   differs (size, or with --checksum the SHA-256)
  ! KEY   could not be compared (the error is in the JSON output and the log)
  = KEY   the same (only with --all)
KEY is the object key. The summary goes to stderr; with --json every line is a
JSON object on stdout, followed by one summary object per mapping.

--checksum compares the local SHA-256 with X-Amz-Meta-Sha256 (or the MD5 with
a single-part ETag for objects written by other tools). Local hashes are cached
in state_dir/hashes.db by inode, size, mtime and ctime: a second run reads only
files that changed. verify can run while "ftpgate serve" runs.

Exit 0 no drift, 1 drift, 2 error.`,
		RunE: func(cmd *cobra.Command, names []string) error {
			cfg, err := mirrorConfig(cmd, names)
			if err != nil {
				return err
			}
			log := newLogger(cmd.ErrOrStderr(), cfg.Log)
			store, err := mirror.NewS3Store(*cfg.S3)
			if err != nil {
				return usageErr(err)
			}
			opts := mirror.VerifyOptions{Checksum: checksum, All: all, Progress: cmd.ErrOrStderr()}
			if checksum {
				cache, err := mirror.OpenHashCache(cfg.Storage.StateDir)
				if err != nil {
					return usageErr(err)
				}
				defer cache.Close()
				opts.Cache = cache
			}
			// no journal: the daemon may hold it, and verify reads, never writes
			v, err := mirror.NewVerifier(cfg, store, nil, opts, log)
			if err != nil {
				return usageErr(err)
			}
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out)
			enc.SetEscapeHTML(false)
			emit := func(e mirror.VerifyEntry) {
				if asJSON {
					_ = enc.Encode(verifyLine{Type: "entry", VerifyEntry: e})
					return
				}
				fmt.Fprintf(out, "%s %s\n", mirror.Symbol(e.Status), e.Key)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			rs, err := v.Run(ctx, names, emit)
			if asJSON {
				for _, r := range rs {
					s := verifySummary{Type: "summary", VerifyResult: r, Drift: r.Drift()}
					if r.Err != nil {
						s.Error = r.Err.Error()
					}
					_ = enc.Encode(s)
				}
			} else {
				fmt.Fprint(cmd.ErrOrStderr(), mirror.VerifyReport(rs))
			}
			if err != nil {
				return usageErr(err)
			}
			drift := false
			for _, r := range rs {
				if r.Err != nil {
					return usageErr(fmt.Errorf("verify %s: %w", r.Mapping, r.Err))
				}
				if r.Errors > 0 {
					return usageErr(fmt.Errorf("verify %s: %d key(s) could not be compared", r.Mapping, r.Errors))
				}
				drift = drift || r.Drift()
			}
			if drift {
				return &exitError{exitProblem, errors.New("drift found")}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&checksum, "checksum", false, "compare SHA-256 checksums of same-size keys, not only sizes")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line, then a summary object per mapping")
	cmd.Flags().BoolVar(&all, "all", false, "also list the keys that are the same (=)")
	return cmd
}

// verifyLine is one key of `verify --json`.
type verifyLine struct {
	Type string `json:"type"` // "entry"
	mirror.VerifyEntry
}

// verifySummary is one mapping's summary object of `verify --json`.
type verifySummary struct {
	Type string `json:"type"` // "summary"
	mirror.VerifyResult
	Drift bool   `json:"drift"`
	Error string `json:"error,omitempty"`
}
