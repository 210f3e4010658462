package dockerregistry

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// uiHandler stands for the Nexus UI behind the same site.
var uiHandler = map[string]any{
	"handler":     "static_response",
	"status_code": 200,
	"body":        "nexus ui",
	"headers":     map[string]any{"X-Ui": []string{"yes"}},
}

func TestPathsOutsideAPIGoToNextHandler(t *testing.T) {
	up := newUpstream(t, "registry", nil)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())},
		caddyOptions{next: []map[string]any{uiHandler}})
	c := tc.client(false)

	for _, path := range []string{"/", "/service/rest/v1/status", "/v2x", "/V2/", "/v3/"} {
		t.Run(path, func(t *testing.T) {
			resp := do(t, c, http.MethodGet, tc.url("mydocker", path), nil, nil)
			if resp.Header.Get("X-Ui") != "yes" {
				t.Errorf("got status %d without the UI's header, want the next handler", resp.StatusCode)
			}
		})
	}
	for _, path := range []string{"/v2/", "/v2/app/manifests/latest", "/v2/../index.html", "/v2/%2e%2e/index.html", "/v2/app/unknown"} {
		t.Run(path, func(t *testing.T) {
			resp := do(t, c, http.MethodGet, tc.url("mydocker", path), nil, nil)
			if resp.Header.Get("X-Ui") != "" {
				t.Errorf("a /v2 request reached the next handler (status %d)", resp.StatusCode)
			}
			if got := resp.Header.Values(apiVersionHeader); len(got) != 1 {
				t.Errorf("%s: got %q, want exactly one", apiVersionHeader, got)
			}
		})
	}
}

func TestPathsOutsideAPIWithoutNextHandlerGet404(t *testing.T) {
	up := newUpstream(t, "registry", nil)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())}, caddyOptions{})

	resp := do(t, tc.client(false), http.MethodGet, tc.url("mydocker", "/index.html"), nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("status: got %d, want 404", resp.StatusCode)
	}
	if n := len(up.received()); n != 0 {
		t.Errorf("upstream received %d requests, want 0", n)
	}
}

func TestAPIv1GetsRegistryError(t *testing.T) {
	up := newUpstream(t, "registry", nil)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())},
		caddyOptions{next: []map[string]any{uiHandler}})

	for _, path := range []string{"/v1", "/v1/_ping", "/v1/repositories/app/images"} {
		t.Run(path, func(t *testing.T) {
			resp := do(t, tc.client(false), http.MethodGet, tc.url("mydocker", path), nil, nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("status: got %d, want 404", resp.StatusCode)
			}
			if code := ociErrorCode(t, resp); code != codeUnsupported {
				t.Errorf("code: got %s, want %s", code, codeUnsupported)
			}
		})
	}
}

func TestModuleErrorsCarryAPIVersion(t *testing.T) {
	up := newUpstream(t, "registry", nil)
	tc := startCaddy(t, map[string]any{
		"handler":     "docker_registry",
		"pull":        proxyTo(up.dial()),
		"read_only":   true,
		"api_version": "registry/2.0-custom",
	}, caddyOptions{})
	cases := []struct {
		method, path string
		header       http.Header
		status       int
	}{
		{http.MethodGet, "/v2/app/../x/manifests/latest", nil, 400},
		{http.MethodGet, "/v2/Bad/manifests/latest", nil, 400},
		{http.MethodGet, "/v2/app/nowhere", nil, 404},
		{http.MethodGet, "/v2/", http.Header{"User-Agent": {"docker/1.4.1"}}, 404},
		{http.MethodPut, "/v2/app/manifests/latest", nil, 405},
		{http.MethodHead, "/v2/app/blobs/uploads/", nil, 405},
		{"TRACE", "/v2/", nil, 405},
	}
	for _, h2 := range []bool{false, true} {
		for _, c := range cases {
			t.Run(protoName(h2)+" "+c.method+" "+c.path, func(t *testing.T) {
				resp := do(t, tc.client(h2), c.method, tc.url("mydocker", c.path), nil, c.header)
				if resp.StatusCode != c.status {
					t.Errorf("status: got %d, want %d", resp.StatusCode, c.status)
				}
				if got := resp.Header.Values(apiVersionHeader); len(got) != 1 || got[0] != "registry/2.0-custom" {
					t.Errorf("%s: got %q, want one registry/2.0-custom", apiVersionHeader, got)
				}
				if c.method == http.MethodHead {
					return
				}
				var body ociErrorBody
				if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Errors) != 1 {
					t.Errorf("body: got %+v (%v), want one OCI error", body, err)
				}
			})
		}
	}
	if n := len(up.received()); n != 0 {
		t.Errorf("upstream received %d requests, want 0", n)
	}
}

