package conf

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The field checkers below report a problem with one key and return the
// zero value for it; they never stop the validation of other keys.

// get returns v's value, or reports that it has the wrong type.
func get[T any](c *checker, v value[T], key, want string) (T, bool) {
	if v.Got != "" {
		c.add(key, "want %s, got %s", want, v.Got)
		var zero T
		return zero, false
	}
	return v.V, true
}

func (c *checker) text(v value[string], key string) (string, bool) {
	return get(c, v, key, "a string")
}

// required is text for a key that must be present and not empty.
func (c *checker) required(v value[string], key string) (string, bool) {
	if !v.Set {
		c.add(key, "required")
		return "", false
	}
	s, ok := c.text(v, key)
	if ok && s == "" {
		c.add(key, "must not be empty")
		return "", false
	}
	return s, ok
}

// path returns an optional path, absolute and clean; relative paths are
// relative to base, the configuration file's directory.
func (c *checker) path(v value[string], key, base string) string {
	p, ok := c.text(v, key)
	if !ok || p == "" {
		return ""
	}
	if strings.ContainsRune(p, 0) {
		c.add(key, "%q: contains a NUL byte", p)
		return ""
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(base, p)
	}
	return filepath.Clean(p)
}

func (c *checker) requiredPath(v value[string], key, base string) string {
	if _, ok := c.required(v, key); !ok {
		return ""
	}
	return c.path(v, key, base)
}

// duration parses a Go duration that must be above zero, or with zeroOK at
// least zero.
func (c *checker) duration(v value[string], key string, zeroOK bool) time.Duration {
	s, ok := get(c, v, key, `a duration like "15m"`)
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		c.add(key, `%q: not a duration; write it like "90s", "15m" or "24h"`, s)
		return 0
	case d < 0 || d == 0 && !zeroOK:
		if zeroOK {
			c.add(key, "%q: must not be negative", s)
		} else {
			c.add(key, "%q: must be above zero", s)
		}
		return 0
	}
	return d
}

func (c *checker) integer(v value[int64], key string, lo, hi int64) int {
	n, ok := get(c, v, key, "an integer")
	if !ok {
		return 0
	}
	switch {
	case n < lo && hi == math.MaxInt32:
		c.add(key, "%d: must be at least %d", n, lo)
		return 0
	case n < lo || n > hi:
		c.add(key, "%d: must be between %d and %d", n, lo, hi)
		return 0
	}
	return int(n)
}

// float checks a number against valid, described by rule for messages.
func (c *checker) float(v value[float64], key, rule string, valid func(float64) bool) float64 {
	f, ok := get(c, v, key, "a number")
	if !ok {
		return 0
	}
	if !valid(f) {
		c.add(key, "%v: must be %s", f, rule)
		return 0
	}
	return f
}

func (c *checker) oneOf(v value[string], key string, choices ...string) string {
	s, ok := c.text(v, key)
	if !ok {
		return ""
	}
	for _, ch := range choices {
		if s == ch {
			return s
		}
	}
	list := strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
	c.add(key, "%q: must be %s", s, list)
	return ""
}

// mode parses 3 or 4 octal digits; the fourth, leading one carries setuid
// (4), setgid (2) and sticky (1). Files may not have those bits: a policy
// that makes every upload setuid is never what anyone meant.
func (c *checker) mode(v value[string], key string, file bool) (fs.FileMode, bool) {
	s, ok := get(c, v, key, `an octal string like "0664"`)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if (len(s) != 3 && len(s) != 4) || err != nil || strings.ContainsAny(s, "+-_") {
		c.add(key, `%q: not a mode; write 3 or 4 octal digits like "0664" or "2775"`, s)
		return 0, false
	}
	if file && n&0o7000 != 0 {
		c.add(key, "%q: setuid, setgid and sticky bits are not allowed on files", s)
		return 0, false
	}
	m := fs.FileMode(n & 0o777)
	if n&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m, true
}

