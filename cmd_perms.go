package main

import (
	"errors"
	"fmt"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/spf13/cobra"

	"ftpgate/perms"
)

func newPermsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "perms check|fix [PATH...]",
		Short: "Check or fix owners, groups and modes of the [[perms]] policy trees",
		Long: `Compare the trees of the [[perms]] policies with their owner, group, file_mode
and dir_mode, and list (check) or change (fix) exactly the entries that differ.
With PATHs, only those trees (each under some policy) are walked. Symlinks are
never followed or changed, other filesystems never entered.

Exit codes: check 0 when every entry matches, 1 when some deviate or cannot be
read; fix 0 when everything was fixed, 1 when some entries could not be; 2 bad
usage (a PATH under no policy, no [[perms]] in the config), a bad config or a
run that could not complete.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErr(errors.New(`perms: say "check" or "fix"`))
			}
			return usageErr(fmt.Errorf("perms: unknown subcommand %q: want check or fix", args[0]))
		},
	}
	var dryRun bool
	fix := &cobra.Command{
		Use:   "fix [--dry-run] [PATH...]",
		Short: "Change what deviates from the policies and print each change; exit 0 when all is fixed",
		Long: `Change the owner, group and mode of every entry that deviates from its policy,
and print each change. Entries that are right are not touched (their ctime
stays). Each tree is fixed under the job lock shared with the mirror's full
pass and the pull: fix waits while one of them runs on an overlapping tree.
--dry-run prints what would change, changes nothing and takes no lock.
Exit 0 when everything was fixed, 1 when some entries could not be.`,
		RunE: func(cmd *cobra.Command, paths []string) error {
			mode := perms.ModeFix
			if dryRun {
				mode = perms.ModeDryRun
			}
			return runPerms(cmd, mode, paths)
		},
	}
	fix.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change, change nothing")
	cmd.AddCommand(&cobra.Command{
		Use:   "check [PATH...]",
		Short: "List each entry that deviates from its policy; exit 1 if any",
		Long: `List each entry that deviates from its [[perms]] policy: its path, what is
wrong and what it should be. Changes nothing. Exit 0 when every entry matches,
1 when some deviate or could not be read.`,
		RunE: func(cmd *cobra.Command, paths []string) error {
			return runPerms(cmd, perms.ModeCheck, paths)
		},
	}, fix)
	return cmd
}

// runPerms runs one check, fix or dry run and maps its result to the exit
// code.
func runPerms(cmd *cobra.Command, mode perms.Mode, paths []string) error {
	cfg, err := loadConfig(cmd, false)
	if err != nil {
		return err
	}
	if len(cfg.Perms) == 0 {
		return usageErr(fmt.Errorf("%s: no [[perms]] policy: nothing to %s", cfg.Path, mode))
	}
	log := newLogger(cmd.ErrOrStderr(), cfg.Log)
	// An operator asked for this run: walk with every CPU the process may
	// use (the daemon's after_mirror fix walks with one, gently).
	opts := perms.Options{Progress: cmd.ErrOrStderr(), Workers: runtime.GOMAXPROCS(0)}
	if mode == perms.ModeFix {
		// The job lock shared with the mirror's full pass and the pull.
		locks, err := newLocker(cfg, log)
		if err != nil {
			return usageErr(err)
		}
		opts.Lock = locks.Lock
	}
	n, err := perms.New(cfg.Perms, opts, log)
	if err != nil {
		return usageErr(err)
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	rep := perms.NewReport(cmd.OutOrStdout(), mode)
	var res perms.Result
	if mode == perms.ModeCheck {
		res, err = n.Check(ctx, paths, rep.Finding)
	} else {
		res, err = n.Fix(ctx, paths, mode == perms.ModeDryRun, rep.Finding)
	}
	if errors.Is(err, perms.ErrNoPolicy) || errors.Is(err, perms.ErrExcluded) {
		return usageErr(err) // nothing was walked
	}
	rep.Summary(res)
	switch {
	case err != nil:
		return usageErr(err)
	case rep.Err() != nil:
		return usageErr(fmt.Errorf("perms: write the report: %w", rep.Err()))
	case !res.OK() && mode == perms.ModeCheck:
		return &exitError{exitProblem, fmt.Errorf("perms check: %d deviations, %d errors", res.Deviations, res.Errors)}
	case !res.OK():
		return &exitError{exitProblem, fmt.Errorf("perms %s: %d entries could not be checked or fixed", mode, res.Errors)}
	}
	return nil
}
