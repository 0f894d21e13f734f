package storage

import (
	"testing"
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
