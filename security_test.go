package dockerregistry

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// disguisedAPIPaths are requests for /v2 in encodings, dot and empty
// segments, path parameters and backslashes that a backend such as Nexus
// may normalise back to /v2. The module must handle every one of them.
var disguisedAPIPaths = []string{
	"/v2", "/v2/", "/v2/_catalog", "/v2/token", "/v2/../v2/", "/v2/%2e%2e/", "/%76%32/", "/%2576%2532/",
	"/v2%2f_catalog", "/./v2/", "/ui/../v2/", "/.%2e/v2/", "//v2/", "/%2fv2/", "/v2;x/", "/v2%3b/_catalog",
	`/v2\`, `/\v2/`, "/v2/app/manifests/latest", "/v2/_oci/..;/..;/",
}

// hostileMethods are the methods sent with each disguised path.
var hostileMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "get"}

func TestNoAPIRequestReachesNextHandler(t *testing.T) {
	pull := newUpstream(t, "pull", nil)
	ui := newUpstream(t, "ui", nil)
	tc := startCaddy(t, map[string]any{
		"handler":   "docker_registry",
		"pull":      proxyTo(pull.dial()),
		"read_only": true,
	}, caddyOptions{next: []map[string]any{{
		"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": ui.dial()}},
	}}})
	h2 := tc.client(true)

	for _, p := range disguisedAPIPaths {
		for _, method := range hostileMethods {
			t.Run(method+" "+p, func(t *testing.T) {
				// HTTP/1.1 on the wire, byte for byte
				got := rawExchange(t, tc, method+" "+p+" HTTP/1.1\r\n"+hostHeader+"Content-Length: 0\r\n\r\n", 1)[0]
				if got.Header.Get("X-Upstream") == "ui" {
					t.Errorf("HTTP/1.1: reached the next handler with status %d", got.StatusCode)
				}
				if n := len(got.Header.Values(apiVersionHeader)); n != 1 {
					t.Errorf("HTTP/1.1: got %d %s headers (status %d), want the module's one", n, apiVersionHeader, got.StatusCode)
				}

				// HTTP/2, with the path as the :path pseudo-header
				if strings.HasPrefix(p, "//") || method == "get" {
					return
				}
				req, err := http.NewRequest(method, tc.url("mydocker", "/"), nil)
				if err != nil {
					t.Fatal(err)
				}
				req.URL.Opaque = p
				resp, err := h2.Do(req)
				if err != nil {
					t.Fatalf("HTTP/2: %v", err)
				}
				resp.Body.Close()
				if resp.Header.Get("X-Upstream") == "ui" {
					t.Errorf("HTTP/2: reached the next handler with status %d", resp.StatusCode)
				}
			})
		}
	}
	if n := len(ui.received()); n != 0 {
		t.Errorf("the next handler received %d requests, want none; first: %+v", n, ui.received()[0])
	}
	for _, r := range pull.received() {
		if !strings.HasPrefix(r.RequestURI, "/v2") || strings.Contains(r.RequestURI, "..") {
			t.Errorf("the upstream received %s %s", r.Method, r.RequestURI)
		}
	}
}

func TestRegistryOnlySiteServesNothingElse(t *testing.T) {
	up := newUpstream(t, "registry", nil)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())}, caddyOptions{})

	for _, p := range []string{
		"/", "/index.html", "/service/rest/v1/status", "/service/rest/v1/script", "/v1/_ping", "/v3/", "/V2/",
		"/%2e%2e/etc/passwd", "/../etc/passwd", "/repository/docker-group/v2/", "/favicon.ico",
	} {
		for _, method := range []string{"GET", "POST", "PUT", "DELETE", "OPTIONS"} {
			t.Run(method+" "+p, func(t *testing.T) {
				got := rawExchange(t, tc, method+" "+p+" HTTP/1.1\r\n"+hostHeader+"Content-Length: 0\r\n\r\n", 1)[0]
				if got.StatusCode != http.StatusNotFound {
					t.Errorf("status: got %d, want 404", got.StatusCode)
				}
			})
		}
	}
	if n := len(up.received()); n != 0 {
		t.Errorf("the registry upstream received %d requests, want none", n)
	}
}

// adaptedExample is the part of an adapted example configuration that
// the security checks read.
type adaptedExample struct {
	Admin *struct {
		Disabled bool   `json:"disabled"`
		Listen   string `json:"listen"`
	} `json:"admin"`
	Apps struct {
		HTTP struct {
			Servers map[string]struct {
				Listen   []string `json:"listen"`
				Policies []struct {
					ProtocolMin string `json:"protocol_min"`
					ProtocolMax string `json:"protocol_max"`
				} `json:"tls_connection_policies"`
			} `json:"servers"`
		} `json:"http"`
	} `json:"apps"`
}

func TestExampleConfigsKeepAdminLocalAndTLSModern(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(examplesDir, "Caddyfile.*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("got example Caddyfiles %q (%v), want some", files, err)
	}
	configs := map[string][]byte{}
	for _, file := range files {
		input, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		configs[file] = []byte(adaptCaddyfile(t, file, input))
	}
	jsonFiles, _ := filepath.Glob(filepath.Join(examplesDir, "*.json"))
	for _, file := range jsonFiles {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		// other JSON files, such as dashboards, are no Caddy configs
		var top map[string]json.RawMessage
		if json.Unmarshal(raw, &top) == nil && top["apps"] != nil {
			configs[file] = raw
		}
	}
	if len(configs) <= len(files) {
		t.Errorf("got no JSON Caddy config among %q, want examples/three-port.json", jsonFiles)
	}

	for file, raw := range configs {
		t.Run(filepath.Base(file), func(t *testing.T) {
			var cfg adaptedExample
			if err := json.Unmarshal(raw, &cfg); err != nil {
				t.Fatal(err)
			}
			// Caddy's default admin address is localhost:2019, but the
			// CADDY_ADMIN variable of an image or a shell can change it.
			// An explicit loopback address does not depend on either.
			if cfg.Admin == nil || (!cfg.Admin.Disabled && !isLoopbackListen(cfg.Admin.Listen)) {
				t.Errorf("admin: got %+v, want it disabled or listening on loopback", cfg.Admin)
			}
			if len(cfg.Apps.HTTP.Servers) == 0 {
				t.Fatal("no HTTP servers")
			}
			for name, server := range cfg.Apps.HTTP.Servers {
				for _, policy := range server.Policies {
					// an empty protocol_min is Caddy's default, TLS 1.2
					if policy.ProtocolMin != "" && policy.ProtocolMin != "tls1.2" && policy.ProtocolMin != "tls1.3" {
						t.Errorf("server %s: protocol_min %q, want tls1.2 or later", name, policy.ProtocolMin)
					}
					if policy.ProtocolMax != "" && policy.ProtocolMax != "tls1.2" && policy.ProtocolMax != "tls1.3" {
						t.Errorf("server %s: protocol_max %q, want tls1.2 or later", name, policy.ProtocolMax)
					}
				}
			}
		})
	}

	// the image and the compose file keep the admin API inside the
	// container
	compose, err := os.ReadFile(filepath.Join(examplesDir, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?m)^\s*-\s*"?[^#\n]*2019`).Match(compose) {
		t.Error("docker-compose.yml publishes port 2019, want the admin API unpublished")
	}
	dockerfile, err := os.ReadFile("xcaddy.Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, forbidden := range []string{"CADDY_ADMIN", "EXPOSE", "--address", "0.0.0.0"} {
		if strings.Contains(string(dockerfile), forbidden) {
			t.Errorf("xcaddy.Dockerfile contains %q, want the base image's admin settings with the Caddyfile's loopback address", forbidden)
		}
	}
}

// isLoopbackListen reports whether an admin listen address is on the
// loopback interface or a Unix socket.
func isLoopbackListen(listen string) bool {
	if strings.HasPrefix(listen, "unix/") {
		return true
	}
	host, _, err := net.SplitHostPort(strings.TrimPrefix(listen, "tcp/"))
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func TestIsLoopbackListen(t *testing.T) {
	cases := map[string]bool{
		"localhost:2019": true, "127.0.0.1:2019": true, "[::1]:2019": true, "unix//run/caddy.sock": true,
		"tcp/localhost:2019": true, ":2019": false, "0.0.0.0:2019": false, "[::]:2019": false,
		"mydocker:2019": false, "10.0.0.5:2019": false, "": false,
	}
	for listen, want := range cases {
		if got := isLoopbackListen(listen); got != want {
			t.Errorf("isLoopbackListen(%q): got %v, want %v", listen, got, want)
		}
	}
}
