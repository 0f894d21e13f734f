package conf

import (
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const trickyTOML = `# comment [[users]]
title = """
[[users]]
name = "not a key"
"""   # still the title
raw = '''
[storage]'''
"quoted.key" = 1
a.b.c = 2

[server]
banner = "a # not a comment [x]" # comment
list = [
  "x", # comment ]
  [1, [2]],
]

[[users]]
name = "u0"

[[users]]   # second
name = "u1"
  [users.extra]
  deep = { x = 1, y = { z = 2 } }

[[users]]
'name' = "u2"
inline = [ { k = 1 },
  { k = 2 } ]
`

func TestScanPositions(t *testing.T) {
	for _, nl := range []string{"\n", "\r\n"} {
		doc := strings.ReplaceAll(trickyTOML, "\n", nl)
		var v map[string]any
		if _, err := toml.Decode(doc, &v); err != nil {
			t.Fatalf("the test document is not TOML: %v", err)
		}
		pos := scanPositions([]byte(doc))
		for path, want := range map[string]int{
			"title":                   2,
			"raw":                     6,
			`"quoted.key"`:            8,
			"a.b.c":                   9,
			"a.b":                     9,
			"server":                  11,
			"server.banner":           12,
			"server.list":             13,
			"users":                   18,
			"users[0]":                18,
			"users[0].name":           19,
			"users[1]":                21,
			"users[1].name":           22,
			"users[1].extra":          23,
			"users[1].extra.deep.y.z": 24,
			"users[2].name":           27,
			"users[2].inline[1].k":    29,
			"users[2].missing":        26, // falls back to its table
			"nothing":                 0,
		} {
			if got := pos.line(path); got != want {
				t.Errorf("line(%s) = %d, want %d (newline %q)", path, got, want, nl)
			}
		}
		if e, ok := pos.occurrence("users.name", 1); !ok || e.path != "users[1].name" || e.line != 22 {
			t.Errorf("occurrence(users.name, 1) = %+v, %v", e, ok)
		}
	}
}

// FuzzScanPositions checks that the scanner survives any document the toml
// library accepts.
func FuzzScanPositions(f *testing.F) {
	f.Add(trickyTOML)
	f.Add("a = [[{b = 1}], {c = 2}]\n[[x.y]]\n[x.y.z]\n")
	f.Add(`k = """a\"""b"""""` + "\n")
	f.Fuzz(func(t *testing.T, doc string) {
		var v map[string]any
		md, err := toml.Decode(doc, &v)
		if err != nil {
			return
		}
		pos := scanPositions([]byte(doc))
		// Every key the library saw is found, in the same order.
		seen := make(map[string]int)
		for _, k := range md.Keys() {
			ks := k.String()
			if _, ok := pos.occurrence(ks, seen[ks]); !ok {
				t.Errorf("occurrence %d of %s not found", seen[ks], ks)
			}
			seen[ks]++
		}
	})
}
