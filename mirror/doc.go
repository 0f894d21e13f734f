// Package mirror owns the local → bucket mirror: it keeps the bucket prefix
// of each mirror mapping (a `[[mirror]]` of the config) equal to its local
// directory, within about a second of every change, without ever losing or
// wrongly deleting data. It owns the journal in state_dir and the S3 store
// client; the FTP server reaches it only through Notify, wired by main.
//
// # Triggers
//
// Work reaches the mirror in four ways, all ending in the same per-path
// tasks run by a bounded pool of workers:
//
//   - Notify: the FTP server announces a completed upload (path, size,
//     SHA-256, mtime). Notify never blocks and never touches the network:
//     the upload is queued at once, or, when the in-memory queue is full,
//     recorded as pending in the journal and picked up later.
//   - the fsnotify watcher (watch.go): files written by other programs once
//     they have been quiet for the settle period, removals, and subtree
//     rescans for new or moved-in directories and event overflows.
//   - a full pass at start-up and every `reconcile`, and the one-shot
//     `ftpgate mirror` (Pass).
//   - pending operations left in the journal by a crash, a full queue or a
//     failed operation, replayed every minute.
//
// # Full pass
//
// A pass walks the local tree in S3 key order (each directory's entries
// sorted with directories compared as name+"/"), and merges it with the
// journal (records, tombstones, pending operations: bbolt keeps them in the
// same byte order) and with the recursive bucket listing. All streams are
// sorted, so memory stays O(depth + batch), whatever the size of the tree.
//
// The listing is read ahead of the merge, in key ranges listed three at a
// time: a range ends at every 1000th key of the journal, so that it is one
// page of the store when the bucket matches the journal (past a directory
// of more than 8000 keys the rest is one range, read with continuation
// tokens, since MinIO reads a directory again for each listing that starts
// inside it). The ranges cover every key of the prefix whatever the journal
// holds, and the pass compares every object listed with the journal: every
// full pass still finds objects that someone else deleted, replaced or
// added in the bucket, and repairs them (uploads, deletions as below). The
// journal only decides where the listing is cut. On MinIO (and other stores
// addressed by path) the store reads the pages with a ListObjectsV2 client
// of its own, whose reader costs a tenth of minio-go's XML decoding.
//
// Per key it decides:
//
//   - unchanged: the journal record matches the file's size, mtime, inode
//     and ctime and the bucket holds an object with the recorded size and
//     ETag. Nothing is read or sent. When only the ctime changed, the file
//     is re-hashed and uploaded only if its SHA-256 changed, so that a
//     same-size edit with an old mtime is never missed (mc's flaw).
//   - upload: no record, a different size or mtime, a missing object or one
//     that differs from the record. A file with no record whose inode,
//     size and mtime match the record of a path that no longer exists is a
//     rename: a server-side copy (metadata kept), then the old key's
//     deletion.
//   - adopt: the object exists with the file's size and X-Amz-Meta-Mtime
//     but the journal has no record (a lost journal, a bucket filled by
//     another tool): the record is written, nothing is uploaded.
//   - delete: an object, record or tombstone without a local file. These
//     form the deletion plan, executed after every upload and copy of the
//     pass has finished, and only if no deletion guard trips.
//
// # Deletion guards
//
// Before any deletion the plan is checked; any of these guards stops every
// deletion of the pass (and every tombstone and journal clean-up), logs
// ERROR msg="deletion guard", and is reported in Summary and Status:
//
//   - root_missing, root_not_dir: the local root is gone or not a
//     directory. The pass cannot run at all.
//   - listing_errors: the local walk or the bucket listing had an error.
//   - sentinel_missing: the local root lacks .ftpgate-sentinel, which the
//     first pass of a mapping with an empty journal creates (touch it
//     again to confirm the root is the right one).
//   - device_changed: the root is on another device than the journal
//     recorded. A pass on the new device that plans no deletion, with the
//     sentinel present, records the new device.
//   - max_delete: more object deletions planned than max_delete (0 means
//     none without --allow-deletes).
//   - max_delete_ratio: more than max_delete_ratio × the objects under the
//     prefix, and more than ten, so that deleting a few files from a small
//     bucket is not taken for a mass deletion.
//
// Sentinel, device and count guards trip only when deletions are planned;
// with nothing to delete the first two are a warning. Options.AllowDeletes
// (ftpgate mirror --allow-deletes N) lets the count guards pass when the
// plan has at most N object deletions; it never overrides the root,
// listing, sentinel or device guards, which mean the local tree cannot be
// trusted. Deletions of the old keys of renames that were copied in the
// same pass are not counted: their data lives on under the new key.
//
// # Journal
//
// The journal (bbolt, state_dir/journal.db) holds per mapping: records
// (path → size, mtime, inode, ctime, SHA-256, ETag), an inode index for
// rename detection, pending operations, tombstones of local deletions
// (path → time, for the reverse pull) and meta (device, sentinel). Records
// use a compact binary encoding. Nothing keeps all paths in memory; bbolt's
// pages are released from the process after each stretch of a pass. The
// journal's freelist is written with each commit: bbolt otherwise rebuilds
// it at every open by reading every page, which maps the whole journal into
// the process at start-up.
//
// Pending operations are committed before their operation runs, with one
// exception for latency: an upload announced by Notify is sent at once, and
// its pending record is written only if the upload fails (the replay then
// retries it). An operation's result (the record, the pending record's
// removal) is committed in groups by one journal writer after the worker
// moved on; the path stays busy until then. Every change is therefore
// either mirrored and recorded, queued in memory, or pending in the
// journal; a crash loses only the memory queue, and the start-up pass
// rebuilds it from the tree: it finds files with no matching record, and
// adopts objects that did arrive (by size and X-Amz-Meta-Mtime) instead of
// sending them again. Shutdown writes the memory queue to the journal. S3
// PUTs are atomic and a failed multipart upload is aborted (one left by a
// killed process is aborted when its key is sent again), so a crash never
// publishes a partial object.
//
// # Objects
//
// Key = mapping prefix + path relative to the local root. Every object
// carries X-Amz-Meta-Mtime (rclone's decimal seconds) and X-Amz-Meta-Sha256
// (hex). The store verifies the bytes: single PUTs carry
// x-amz-checksum-sha256 (the SHA-256 the mirror computed, or the FTP
// server's, checked by the store against what it received); multipart
// uploads (≥ 64 MiB; 16 MiB parts, 4 in parallel) carry a CRC32C per part.
// A pass that finds at least 64 new files under 1 MiB sends them to MinIO
// in snowball archives (200 files or 4 MiB each) that MinIO extracts, each
// entry with its metadata, the archive checked by its Content-MD5; other
// stores (versitygw) get single PUTs, which the mirror remembers.
// Renames are server-side copies (CopyObject, or ComposeObject above 5 GiB)
// conditional on the source's ETag, so a stale source is never copied.
//
// # Logs
//
// One INFO line per object operation, msg=mirrored with mapping, op
// (put, copy, delete), key, bytes and dur; each failed attempt is WARN
// msg="mirror op failed" with attempt and err; each pass ends with INFO
// msg="mirror pass". The one-shot `ftpgate mirror` logs a batch upload as
// one line, msg="mirrored batch" with batch (the number of objects), bytes,
// first and last (keys), and logs its first 1000 operation lines at INFO,
// the rest at DEBUG: its progress lines and summary count them. Network errors, 5xx and SlowDown are retried with
// exponential backoff and full jitter (500ms base, 1 min cap); other 4xx
// fail the operation, which stays pending for the next pass.
package mirror
