package conf

import (
	"bytes"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// The toml library records key positions without array indices, so every
// [[users]] entry overwrites the previous one's, and it does not export them.
// Error messages need the line of users[2].home, not of the last user's home,
// so this file finds them itself in a document the library has already
// accepted. It only has to follow the structure of valid TOML; anything it
// does not understand makes it skip to the next line, which at worst costs
// a line number, never a wrong verdict.

// seg is one component of a key path; idx is the element of an array of
// tables, -1 for a plain table or value.
type seg struct {
	name string
	idx  int
}

// keyEntry is one explicit definition in the document: a table header, an
// array-of-tables header, or a key/value pair.
type keyEntry struct {
	key  string // as toml.Key.String() prints it: no indices
	path string // with indices: users[2].home
	line int
}

// positions maps the key paths of one document to lines.
type positions struct {
	lines   map[string]lineInfo   // indexed path → line of its definition
	entries map[string][]keyEntry // unindexed key → its definitions, in order
}

type lineInfo struct {
	line     int
	explicit bool // a header or key/value, not a table implied by one
}

// line returns the line of path, or of its closest parent that has one, or
// 0 when none does.
func (p *positions) line(path string) int {
	for path != "" {
		if li, ok := p.lines[path]; ok {
			return li.line
		}
		path = parentPath(path)
	}
	return 0
}

// occurrence returns the n-th definition of the unindexed key k.
func (p *positions) occurrence(k string, n int) (keyEntry, bool) {
	es := p.entries[k]
	if n < len(es) {
		return es[n], true
	}
	return keyEntry{}, false
}

// parentPath strips the last component of an indexed path: "users[2].home"
// → "users[2]" → "users" → "".
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i > 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

func formatPath(segs []seg) string {
	var b strings.Builder
	for i, s := range segs {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(toml.Key{s.name}.String())
		if s.idx >= 0 {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.idx))
			b.WriteByte(']')
		}
	}
	return b.String()
}

func plainKey(segs []seg) string {
	k := make(toml.Key, len(segs))
	for i, s := range segs {
		k[i] = s.name
	}
	return k.String()
}

// scanPositions indexes the keys of a document that toml.Decode accepted.
func scanPositions(data []byte) *positions {
	s := &scanner{
		b:      data,
		counts: make(map[string]int),
		pos: &positions{
			lines:   make(map[string]lineInfo),
			entries: make(map[string][]keyEntry),
		},
	}
	for i, c := range data {
		if c == '\n' {
			s.newlines = append(s.newlines, i)
		}
	}
	s.document()
	return s.pos
}

type scanner struct {
	b        []byte
	i        int
	newlines []int          // offsets of '\n', for lineAt
	ctx      []seg          // the table the last header opened
	counts   map[string]int // array of tables (indexed path) → elements seen
	pos      *positions
}

func (s *scanner) lineAt(off int) int {
	return sort.SearchInts(s.newlines, off) + 1
}

func (s *scanner) eof() bool { return s.i >= len(s.b) }

func (s *scanner) peek(prefix string) bool {
	return bytes.HasPrefix(s.b[s.i:], []byte(prefix))
}

// skipBlank skips spaces and tabs, and with nl also newlines and comments.
func (s *scanner) skipBlank(nl bool) {
	for !s.eof() {
		switch s.b[s.i] {
		case ' ', '\t', '\r':
			s.i++
		case '\n':
			if !nl {
				return
			}
			s.i++
		case '#':
			if !nl {
				return
			}
			s.skipLine()
		default:
			return
		}
	}
}

func (s *scanner) skipLine() {
	if j := bytes.IndexByte(s.b[s.i:], '\n'); j >= 0 {
		s.i += j + 1
		return
	}
	s.i = len(s.b)
}

func (s *scanner) document() {
	for {
		s.skipBlank(true)
		if s.eof() {
			return
		}
		start := s.i
		switch {
		case s.peek("[["):
			s.i += 2
			s.header(start, true)
		case s.peek("["):
			s.i++
			s.header(start, false)
		default:
			s.keyValue(s.ctx)
		}
		// The rest of the line is blank or a comment in valid TOML; after
		// something unexpected this resynchronises on the next line.
		s.skipLine()
	}
}

func (s *scanner) header(start int, array bool) {
	names := s.keyNames()
	if len(names) == 0 {
		return
	}
	path := make([]seg, 0, len(names))
	for i, n := range names {
		sg := seg{name: n, idx: -1}
		arrKey := formatPath(append(path, sg))
		last := i == len(names)-1
		switch c, ok := s.counts[arrKey]; {
		case last && array:
			s.counts[arrKey] = c + 1
			sg.idx = c
		case ok:
			sg.idx = c - 1
		}
		if last && array {
			s.mark(append(path, seg{name: n, idx: -1}), start, false)
		}
		path = append(path, sg)
		if !last {
			s.mark(path, start, false)
		}
	}
	s.ctx = path
	s.define(path, start)
}

