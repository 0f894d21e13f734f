package mirror

import (
	"io/fs"
	"strings"
	"testing"

	"ftpgate/conf"
)

func TestUnsafeRel(t *testing.T) {
	tests := []struct {
		rel  string
		want string // "" = safe
	}{
		{"a/b.txt", ""},
		{"ünïcode/ok", ""},
		{"../etc/passwd", "dot segment"},
		{"a/../../b", "dot segment"},
		{"a/./b", "dot segment"},
		{"/abs", "absolute"},
		{"a//b", "empty path segment"},
		{"a/\x00b", "contains NUL"},
		{"bad\xffutf8", "not UTF-8"},
		{"a/.ftpgate-part-0123", "part-file name"},
		{SentinelName, "the sentinel's name"},
		{strings.Repeat("x", 256), "segment longer than 255 bytes"},
	}
	for _, tt := range tests {
		if got := unsafeRel(tt.rel); got != tt.want {
			t.Errorf("unsafeRel(%q) = %q, want %q", tt.rel, got, tt.want)
		}
	}
}

func TestPullPolicy(t *testing.T) {
	p := &Puller{
		storage: conf.Storage{GID: 100, FileMode: 0o664, DirMode: 0o775 | fs.ModeSetgid},
		perms: []conf.Perms{
			{Path: "/srv", UID: -1, GID: 200, FileMode: 0o644, HasFileMode: true},
			{Path: "/srv/minio", UID: 7, GID: 300, FileMode: 0o640, DirMode: 0o750, HasFileMode: true, HasDirMode: true},
		},
	}
	tests := []struct {
		path string
		want pullPolicy
	}{
		{"/other/x", pullPolicy{uid: -1, gid: 100, fileMode: 0o664, dirMode: 0o775 | fs.ModeSetgid}},
		{"/srv/a/x", pullPolicy{uid: -1, gid: 200, fileMode: 0o644, dirMode: 0o775 | fs.ModeSetgid}},
		{"/srv/minio/b/x", pullPolicy{uid: 7, gid: 300, fileMode: 0o640, dirMode: 0o750}},
		{"/srv/minio2/x", pullPolicy{uid: -1, gid: 200, fileMode: 0o644, dirMode: 0o775 | fs.ModeSetgid}},
	}
	for _, tt := range tests {
		if got := p.policy(tt.path); got != tt.want {
			t.Errorf("policy(%s) = %+v, want %+v", tt.path, got, tt.want)
		}
	}
}

func TestMD5ETag(t *testing.T) {
	if _, ok := md5ETag(`"d41d8cd98f00b204e9800998ecf8427e"`); !ok {
		t.Error("a single-part ETag was not taken as an MD5")
	}
	for _, e := range []string{"d41d8cd98f00b204e9800998ecf8427e-2", "", "zz1d8cd98f00b204e9800998ecf8427e"} {
		if _, ok := md5ETag(e); ok {
			t.Errorf("md5ETag(%q) ok", e)
		}
	}
}
