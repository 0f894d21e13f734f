package main

import (
	"strings"
	"testing"
)

func TestParseBytes(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{name: "plain", in: "4096", want: 4096},
		{name: "KiB", in: "4KiB", want: 4 << 10},
		{name: "MiB with space", in: "64 MiB", want: 64 << 20},
		{name: "GiB", in: "1GiB", want: 1 << 30},
		{name: "short unit", in: "2G", want: 2 << 30},
		{name: "bytes unit", in: "10B", want: 10},
		{name: "negative", in: "-1", wantErr: true},
		{name: "fraction", in: "1.5GiB", wantErr: true},
		{name: "garbage", in: "lots", wantErr: true},
		{name: "overflow", in: "9999999999999GiB", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseBytes(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseBytes(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseBytes(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{1 << 30, "1 GiB"},
		{4 << 10, "4 KiB"},
		{1536, "1.50 KiB"},
		{100, "100 B"},
	}
	for _, tt := range tests {
		if got := formatBytes(tt.in); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{name: "empty", in: nil, want: 0},
		{name: "odd", in: []float64{3, 1, 2}, want: 2},
		{name: "even", in: []float64{4, 1, 3, 2}, want: 2.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]float64(nil), tt.in...)
			if got := median(tt.in); got != tt.want {
				t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
			}
			for i := range in {
				if in[i] != tt.in[i] {
					t.Fatalf("median reordered its input: %v", tt.in)
				}
			}
		})
	}
}

func TestSelectTargets(t *testing.T) {
	all, err := selectTargets([]string{"all"})
	if err != nil || len(all) != len(targets()) {
		t.Fatalf("all = %d targets, %v; want %d", len(all), err, len(targets()))
	}
	if _, err := selectTargets([]string{"nope"}); err == nil {
		t.Error("unknown target accepted")
	}
	if _, err := selectTargets(nil); err == nil {
		t.Error("no target accepted")
	}
}

func TestEncodeFTPGateConfig(t *testing.T) {
	b, err := encodeFTPGateConfig(ftpgateConfig{
		Server:  ftpgateServer{Listen: "127.0.0.1:2121", PassivePorts: "30000-30199"},
		Storage: ftpgateStorage{Root: `/tmp/a "b"`, StateDir: "/tmp/s", Fsync: false},
		HTTP:    ftpgateHTTP{Listen: "127.0.0.1:9021"},
		Users:   []ftpgateUser{{Name: "bench", PasswordHash: "$2a$10$x", Role: "admin"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"[server]", `listen = "127.0.0.1:2121"`, `passive_ports = "30000-30199"`,
		"[storage]", `root = "/tmp/a \"b\""`, "fsync = false",
		"[[users]]", `password_hash = "$2a$10$x"`, `role = "admin"`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config lacks %q:\n%s", want, b)
		}
	}
}

func TestVsftpdConfig(t *testing.T) {
	c := vsftpdConfig(2150, portRange{21000, 21199}, "/x/empty")
	for _, want := range []string{
		"listen_port=2150\n", "listen_address=127.0.0.1\n", "pasv_min_port=21000\n",
		"pasv_max_port=21199\n", "pam_service_name=" + vsftpdPAMName + "\n",
		"background=NO\n", "secure_chroot_dir=/x/empty\n",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("vsftpd.conf lacks %q", want)
		}
	}
}
