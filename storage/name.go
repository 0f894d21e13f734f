package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"strings"
	"unicode/utf8"
)

// PartPrefix starts the name of every upload part file. Part files are
// hidden from listings, refused as client names, and must be skipped by
// anything else that walks the tree (the mirror, for one).
const PartPrefix = ".ftpgate-part-"

// partHashLen is how many hex digits of the SHA-256 name a part: fixed, so a
// 255-byte final name still has a valid part name beside it.
const partHashLen = 24

const (
	maxComponent = 255  // NAME_MAX
	maxPath      = 4096 // PATH_MAX
)

// IsPartName reports whether base, a single path component, is the name of
// an upload part file. It is safe for concurrent use.
func IsPartName(base string) bool { return strings.HasPrefix(base, PartPrefix) }

// partName is the part file of user's upload to virt (a cleaned virtual
// path). It depends on both, so that users sharing a directory (an admin
// and an uploader) never resume each other's parts.
func partName(user, virt string) string {
	sum := sha256.Sum256([]byte(user + "\x00" + virt))
	return PartPrefix + hex.EncodeToString(sum[:])[:partHashLen]
}

// resolve confines a client's name to the jail: virt is the cleaned
// absolute virtual path ("/a/b", "/" for the top) and rel the same path
// relative to the jail for os.Root ("a/b", "."). On error virt is the best
// printable form of the name, for the error message.
func resolve(name string) (virt, rel string, err error) {
	if err := checkRaw(name); err != nil {
		return name, "", err
	}
	// Cleaning from "/" makes every ".." stop at the top: a client can
	// never name anything above its jail, whatever os.Root would allow.
	virt = path.Clean("/" + name)
	if len(virt) > maxPath {
		return virt, "", ErrInvalidName
	}
	if virt == "/" {
		return virt, ".", nil
	}
	rel = virt[1:]
	for c := range strings.SplitSeq(rel, "/") {
		if len(c) > maxComponent || IsPartName(c) {
			return virt, "", ErrInvalidName
		}
	}
	return virt, rel, nil
}

// checkRaw refuses names that no cleaning can make acceptable.
func checkRaw(name string) error {
	if len(name) > maxPath || !utf8.ValidString(name) {
		return ErrInvalidName
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f {
			return ErrInvalidName
		}
	}
	return nil
}

// checkHome validates a jail's home: relative to the storage root, already
// clean, and made of names a client could use.
func checkHome(home string) error {
	if home == "." {
		return nil
	}
	if home == "" || path.IsAbs(home) || path.Clean(home) != home ||
		home == ".." || strings.HasPrefix(home, "../") {
		return ErrInvalidName
	}
	_, _, err := resolve(home)
	return err
}

// validPartKey reports whether key, read back from the registry, is a
// root-relative path to a part file: the sweep removes nothing else.
func validPartKey(key string) bool {
	if key == "" || path.IsAbs(key) || path.Clean(key) != key ||
		key == ".." || strings.HasPrefix(key, "../") || checkRaw(key) != nil {
		return false
	}
	return IsPartName(path.Base(key))
}
