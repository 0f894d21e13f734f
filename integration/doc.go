// Package integration owns the end-to-end tests of ftpgate: they build the
// real binary, run it with generated configurations and drive it with real
// FTP clients (Go's jlaffaye/ftp, raw control connections, curl, lftp and
// Python ftplib). The package has no non-test code.
package integration
