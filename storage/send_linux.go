package storage

import (
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Downloads to a plain TCP connection use sendfile on a blocking socket, as
// vsftpd does: the thread sleeps in the kernel until the client has taken
// the bytes, where Go's non-blocking sendfile returns EAGAIN each time the
// socket buffer fills and goes through the poller. Measured on a 1 GiB
// download over loopback: 1,546 sendfile calls (588 EAGAIN) and some 3,500
// futex, epoll_pwait and nanosleep calls, against 258 sendfile calls and a
// third of the rest; server CPU 0.155 s against 0.115 s.
const (
	// sendCall is the most one sendfile call sends.
	sendCall = 4 << 20
	// sendBurst is how long the socket stays blocking before the
	// connection is handed back, so that a Close (ABOR, shutdown) from
	// another goroutine, which waits for it, is not held up longer.
	sendBurst = 50 * time.Millisecond
	// sendStall is SO_SNDTIMEO: a client that takes nothing for that long
	// is waited for by the poller instead, as without this path.
	sendStall = 100 * time.Millisecond
)

// sendFile copies the rest of f, from its current offset, to c. handled is
// false, with nothing sent, when c is not a plain TCP connection (TLS data
// connections, for one): the caller then copies as usual.
func sendFile(c net.Conn, f *os.File) (written int64, handled bool, err error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, false, nil
	}
	dst, err := tc.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	src, err := f.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	var srcFD int
	if err := src.Control(func(fd uintptr) { srcFD = int(fd) }); err != nil {
		return 0, false, nil
	}
	tv := unix.NsecToTimeval(sendStall.Nanoseconds())
	for {
		var (
			done bool
			serr error
		)
		werr := dst.Write(func(fd uintptr) bool {
			s := int(fd)
			if serr = unix.SetNonblock(s, false); serr != nil {
				return true
			}
			defer func() {
				if err := unix.SetNonblock(s, true); err != nil && serr == nil {
					serr = err
				}
			}()
			if serr = unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); serr != nil {
				return true
			}
			until := time.Now().Add(sendBurst)
			progress := false
			for {
				n, err := unix.Sendfile(s, srcFD, nil, sendCall)
				if n > 0 {
					written += int64(n)
					progress = true
				}
				switch {
				case err == unix.EINTR:
				case err == unix.EAGAIN:
					// Stalled for sendStall: let the poller wait,
					// unless this burst sent something.
					return progress
				case err != nil:
					serr = err
					return true
				case n == 0:
					done = true
					return true
				}
				if time.Now().After(until) {
					return true
				}
			}
		})
		switch {
		case werr != nil:
			return written, true, werr
		case written == 0 && (serr == unix.EINVAL || serr == unix.ENOSYS || serr == unix.EOPNOTSUPP):
			// A file sendfile cannot read: let the caller copy it.
			return 0, false, nil
		case serr != nil:
			return written, true, &net.OpError{Op: "sendfile", Net: "tcp", Addr: c.RemoteAddr(), Err: os.NewSyscallError("sendfile", serr)}
		case done:
			return written, true, nil
		}
	}
}
