// Package server owns ftpgate's FTP/FTPS front end: the ftpserverlib driver,
// authentication, connection caps and bans, TLS, per-session jails on top of
// package storage, the transfer log, reload and graceful shutdown.
//
// It never imports the mirror. Completed uploads are announced through the
// Notifier interface declared here; main wires the mirror in.
package server
