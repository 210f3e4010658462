package dockerregistry

import (
	"bytes"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// accessLogEntry returns the access log entry ("handled request") of the
// request with uri, and fails the test unless there is exactly one.
func accessLogEntry(t *testing.T, entries []map[string]any, method, uri string) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, e := range entries {
		if e["msg"] != "handled request" {
			continue
		}
		request, _ := e["request"].(map[string]any)
		if request["uri"] == uri && request["method"] == method {
			found = append(found, e)
		}
	}
	if len(found) != 1 {
		t.Fatalf("access log entries for %s %s: got %d, want 1", method, uri, len(found))
	}
	return found[0]
}

// checkRegistryFields compares the "docker_registry" object of an access
// log entry with want; nil want means that the entry has no such object.
func checkRegistryFields(t *testing.T, entry map[string]any, want map[string]string) {
	t.Helper()
	raw, present := entry["docker_registry"]
	if want == nil {
		if present {
			t.Errorf("docker_registry: got %v, want no such field", raw)
		}
		return
	}
	got, ok := raw.(map[string]any)
	if !ok {
		t.Fatalf("docker_registry: got %v, want an object", raw)
	}
	for key, value := range want {
		if got[key] != value {
			t.Errorf("docker_registry.%s: got %v, want %q", key, got[key], value)
		}
	}
	for key := range got {
		if _, expected := want[key]; !expected {
			t.Errorf("docker_registry.%s: got %v, want no such field", key, got[key])
		}
	}
}

