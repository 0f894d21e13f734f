package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync/atomic"
)

// errTLSOff tells ftpserverlib that TLS is not offered (FEAT then omits AUTH TLS).
var errTLSOff = errors.New("TLS is not configured")

// certStore holds the current certificate; SIGHUP swaps it without touching
// sessions. Safe for concurrent use.
type certStore struct {
	cert atomic.Pointer[tls.Certificate]
}

func (c *certStore) load(certFile, keyFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s: %w", certFile, err)
	}
	c.cert.Store(&cert)
	return nil
}

func (c *certStore) clear() { c.cert.Store(nil) }

func (c *certStore) config() *tls.Config {
	if c.cert.Load() == nil {
		return nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if cert := c.cert.Load(); cert != nil {
				return cert, nil
			}
			return nil, errTLSOff
		},
	}
}
