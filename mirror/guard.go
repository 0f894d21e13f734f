package mirror

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The deletion guards, as GuardError.Guard names them.
const (
	GuardRootMissing     = "root_missing"
	GuardRootNotDir      = "root_not_dir"
	GuardDeviceChanged   = "device_changed"
	GuardSentinelMissing = "sentinel_missing"
	GuardMaxDelete       = "max_delete"
	GuardMaxDeleteRatio  = "max_delete_ratio"
	GuardListingErrors   = "listing_errors"
)

// ratioFloor is the number of planned deletions up to which
// max_delete_ratio does not apply: deleting a few files from a small
// bucket is no mass deletion (max_delete still applies).
const ratioFloor = 10

// GuardError says that a deletion guard tripped: the pass deleted nothing.
// Values are immutable and safe to share.
type GuardError struct {
	Mapping string // the mapping's name
	Guard   string // one of the Guard* constants
	Msg     string // what was found and what the operator can do
}

// Error says which mapping and guard, and why.
func (e *GuardError) Error() string {
	return fmt.Sprintf("mirror %s: deletion guard %s: %s", e.Mapping, e.Guard, e.Msg)
}

// rootState is what a pass learned about its local root.
type rootState struct {
	dev          uint64
	recordedDev  uint64
	hasDev       bool // the journal recorded a device
	sentinel     bool // the sentinel file exists
	sentinelMade bool // the journal says the sentinel was created
	empty        bool // the journal has no records for the mapping
}

func (r rootState) devChanged() bool { return r.hasDev && r.dev != r.recordedDev }

// checkRoot stats the mapping's local root. A GuardError means the pass
// cannot run at all (root missing or not a directory).
func (m *Mirror) checkRoot(mp *mapping) (rootState, *GuardError, error) {
	return checkRoot(m.j, mp)
}

// checkRoot is Mirror.checkRoot on journal j, for the pull too.
func checkRoot(j *Journal, mp *mapping) (rootState, *GuardError, error) {
	var rs rootState
	fi, err := os.Stat(mp.root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return rs, &GuardError{mp.name, GuardRootMissing, fmt.Sprintf("local root %s does not exist (unmounted?); nothing is uploaded or deleted", mp.root)}, nil
	case err != nil:
		return rs, &GuardError{mp.name, GuardRootMissing, fmt.Sprintf("local root %s: %v", mp.root, err)}, nil
	case !fi.IsDir():
		return rs, &GuardError{mp.name, GuardRootNotDir, fmt.Sprintf("local root %s is not a directory", mp.root)}, nil
	}
	rs.dev = statOf(fi).dev
	_, err = os.Lstat(filepath.Join(mp.root, SentinelName))
	rs.sentinel = err == nil
	err = j.view(mp.name, func(t *mtx) error {
		rs.recordedDev, rs.hasDev = t.device()
		rs.sentinelMade = t.meta(metaSentinel) != nil
		rs.empty = t.empty()
		return nil
	})
	if err != nil {
		return rs, nil, fmt.Errorf("journal %s: %w", mp.name, err)
	}
	return rs, nil, nil
}

// rootGuard is the check before a single deletion outside a pass: the
// root must be the directory the journal knows, with its sentinel.
func (m *Mirror) rootGuard(mp *mapping) *GuardError {
	rs, g, err := m.checkRoot(mp)
	if g != nil {
		return g
	}
	if err != nil {
		return &GuardError{mp.name, GuardListingErrors, err.Error()}
	}
	if !rs.sentinel {
		return sentinelGuard(mp)
	}
	if rs.devChanged() {
		return deviceGuard(mp, rs)
	}
	return nil
}

func sentinelGuard(mp *mapping) *GuardError {
	return &GuardError{mp.name, GuardSentinelMissing, fmt.Sprintf(
		"%s has no %s: it may not be the tree that was mirrored (an empty mount point?); if it is, recreate the file (touch %s)",
		mp.root, SentinelName, filepath.Join(mp.root, SentinelName))}
}

func deviceGuard(mp *mapping, rs rootState) *GuardError {
	return &GuardError{mp.name, GuardDeviceChanged, fmt.Sprintf(
		"%s is on device %d, the journal recorded %d (another filesystem mounted, or none?); a pass that plans no deletion records the new device",
		mp.root, rs.dev, rs.recordedDev)}
}

// countGuard checks a plan of n object deletions against max_delete and
// max_delete_ratio × objects; allow is Options.AllowDeletes.
func countGuard(mp *mapping, n int, objects int64, allow int) *GuardError {
	if n == 0 || (allow >= 0 && n <= allow) {
		return nil
	}
	hint := fmt.Sprintf("if intended, run: ftpgate mirror --allow-deletes %d %s", n, mp.name)
	if n > mp.cfg.MaxDelete {
		return &GuardError{mp.name, GuardMaxDelete, fmt.Sprintf(
			"%d deletions planned, max_delete is %d; %s", n, mp.cfg.MaxDelete, hint)}
	}
	if n > ratioFloor && float64(n) > mp.cfg.MaxDeleteRatio*float64(objects) {
		return &GuardError{mp.name, GuardMaxDeleteRatio, fmt.Sprintf(
			"%d deletions planned of %d objects, max_delete_ratio is %g; %s", n, objects, mp.cfg.MaxDeleteRatio, hint)}
	}
	return nil
}

// logGuard reports a tripped guard: one ERROR line, and the mapping's
// status keeps it for the status page and alerts.
func (m *Mirror) logGuard(mp *mapping, g *GuardError) {
	mp.log.Error("deletion guard", "guard", g.Guard, "reason", g.Msg)
	mp.setGuard(g)
}
