package dockerregistry

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// The fuzz targets below run their seed corpus (the f.Add calls and
// testdata/fuzz/<FuzzName>/) in every normal "go test". To fuzz one, run
// for example: go test -run '^$' -fuzz '^FuzzClassifyRequest$' -fuzztime 5m

// FuzzClassifyRequest checks that the classifier never panics and that
// every path it accepts can be forwarded byte for byte. Such a path has
// no dot or empty segment in any encoding, and no control, non-ASCII,
// backslash, semicolon or leftover percent sign. Its names and references
// are valid.
func FuzzClassifyRequest(f *testing.F) {
	for _, rc := range routingTable {
		f.Add(rc.method, stripQuery(rc.uri))
	}
	for _, p := range []string{
		"/v2", "/v2/", "/v2/../x", "/v2/%2e%2E/x", "/v2/_oci/..;/..;/service/rest",
		"/v2/app%2fother/manifests/x", "/v2/a/blobs/uploads//", "/v2/%252e%252e/x/tags/list",
		"/v2/app/manifests/sha256%3A" + testDigest[7:], "/v2/a\\b/tags/list", "/v2/\xff/tags/list",
	} {
		f.Add(http.MethodGet, p)
	}

	f.Fuzz(func(t *testing.T, method, escapedPath string) {
		req, rerr := classifyRequest(method, escapedPath)
		if req.write != isWriteMethod(method) {
			t.Errorf("write: got %v, want %v for %q", req.write, isWriteMethod(method), method)
		}
		if rerr != nil {
			if rerr.status != http.StatusBadRequest && rerr.status != http.StatusNotFound {
				t.Errorf("rejection status: got %d, want 400 or 404", rerr.status)
			}
			if rerr.code == "" || rerr.message == "" {
				t.Errorf("rejection without code or message: %+v", rerr)
			}
			if req.operation != opInvalid && rerr.status == http.StatusNotFound {
				t.Errorf("operation of a 404: got %s, want %s", req.operation, opInvalid)
			}
			return
		}
		checkAcceptedPath(t, escapedPath, req)
	})
}

func checkAcceptedPath(t *testing.T, escapedPath string, req apiRequest) {
	t.Helper()
	switch req.operation {
	case opPing, opToken, opCatalog, opTags, opManifest, opBlob, opUpload, opReferrers, opExtension:
	default:
		t.Fatalf("accepted %q with operation %q", escapedPath, req.operation)
	}

	decoded, err := url.PathUnescape(escapedPath)
	if err != nil {
		t.Fatalf("accepted %q with an invalid escape: %v", escapedPath, err)
	}
	if !strings.HasPrefix(decoded+"/", "/v2/") {
		t.Errorf("accepted %q outside /v2", escapedPath)
	}
	for i := 0; i < len(decoded); i++ {
		if c := decoded[i]; c <= ' ' || c >= 0x7f || c == '\\' || c == ';' || c == '%' {
			t.Fatalf("accepted %q with byte %#x after decoding", escapedPath, c)
		}
	}
	// a path without dot or empty segments is its own clean form (a
	// trailing slash aside), and every segment of the decoded path is a
	// segment of the escaped one, so no encoded slash slipped through
	trimmed := strings.TrimSuffix(decoded, "/")
	if path.Clean(decoded) != trimmed && !(decoded == "/v2/" && trimmed == "/v2") {
		t.Errorf("accepted %q, which cleans to %q", escapedPath, path.Clean(decoded))
	}
	if strings.Count(decoded, "/") != strings.Count(escapedPath, "/") {
		t.Errorf("accepted %q with an encoded slash", escapedPath)
	}

	if len(req.repository) > maxNameLength {
		t.Errorf("accepted a repository name of %d characters", len(req.repository))
	}
	if req.repository != "" {
		for _, c := range strings.Split(req.repository, "/") {
			if !isValidNameComponent(c) {
				t.Errorf("accepted repository %q with invalid component %q", req.repository, c)
			}
		}
	}

	switch req.operation {
	case opBlob, opReferrers:
		if !isValidDigest(req.reference) {
			t.Errorf("accepted %s reference %q that is no digest", req.operation, req.reference)
		}
	case opManifest:
		if !isValidDigest(req.reference) && !isValidTag(req.reference) {
			t.Errorf("accepted manifest reference %q", req.reference)
		}
	case opUpload:
		if !isValidUploadID(req.uploadID) {
			t.Errorf("accepted upload id %q", req.uploadID)
		}
	}
}

