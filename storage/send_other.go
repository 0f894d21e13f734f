//go:build !linux

package storage

import (
	"net"
	"os"
)

// sendFile leaves every download to os.File.WriteTo.
func sendFile(net.Conn, *os.File) (int64, bool, error) { return 0, false, nil }
