package dockerregistry

import (
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestRejected405ListsAllowedMethods(t *testing.T) {
	up := newUpstream(t, "registry", nil)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial()), "read_only": true}, caddyOptions{})
	cases := []struct {
		method, path, allow string
	}{
		{"TRACE", "/v2/app/manifests/latest", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"},
		{http.MethodPut, "/v2/app/manifests/latest", "GET, HEAD, OPTIONS"},
		{http.MethodDelete, "/v2/app/blobs/" + testDigest, "GET, HEAD, OPTIONS"},
		{http.MethodPost, "/v2/app/blobs/uploads/", ""},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			resp := do(t, tc.client(false), c.method, tc.url("mydocker", c.path), nil, nil)
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("status: got %d, want 405", resp.StatusCode)
			}
			if got := resp.Header.Get("Allow"); got != c.allow {
				t.Errorf("Allow: got %q, want %q", got, c.allow)
			}
		})
	}
}

func TestUntrustedForwardedHeaderNotForwarded(t *testing.T) {
	up := newUpstream(t, "registry", nil)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())}, caddyOptions{})

	do(t, tc.client(false), http.MethodGet, tc.url("mydocker", "/v2/"), nil, http.Header{"Forwarded": {"host=evil.example;proto=http"}})
	if got := up.last(t).Header.Values("Forwarded"); len(got) != 0 {
		t.Errorf("upstream Forwarded: got %q, want none from an untrusted client", got)
	}
}

func TestValidateRejectsContradictions(t *testing.T) {
	proxy := &Target{proxy: stubMiddleware{}}
	cases := []struct {
		name    string
		handler Handler
		want    string
	}{
		{"blob_head push without push target", Handler{Pull: proxy, BlobHead: "push"}, "blob_head push needs a push target"},
		{"api_version with newline", Handler{Pull: proxy, APIVersion: "registry/2.0\r\nX-Injected: yes"}, "invalid api_version"},
		{"api_version with trailing space", Handler{Pull: proxy, APIVersion: "registry/2.0 "}, "invalid api_version"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.handler.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	valid := Handler{Pull: proxy, APIVersion: "registry/2.0"}
	if err := valid.Validate(); err != nil {
		t.Errorf("valid handler: got %v, want no error", err)
	}
}

// stubMiddleware lets Validate see a loaded target without
// provisioning a reverse_proxy.
type stubMiddleware struct{}

func (stubMiddleware) ServeHTTP(http.ResponseWriter, *http.Request, caddyhttp.Handler) error {
	return nil
}
