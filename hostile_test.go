package dockerregistry

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Answerers of a hostile request.
const (
	byGo     = "go"     // net/http rejected it before any handler ran
	byModule = "module" // the module sent an OCI error JSON response
	byPull   = "pull"   // the module forwarded it to the registry upstream
	byUI     = "ui"     // it went to the next handler, as paths outside /v2 do
	byNone   = "none"   // no route matched the host, so nothing ran
)

// hostileResponse is what one response to a hostile request must be.
type hostileResponse struct {
	status int
	by     string
	code   string // OCI error code, for byModule
}

// hostileCase is a request written byte for byte on a TLS connection,
// with the responses it must get, in order.
type hostileCase struct {
	name      string
	raw       string
	responses []hostileResponse
}

const hostHeader = "Host: mydocker\r\n"

func get(target string) string { return "GET " + target + " HTTP/1.1\r\n" + hostHeader + "\r\n" }

func module(status int, code string) []hostileResponse {
	return []hostileResponse{{status, byModule, code}}
}

func goRejects(status int) []hostileResponse { return []hostileResponse{{status, byGo, ""}} }

var forwarded = []hostileResponse{{http.StatusOK, byPull, ""}}

// hostileCases are requests that clients, scanners and attackers send to
// a registry front. Each unsafe one is rejected by net/http or by the
// module and reaches neither the registry upstream nor the next handler.
var hostileCases = []hostileCase{
	// dot segments, in every encoding
	{"dot segments", get("/v2/../service/rest/v1/status"), module(400, codeNameInvalid)},
	{"encoded dot segment", get("/v2/%2e%2e/service/rest/v1/status"), module(400, codeNameInvalid)},
	{"mixed-case encoded dot segment", get("/v2/.%2E/app/manifests/latest"), module(400, codeNameInvalid)},
	{"encoded slash after dots", get("/v2/..%2f..%2fservice/rest"), module(400, codeNameInvalid)},
	{"double-encoded dot segment", get("/v2/_oci/%252e%252e/x"), module(400, codeNameInvalid)},
	{"overlong UTF-8 dots", get("/v2/%c0%ae%c0%ae/app/tags/list"), module(400, codeNameInvalid)},
	{"path parameter dot segment", get("/v2/_oci/..;/..;/service/rest/v1/status"), module(400, codeNameInvalid)},
	{"encoded path parameter", get("/v2/_catalog/..%3b/x"), module(400, codeNameInvalid)},
	{"dot segment before v2", get("/./v2/_catalog"), module(400, codeNameInvalid)},
	{"dot-dot segment before v2", get("/ui/../v2/_catalog"), module(400, codeNameInvalid)},
	{"encoded v2", get("/%76%32/_catalog"), module(400, codeNameInvalid)},
	{"backslashes for slashes", get(`/v2\app\tags\list`), module(400, codeNameInvalid)},

	// empty segments
	{"empty segment before v2", get("//v2/_catalog"), module(400, codeNameInvalid)},
	{"empty segment in name", get("/v2//app/manifests/latest"), module(400, codeNameInvalid)},
	{"trailing empty segment", get("/v2/app/manifests/latest/"), module(400, codeNameInvalid)},

	// names and references
	{"name of 256 characters", get("/v2/" + strings.Repeat("a", 256) + "/tags/list"), module(400, codeNameInvalid)},
	{"uppercase name", get("/v2/App/manifests/latest"), module(400, codeNameInvalid)},
	{"encoded space in name", get("/v2/my%20app/tags/list"), module(400, codeNameInvalid)},
	{"digest with invalid hex", get("/v2/app/blobs/sha256:xyz"), module(400, codeDigestInvalid)},
	{"uppercase digest", get("/v2/app/blobs/sha256:" + strings.ToUpper(testDigest[7:])), module(400, codeDigestInvalid)},
	{"short manifest digest", get("/v2/app/manifests/sha256:abc"), module(400, codeTagInvalid)},
	{"fragment in target", get("/v2/app/manifests/latest#frag"), module(400, codeTagInvalid)},

	// control characters and invalid UTF-8
	{"NUL in path", "GET /v2/a\x00b/tags/list HTTP/1.1\r\n" + hostHeader + "\r\n", goRejects(400)},
	{"encoded NUL in path", get("/v2/a%00b/tags/list"), module(400, codeNameInvalid)},
	{"CR in path", "GET /v2/a\rb/tags/list HTTP/1.1\r\n" + hostHeader + "\r\n", goRejects(400)},
	{"encoded CRLF in path", get("/v2/app/manifests/a%0d%0aSet-Cookie:x"), module(400, codeNameInvalid)},
	{"NUL in header", "GET /v2/ HTTP/1.1\r\n" + hostHeader + "X-Test: a\x00b\r\n\r\n", goRejects(400)},
	{"bare CR in header", "GET /v2/ HTTP/1.1\r\n" + hostHeader + "X-Test: a\rb\r\n\r\n", goRejects(400)},
	{"space in header name", "GET /v2/ HTTP/1.1\r\n" + hostHeader + "X Test: a\r\n\r\n", goRejects(400)},
	{"invalid UTF-8 in path", "GET /v2/caf\xc3/tags/list HTTP/1.1\r\n" + hostHeader + "\r\n", module(400, codeNameInvalid)},
	{"encoded invalid UTF-8", get("/v2/caf%c3/tags/list"), module(400, codeNameInvalid)},
	{"invalid UTF-8 in User-Agent", "GET /v2/ HTTP/1.1\r\n" + hostHeader + "User-Agent: \xff\xfe\r\n\r\n", forwarded},

	// oversized requests; Caddy 2.11 limits the header to 16 KiB, and
	// net/http allows 4 KiB more
	{"header over 20 KiB", "GET /v2/ HTTP/1.1\r\n" + hostHeader + "X-Big: " + strings.Repeat("b", 24<<10) + "\r\n\r\n", goRejects(431)},
	{"request line over 20 KiB", get("/v2/" + strings.Repeat("a/", 12<<10) + "tags/list"), goRejects(431)},
	{"many small headers", "GET /v2/ HTTP/1.1\r\n" + hostHeader + strings.Repeat("X-Many: m\r\n", 3000) + "\r\n", goRejects(431)},
	{"bearer token of 8 KiB", "GET /v2/ HTTP/1.1\r\n" + hostHeader + "Authorization: Bearer " + strings.Repeat("t", 8<<10) + "\r\n\r\n", forwarded},

	// protocol versions and request-target forms
	{"HTTP/1.0 with Host", "GET /v2/ HTTP/1.0\r\n" + hostHeader + "\r\n", forwarded},
	{"HTTP/1.0 without Host", "GET /v2/ HTTP/1.0\r\n\r\n", []hostileResponse{{http.StatusOK, byNone, ""}}},
	{"HTTP/2.0 on an HTTP/1 connection", "GET /v2/ HTTP/2.0\r\n" + hostHeader + "\r\n", goRejects(505)},
	{"absolute-form", "GET https://mydocker/v2/ HTTP/1.1\r\n" + hostHeader + "\r\n", forwarded},
	{"absolute-form with dot segments", "GET https://mydocker/v2/../service HTTP/1.1\r\nHost: other\r\n\r\n", module(400, codeNameInvalid)},
	{"absolute-form for another host", "GET https://evil.example/v2/ HTTP/1.1\r\n" + hostHeader + "\r\n", []hostileResponse{{http.StatusOK, byNone, ""}}},
	{"two Host headers", "GET /v2/ HTTP/1.1\r\n" + hostHeader + "Host: evil.example\r\n\r\n", goRejects(400)},
	{"userinfo in Host", "GET /v2/ HTTP/1.1\r\nHost: evil@mydocker\r\n\r\n", goRejects(400)},
	{"missing Host", "GET /v2/ HTTP/1.1\r\n\r\n", goRejects(400)},

	// methods
	{"TRACE", "TRACE /v2/ HTTP/1.1\r\n" + hostHeader + "\r\n", module(405, codeUnsupported)},
	{"lowercase method", "get /v2/ HTTP/1.1\r\n" + hostHeader + "\r\n", module(405, codeUnsupported)},

	// message framing
	{"Transfer-Encoding with Content-Length", "POST /v2/app/blobs/uploads/ HTTP/1.1\r\n" + hostHeader +
		"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get("/v2/../service/rest/v1/status"),
		[]hostileResponse{{http.StatusOK, byPull, ""}, {400, byModule, codeNameInvalid}}},
	{"Transfer-Encoding chunked, identity", "POST /v2/app/blobs/uploads/ HTTP/1.1\r\n" + hostHeader +
		"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", goRejects(501)},
	{"two Transfer-Encoding headers", "POST /v2/app/blobs/uploads/ HTTP/1.1\r\n" + hostHeader +
		"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", goRejects(501)},
	{"conflicting Content-Length headers", "POST /v2/app/blobs/uploads/ HTTP/1.1\r\n" + hostHeader +
		"Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", goRejects(400)},
	{"signed Content-Length", "POST /v2/app/blobs/uploads/ HTTP/1.1\r\n" + hostHeader +
		"Content-Length: +4\r\n\r\nabcd", goRejects(400)},
}

