package dockerregistry

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// waitForLogEntries reads the log file at path until it has at least n
// entries with the message msg, and returns all entries. Caddy writes an
// access log entry, and the module its debug entry, after the response
// went out, so the client can be faster than the log.
func waitForLogEntries(t *testing.T, path, msg string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		entries := readLogEntries(t, path)
		if countLogEntries(entries, msg) >= n || time.Now().After(deadline) {
			return entries
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func countLogEntries(entries []map[string]any, msg string) int {
	n := 0
	for _, e := range entries {
		if e["msg"] == msg {
			n++
		}
	}
	return n
}

func TestRejectionLogIsSampled(t *testing.T) {
	up := newUpstream(t, "registry", nil)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())},
		caddyOptions{logLevel: "INFO"})
	c := tc.client(true)

	const requests = 1000
	for range requests {
		resp := do(t, c, http.MethodGet, tc.url("mydocker", "/v2/"), nil, http.Header{"User-Agent": {"docker/1.4.1"}})
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status: got %d, want 404", resp.StatusCode)
		}
	}

	// the sampler passes the first 5 entries of each second and then one
	// in 100, so 1000 rejections within a few seconds give about 15 to 30
	entries := readLogEntries(t, tc.logFile)
	n := countLogEntries(entries, "rejected registry request")
	if n < 5 {
		t.Errorf("rejection entries: got %d, want at least the first 5", n)
	}
	if n > 60 {
		t.Errorf("rejection entries: got %d for %d rejections, want at most 60", n, requests)
	}

	first := findLogEntry(entries, "rejected registry request")
	if first == nil {
		t.Fatal("no rejection entry")
	}
	want := map[string]any{
		"level": "info", "method": "GET", "uri": "/v2/", "user_agent": "docker/1.4.1", "remote_ip": "127.0.0.1",
		"operation": "invalid", "status": float64(404), "code": "UNSUPPORTED", "rejection": "old_client",
	}
	for field, value := range want {
		if first[field] != value {
			t.Errorf("rejection entry %s: got %v, want %v", field, first[field], value)
		}
	}
	if port, _ := first["remote_port"].(string); port == "" {
		t.Errorf("rejection entry remote_port: got %v, want the client's port", first["remote_port"])
	}
}

func TestDebugLogHasOneEntryPerRoutedRequest(t *testing.T) {
	pull := newUpstream(t, "pull", nil)
	closed := freePort(t) // nothing listens here after freePort returns
	tc := startCaddy(t, map[string]any{
		"handler": "docker_registry",
		"pull":    proxyTo(pull.dial()),
		"push":    proxyTo("127.0.0.1:" + closed),
	}, caddyOptions{logLevel: "DEBUG"})
	c := tc.client(false)

	paths := []string{"/v2/", "/v2/_catalog", "/v2/team/app/tags/list", "/v2/team/app/manifests/1.0", "/v2/team/app/blobs/" + testDigest}
	for _, p := range paths {
		resp := do(t, c, http.MethodGet, tc.url("mydocker", p), nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: got status %d, want 200", p, resp.StatusCode)
		}
	}
	resp := do(t, c, http.MethodPost, tc.url("mydocker", "/v2/team/app/blobs/uploads/"), nil, nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("POST to the closed push target: got status %d, want 502", resp.StatusCode)
	}

	entries := waitForLogEntries(t, tc.logFile, "routed registry request", len(paths)+1)
	var routed []map[string]any
	for _, e := range entries {
		if e["msg"] == "routed registry request" {
			routed = append(routed, e)
		}
	}
	if len(routed) != len(paths)+1 {
		t.Fatalf("routed registry request entries: got %d, want %d", len(routed), len(paths)+1)
	}
	for i, e := range routed {
		if e["level"] != "debug" {
			t.Errorf("entry %d: level got %v, want debug", i, e["level"])
		}
		for _, field := range []string{"method", "operation", "target", "upstream", "status", "duration"} {
			if _, ok := e[field]; !ok {
				t.Errorf("entry %d (%v): field %s is missing", i, e["operation"], field)
			}
		}
	}
	// the entry of a failed round trip has the status the client got
	failed := routed[len(routed)-1]
	if failed["operation"] != "upload" || failed["status"] != float64(http.StatusBadGateway) || failed["error"] == nil {
		t.Errorf("entry of the failed upload: got operation %v, status %v, error %v; want upload, 502 and an error",
			failed["operation"], failed["status"], failed["error"])
	}
}

func TestLogsNeverContainCredentials(t *testing.T) {
	const (
		user     = "ci-user"
		password = "hunter2-registry-password"
		token    = "eyJhbGciOiJFUzI1NiJ9.registry-bearer-token-value"
	)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	pull := newUpstream(t, "pull", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/token" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"token":"`+token+`","access_token":"`+token+`"}`)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/v2/token",service="registry"`)
			w.WriteHeader(http.StatusUnauthorized)
		}
	})
	closed := freePort(t) // nothing listens here after freePort returns
	tc := startCaddy(t, map[string]any{
		"handler": "docker_registry",
		"pull":    proxyTo(pull.dial()),
		"push":    proxyTo("127.0.0.1:" + closed),
	}, caddyOptions{
		server:   map[string]any{"logs": map[string]any{}},
		logLevel: "DEBUG",
	})
	c := tc.client(false)
	withBasic := http.Header{"Authorization": {basic}}
	withBearer := http.Header{"Authorization": {"Bearer " + token}}

	// a login: challenge, token request with the password, authorised pull
	cases := []struct {
		method, path string
		header       http.Header
		status       int
	}{
		{http.MethodGet, "/v2/", nil, http.StatusUnauthorized},
		{http.MethodGet, "/v2/token?account=" + user + "&service=registry", withBasic, http.StatusOK},
		{http.MethodGet, "/v2/team/app/manifests/1.0", withBearer, http.StatusOK},
		// an error-level entry for the failed round trip to the push target
		{http.MethodPost, "/v2/team/app/blobs/uploads/", withBearer, http.StatusBadGateway},
		// an info-level entry for a rejection
		{http.MethodGet, "/v2/", http.Header{"Authorization": {basic}, "User-Agent": {"docker/1.4.1"}}, http.StatusNotFound},
		{"TRACE", "/v2/", withBearer, http.StatusMethodNotAllowed},
	}
	for _, tt := range cases {
		resp := do(t, c, tt.method, tc.url("mydocker", tt.path), nil, tt.header)
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s: got status %d, want %d", tt.method, tt.path, resp.StatusCode, tt.status)
		}
	}

	entries := waitForLogEntries(t, tc.logFile, "handled request", len(cases))
	for _, want := range []struct{ level, msg string }{
		{"debug", "routed registry request"},
		{"info", "rejected registry request"},
		{"info", "handled request"},
		{"error", "upstream round trip failed"},
		{"error", "handled request"},
	} {
		found := false
		for _, e := range entries {
			found = found || (e["level"] == want.level && e["msg"] == want.msg)
		}
		if !found {
			t.Errorf("no %s entry %q, so that level went unchecked", want.level, want.msg)
		}
	}

	raw, err := os.ReadFile(tc.logFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string]string{
		"Basic credentials": strings.TrimPrefix(basic, "Basic "),
		"password":          password,
		"bearer token":      "registry-bearer-token-value",
	} {
		if i := bytes.Index(raw, []byte(secret)); i >= 0 {
			line := raw[bytes.LastIndexByte(raw[:i], '\n')+1:]
			if end := bytes.IndexByte(line, '\n'); end >= 0 {
				line = line[:end]
			}
			t.Errorf("the log contains the %s in: %s", name, line)
		}
	}
}
