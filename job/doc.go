// Package job coordinates ftpgate's long jobs (mirror full passes, reverse
// pulls, permission fixes) and keeps a record of each run.
//
// A Locker gives one lock per directory tree, shared by every ftpgate
// process on the machine through flock(2) files in state_dir/locks: two jobs
// on overlapping trees (the same path, or one inside the other) never run at
// the same time; the second waits. Locks are hierarchical: a job on a tree
// holds a shared lock on each ancestor directory and an exclusive lock on
// the tree itself, always taken from the root down, so jobs on disjoint
// trees run in parallel, overlapping ones exclude each other, and no order of
// requests can deadlock.
//
// A History keeps the last runs of each job for the status endpoint.
package job
