//go:build !linux

package mirror

import (
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

func createAt(d *os.File, name string) (*os.File, error) {
	return os.OpenFile(filepath.Join(d.Name(), name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

func removeAt(d *os.File, name string) error { return os.Remove(filepath.Join(d.Name(), name)) }

// renameNoReplace links then unlinks: link fails when to exists.
func renameNoReplace(d *os.File, from, to string) error {
	if err := os.Link(filepath.Join(d.Name(), from), filepath.Join(d.Name(), to)); err != nil {
		return err
	}
	return os.Remove(filepath.Join(d.Name(), from))
}

func finishFile(f *os.File, uid, gid int, mode fs.FileMode, mtime time.Time) error {
	if uid >= 0 || gid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return err
		}
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := os.Chtimes(f.Name(), mtime, mtime); err != nil {
		return err
	}
	return f.Sync()
}
