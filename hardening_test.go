package dockerregistry

import (
	"net/http"
	"testing"
)

// Each test in this file failed before the fix it is named for.

func TestPathParameterAndDoubleEncodedSegmentsRejected(t *testing.T) {
	// Jetty, which Nexus runs on, cuts ";..." from a segment before it
	// resolves dot segments. A backend that decodes twice turns %252e
	// into ".". Extension paths were forwarded unchecked.
	for _, p := range []string{
		"/v2/_oci/..;/..;/service/rest/v1/script",
		"/v2/_catalog/..;/x",
		"/v2/app/_ext/..;/x",
		"/v2/_oci/..%3b/x",
		"/v2/_oci/%252e%252e/x",
		"/v2/_oci/ext;jsessionid=1",
	} {
		if _, rerr := classifyRequest(http.MethodGet, p); rerr == nil || rerr.code != codeNameInvalid {
			t.Errorf("%s: got %v, want %s", p, rerr, codeNameInvalid)
		}
	}
}

func TestDisguisedAPIPathsStayInModule(t *testing.T) {
	// these paths are /v2 for a backend that normalises them, and went
	// to the next handler (the Nexus UI upstream) instead of the module
	for _, p := range []string{
		"/./v2/", "/ui/../v2/_catalog", "//v2/", "/v2;x/", "/v2;/token", `/\v2/`, `/v2\app`, "/%76%32/",
		"/%2e/v2/",
	} {
		if !isAPIPath(p) {
			t.Errorf("isAPIPath(%q): got false, want true", p)
		}
	}
	for _, p := range []string{"/", "/V2/", "/v2x", "/v3/", "/service/rest/v2/", "/static/v2.js", "/v2.0/", "/ui/v2/"} {
		if isAPIPath(p) {
			t.Errorf("isAPIPath(%q): got true, want false", p)
		}
	}
}

func TestPrefixRemovalNeverNamesAnotherHost(t *testing.T) {
	// "/prefix//evil.example/x" lost its prefix and became the
	// network-path reference "//evil.example/x"
	rw := testRewriter("mydocker", true, "/repository/docker-group")
	for in, want := range map[string]string{
		"/repository/docker-group//evil.example/x": "https://mydocker//evil.example/x",
		`/repository/docker-group/\evil.example/x`: `https://mydocker/\evil.example/x`,
		"/repository/docker-group/v2/x":            "/v2/x",
	} {
		if got, _ := rw.rewriteURL(in); got != want {
			t.Errorf("rewriteURL(%q): got %q, want %q", in, got, want)
		}
	}
}

func TestRewriteOfRewrittenURLChangesNothing(t *testing.T) {
	// a path with the prefix twice lost one prefix per rewrite
	rw := testRewriter("mydocker", true, "/p")
	for _, in := range []string{"/p/p/v2/", "http://nexus/p/p/v2/", "/p/v2/", "http://nexus/p"} {
		once, _ := rw.rewriteURL(in)
		if twice, changed := rw.rewriteURL(once); changed {
			t.Errorf("%q -> %q -> %q: want the second rewrite to change nothing", in, once, twice)
		}
	}
}

func TestUnusualHostDisablesRewriting(t *testing.T) {
	// Go accepts "," in a Host header; put into an unquoted realm it
	// added an auth-param of the client's choosing
	for _, host := range []string{"a,b=c", `a"b`, "a@b", "mydocker:80:80", "[::1", "[fe80::1%25eth0]", "mydocker:x"} {
		rw := testRewriter(host, true, "")
		if got, changed := rw.rewriteBearerRealm(`Bearer realm=http://nexus/v2/token`); changed {
			t.Errorf("Host %q: realm rewritten to %q, want it unchanged", host, got)
		}
	}
	rw := testRewriter("[::1]:8443", true, "")
	if got, _ := rw.rewriteURL("http://nexus/v2/"); got != "https://[::1]:8443/v2/" {
		t.Errorf("IPv6 Host: got %q, want https://[::1]:8443/v2/", got)
	}
}

func TestUnsafeURLValues(t *testing.T) {
	for value, want := range map[string]bool{
		"https://mydocker/v2/x?_state=a%2Bb": true,
		"/v2/x":                              true,
		"//cdn.example/blob":                 true,
		"HTTPS://storage.example/blob?sig=1": true,
		"javascript:alert(1)":                false,
		"data:text/html,x":                   false,
		"null://mydocker/v2/token":           false,
		"http:evil.example":                  false,
		"http://mydocker@evil.example/":      false,
		"//user@evil.example/":               false,
		`http://nexus\@evil.example/`:        false,
		"http://nexus/a b":                   false,
		"http://nexus/caf\xc3":               false,
		"":                                   true,
	} {
		if got := isSafeURL(value); got != want {
			t.Errorf("isSafeURL(%q): got %v, want %v", value, got, want)
		}
	}
}
