package storage

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestSendFile downloads through File.WriteTo over loopback TCP: from an
// offset, to a client that stalls longer than sendStall, to one that hangs
// up, and with the connection closed by another goroutine meanwhile.
func TestSendFile(t *testing.T) {
	e := newEnv(t, nil)
	data := make([]byte, 3*sendCall+12345)
	for i := range data {
		data[i] = byte(i * 29)
	}
	e.write("u/big", string(data))
	f := e.jail("u", "u", false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// connect runs client on a new connection and returns the server's end.
	connect := func(client func(c net.Conn)) net.Conn {
		t.Helper()
		go func() {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			client(c)
		}()
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// serve sends /big from offset to one client.
	serve := func(offset int64, client func(c net.Conn)) (int64, error) {
		t.Helper()
		c := connect(client)
		defer c.Close()
		file, err := f.OpenRead("/big", offset)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		return file.WriteTo(c)
	}

	for _, offset := range []int64{0, 1, sendCall + 7} {
		got := make(chan []byte, 1)
		n, err := serve(offset, func(c net.Conn) {
			b, _ := io.ReadAll(c)
			got <- b
		})
		if err != nil || n != int64(len(data))-offset {
			t.Fatalf("offset %d: WriteTo = %d, %v", offset, n, err)
		}
		// serve closes the connection once WriteTo has returned.
		if b := <-got; !bytes.Equal(b, data[offset:]) {
			t.Fatalf("offset %d: client got %d bytes, not the file", offset, len(b))
		}
	}

	t.Run("stalling client", func(t *testing.T) {
		got := make(chan []byte, 1)
		n, err := serve(0, func(c net.Conn) {
			time.Sleep(3 * sendStall)
			b := make([]byte, 1000)
			io.ReadFull(c, b)
			time.Sleep(3 * sendStall)
			rest, _ := io.ReadAll(c)
			got <- append(b, rest...)
		})
		if err != nil || n != int64(len(data)) {
			t.Fatalf("WriteTo = %d, %v", n, err)
		}
		if b := <-got; !bytes.Equal(b, data) {
			t.Fatal("client did not get the file")
		}
	})

	t.Run("client hangs up", func(t *testing.T) {
		n, err := serve(0, func(c net.Conn) {
			io.ReadFull(c, make([]byte, 1000))
			c.(*net.TCPConn).SetLinger(0) // reset, so the sender fails at once
		})
		if err == nil || n >= int64(len(data)) {
			t.Fatalf("WriteTo = %d, %v; want an error", n, err)
		}
	})

	t.Run("closed meanwhile", func(t *testing.T) {
		hold := make(chan struct{})
		defer close(hold)
		c := connect(func(net.Conn) { <-hold }) // never reads
		file, err := f.OpenRead("/big", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		go func() {
			time.Sleep(3 * sendStall)
			c.Close()
		}()
		start := time.Now()
		_, err = file.WriteTo(c)
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("WriteTo = %v, want net.ErrClosed", err)
		}
		if d := time.Since(start); d > 3*sendStall+time.Second {
			t.Fatalf("WriteTo returned %v after the connection was closed", d-3*sendStall)
		}
	})
}
