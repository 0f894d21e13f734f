package storage

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkUpload measures a 256 MiB upload (hashing, writeback, commit)
// written in 1 MiB pieces, with and without fsync.
func BenchmarkUpload(b *testing.B) {
	const size = 256 << 20
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	for _, fsync := range []bool{false, true} {
		name := "fsync=false"
		if fsync {
			name = "fsync=true"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			r, err := Open(dir, Policy{GID: -1, StateDir: b.TempDir(), Fsync: fsync})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			f, err := r.Jail("u", "u", false)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			b.SetBytes(size)
			for b.Loop() {
				u, err := f.OpenUpload("/bench.bin", 0, false)
				if err != nil {
					b.Fatal(err)
				}
				for range size / len(chunk) {
					if _, err := u.Write(chunk); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := u.Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSmallUploads measures many 4 KiB uploads into one directory,
// the per-file cost (open, registry, hash, commit) that dominates a
// `mirror -R` of small files.
func BenchmarkSmallUploads(b *testing.B) {
	data := make([]byte, 4<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, fsync := range []bool{false, true} {
		name := "fsync=false"
		if fsync {
			name = "fsync=true"
		}
		b.Run(name, func(b *testing.B) {
			r, err := Open(b.TempDir(), Policy{GID: -1, StateDir: b.TempDir(), Fsync: fsync})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			f, err := r.Jail("u", "u", false)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			b.SetBytes(int64(len(data)))
			i := 0
			for b.Loop() {
				u, err := f.OpenUpload("/f"+strconv.Itoa(i), 0, false)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := u.Write(data); err != nil {
					b.Fatal(err)
				}
				if _, err := u.Commit(); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkParallelSmallUploads is BenchmarkSmallUploads with four uploads
// at a time into the same directory, as `mirror -R -P4` sends them.
func BenchmarkParallelSmallUploads(b *testing.B) {
	data := make([]byte, 4<<10)
	r, err := Open(b.TempDir(), Policy{GID: -1, StateDir: b.TempDir(), Fsync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	f, err := r.Jail("u", "u", false)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(int64(len(data)))
	b.SetParallelism(2) // 2 × GOMAXPROCS(2) = 4 at a time
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			u, err := f.OpenUpload("/f"+strconv.FormatInt(n.Add(1), 10), 0, false)
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := u.Write(data); err != nil {
				b.Error(err)
				return
			}
			if _, err := u.Commit(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkReceive measures a 256 MiB upload arriving over loopback TCP
// from a sending goroutine (the client), received with Upload.ReadFrom
// (hashing pipelined) or with 1 MiB reads and Upload.Write (hashing
// inline), with and without fsync. cpu-ns/op counts both sides.
func BenchmarkReceive(b *testing.B) {
	const size = 256 << 20
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 31)
	}
	for _, fsync := range []bool{false, true} {
		for _, mode := range []string{"Write", "ReadFrom"} {
			b.Run(fmt.Sprintf("fsync=%v/%s", fsync, mode), func(b *testing.B) {
				r, err := Open(b.TempDir(), Policy{GID: -1, StateDir: b.TempDir(), Fsync: fsync})
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				f, err := r.Jail("u", "u", false)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				defer ln.Close()
				b.SetBytes(size)
				cpu0 := cpuTime()
				for b.Loop() {
					go func() {
						c, err := net.Dial("tcp", ln.Addr().String())
						if err != nil {
							b.Error(err)
							return
						}
						defer c.Close()
						for range size / len(chunk) {
							if _, err := c.Write(chunk); err != nil {
								b.Error(err)
								return
							}
						}
					}()
					c, err := ln.Accept()
					if err != nil {
						b.Fatal(err)
					}
					u, err := f.OpenUpload("/recv.bin", 0, false)
					if err != nil {
						b.Fatal(err)
					}
					var n int64
					if mode == "ReadFrom" {
						n, err = u.ReadFrom(c)
					} else {
						n, err = copyWrite(u, c)
					}
					c.Close()
					if err != nil || n != size {
						b.Fatalf("received %d, %v", n, err)
					}
					if _, err := u.Commit(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// copyWrite is the receive loop before Upload.ReadFrom: 1 MiB reads, each
// written and hashed in turn.
func copyWrite(u *Upload, r io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			w, werr := u.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF), errors.Is(rerr, io.ErrUnexpectedEOF):
			return total, nil
		default:
			return total, rerr
		}
	}
}

// cpuTime is the process's user plus system time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSend measures a 256 MiB download over loopback TCP to a reading
// goroutine (the client): File.WriteTo, which uses sendfile, as it is and
// with a fixed 4 MiB send buffer.
func BenchmarkSend(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	src := make([]byte, 1<<20)
	for i := range src {
		src[i] = byte(i * 13)
	}
	var data []byte
	for range size / len(src) {
		data = append(data, src...)
	}
	if err := os.MkdirAll(dir+"/data/u", 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(dir+"/data/u/big.bin", data, 0o644); err != nil {
		b.Fatal(err)
	}
	r, err := Open(dir+"/data", Policy{GID: -1, StateDir: dir + "/state"})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	f, err := r.Jail("u", "u", false)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for _, sndbuf := range []int{0, 4 << 20} {
		for _, nodelay := range []bool{true, false} {
			b.Run(fmt.Sprintf("sndbuf=%d/nodelay=%v", sndbuf, nodelay), func(b *testing.B) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				defer ln.Close()
				b.SetBytes(size)
				cpu0 := cpuTime()
				for b.Loop() {
					done := make(chan int64)
					go func() {
						c, err := net.Dial("tcp", ln.Addr().String())
						if err != nil {
							b.Error(err)
							close(done)
							return
						}
						defer c.Close()
						n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 128<<10))
						done <- n
					}()
					c, err := ln.Accept()
					if err != nil {
						b.Fatal(err)
					}
					tc := c.(*net.TCPConn)
					if sndbuf > 0 {
						tc.SetWriteBuffer(sndbuf)
					}
					tc.SetNoDelay(nodelay)
					file, err := f.OpenRead("/big.bin", 0)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := file.WriteTo(c); err != nil {
						b.Fatal(err)
					}
					file.Close()
					c.Close()
					if n := <-done; n != size {
						b.Fatalf("received %d", n)
					}
				}
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}
