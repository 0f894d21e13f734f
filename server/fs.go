package server

import (
	"crypto/md5"  //nolint:gosec // HASH MD5 is a client's choice, not ours
	"crypto/sha1" //nolint:gosec // likewise
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path"
	"time"

	ftpserver "github.com/fclairamb/ftpserverlib"

	"ftpgate/storage"
)

// clientDriver is one logged-in session's view of storage: the user's jail
// plus the transfer bookkeeping (log line, drain, upload notification).
type clientDriver struct {
	*storage.FS
	srv  *Server
	sess *session
}

var (
	_ ftpserver.ClientDriver                        = (*clientDriver)(nil)
	_ ftpserver.ClientDriverExtentionFileTransfer   = (*clientDriver)(nil)
	_ ftpserver.ClientDriverExtensionFileList       = (*clientDriver)(nil)
	_ ftpserver.ClientDriverExtensionRemoveDir      = (*clientDriver)(nil)
	_ ftpserver.ClientDriverExtensionHasher         = (*clientDriver)(nil)
	_ ftpserver.ClientDriverExtensionAvailableSpace = (*clientDriver)(nil)
	_ ftpserver.FileTransferError                   = (*uploadHandle)(nil)
	_ ftpserver.FileTransferError                   = (*downloadHandle)(nil)
)

// errDraining refuses new transfers once SIGTERM has been received.
var errDraining = errors.New("server is shutting down")

// codedError keeps storage's message (virtual paths only) while letting
// ftpserverlib pick the reply code from its sentinel.
type codedError struct {
	err  error
	code error
}

func (e codedError) Error() string   { return e.err.Error() }
func (e codedError) Unwrap() []error { return []error{e.err, e.code} }

// replyError maps storage errors to ftpserverlib's sentinels: 553 for a name
// that is not allowed, 552 for a full disk; everything else stays a 550.
func replyError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrInvalidName), errors.Is(err, storage.ErrOutsideJail):
		return codedError{err, ftpserver.ErrFileNameNotAllowed}
	case errors.Is(err, storage.ErrNoSpace):
		return codedError{err, ftpserver.ErrStorageExceeded}
	}
	return err
}

func (d *clientDriver) Rename(oldname, newname string) error {
	return replyError(d.FS.Rename(oldname, newname))
}

func (d *clientDriver) Mkdir(name string, perm os.FileMode) error {
	return replyError(d.FS.Mkdir(name, perm))
}

func (d *clientDriver) ReadDir(name string) ([]fs.FileInfo, error) {
	return d.FS.ReadDir(name)
}

func (d *clientDriver) RemoveDir(name string) error {
	return d.FS.RemoveDir(name)
}

func (d *clientDriver) GetAvailableSpace(name string) (int64, error) {
	return d.FS.AvailableSpace(name)
}