func TestAccessLogCarriesRegistryFields(t *testing.T) {
	pull := newUpstream(t, "pull", nil)
	push := newUpstream(t, "push", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	tc := startCaddy(t, map[string]any{
		"handler": "docker_registry",
		"pull":    proxyTo(pull.dial()),
		"push":    proxyTo(push.dial()),
	}, caddyOptions{
		next:     []map[string]any{uiHandler},
		server:   map[string]any{"logs": map[string]any{}},
		logLevel: "INFO",
	})
	c := tc.client(true)
	const bearer = "Bearer eyJhbGciOiJSUzI1NiJ9.access-log-test-token"

	manifest := "/v2/team/app/manifests/1.0"
	upload := "/v2/team/app/blobs/uploads/" + testUpload
	do(t, c, http.MethodGet, tc.url("mydocker", manifest), nil, http.Header{"Authorization": {bearer}})
	do(t, c, http.MethodPatch, tc.url("mydocker", upload), strings.NewReader("layer"), http.Header{"Authorization": {bearer}})
	do(t, c, http.MethodGet, tc.url("mydocker", "/v2/"), nil, nil)
	do(t, c, "TRACE", tc.url("mydocker", "/v2/team/app/tags/list"), nil, nil)
	do(t, c, http.MethodGet, tc.url("mydocker", "/service/rest/v1/status"), nil, nil)

	entries := waitForLogEntries(t, tc.logFile, "handled request", 5)
	checkRegistryFields(t, accessLogEntry(t, entries, http.MethodGet, manifest), map[string]string{
		"operation": "manifest", "repository": "team/app", "reference": "1.0", "target": "pull", "upstream": pull.dial(),
	})
	checkRegistryFields(t, accessLogEntry(t, entries, http.MethodPatch, upload), map[string]string{
		"operation": "upload", "repository": "team/app", "upload_id": testUpload, "target": "push", "upstream": push.dial(),
	})
	checkRegistryFields(t, accessLogEntry(t, entries, http.MethodGet, "/v2/"), map[string]string{
		"operation": "ping", "target": "pull", "upstream": pull.dial(),
	})
	// a rejection names what the classifier found and no upstream
	checkRegistryFields(t, accessLogEntry(t, entries, "TRACE", "/v2/team/app/tags/list"), map[string]string{
		"operation": "invalid", "target": "module",
	})
	checkRegistryFields(t, accessLogEntry(t, entries, http.MethodGet, "/service/rest/v1/status"), nil)

	raw, err := os.ReadFile(tc.logFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("access-log-test-token")) {
		t.Error("the log contains the bearer token")
	}
}

func TestAccessLogAppendCopiesPlaceholders(t *testing.T) {
	pull := newUpstream(t, "pull", nil)
	logAppend := func(key, value string) map[string]any {
		return map[string]any{"handler": "log_append", "key": key, "value": value}
	}
	// log_append runs before docker_registry, as the Caddyfile orders
	// them, and adds its field once the handlers after it returned
	tc := startCaddy(t, logAppend("docker_registry_repository", "{http.docker_registry.repository}"), caddyOptions{
		next: []map[string]any{
			logAppend("docker_registry_operation", "{http.docker_registry.operation}"),
			{"handler": "docker_registry", "pull": proxyTo(pull.dial())},
			uiHandler,
		},
		server:   map[string]any{"logs": map[string]any{}},
		logLevel: "INFO",
	})

	path := "/v2/library/base/blobs/" + testDigest
	do(t, tc.client(false), http.MethodGet, tc.url("mydocker", path), nil, nil)
	do(t, tc.client(false), http.MethodGet, tc.url("mydocker", "/index.html"), nil, nil)

	entries := waitForLogEntries(t, tc.logFile, "handled request", 2)
	entry := accessLogEntry(t, entries, http.MethodGet, path)
	for field, want := range map[string]string{"docker_registry_repository": "library/base", "docker_registry_operation": "blob"} {
		if entry[field] != want {
			t.Errorf("%s: got %v, want %q", field, entry[field], want)
		}
	}

	// outside /v2 the placeholders are unset, and the fields are null
	outside := accessLogEntry(t, entries, http.MethodGet, "/index.html")
	for _, field := range []string{"docker_registry_repository", "docker_registry_operation"} {
		if value, ok := outside[field]; !ok || value != nil {
			t.Errorf("%s outside /v2: got %v (present %v), want null", field, value, ok)
		}
	}
}

// TestExampleCaddyfileLoggingWritesRegistryFields runs
// examples/Caddyfile.logging with three changes. Its admin line becomes
// the test's global options: storage in a temporary directory, no admin
// API, no trust store installation, HTTPS on a free loopback port and no
// redirect listener. The log file moves to a temporary directory, and
// the nexus addresses point at the test's upstreams.
func TestExampleCaddyfileLoggingWritesRegistryFields(t *testing.T) {
	pull := newUpstream(t, "pull", nil)
	push := newUpstream(t, "push", nil)
	ui := newUpstream(t, "ui", nil)
	dir := tempDir(t)
	port := freePort(t)
	logFile := filepath.Join(dir, "registry-access.log")

	example, err := os.ReadFile("examples/Caddyfile.logging")
	if err != nil {
		t.Fatal(err)
	}
	input := strings.NewReplacer(
		"\tadmin localhost:2019\n", "\tadmin off\n\tpersist_config off\n\tstorage file_system "+dir+
			"\n\tskip_install_trust\n\tdefault_bind 127.0.0.1\n\thttps_port "+port+"\n\tauto_https disable_redirects\n",
		"/var/log/caddy/registry-access.log", logFile,
		"nexus:8082", pull.dial(),
		"nexus:8083", push.dial(),
		"nexus:8081", ui.dial(),
	).Replace(string(example))
	for _, original := range []string{"localhost:2019", "/var/log/caddy", "nexus:"} {
		if strings.Contains(input, original) {
			t.Fatalf("examples/Caddyfile.logging has %s in a place the test does not change", original)
		}
	}

	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), map[string]any{"filename": "Caddyfile.logging"})
	if err != nil {
		t.Fatalf("adapting examples/Caddyfile.logging: %v", err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading examples/Caddyfile.logging: %v", err)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
	tc := &testCaddy{addr: "127.0.0.1:" + port, port: port}
	tc.rootCAs = loadRootCAs(t, dir)
	tc.waitForCertificate(t, "mydocker")

	path := "/v2/team/app/manifests/" + testDigest
	do(t, tc.client(false), http.MethodHead, tc.url("mydocker", path), nil, nil)

	entry := accessLogEntry(t, waitForLogEntries(t, logFile, "handled request", 1), http.MethodHead, path)
	if entry["logger"] != "http.log.access.log0" {
		t.Errorf("logger: got %v, want http.log.access.log0", entry["logger"])
	}
	checkRegistryFields(t, entry, map[string]string{
		"operation": "manifest", "repository": "team/app", "reference": testDigest, "target": "pull", "upstream": pull.dial(),
	})
}

// loadRootCAs returns a pool with the root certificate of Caddy's
// internal CA in the file_system storage at dir.
func loadRootCAs(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	rootPEM, err := os.ReadFile(filepath.Join(dir, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatalf("reading internal CA root: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootPEM) {
		t.Fatal("no certificate in the internal CA root file")
	}
	return pool
}
