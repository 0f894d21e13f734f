// Package perms owns the permission normaliser: it compares whole trees with
// the `[[perms]]` policies of the config (owner, group, file_mode, dir_mode,
// exclude) and lists (Check) or repairs (Fix) exactly the entries that
// deviate. It replaces `find … -exec chmod`, which rewrote every inode.
//
// # Policies
//
// Each policy covers its path. The most specific policy governs everything
// beneath its path entirely: an attribute it does not set is not checked
// there, whatever an enclosing policy says (nothing is inherited). Every
// policy tree is walked once: the walk of an enclosing policy skips the
// subtree of a nested one, which is walked under its own policy. Exclude
// patterns have the mirror's semantics: path.Match against the entry's base
// name and against its slash path relative to the policy's path; an
// excluded directory is not entered.
//
// # What is checked and changed
//
// Regular files and directories only: mode & 07777 (so setuid, setgid and
// sticky count) against file_mode or dir_mode, the uid against owner, the
// gid against group. Symlinks are never followed and never changed, nor are
// their targets; fifos, sockets and devices are never opened or changed.
// They are counted as left alone, not reported. The policy's path itself is
// resolved once when the walk starts (it may be a symlink an operator set
// up); nothing below it is followed.
//
// The walk holds one directory descriptor per level (openat with
// O_DIRECTORY|O_NOFOLLOW, read with getdents in 32 KiB chunks, entries
// examined with statx(AT_SYMLINK_NOFOLLOW) relative to their directory, on
// the name as getdents returned it: a right entry costs one system call
// and no allocation). To change an entry it opens
// it relative to its directory with O_NOFOLLOW, checks that the descriptor
// is the (device, inode) the walk saw, and then calls fchown (first: chown
// clears setuid/setgid on files) and fchmod on the descriptor, so a path
// swapped for a symlink meanwhile is never changed. An entry that is right
// is never touched: its ctime stays.
//
// A directory or file on another device than the policy's path (a mount
// point, a btrfs subvolume) is not entered and not checked: it is counted
// once as a skipped mount. Entries that vanish or are replaced during the
// walk are skipped silently (counted as vanished). Other errors (EACCES,
// EIO) are reported with the path and the walk goes on.
//
// # Gentle on a busy disk
//
// Each tree is walked by Options.Workers goroutines (one by default: the
// daemon's after_mirror fix; the CLI uses GOMAXPROCS), each locked to its
// own OS thread whose I/O priority is IOPRIO_CLASS_IDLE; the threads end
// with the walk, so the priority never leaks to other goroutines. A
// worker that finds a subdirectory hands it, open, to the others through
// a queue of a few entries per worker; when the queue is full it reads
// the subdirectory itself, depth-first. A policy's rate (operations per
// second, 0 = unlimited) counts directory reads (getdents calls) and
// entry changes of all the workers together. Memory is O(depth) per
// worker plus the queue: no list of the tree is ever held.
//
// With one worker findings come in the filesystem's directory order,
// depth first. With several, findings of different directories
// interleave in no set order (a directory's own finding still comes
// before those of its entries); the counts are exact either way.
//
// # Coordination
//
// Fix takes Options.Lock for each tree before it changes anything in it
// (main wires the job lock shared with the mirror's full pass and the
// pull); Check and dry runs take no lock. The package does not import the
// job lock itself.
package perms