func TestPlaceholdersReachUpstreamHeaders(t *testing.T) {
	up := newUpstream(t, "registry", nil)
	target := proxyTo(up.dial())
	target["proxy"].(map[string]any)["headers"] = map[string]any{"request": map[string]any{"set": map[string]any{
		"X-Operation":  []string{"{http.docker_registry.operation}"},
		"X-Repository": []string{"{http.docker_registry.repository}"},
		"X-Reference":  []string{"{http.docker_registry.reference}"},
		"X-Upload":     []string{"{http.docker_registry.upload_id}"},
		"X-Target":     []string{"{http.docker_registry.target}"},
	}}}
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": target}, caddyOptions{})

	cases := []struct {
		method, path string
		want         map[string]string
	}{
		{http.MethodGet, "/v2/team/app/manifests/1.0", map[string]string{
			"X-Operation": "manifest", "X-Repository": "team/app", "X-Reference": "1.0", "X-Target": "pull"}},
		{http.MethodPatch, "/v2/app/blobs/uploads/" + testUpload, map[string]string{
			"X-Operation": "upload", "X-Repository": "app", "X-Upload": testUpload, "X-Target": "pull"}},
		{http.MethodGet, "/v2/", map[string]string{"X-Operation": "ping", "X-Repository": ""}},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			do(t, tc.client(false), c.method, tc.url("mydocker", c.path), nil, nil)
			got := up.last(t).Header
			for name, want := range c.want {
				if got.Get(name) != want {
					t.Errorf("%s: got %q, want %q", name, got.Get(name), want)
				}
			}
		})
	}
}

func TestDebugLogNamesRequestWithoutCredentials(t *testing.T) {
	up := newUpstream(t, "registry", nil)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())},
		caddyOptions{logLevel: "DEBUG"})
	const secret = "Basic c2VjcmV0LXVzZXI6aHVudGVyMg=="

	do(t, tc.client(false), http.MethodGet, tc.url("mydocker", "/v2/team/app/manifests/"+testDigest), nil,
		http.Header{"Authorization": {secret}})
	do(t, tc.client(false), http.MethodGet, tc.url("mydocker", "/v2/"), nil,
		http.Header{"Authorization": {secret}, "User-Agent": {"docker/1.4.1"}})

	// Caddy may write an entry after the client has its response
	var entries []map[string]any
	deadline := time.Now().Add(5 * time.Second)
	for {
		entries = readLogEntries(t, tc.logFile)
		if findLogEntry(entries, "routed registry request") != nil && findLogEntry(entries, "rejected registry request") != nil {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	routed := findLogEntry(entries, "routed registry request")
	if routed == nil {
		t.Fatal("no debug entry for the routed request")
	}
	want := map[string]string{
		"operation": "manifest", "repository": "team/app", "reference": testDigest,
		"target": "pull", "upstream": up.dial(),
	}
	for field, value := range want {
		if got, _ := routed[field].(string); got != value {
			t.Errorf("routed entry %s: got %q, want %q", field, got, value)
		}
	}
	rejected := findLogEntry(entries, "rejected registry request")
	if rejected == nil {
		t.Fatal("no info entry for the rejected old client")
	}
	if rejected["level"] != "info" {
		t.Errorf("rejection level: got %v, want info", rejected["level"])
	}
	raw, _ := os.ReadFile(tc.logFile)
	if strings.Contains(string(raw), "c2VjcmV0LXVzZXI6aHVudGVyMg") {
		t.Error("the log contains the Authorization value")
	}
}

func readLogEntries(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var entries []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			entries = append(entries, e)
		}
	}
	return entries
}

func findLogEntry(entries []map[string]any, msg string) map[string]any {
	for _, e := range entries {
		if e["msg"] == msg {
			return e
		}
	}
	return nil
}