// nginxOldClient is a reference implementation of the User-Agent check of
// the classic nginx registry proxy, ^(docker\/1\.(3|4|5(?!\.[0-9]-dev))|Go ).*$,
// with PCRE's semantics: the negative lookahead is evaluated at its
// position, "." matches any byte but a newline, and "$" matches at the end
// or before a final newline. Go's regexp has no lookahead, so the
// expression is split at it.
var (
	nginxAlternatives = regexp.MustCompile(`^(?:docker/1\.(3|4|5)|Go )`)
	nginxLookahead    = regexp.MustCompile(`^\.[0-9]-dev`)
	nginxRestOfLine   = regexp.MustCompile(`^[^\n]*\n?$`)
)

func nginxOldClient(ua string) bool {
	m := nginxAlternatives.FindStringSubmatchIndex(ua)
	if m == nil {
		return false
	}
	end := m[1]
	if m[2] >= 0 && ua[m[2]:m[3]] == "5" && nginxLookahead.MatchString(ua[end:]) {
		// the lookahead fails; the other alternative, "Go ", cannot
		// match a string that starts with "docker/"
		return false
	}
	return nginxRestOfLine.MatchString(ua[end:])
}

// FuzzIsOldDockerClient compares isOldDockerClient with the nginx
// expression on every User-Agent value a server can receive. Values with
// a newline are skipped: no HTTP server passes one to a handler, and only
// there do "." and "$" make PCRE differ from a prefix check.
func FuzzIsOldDockerClient(f *testing.F) {
	for _, ua := range []string{
		"docker/1.3.0", "docker/1.4.1 go/go1.3.3", "docker/1.5.0", "docker/1.5.0-dev", "docker/1.5.9-dev go/go1.4",
		"docker/1.5.10-dev", "docker/1.5.0-de", "docker/1.5", "docker/1.6.2", "Go 1.1 package http", "Go ",
		"Go-http-client/1.1", "docker/20.10.24", "", "docker/1.5.\xff-dev",
	} {
		f.Add(ua)
	}
	f.Fuzz(func(t *testing.T, ua string) {
		if strings.ContainsAny(ua, "\n") {
			t.Skip("a newline never reaches a handler in a header value")
		}
		if got, want := isOldDockerClient(ua), nginxOldClient(ua); got != want {
			t.Errorf("isOldDockerClient(%q): got %v, want %v as the nginx expression", ua, got, want)
		}
	})
}

// fuzzPrefixes are the path prefixes the URL fuzz targets pick from.
var fuzzPrefixes = []string{"", "/repository/docker-group", "/p"}

// fuzzRewriter builds a rewriter as the handler does for a request with
// the given Host, upstreams "nexus", "10.0.0.5" and "::1".
func fuzzRewriter(host string, useTLS bool, prefix uint8) originRewriter {
	r := &http.Request{Host: host}
	if useTLS {
		r.TLS = &tls.ConnectionState{}
	}
	return newOriginRewriter(r, []string{"nexus", "10.0.0.5", "::1"}, fuzzPrefixes[int(prefix)%len(fuzzPrefixes)])
}