// ComputeHash answers HASH and the X* digest commands without going through
// GetHandle, which would log a transfer.
func (d *clientDriver) ComputeHash(name string, algo ftpserver.HASHAlgo, start, end int64) (string, error) {
	var h hash.Hash
	switch algo {
	case ftpserver.HASHAlgoSHA256:
		h = sha256.New()
	case ftpserver.HASHAlgoSHA512:
		h = sha512.New()
	case ftpserver.HASHAlgoSHA1:
		h = sha1.New() //nolint:gosec
	case ftpserver.HASHAlgoMD5:
		h = md5.New() //nolint:gosec
	case ftpserver.HASHAlgoCRC32:
		h = crc32.NewIEEE()
	default:
		return "", fmt.Errorf("hash %s: unsupported algorithm", name)
	}
	f, err := d.FS.OpenRead(name, start)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := io.CopyN(h, f, end-start); err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("hash %s: read failed", name)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// GetHandle opens an upload (part file, atomic commit) or a download.
func (d *clientDriver) GetHandle(name string, flags int, offset int64) (ftpserver.FileTransfer, error) {
	if !d.srv.transferStart() {
		return nil, errDraining
	}
	t := transfer{drv: d, path: name, start: time.Now()}
	if flags&(os.O_WRONLY|os.O_RDWR) == 0 {
		f, err := d.FS.OpenRead(name, offset)
		if err != nil {
			d.srv.transferEnd()
			return nil, err
		}
		return &downloadHandle{transfer: t, f: f}, nil
	}
	up, err := d.FS.OpenUpload(name, offset, flags&os.O_APPEND != 0)
	if err != nil {
		d.srv.transferEnd()
		return nil, replyError(err)
	}
	return &uploadHandle{transfer: t, up: up}, nil
}

// transfer is what both directions log once when they end.
type transfer struct {
	drv     *clientDriver
	path    string
	start   time.Time
	n       int64
	xferErr error
}

func (t *transfer) TransferError(err error) { t.xferErr = err }

// finish writes the transfer's one log line and releases it for drain.
func (t *transfer) finish(dir string, err error, extra ...any) {
	defer t.drv.srv.transferReplied(t.drv.sess.remote)
	result := "ok"
	switch {
	case t.xferErr != nil:
		result = "aborted"
		err = t.xferErr
	case err != nil:
		result = "error"
	}
	// the session's logger already carries user and remote
	args := []any{
		"path", path.Join(t.drv.sess.home, path.Clean("/"+t.path)),
		"dir", dir, "bytes", t.n, "dur", time.Since(t.start).Round(time.Microsecond), "result", result,
	}
	args = append(args, extra...)
	if err != nil {
		args = append(args, "err", err)
	}
	t.drv.sess.log.Info("transfer", args...)
}

type uploadHandle struct {
	transfer
	up *storage.Upload
}

func (h *uploadHandle) Read([]byte) (int, error) { return 0, fs.ErrPermission }

func (h *uploadHandle) Write(p []byte) (int, error) {
	n, err := h.up.Write(p)
	h.n += int64(n)
	return n, replyError(err)
}

// ReadFrom lets storage receive the upload: it overlaps the SHA-256 of
// each chunk with receiving and writing the next one.
func (h *uploadHandle) ReadFrom(r io.Reader) (int64, error) {
	n, err := h.up.ReadFrom(r)
	h.n += n
	return n, replyError(err)
}

func (h *uploadHandle) Seek(offset int64, whence int) (int64, error) {
	return h.up.Seek(offset, whence)
}

// Close runs before ftpserverlib sends the 226: the data is committed
// (fsynced, renamed) here, and the mirror is only told, never waited for.
func (h *uploadHandle) Close() error {
	if h.xferErr != nil {
		err := h.up.Abort()
		h.finish("upload", nil)
		return err
	}
	res, err := h.up.Commit()
	if err != nil {
		h.finish("upload", err)
		return replyError(err)
	}
	h.drv.srv.notify.UploadCompleted(h.drv.sess.ctx, Upload{
		Path: res.Path, Size: res.Size, SHA256: res.SHA256, ModTime: res.ModTime, User: h.drv.sess.user,
	})
	h.finish("upload", nil, "size", res.Size, "sha256", hex.EncodeToString(res.SHA256[:]))
	return nil
}

type downloadHandle struct {
	transfer
	f *storage.File
}

func (h *downloadHandle) Read(p []byte) (int, error) {
	n, err := h.f.Read(p)
	h.n += int64(n)
	return n, err
}

// WriteTo lets the file hand its descriptor to the data connection, which
// uses sendfile on plain TCP.
func (h *downloadHandle) WriteTo(w io.Writer) (int64, error) {
	n, err := h.f.WriteTo(w)
	h.n += n
	return n, err
}

func (h *downloadHandle) Write([]byte) (int, error) { return 0, fs.ErrPermission }

func (h *downloadHandle) Seek(offset int64, whence int) (int64, error) {
	return h.f.Seek(offset, whence)
}

func (h *downloadHandle) Close() error {
	err := h.f.Close()
	h.finish("download", nil)
	return err
}
