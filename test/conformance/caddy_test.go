package conformance

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyreg/caddy-docker-registry/test/caddyrun"
)

// startCaddy runs a Caddyfile site block on 127.0.0.1 with Caddy's storage
// in a temporary directory, waits until siteName on port completes a TLS
// handshake, and returns the path of the internal CA's root certificate.
// The global options keep the run to itself: no admin API, no autosave of
// the config in the user's home, no trust-store install, no HTTP redirect
// listener, logs in the data directory.
func startCaddy(t *testing.T, siteName string, port int, siteBody string) string {
	t.Helper()
	dataDir := caddyrun.DataDir(t)
	caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
	default_bind 127.0.0.1
	storage file_system %q
	skip_install_trust
	auto_https disable_redirects
	log {
		output file %q
		level ERROR
	}
}

%s:%d {
%s
}
`, dataDir, filepath.Join(dataDir, "caddy.log"), siteName, port, siteBody)

	cfg, err := caddyrun.Adapt([]byte(caddyfile))
	if err != nil {
		t.Fatal(err)
	}
	if err := caddyrun.Load(cfg); err != nil {
		t.Fatalf("loading the Caddy config: %v", err)
	}
	t.Cleanup(func() {
		if err := caddyrun.Stop(); err != nil {
			t.Errorf("stopping Caddy: %v", err)
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	rootPath := caddyrun.RootCertPath(dataDir)
	for {
		roots, err := caddyrun.RootCAs(dataDir)
		if err == nil {
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			if err := caddyrun.WaitForTLS(ctx, addr, siteName, roots); err != nil {
				t.Fatal(err)
			}
			return rootPath
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the internal CA wrote no root certificate: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
