package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyreg/caddy-docker-registry/test/caddyrun"
)

// startCaddyfile adapts a Caddyfile, adds what a test run needs (storage
// in a temporary directory, no trust-store install, no HTTP redirect
// listener on port 80, no admin API unless the Caddyfile sets one) and
// starts it. hosts are the TLS server names to wait for, as host:port.
func startCaddyfile(t *testing.T, caddyfile string, waitFor ...string) *x509.CertPool {
	t.Helper()
	cfg, err := caddyrun.Adapt([]byte(caddyfile))
	if err != nil {
		t.Fatal(err)
	}
	return startJSON(t, cfg, waitFor...)
}

func startJSON(t *testing.T, cfg []byte, waitFor ...string) *x509.CertPool {
	t.Helper()
	dataDir := caddyrun.DataDir(t)
	cfg = prepareTestConfig(t, cfg, dataDir)
	if err := caddyrun.Load(cfg); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		if err := caddyrun.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
	return waitForCertificates(t, dataDir, waitFor...)
}

func waitForCertificates(t *testing.T, dataDir string, waitFor ...string) *x509.CertPool {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var roots *x509.CertPool
	for {
		var err error
		roots, err = caddyrun.RootCAs(dataDir)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for _, hostport := range waitFor {
		host, port, _ := strings.Cut(hostport, ":")
		if err := caddyrun.WaitForTLS(ctx, "127.0.0.1:"+port, host, roots); err != nil {
			t.Fatal(err)
		}
	}
	return roots
}

// prepareTestConfig sets the storage, the CA and the redirect policy of a
// Caddy JSON config for a test run.
func prepareTestConfig(t *testing.T, cfg []byte, dataDir string) []byte {
	t.Helper()
	var c map[string]any
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}

	// storage and logs in the test's directory
	c["storage"] = map[string]any{"module": "file_system", "root": dataDir}
	c["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{
		"level":  "ERROR",
		"writer": map[string]any{"output": "file", "filename": filepath.Join(dataDir, "caddy.log")},
	}}}

	admin, _ := c["admin"].(map[string]any)
	if admin == nil {
		admin = map[string]any{"disabled": true}
		c["admin"] = admin
	}
	// tests must not write Caddy's autosave file in the home directory
	admin["config"] = map[string]any{"persist": false}

	// no trust-store install and no redirect listener on port 80
	apps, _ := c["apps"].(map[string]any)
	if apps == nil {
		apps = map[string]any{}
		c["apps"] = apps
	}
	apps["pki"] = map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}}
	if httpApp, ok := apps["http"].(map[string]any); ok {
		servers, _ := httpApp["servers"].(map[string]any)
		for _, s := range servers {
			server := s.(map[string]any)
			server["automatic_https"] = map[string]any{"disable_redirects": true}
		}
	}

	out, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	port, err := caddyrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// readFile reads a file of the repository relative to the test module.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func hostPort(host string, port int) string { return fmt.Sprintf("%s:%d", host, port) }
