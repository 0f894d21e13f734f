package conf

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// checker collects the issues of one file. It lives for one Parse call.
type checker struct {
	pos       *positions
	lookupEnv func(string) (string, bool)
	issues    []Issue
	known     map[string]map[string]bool // table key (no indices) → its keys
	bad       map[string]bool            // table keys (no indices) of the wrong shape
}

func newChecker(pos *positions, lookupEnv func(string) (string, bool)) *checker {
	return &checker{
		pos:       pos,
		lookupEnv: lookupEnv,
		known:     make(map[string]map[string]bool),
		bad:       make(map[string]bool),
	}
}

func (c *checker) add(key, format string, args ...any) {
	c.issues = append(c.issues, Issue{Key: key, Line: c.pos.line(key), Msg: fmt.Sprintf(format, args...)})
}

// decode decodes every table of the file into its raw type.
func (c *checker) decode(md *toml.MetaData, f *rawFile) *rawConfig {
	c.known[""] = tagsOf(f)
	r := &rawConfig{}
	c.table(md, f.Server, &r.Server, "server")
	c.table(md, r.Server.TLS, &r.TLS, "server", "tls")
	c.table(md, r.Server.Ban, &r.Ban, "server", "ban")
	c.table(md, f.Storage, &r.Storage, "storage")
	r.Users = decodeArray[rawUser](c, md, f.Users, "users")
	if md.IsDefined("s3") {
		r.S3 = &rawS3{}
		c.table(md, f.S3, r.S3, "s3")
	}
	r.Mirrors = decodeArray[rawMirror](c, md, f.Mirror, "mirror")
	r.Perms = decodeArray[rawPerms](c, md, f.Perms, "perms")
	c.table(md, f.HTTP, &r.HTTP, "http")
	c.table(md, f.Alerts, &r.Alerts, "alerts")
	c.table(md, f.Log, &r.Log, "log")
	return r
}

func (c *checker) table(md *toml.MetaData, p toml.Primitive, dst any, key ...string) {
	k := toml.Key(key).String()
	c.known[k] = tagsOf(dst)
	if !md.IsDefined(key...) {
		return
	}
	// "" is a table that only dotted keys or sub-tables created.
	if t := md.Type(key...); t != "Hash" && t != "" {
		c.add(k, "want a table ([%s]), got %s", k, metaTypeName(t))
		c.bad[k] = true
		return
	}
	if err := md.PrimitiveDecode(p, dst); err != nil {
		// Leaves never fail (see value), so this is a table inside a table
		// that is not one; the shape checks above should have caught it.
		c.add(k, "cannot decode: %v", err)
		c.bad[k] = true
	}
}

func decodeArray[T any](c *checker, md *toml.MetaData, p toml.Primitive, key string) []T {
	c.known[key] = tagsOf(new(T))
	if !md.IsDefined(key) {
		return nil
	}
	want := fmt.Sprintf("want an array of tables ([[%s]])", key)
	switch t := md.Type(key); t {
	case "ArrayHash", "Array":
	default:
		c.add(key, "%s, got %s", want, metaTypeName(t))
		c.bad[key] = true
		return nil
	}
	var out []T
	if err := md.PrimitiveDecode(p, &out); err != nil {
		c.add(key, "%s, got an array of other values", want)
		c.bad[key] = true
		return nil
	}
	return out
}

// tagsOf returns the TOML keys of the struct v points to.
func tagsOf(v any) map[string]bool {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	keys := make(map[string]bool, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}

// unknownKeys reports keys the raw types do not have: those the decoder left
// undecoded, and those it matched only case-insensitively. A key inside an
// unknown table is not reported again.
func (c *checker) unknownKeys(md *toml.MetaData) {
	undecoded := make(map[string]bool)
	for _, k := range md.Undecoded() {
		undecoded[k.String()] = true
	}
	seen := make(map[string]int) // key → occurrences so far
	reported := make(map[string]bool)
	for _, k := range md.Keys() {
		ks := k.String()
		n := seen[ks]
		seen[ks]++
		if c.underBad(k) {
			continue
		}
		level, known := c.unknownLevel(k)
		if level < 0 {
			if !undecoded[ks] {
				continue
			}
			level = len(k) - 1
		}
		path := ks
		if e, ok := c.pos.occurrence(ks, n); ok {
			path = e.path
		}
		for range len(k) - 1 - level {
			path = dropName(path)
		}
		if reported[path] {
			continue
		}
		reported[path] = true
		if s := suggest(k[level], known); s != "" {
			c.add(path, "unknown key; did you mean %q?", s)
		} else {
			c.add(path, "unknown key")
		}
	}
}

// unknownLevel returns the index of the first component of k that its table
// does not have, and that table's keys; -1 when every component is known.
func (c *checker) unknownLevel(k toml.Key) (int, map[string]bool) {
	for i := range k {
		keys, ok := c.known[k[:i].String()]
		if !ok {
			return -1, nil // below a leaf: the leaf's type check covers it
		}
		if !keys[k[i]] {
			return i, keys
		}
	}
	return -1, nil
}

func (c *checker) underBad(k toml.Key) bool {
	for i := 1; i <= len(k); i++ {
		if c.bad[k[:i].String()] {
			return true
		}
	}
	return false
}

// dropName removes the last name, with its index, from an indexed path.
func dropName(path string) string {
	if strings.HasSuffix(path, "]") {
		path = parentPath(path)
	}
	return parentPath(path)
}

// suggest returns the known key closest to name, or "" when none is close.
func suggest(name string, known map[string]bool) string {
	keys := make([]string, 0, len(known))
	for k := range known {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	best, bestDist := "", 3 // at most two edits away
	for _, k := range keys {
		if strings.EqualFold(k, name) {
			return k
		}
		if d := editDistance(strings.ToLower(name), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
