// Package storage owns ftpgate's local tree: the jails users see, the names
// they may use, atomic and resumable uploads, and the group and mode of
// everything ftpgate writes.
//
// A [Root] is opened once on the storage root. [Root.Jail] gives each session
// an [FS] confined with [os.Root] to the user's home (on Linux, the directory
// of an upload is opened with openat2's RESOLVE_BENEATH, the same confinement
// in one call), so neither "..", nor an absolute name, nor a symlink pointing
// out can reach a file outside it. All names an [FS] accepts are the slash
// paths an FTP client sends; every error it returns is a [*PathError]
// carrying that virtual path, never a real one.
//
// Uploads ([FS.OpenUpload]) stream into a part file in the target
// directory, created when the first bytes arrive: a plain STOR's part has
// no name (O_TMPFILE) until it holds 1 MiB or the transfer is cut, then a
// hidden one. Bytes are hashed with SHA-256 (on a second goroutine, see
// [Upload.ReadFrom]) and writeback starts as they arrive.
// [Upload.Commit] makes the upload durable and gives the part its final
// name, so a final name never holds a partial file: an upload of up to
// 256 KiB through the commit log (its bytes appended to a log in
// [Policy.StateDir] and flushed once for all the uploads committing
// together; a checkpoint writes the files out later, and recovery after a
// power loss restores what the crash lost, see [Root.Recovery]), a larger
// one by an fsync of the part and, after the link or rename, of the
// directory (one fsync serving every upload that finished in it
// meanwhile). [Upload.Abort] keeps the part so that the same user can
// resume it (REST + STOR or APPE) until [Root.SweepParts] removes it after
// [Policy.ResumeTTL]. Parts are recorded
// in an append-only journal under [Policy.StateDir], so sweeping never walks
// the data tree. Downloads ([File.WriteTo]) use sendfile.
//
// The package knows nothing about FTP: the server package wraps [FS] into an
// ftpserverlib driver.
package storage
