// Command bench measures ftpgate against the tools it replaces, on this machine,
// with real clients and real servers, and prints the figures as ratios against
// the goals of the issues that set them.
//
//	go run ./bench [flags] TARGET...     (make bench, make bench-ftp)
//
// Each target is one entry of the registry in targets(); "all" runs every
// target in order. A target builds what it needs (the ftpgate binary from the
// module root, generated workloads, temporary configs and servers) in a
// scratch directory that is removed at the end unless -keep is given.
//
// Targets:
//
//   - ftp: a 1 GiB upload and download and 2000 × 4 KiB files with lftp
//     `mirror -R -P4`, against ftpgate (fsync on, then off for a second upload
//     series) and against vsftpd from Debian with a local test user, alternating
//     the server order every round; medians and ratios. Needs root for vsftpd's
//     user and PAM service (see vsftpd.go).
//
// Exit status: 0 all goals met, 1 the benchmark ran and missed a goal, 2 it
// could not run.
package main