// FuzzRewriteURL checks the invariants of Location rewriting. No control
// character appears that was not in the input. A rewritten URL is on the
// public origin (absolute), or a path on it that no client resolves
// against another host. The tail of the URL is kept byte for byte, and
// rewriting twice changes nothing more.
func FuzzRewriteURL(f *testing.F) {
	for _, u := range []string{
		"http://nexus:8083/v2/app/blobs/uploads/x?_state=a%2Bb%3D&a=b+c", "null://mydocker:8083/v2/token",
		"https://mydocker:8083:8083/v2/token", "//nexus/v2/", "/repository/docker-group/v2/x",
		"/repository/docker-group//evil.example/x", "http://nexus\\@evil/", "http://mydocker@evil/",
		"http://evil@nexus/v2/", "javascript:alert(1)", "http://[::1]:5000/v2/", "/p/p/v2/", "HTTP://NEXUS",
	} {
		f.Add("mydocker:8083", true, uint8(1), u)
	}
	f.Add("evil.example,x=y", true, uint8(0), "http://nexus/v2/")
	f.Add("a@b", true, uint8(0), "http://nexus/v2/")
	f.Add("[::1]:443", true, uint8(0), "http://nexus/v2/")
	f.Add("mydocker", true, uint8(2), "/p/p/v2/")
	f.Add("mydocker", false, uint8(2), "http://nexus/p/p")

	f.Fuzz(func(t *testing.T, host string, useTLS bool, prefix uint8, u string) {
		rw := fuzzRewriter(host, useTLS, prefix)
		out, changed := rw.rewriteURL(u)
		if changed != (out != u) {
			t.Fatalf("changed %v, but output %q and input %q", changed, out, u)
		}
		if !changed {
			return
		}
		if hasControlNotIn(out, u) {
			t.Errorf("rewriteURL(%q) = %q adds a control character", u, out)
		}
		checkOnPublicOrigin(t, rw, u, out)

		again, changedAgain := rw.rewriteURL(out)
		if changedAgain || again != out {
			t.Errorf("not idempotent: %q -> %q -> %q", u, out, again)
		}
	})
}

// checkOnPublicOrigin checks that out, the rewritten form of u, is on the
// rewriter's public origin and ends in a tail of u.
func checkOnPublicOrigin(t *testing.T, rw originRewriter, u, out string) {
	t.Helper()
	tail, absolute := strings.CutPrefix(out, rw.origin)
	if absolute && tail != "" && !strings.ContainsAny(tail[:1], "/?#") {
		absolute = false
	}
	if !absolute {
		if !strings.HasPrefix(out, "/") || isNetworkPathReference(out) {
			t.Fatalf("rewriteURL(%q) = %q is neither on %s nor a path", u, out, rw.origin)
		}
		tail = out
	}
	if !strings.HasSuffix(u, tail) && !(tail == "/" || strings.HasPrefix(tail, "/?") || strings.HasPrefix(tail, "/#")) {
		t.Errorf("rewriteURL(%q) = %q: tail %q is not kept from the input", u, out, tail)
	}
	if parsed, err := url.Parse(out); err == nil && parsed.Host != "" {
		if _, want, _ := strings.Cut(rw.origin, "://"); parsed.Host != want {
			t.Errorf("rewriteURL(%q) = %q names host %q, want %q", u, out, parsed.Host, want)
		}
	}
}

