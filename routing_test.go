package dockerregistry

import (
	"net/http"
	"strings"
	"testing"
)

const (
	testDigest  = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testDigest2 = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	testUpload  = "3f6c1a5e-9d2b-4c8e-a1f0-7b3d2e4c5a69"
)

// routeCase is one row of the routing table: a request, the target that
// must receive it, and the escaped request URI the upstream must see
// (without a path prefix).
type routeCase struct {
	method string
	uri    string
	target string // "pull", "push" or "" when the module responds itself
}

// routingTable lists every row of the routing table, as a split
// configuration (pull group, push hosted) routes it.
var routingTable = []routeCase{
	{"GET", "/v2/", "pull"},
	{"HEAD", "/v2/", "pull"},
	{"GET", "/v2", "pull"},
	{"GET", "/v2/token?account=ci&scope=repository%3Aapp%3Apush%2Cpull&service=nexus", "pull"},
	{"POST", "/v2/token", "pull"},
	{"GET", "/v2/_catalog?n=100&last=app", "pull"},
	{"GET", "/v2/team/app/manifests/1.0", "pull"},
	{"HEAD", "/v2/team/app/manifests/1.0", "pull"},
	{"GET", "/v2/app/manifests/" + testDigest, "pull"},
	{"HEAD", "/v2/app/manifests/sha256%3A0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "pull"},
	{"GET", "/v2/app/tags/list?n=10&last=v1", "pull"},
	{"HEAD", "/v2/app/tags/list", "pull"},
	{"GET", "/v2/app/referrers/" + testDigest + "?artifactType=application%2Fvnd.example", "pull"},
	{"GET", "/v2/app/blobs/" + testDigest, "pull"},
	{"OPTIONS", "/v2/app/manifests/latest", "pull"},
	{"GET", "/v2/_oci/ext/discover", "pull"},
	{"HEAD", "/v2/app/blobs/" + testDigest, "push"},
	{"POST", "/v2/app/blobs/uploads/", "push"},
	{"POST", "/v2/app/blobs/uploads/?mount=" + testDigest + "&from=base", "push"},
	{"POST", "/v2/app/blobs/uploads/?digest=" + testDigest, "push"},
	{"GET", "/v2/app/blobs/uploads/" + testUpload + "?_state=abc%2Bdef%3D%3D", "push"},
	{"HEAD", "/v2/app/blobs/uploads/" + testUpload, "push"},
	{"PATCH", "/v2/app/blobs/uploads/" + testUpload + "?_state=x", "push"},
	{"PUT", "/v2/app/blobs/uploads/" + testUpload + "?_state=x&digest=" + testDigest, "push"},
	{"DELETE", "/v2/app/blobs/uploads/" + testUpload, "push"},
	{"PUT", "/v2/team/app/manifests/1.0", "push"},
	{"PUT", "/v2/app/manifests/" + testDigest, "push"},
	{"DELETE", "/v2/app/manifests/" + testDigest, "push"},
	{"DELETE", "/v2/app/blobs/" + testDigest, "push"},
	{"POST", "/v2/_oci/ext/something", "push"},
}

func TestRoutingSplitTargets(t *testing.T) {
	pull := newUpstream(t, "pull", nil)
	push := newUpstream(t, "push", nil)
	tc := startCaddy(t, map[string]any{
		"handler": "docker_registry",
		"pull":    proxyTo(pull.dial()),
		"push":    proxyTo(push.dial()),
	}, caddyOptions{})
	c := tc.client(false)

	for _, rc := range routingTable {
		t.Run(rc.method+" "+rc.uri, func(t *testing.T) {
			resp := do(t, c, rc.method, tc.url("mydocker", rc.uri), nil, nil)
			if got := resp.Header.Get("X-Upstream"); got != rc.target {
				t.Fatalf("target: got %q, want %q", got, rc.target)
			}
			want := map[string]*upstream{"pull": pull, "push": push}[rc.target]
			got := want.last(t)
			if got.Method != rc.method {
				t.Errorf("upstream method: got %s, want %s", got.Method, rc.method)
			}
			if got.RequestURI != rc.uri {
				t.Errorf("upstream request URI: got %s, want %s", got.RequestURI, rc.uri)
			}
		})
	}
}

func TestRoutingSingleUpstream(t *testing.T) {
	only := newUpstream(t, "only", nil)
	tc := startCaddy(t, map[string]any{
		"handler": "docker_registry",
		"pull":    proxyTo(only.dial()),
	}, caddyOptions{})
	c := tc.client(false)

	for _, rc := range routingTable {
		t.Run(rc.method+" "+rc.uri, func(t *testing.T) {
			resp := do(t, c, rc.method, tc.url("mydocker", rc.uri), nil, nil)
			if got := resp.Header.Get("X-Upstream"); got != "only" {
				t.Fatalf("target: got %q, want the single upstream", got)
			}
			got := only.last(t)
			if got.Method != rc.method || got.RequestURI != rc.uri {
				t.Errorf("upstream received %s %s, want %s %s", got.Method, got.RequestURI, rc.method, rc.uri)
			}
		})
	}
}

func TestRoutingReadOnlyRejectsWrites(t *testing.T) {
	pull := newUpstream(t, "pull", nil)
	tc := startCaddy(t, map[string]any{
		"handler":   "docker_registry",
		"pull":      proxyTo(pull.dial()),
		"read_only": true,
	}, caddyOptions{})
	c := tc.client(false)

	for _, rc := range routingTable {
		t.Run(rc.method+" "+rc.uri, func(t *testing.T) {
			before := len(pull.received())
			resp := do(t, c, rc.method, tc.url("mydocker", rc.uri), nil, nil)

			// with no push target, blob HEAD is a read like any other
			isRead := rc.target == "pull" || rc.method == http.MethodHead && !isUploadURI(rc.uri)
			if isRead {
				if got := resp.Header.Get("X-Upstream"); got != "pull" {
					t.Fatalf("read: got target %q, want pull", got)
				}
				return
			}
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("write: got status %d, want 405", resp.StatusCode)
			}
			if rc.method != http.MethodHead {
				if code := ociErrorCode(t, resp); code != codeUnsupported {
					t.Errorf("error code: got %s, want %s", code, codeUnsupported)
				}
			}
			if got := resp.Header.Values(apiVersionHeader); len(got) != 1 || got[0] != "registry/2.0" {
				t.Errorf("%s: got %q, want one registry/2.0", apiVersionHeader, got)
			}
			if after := len(pull.received()); after != before {
				t.Errorf("a refused write reached the upstream (%d requests, want %d)", after, before)
			}
		})
	}
}