func TestHostileRequestsOverRawConnections(t *testing.T) {
	pull := newUpstream(t, "pull", nil)
	ui := newUpstream(t, "ui", nil)
	tc := startCaddy(t, map[string]any{
		"handler": "subroute",
		"routes": []any{map[string]any{
			"match": []any{map[string]any{"host": []string{"mydocker"}}},
			"handle": []any{
				map[string]any{"handler": "docker_registry", "pull": proxyTo(pull.dial())},
				map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": ui.dial()}}},
			},
		}},
	}, caddyOptions{})

	if len(hostileCases) < 30 {
		t.Fatalf("got %d hostile cases, want at least 30", len(hostileCases))
	}
	for _, hc := range hostileCases {
		t.Run(hc.name, func(t *testing.T) {
			pullBefore, uiBefore := len(pull.received()), len(ui.received())
			responses := rawExchange(t, tc, hc.raw, len(hc.responses))

			forwardedCount := 0
			for i, want := range hc.responses {
				checkHostileResponse(t, i, responses[i], want)
				if want.by == byPull {
					forwardedCount++
				}
			}
			if got := len(pull.received()) - pullBefore; got != forwardedCount {
				t.Errorf("registry upstream received %d requests, want %d", got, forwardedCount)
			}
			if got := len(ui.received()) - uiBefore; got != 0 {
				t.Errorf("next handler received %d requests, want none", got)
			}
			if forwardedCount > 0 {
				got := pull.last(t)
				if got.BodyLength != 0 || got.ContentLength > 0 {
					t.Errorf("forwarded body: got %d bytes with Content-Length %d, want none", got.BodyLength, got.ContentLength)
				}
			}
		})
	}
}