// FuzzRewriteBearerRealm checks that realm rewriting changes nothing but
// the realm value, adds no control character and no auth-param, keeps
// the other parameters byte for byte, and is idempotent.
func FuzzRewriteBearerRealm(f *testing.F) {
	for _, c := range []string{
		`Bearer realm="http://nexus:8083/v2/token",service="Nexus",scope="repository:app:pull"`,
		`bearer service="Nexus", realm="null://mydocker:8083/v2/token"`,
		`Bearer realm=http://nexus:8083/v2/token,service=Nexus`,
		`Bearer scope="a,realm=x",realm="http://nexus:8083/v2/token"`,
		`Bearer realm="http://nexus:8083/v2/tok\"en"`,
		`Bearer realm="http://nexus:8083/v2/token`,
		`Basic realm="http://nexus:8083/"`,
		`Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`,
	} {
		f.Add("mydocker:8083", true, uint8(0), c)
	}
	f.Add("a,b=c", true, uint8(0), `Bearer realm=http://nexus/v2/token`)

	f.Fuzz(func(t *testing.T, host string, useTLS bool, prefix uint8, challenge string) {
		rw := fuzzRewriter(host, useTLS, prefix)
		out, changed := rw.rewriteBearerRealm(challenge)
		if changed != (out != challenge) {
			t.Fatalf("changed %v, but output %q and input %q", changed, out, challenge)
		}
		if !changed {
			return
		}
		if hasControlNotIn(out, challenge) {
			t.Errorf("rewriteBearerRealm(%q) = %q adds a control character", challenge, out)
		}

		start, end, quoted := findParam(challenge, "realm")
		newStart, newEnd, newQuoted := findParam(out, "realm")
		if start < 0 || newStart != start || newQuoted != quoted {
			t.Fatalf("realm moved: %q -> %q", challenge, out)
		}
		if out[:start] != challenge[:start] || out[newEnd:] != challenge[end:] {
			t.Errorf("text around the realm changed: %q -> %q", challenge, out)
		}
		if got, want := paramNames(out), paramNames(challenge); got != want {
			t.Errorf("auth-params changed from %s to %s: %q -> %q", want, got, challenge, out)
		}
		realm := out[newStart:newEnd]
		if quoted {
			realm = strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(realm)
		}
		wantRealm, _ := rw.rewriteURL(challenge[start:end])
		if realm != wantRealm {
			t.Errorf("realm: got %q, want %q as rewriteURL gives", realm, wantRealm)
		}

		again, changedAgain := rw.rewriteBearerRealm(out)
		if changedAgain || again != out {
			t.Errorf("not idempotent: %q -> %q -> %q", challenge, out, again)
		}
	})
}

// paramNames lists the auth-param names that findParam finds in a
// challenge, lowercase and comma-separated.
func paramNames(challenge string) string {
	var names []string
	for _, name := range []string{"realm", "service", "scope", "error", "x", "b"} {
		if start, _, _ := findParam(challenge, name); start >= 0 {
			names = append(names, name)
		}
	}
	return strings.Join(names, ",")
}

// hasControlNotIn reports whether out contains a CR, LF, NUL or other
// control byte that in does not.
func hasControlNotIn(out, in string) bool {
	for i := 0; i < len(out); i++ {
		if c := out[i]; (c < ' ' || c == 0x7f) && strings.IndexByte(in, c) < 0 {
			return true
		}
	}
	return false
}

// FuzzUnmarshalCaddyfile feeds arbitrary Caddyfile text to the directive's
// parser, which must never panic. When it accepts the input, the targets
// it sets up must encode to valid JSON. Input that the lexer rejects is
// skipped, because caddyfile.NewTestDispenser ends the process on it.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "caddyfile_adapt", "*.caddyfiletest"))
	for _, file := range seeds {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		input, _, _ := strings.Cut(string(raw), "----------")
		if i := strings.Index(input, "docker_registry"); i >= 0 {
			f.Add(input[i:])
		}
	}
	f.Add("docker_registry nexus:8083")
	f.Add("docker_registry {\n\tpull nexus:8082 {\n\t\thealth_uri /v2/\n\t}\n\tpush off\n}")
	f.Add("docker_registry http://nexus:8081/repository/docker-group {\n\tblob_head pull\n}")

	f.Fuzz(func(t *testing.T, input string) {
		if _, err := caddyfile.Tokenize([]byte(input), "Testfile"); err != nil {
			return
		}
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			return
		}
		if h.Pull == nil {
			t.Fatalf("accepted %q without a pull target", input)
		}
		for _, target := range []*Target{h.Pull, h.Push} {
			if target != nil && !json.Valid(target.ProxyRaw) {
				t.Errorf("accepted %q, but a target encodes to invalid JSON %s", input, target.ProxyRaw)
			}
		}
	})
}