func TestRoutingPathPrefix(t *testing.T) {
	pull := newUpstream(t, "pull", nil)
	push := newUpstream(t, "push", nil)
	pullTarget := proxyTo(pull.dial())
	pullTarget["path_prefix"] = "/repository/docker-group"
	pushTarget := proxyTo(push.dial())
	pushTarget["path_prefix"] = "/repository/docker-hosted"
	tc := startCaddy(t, map[string]any{
		"handler": "docker_registry",
		"pull":    pullTarget,
		"push":    pushTarget,
	}, caddyOptions{})
	c := tc.client(false)

	prefixes := map[string]string{"pull": "/repository/docker-group", "push": "/repository/docker-hosted"}
	for _, rc := range routingTable {
		t.Run(rc.method+" "+rc.uri, func(t *testing.T) {
			resp := do(t, c, rc.method, tc.url("mydocker", rc.uri), nil, nil)
			if got := resp.Header.Get("X-Upstream"); got != rc.target {
				t.Fatalf("target: got %q, want %q", got, rc.target)
			}
			up := map[string]*upstream{"pull": pull, "push": push}[rc.target]
			got := up.last(t)
			want := prefixes[rc.target] + rc.uri
			if strings.HasPrefix(rc.uri, "/v2/token") {
				// the token endpoint lives at the root of the Nexus base URL
				want = rc.uri
			}
			if got.RequestURI != want {
				t.Errorf("upstream request URI: got %s, want %s", got.RequestURI, want)
			}
			if got.Method != rc.method {
				t.Errorf("upstream method: got %s, want %s", got.Method, rc.method)
			}
		})
	}
}

func TestRoutingBlobHeadToPull(t *testing.T) {
	pull := newUpstream(t, "pull", nil)
	push := newUpstream(t, "push", nil)
	tc := startCaddy(t, map[string]any{
		"handler":   "docker_registry",
		"pull":      proxyTo(pull.dial()),
		"push":      proxyTo(push.dial()),
		"blob_head": "pull",
	}, caddyOptions{})

	resp := do(t, tc.client(false), http.MethodHead, tc.url("mydocker", "/v2/app/blobs/"+testDigest), nil, nil)
	if got := resp.Header.Get("X-Upstream"); got != "pull" {
		t.Errorf("blob HEAD with blob_head pull: got target %q, want pull", got)
	}
}

func isUploadURI(uri string) bool {
	req, rerr := classifyRequest(http.MethodGet, stripQuery(uri))
	return rerr == nil && req.operation == opUpload
}

func stripQuery(uri string) string {
	for i := 0; i < len(uri); i++ {
		if uri[i] == '?' {
			return uri[:i]
		}
	}
	return uri
}
