//go:build !linux

package main

import (
	"errors"
	"os"
)

func maxRSS(ps *os.ProcessState) int64 { return 0 }

func freeInodes(dir string) (uint64, error) { return 0, errors.New("bench runs on Linux only") }