// keyValue reads "a.b = value" whose table is ctx.
func (s *scanner) keyValue(ctx []seg) {
	start := s.i
	names := s.keyNames()
	s.skipBlank(false)
	if len(names) == 0 || s.eof() || s.b[s.i] != '=' {
		return
	}
	s.i++
	path := append([]seg(nil), ctx...)
	for i, n := range names {
		path = append(path, seg{name: n, idx: -1})
		if i < len(names)-1 {
			s.mark(path, start, false)
		}
	}
	s.define(path, start)
	s.skipBlank(false)
	s.value(path)
}

// define records an explicit header or key.
func (s *scanner) define(path []seg, off int) {
	p := formatPath(path)
	k := plainKey(path)
	line := s.lineAt(off)
	s.pos.entries[k] = append(s.pos.entries[k], keyEntry{key: k, path: p, line: line})
	s.mark(path, off, true)
}

// mark records the line of path unless a better one is known: an explicit
// definition beats an implicit mention, and the first of each kind wins.
func (s *scanner) mark(path []seg, off int, explicit bool) {
	p := formatPath(path)
	if li, ok := s.pos.lines[p]; ok && (li.explicit || !explicit) {
		return
	}
	s.pos.lines[p] = lineInfo{line: s.lineAt(off), explicit: explicit}
}

// keyNames reads a dotted key: bare, "basic" or 'literal' parts.
func (s *scanner) keyNames() []string {
	var names []string
	for {
		s.skipBlank(false)
		if s.eof() {
			return names
		}
		switch c := s.b[s.i]; {
		case c == '"':
			names = append(names, s.basicKey())
		case c == '\'':
			j := bytes.IndexByte(s.b[s.i+1:], '\'')
			if j < 0 {
				return nil
			}
			names = append(names, string(s.b[s.i+1:s.i+1+j]))
			s.i += j + 2
		case isBare(c):
			j := s.i
			for j < len(s.b) && isBare(s.b[j]) {
				j++
			}
			names = append(names, string(s.b[s.i:j]))
			s.i = j
		default:
			return names
		}
		s.skipBlank(false)
		if s.eof() || s.b[s.i] != '.' {
			// Also consumes the closing brackets of a header.
			for !s.eof() && s.b[s.i] == ']' {
				s.i++
			}
			return names
		}
		s.i++
	}
}

func (s *scanner) basicKey() string {
	j := s.i + 1
	for j < len(s.b) && s.b[j] != '"' && s.b[j] != '\n' {
		if s.b[j] == '\\' {
			j++
		}
		j++
	}
	raw := string(s.b[s.i:min(j+1, len(s.b))])
	s.i = min(j+1, len(s.b))
	if u, err := strconv.Unquote(raw); err == nil {
		return u
	}
	return strings.Trim(raw, `"`)
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// value skips one value; tables inside it are indexed under path.
func (s *scanner) value(path []seg) {
	if s.eof() {
		return
	}
	switch {
	case s.peek(`"""`):
		s.multiline(`"""`, true)
	case s.peek(`'''`):
		s.multiline(`'''`, false)
	case s.b[s.i] == '"':
		s.i++
		for !s.eof() && s.b[s.i] != '"' && s.b[s.i] != '\n' {
			if s.b[s.i] == '\\' {
				s.i++
			}
			s.i++
		}
		s.i = min(s.i+1, len(s.b))
	case s.b[s.i] == '\'':
		s.i++
		for !s.eof() && s.b[s.i] != '\'' && s.b[s.i] != '\n' {
			s.i++
		}
		s.i = min(s.i+1, len(s.b))
	case s.b[s.i] == '[':
		s.array(path)
	case s.b[s.i] == '{':
		s.inlineTable(path)
	default:
		for !s.eof() && !strings.ContainsRune(",]}\n#", rune(s.b[s.i])) {
			s.i++
		}
	}
}

func (s *scanner) multiline(delim string, escapes bool) {
	s.i += len(delim)
	for !s.eof() {
		if escapes && s.b[s.i] == '\\' {
			s.i += 2
			continue
		}
		if s.peek(delim) {
			// Up to two quotes right before the delimiter belong to the string.
			n := 0
			for s.i+n < len(s.b) && s.b[s.i+n] == delim[0] && n < len(delim)+2 {
				n++
			}
			s.i += n
			return
		}
		s.i++
	}
}

func (s *scanner) array(path []seg) {
	s.i++
	elem := 0
	for {
		s.skipBlank(true)
		if s.eof() {
			return
		}
		switch s.b[s.i] {
		case ']':
			s.i++
			return
		case ',':
			s.i++
			continue
		case '{':
			ep := append([]seg(nil), path...)
			ep[len(ep)-1].idx = elem
			s.mark(ep, s.i, true)
			s.inlineTable(ep)
		default:
			// A scalar, or a nested array: tables in that are indexed by
			// their place in the inner array, which is wrong but rare, and
			// only costs a line number.
			before := s.i
			s.value(path)
			if s.i == before {
				s.i++ // never loop on something unexpected
			}
		}
		elem++
	}
}

func (s *scanner) inlineTable(path []seg) {
	s.i++
	for {
		s.skipBlank(true)
		if s.eof() {
			return
		}
		switch s.b[s.i] {
		case '}':
			s.i++
			return
		case ',':
			s.i++
		default:
			before := s.i
			s.keyValue(path)
			if s.i == before {
				s.i++
			}
		}
	}
}
