// Package faults runs Caddy with the docker_registry module in the test
// process and breaks what is around it: upstream connections reset in
// the middle of pushes, clients that disconnect or stall, configuration
// reloads during large transfers. It also checks that no credential
// reaches the logs.
package faults

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/caddyreg/caddy-docker-registry/test/caddyrun"
)

// testCaddy is a running Caddy with one HTTPS server on 127.0.0.1 whose
// certificate, for "mydocker", comes from Caddy's internal CA.
type testCaddy struct {
	port    int
	roots   *x509.CertPool
	dataDir string
	logFile string
	admin   int // admin API port, 0 when the admin API is off
}

// caddyOptions adjust the configuration built by caddyConfig.
type caddyOptions struct {
	// server fields merged into the server object (timeouts, say)
	server map[string]any
	// log level of Caddy's default logger; "" means ERROR
	logLevel string
	// drop log entries instead of writing them to logFile
	discardLogs bool
	// access logs for the server, at the default logger
	accessLogs bool
	// turn on the admin API on a free loopback port
	admin bool
}

// newTestCaddy picks the ports and the storage of a Caddy instance
// without starting it.
func newTestCaddy(t *testing.T, opts caddyOptions) *testCaddy {
	t.Helper()
	dir := caddyrun.DataDir(t)
	tc := &testCaddy{port: freePort(t), dataDir: dir, logFile: filepath.Join(dir, "caddy.log")}
	if opts.admin {
		tc.admin = freePort(t)
	}
	return tc
}

// config returns the Caddy JSON configuration whose only route runs
// handlers.
func (tc *testCaddy) config(opts caddyOptions, handlers ...map[string]any) []byte {
	server := map[string]any{
		"listen":                  []string{"127.0.0.1:" + strconv.Itoa(tc.port)},
		"routes":                  []any{map[string]any{"handle": handlers}},
		"tls_connection_policies": []any{map[string]any{}},
		"automatic_https":         map[string]any{"disable_redirects": true},
	}
	for k, v := range opts.server {
		server[k] = v
	}
	if opts.accessLogs {
		server["logs"] = map[string]any{}
	}

	level := opts.logLevel
	if level == "" {
		level = "ERROR"
	}
	writer := map[string]any{"output": "file", "filename": tc.logFile}
	if opts.discardLogs {
		writer = map[string]any{"output": "discard"}
	}
	admin := map[string]any{"disabled": true}
	if tc.admin != 0 {
		admin = map[string]any{"listen": "127.0.0.1:" + strconv.Itoa(tc.admin)}
	}

	cfg := map[string]any{
		"admin":   admin,
		"storage": map[string]any{"module": "file_system", "root": tc.dataDir},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{
			"level":   level,
			"writer":  writer,
			"encoder": map[string]any{"format": "json"},
		}}},
		"apps": map[string]any{
			"http": map[string]any{"servers": map[string]any{"registry": server}},
			"tls": map[string]any{
				"certificates": map[string]any{"automate": []string{"mydocker"}},
				"automation": map[string]any{"policies": []any{map[string]any{
					"issuers": []any{map[string]any{"module": "internal"}},
				}}},
			},
			"pki": map[string]any{"certificate_authorities": map[string]any{
				"local": map[string]any{"install_trust": false},
			}},
		},
	}
	body, err := json.Marshal(cfg)
	if err != nil {
		panic(err)
	}
	return body
}

// startCaddy starts Caddy with handlers as its only route and stops it
// when the test ends.
func startCaddy(t *testing.T, opts caddyOptions, handlers ...map[string]any) *testCaddy {
	t.Helper()
	tc := newTestCaddy(t, opts)
	if err := caddyrun.Load(tc.config(opts, handlers...)); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		if err := caddyrun.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
	tc.waitForTLS(t)
	return tc
}

// waitForTLS waits for the internal CA's root and the site certificate,
// which Caddy issues in the background after Load returns.
func (tc *testCaddy) waitForTLS(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		roots, err := caddyrun.RootCAs(tc.dataDir)
		if err == nil {
			tc.roots = roots
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal(err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := caddyrun.WaitForTLS(ctx, tc.addr(), "mydocker", tc.roots); err != nil {
		t.Fatal(err)
	}
}

func (tc *testCaddy) addr() string { return "127.0.0.1:" + strconv.Itoa(tc.port) }

// registry returns the host:port that clients use as the registry name.
func (tc *testCaddy) registry() string { return "mydocker:" + strconv.Itoa(tc.port) }

func (tc *testCaddy) url(path string) string { return "https://" + tc.registry() + path }

// transport returns an HTTP transport that trusts the internal CA and
// dials the test server for any host name. http2 selects HTTP/2.
func (tc *testCaddy) transport(http2 bool) *http.Transport {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		TLSClientConfig:    &tls.Config{RootCAs: tc.roots},
		ForceAttemptHTTP2:  http2,
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, tc.addr())
		},
	}
	if !http2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return tr
}

// dialTLS opens an HTTP/1.1 TLS connection for hand-written requests.
func (tc *testCaddy) dialTLS(t *testing.T) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", tc.addr(), &tls.Config{ServerName: "mydocker", RootCAs: tc.roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// proxyTo returns a docker_registry target whose reverse_proxy dials
// address.
func proxyTo(address string) map[string]any {
	return map[string]any{"proxy": map[string]any{
		"handler":   "reverse_proxy",
		"upstreams": []any{map[string]any{"dial": address}},
	}}
}

func freePort(t *testing.T) int {
	t.Helper()
	port, err := caddyrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// waitFor polls condition until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, condition func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !condition() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
