package server

import (
	"bytes"
	"runtime"
	"strconv"
)

// goroutineID returns the current goroutine's id.
//
// ftpserverlib calls WrapPassiveListener without telling which session asked
// for the port. It calls it on the session's command goroutine, the same one
// that ran ClientConnected, so that goroutine's id names the session and the
// listener can refuse every data connection but its owner's (see
// passiveListener). It is used only there, once per PASV/EPSV.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}