// listen checks a host:port address to listen on; port 0 picks a free one.
func (c *checker) listen(v value[string], key string) string {
	s, ok := c.text(v, key)
	if !ok {
		return ""
	}
	host, port, err := net.SplitHostPort(s)
	switch {
	case err != nil:
		c.add(key, `%q: not host:port, like "0.0.0.0:21" or "[::]:21"`, s)
		return ""
	case !validPort(port, 0):
		c.add(key, "%q: port must be a number between 0 and 65535", s)
		return ""
	case host != "" && net.ParseIP(host) == nil && !validHostname(host):
		c.add(key, "%q: not an IP address or host name: %q", s, host)
		return ""
	}
	return s
}

// portRange parses "start-end" (or a single port).
func (c *checker) portRange(v value[string], key string) PortRange {
	s, ok := c.text(v, key)
	if !ok {
		return PortRange{}
	}
	lo, hi, found := strings.Cut(s, "-")
	if !found {
		hi = lo
	}
	start, err1 := atoiDigits(lo)
	end, err2 := atoiDigits(hi)
	switch {
	case err1 != nil || err2 != nil:
		c.add(key, `%q: not a port range; write it like "30000-30100"`, s)
	case start < 1 || start > 65535 || end < 1 || end > 65535:
		c.add(key, "%q: ports must be between 1 and 65535", s)
	case start > end:
		c.add(key, "%q: start is above end", s)
	default:
		return PortRange{Start: start, End: end}
	}
	return PortRange{}
}

// errNoSuchID is what groupID and userID return for an unknown name.
var errNoSuchID = errors.New("no such name")

// group resolves a group name or number; "" is no group (-1).
func (c *checker) group(v value[string], key string) (string, int) {
	return c.id(v, key, "group", groupID)
}

// owner resolves a user name or number; "" is no owner (-1).
func (c *checker) owner(v value[string], key string) (string, int) {
	return c.id(v, key, "user", userID)
}

// id resolves a user or group (kind) name with lookup, or takes a number as
// it is.
func (c *checker) id(v value[string], key, kind string, lookup func(string) (string, error)) (string, int) {
	s, ok := c.text(v, key)
	if !ok || s == "" {
		return s, -1
	}
	if id, err := atoiDigits(s); err == nil {
		return s, c.checkID(key, s, id)
	}
	idText, err := lookup(s)
	switch {
	case errors.Is(err, errNoSuchID):
		c.add(key, "%q: no such %s", s, kind)
		return s, -1
	case err != nil:
		c.add(key, "%q: %v", s, err)
		return s, -1
	}
	id, err := strconv.Atoi(idText)
	if err != nil {
		c.add(key, "%q: %s ID %q is not a number", s, kind, idText)
		return s, -1
	}
	return s, id
}

func groupID(name string) (string, error) {
	g, err := user.LookupGroup(name)
	if errors.As(err, new(user.UnknownGroupError)) {
		return "", errNoSuchID
	}
	if err != nil {
		return "", err
	}
	return g.Gid, nil
}

func userID(name string) (string, error) {
	u, err := user.Lookup(name)
	if errors.As(err, new(user.UnknownUserError)) {
		return "", errNoSuchID
	}
	if err != nil {
		return "", err
	}
	return u.Uid, nil
}

// checkID accepts numeric IDs below 2^32-1, which is chown's "unchanged".
func (c *checker) checkID(key, s string, id int) int {
	if id >= 1<<32-1 {
		c.add(key, "%q: ID out of range", s)
		return -1
	}
	return id
}

// patterns checks exclude patterns (path.Match syntax, matched against base
// names and slash-separated relative paths).
func (c *checker) patterns(v value[[]string], key string) []string {
	ps, ok := get(c, v, key, "an array of strings")
	if !ok {
		return nil
	}
	for _, p := range ps {
		if p == "" {
			c.add(key, "empty pattern")
			continue
		}
		if _, err := path.Match(p, ""); err != nil {
			c.add(key, "%q: bad pattern: %v", p, err)
		}
	}
	return ps
}

// atoiDigits is strconv.Atoi for unsigned decimal numbers only: no sign,
// no spaces.
func atoiDigits(s string) (int, error) {
	if s == "" || len(s) > 10 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a number: %q", s)
	}
	return strconv.Atoi(s)
}

func validPort(port string, lo int) bool {
	n, err := atoiDigits(port)
	return err == nil && n >= lo && n <= 65535
}