// rawResponse is a response read from a raw connection, body included.
type rawResponse struct {
	*http.Response
	body string
}

// rawExchange writes raw to a new TLS connection and reads n responses.
// The write runs alongside the reads, because the server may respond and
// close before it has read an oversized request.
func rawExchange(t *testing.T, tc *testCaddy, raw string, n int) []rawResponse {
	t.Helper()
	conn := dialTLS(t, tc)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = io.WriteString(conn, raw) }()

	// the first request's method decides whether its response has a
	// body; later pipelined requests in the tests are GETs
	method, _, _ := strings.Cut(raw, " ")
	br := bufio.NewReader(conn)
	var out []rawResponse
	for i := 0; i < n; i++ {
		if i > 0 {
			method = http.MethodGet
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("reading response %d: %v", i+1, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("reading body of response %d: %v", i+1, err)
		}
		out = append(out, rawResponse{resp, string(body)})
	}
	return out
}

func checkHostileResponse(t *testing.T, i int, got rawResponse, want hostileResponse) {
	t.Helper()
	if got.StatusCode != want.status {
		t.Errorf("response %d: status: got %d (%q), want %d", i+1, got.StatusCode, truncate(got.body, 200), want.status)
	}
	apiVersions := got.Header.Values(apiVersionHeader)
	switch want.by {
	case byGo, byNone:
		if len(apiVersions) != 0 || got.Header.Get("X-Upstream") != "" {
			t.Errorf("response %d: got a response of a handler (%s %q, X-Upstream %q), want none to run",
				i+1, apiVersionHeader, apiVersions, got.Header.Get("X-Upstream"))
		}
		if want.by == byNone && got.body != "" {
			t.Errorf("response %d: body: got %q, want Caddy's empty response", i+1, truncate(got.body, 200))
		}
	case byModule:
		if len(apiVersions) != 1 {
			t.Errorf("response %d: %s: got %q, want one", i+1, apiVersionHeader, apiVersions)
		}
		if ct := got.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("response %d: Content-Type: got %q, want application/json", i+1, ct)
		}
		var body ociErrorBody
		if err := json.Unmarshal([]byte(got.body), &body); err != nil || len(body.Errors) != 1 {
			t.Fatalf("response %d: got body %q, want one OCI error (%v)", i+1, truncate(got.body, 200), err)
		}
		if body.Errors[0].Code != want.code || body.Errors[0].Message == "" {
			t.Errorf("response %d: got error %+v, want code %s with a message", i+1, body.Errors[0], want.code)
		}
	case byPull:
		if up := got.Header.Get("X-Upstream"); up != "pull" {
			t.Errorf("response %d: X-Upstream: got %q, want pull", i+1, up)
		}
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// upstreamHeaderCase is a header an upstream sends and what the client
// must receive: the header as given in want, or the module's 502.
type upstreamHeaderCase struct {
	name   string
	header string // written raw into the upstream response
	want   string // expected value at the client; "" means a 502
}

// rejectedByTransport are the upstream header cases that Go's transport
// already rejects as a malformed response, so that the 502 is that of a
// failed round trip.
var rejectedByTransport = map[string]bool{
	"control character in Location":  true,
	"control character in challenge": true,
	"bare CR in Location":            true,
	"NUL in Location":                true,
}

func TestMalformedUpstreamURLHeaders(t *testing.T) {
	var cases []upstreamHeaderCase
	var upstreamAddr string
	up := newRawUpstream(t, func(conn net.Conn, req *http.Request) {
		var index int
		fmt.Sscan(req.URL.Query().Get("case"), &index)
		header := strings.ReplaceAll(cases[index].header, "UPSTREAM", upstreamAddr)
		fmt.Fprintf(conn, "HTTP/1.1 401 Unauthorized\r\n%s\r\nContent-Type: application/json\r\nSet-Cookie: upstream=1\r\nContent-Length: 2\r\n\r\n{}", header)
	})
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())}, caddyOptions{})
	public := "https://mydocker:" + tc.port
	upstreamAddr = up.dial()

	long := "/v2/" + strings.Repeat("a", maxURLHeaderLength)
	cases = []upstreamHeaderCase{
		// made safe by rewriting
		{"upstream Location", "Location: http://UPSTREAM/v2/app/blobs/uploads/x?_state=a%2Bb", public + "/v2/app/blobs/uploads/x?_state=a%2Bb"},
		{"userinfo on the upstream host", "Location: http://evil@UPSTREAM/v2/x", public + "/v2/x"},
		{"backslash before the upstream host", `Location: http://evil\@UPSTREAM/v2/x`, public + "/v2/x"},
		{"doubled slash after the upstream host", "Location: http://UPSTREAM//evil.example/x", public + "//evil.example/x"},
		{"realm on the upstream host", `WWW-Authenticate: Bearer realm="http://UPSTREAM/v2/token",service="nexus"`, `Bearer realm="` + public + `/v2/token",service="nexus"`},
		{"realm with userinfo", `WWW-Authenticate: Bearer realm="http://u:p@UPSTREAM/v2/token"`, `Bearer realm="` + public + `/v2/token"`},

		// passed on as the upstream sent them
		{"storage redirect", "Location: https://storage.example/blob?sig=abc", "https://storage.example/blob?sig=abc"},
		{"external token server", `WWW-Authenticate: Bearer realm="https://auth.example/token",service="registry"`, `Bearer realm="https://auth.example/token",service="registry"`},
		{"Basic challenge", `WWW-Authenticate: Basic realm="Sonatype Nexus Repository Manager"`, `Basic realm="Sonatype Nexus Repository Manager"`},

		// cannot be made safe
		{"very long Location", "Location: http://UPSTREAM" + long, ""},
		{"invalid UTF-8 in Location", "Location: http://UPSTREAM/v2/caf\xc3", ""},
		{"control character in Location", "Location: http://UPSTREAM/v2/a\x01b", ""},
		{"tab in Location", "Location: http://UPSTREAM/v2/a\tb", ""},
		{"javascript scheme", "Location: javascript:alert(document.cookie)", ""},
		{"data scheme", "Location: data:text/html,<script>alert(1)</script>", ""},
		{"userinfo hiding a foreign host", "Location: http://mydocker@evil.example/v2/", ""},
		{"backslash hiding a foreign host", `Location: http://UPSTREAM\@evil.example/v2/`, ""},
		{"null scheme on a foreign host", "Location: null://evil.example/v2/", ""},
		{"scheme without authority", "Location: http:evil.example", ""},
		{"invalid Content-Location", "Content-Location: javascript:alert(1)", ""},
		{"very long challenge", `WWW-Authenticate: Bearer realm="https://auth.example/token",scope="` + strings.Repeat("s", maxURLHeaderLength) + `"`, ""},
		{"control character in challenge", "WWW-Authenticate: Bearer realm=\"https://auth.example/token\x7f\"", ""},
		{"bare CR in Location", "Location: http://UPSTREAM/v2/a\rSet-Cookie: x=y", ""},
		{"NUL in Location", "Location: http://UPSTREAM/v2/a\x00b", ""},
		{"invalid UTF-8 in challenge", "WWW-Authenticate: Bearer realm=\"https://auth.example/\xff\"", ""},
		{"javascript realm", `WWW-Authenticate: Bearer realm="javascript:alert(1)"`, ""},
		{"realm with userinfo on a foreign host", `WWW-Authenticate: Bearer realm="https://mydocker@evil.example/token"`, ""},
		{"quoted-pair in realm", `WWW-Authenticate: Bearer realm="http://UPSTREAM/v2/tok\"en"`, ""},
	}

	c := tc.client(false)
	for i, hc := range cases {
		t.Run(hc.name, func(t *testing.T) {
			resp := do(t, c, http.MethodGet, tc.url("mydocker", fmt.Sprintf("/v2/?case=%d", i)), nil, nil)
			name, _, _ := strings.Cut(hc.header, ":")
			if hc.want != "" {
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("status: got %d, want the upstream's 401", resp.StatusCode)
				}
				if got := resp.Header.Get(name); got != hc.want {
					t.Errorf("%s:\n got %q\nwant %q", name, got, hc.want)
				}
				return
			}

			message := "cannot be passed on safely"
			if rejectedByTransport[hc.name] {
				message = "unreachable"
			}
			checkUnavailableError(t, resp, http.StatusBadGateway, message)
			for _, leaked := range []string{"Location", "Content-Location", "Www-Authenticate", "Set-Cookie"} {
				if v := resp.Header.Values(leaked); len(v) != 0 {
					t.Errorf("the 502 carries the upstream's %s %q", leaked, truncate(strings.Join(v, ","), 100))
				}
			}
		})
	}
}
