// Package caddyrun runs Caddy with the docker_registry module inside the
// current process, for the end-to-end tests and the quickstart. Caddy
// keeps its running configuration in package state, so one process runs
// one configuration at a time.
package caddyrun

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	// the module under test and the standard modules it works with
	_ "github.com/caddyreg/caddy-docker-registry"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// Adapt turns a Caddyfile into Caddy's JSON configuration.
func Adapt(caddyfile []byte) ([]byte, error) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return nil, fmt.Errorf("the caddyfile adapter is not registered")
	}
	cfg, warnings, err := adapter.Adapt(caddyfile, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return nil, fmt.Errorf("adapting Caddyfile: %w", err)
	}
	for _, w := range warnings {
		// formatting warnings are harmless; anything else is a mistake in
		// the configuration under test
		if w.Message != "Caddyfile input is not formatted; run 'caddy fmt --overwrite' to fix inconsistencies" {
			return nil, fmt.Errorf("adapting Caddyfile: %s:%d: %s", w.File, w.Line, w.Message)
		}
	}
	return cfg, nil
}

// Load starts or replaces the running configuration.
func Load(cfg []byte) error {
	return caddy.Load(cfg, true)
}

// Stop stops the running configuration.
func Stop() error {
	return caddy.Stop()
}

// RootCAs returns a pool with the root certificate of Caddy's internal CA
// named "local", kept in the file_system storage at dataDir.
func RootCAs(dataDir string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(RootCertPath(dataDir))
	if err != nil {
		return nil, fmt.Errorf("reading the internal CA root: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("no certificate in %s", RootCertPath(dataDir))
	}
	return pool, nil
}

// RootCertPath is where Caddy's file_system storage at dataDir keeps the
// root certificate of the internal CA.
func RootCertPath(dataDir string) string {
	return filepath.Join(dataDir, "pki", "authorities", "local", "root.crt")
}

// WaitForTLS returns once addr completes a TLS handshake for serverName
// with a certificate from roots, because the internal issuer signs
// certificates in the background after Load returns.
func WaitForTLS(ctx context.Context, addr, serverName string, roots *x509.CertPool) error {
	dialer := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: time.Second},
		Config:    &tls.Config{ServerName: serverName, RootCAs: roots},
	}
	for {
		conn, err := dialer.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no TLS handshake with %s for %s: %w", addr, serverName, err)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// DataDir returns a new directory for Caddy's storage that is removed when
// the test ends. Register it before starting Caddy, so that Caddy stops
// first. The removal retries for a few seconds, because certificate
// maintenance may still finish a write after Stop returns.
func DataDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "caddy-docker-registry-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for os.RemoveAll(dir) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	return dir
}
