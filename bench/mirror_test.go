package main

import (
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var hundred []time.Duration
	for i := 100; i >= 1; i-- {
		hundred = append(hundred, time.Duration(i)*time.Millisecond)
	}
	tests := []struct {
		name string
		xs   []time.Duration
		p    float64
		want time.Duration
	}{
		{name: "empty", xs: nil, p: 50, want: 0},
		{name: "one", xs: []time.Duration{7}, p: 99, want: 7},
		{name: "p50 of 100", xs: hundred, p: 50, want: 50 * time.Millisecond},
		{name: "p99 of 100", xs: hundred, p: 99, want: 99 * time.Millisecond},
		{name: "p100 is the max", xs: hundred, p: 100, want: 100 * time.Millisecond},
		{name: "p0 is the min", xs: hundred, p: 0, want: time.Millisecond},
		{name: "p99 of 10 is the max", xs: hundred[90:], p: 99, want: 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.xs, tt.p); got != tt.want {
				t.Errorf("percentile(p%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
	if hundred[0] != 100*time.Millisecond {
		t.Errorf("percentile sorted its input in place")
	}
}

func TestLogValue(t *testing.T) {
	line := `time=2026-01-02T03:04:05Z level=INFO msg="full pass done" component=mirror mapping=m objects=3 note="a=b \"q\"" last=x`
	tests := []struct{ key, want string }{
		{"msg", "full pass done"},
		{"mapping", "m"},
		{"objects", "3"},
		{"note", `a=b "q"`},
		{"last", "x"},
		{"level", "INFO"},
		{"missing", ""},
		{"b", ""}, // inside a quoted value, not a key
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if got := logValue(line, tt.key); got != tt.want {
				t.Errorf("logValue(%q) = %q, want %q", tt.key, got, tt.want)
			}
		})
	}
}

func TestIsPassDoneLine(t *testing.T) {
	tests := []struct {
		name string
		line string
		want bool
	}{
		{"ftpgate's", `level=INFO msg="mirror pass" component=mirror mapping=m trigger=startup result=ok uploaded=0`, true},
		{"ftpgate's start", `level=INFO msg="mirror pass started" component=mirror mapping=m trigger=startup`, false},
		{"ftpgate's subtree", `level=INFO msg="mirror pass" mapping=m trigger=overflow subtree=d1/ result=ok`, false},
		{"done", `level=INFO msg="full pass done" mapping=m`, true},
		{"finished", `level=INFO msg="pass finished" mapping=m puts=0`, true},
		{"complete", `level=INFO msg="start-up pass complete" mapping=m`, true},
		{"other mapping", `level=INFO msg="full pass done" mapping=m2`, false},
		{"start", `level=INFO msg="full pass started" mapping=m`, false},
		{"op", `level=INFO msg=mirrored mapping=m op=put key=done-pass.bin`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isPassDoneLine(tt.line, "m"); got != tt.want {
				t.Errorf("isPassDoneLine(%q) = %v, want %v", tt.line, got, tt.want)
			}
		})
	}
}

func TestRotate(t *testing.T) {
	s := []string{"a", "b", "c"}
	tests := []struct {
		round int
		want  []string
	}{
		{0, []string{"a", "b", "c"}},
		{1, []string{"b", "c", "a"}},
		{2, []string{"c", "a", "b"}},
		{3, []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		if got := rotate(s, tt.round); !slices.Equal(got, tt.want) {
			t.Errorf("rotate(round %d) = %v, want %v", tt.round, got, tt.want)
		}
	}
	if rotate(nil, 1) != nil {
		t.Errorf("rotate(nil) is not nil")
	}
}

func TestGroupThousands(t *testing.T) {
	tests := map[int]string{0: "0", 999: "999", 1000: "1,000", 10000: "10,000", 1000000: "1,000,000"}
	for n, want := range tests {
		if got := groupThousands(n); got != want {
			t.Errorf("groupThousands(%d) = %q, want %q", n, got, want)
		}
	}
}
