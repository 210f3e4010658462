package dockerregistry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// testCaddy is a Caddy instance running in the test process with one
// HTTPS server on 127.0.0.1, its certificate from Caddy's internal CA.
type testCaddy struct {
	addr    string // 127.0.0.1:port
	port    string
	rootCAs *x509.CertPool
	logFile string
}

// caddyOptions adjust the configuration that startCaddy loads.
type caddyOptions struct {
	// handlers after the docker_registry handler in the same route
	next []map[string]any
	// server fields merged into the server object (timeouts, say)
	server map[string]any
	// log level of the default logger, written to a file; "" keeps it off
	logLevel string
}

// startCaddy loads a config whose only route runs handler, and stops
// Caddy when the test ends. The certificate covers localhost, mydocker
// and mydocker.local; clients made by client() reach the server under any
// of those names.
func startCaddy(t *testing.T, handler map[string]any, opts caddyOptions) *testCaddy {
	t.Helper()
	dir := tempDir(t)
	port := freePort(t)
	tc := &testCaddy{addr: "127.0.0.1:" + port, port: port, logFile: filepath.Join(dir, "caddy.log")}

	server := map[string]any{
		"listen":                  []string{tc.addr},
		"routes":                  []any{map[string]any{"handle": append([]map[string]any{handler}, opts.next...)}},
		"tls_connection_policies": []any{map[string]any{}},
		"automatic_https":         map[string]any{"disable_redirects": true},
	}
	for k, v := range opts.server {
		server[k] = v
	}
	logging := map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR",
		"writer": map[string]any{"output": "discard"}}}}
	if opts.logLevel != "" {
		logging = map[string]any{"logs": map[string]any{"default": map[string]any{
			"level":   opts.logLevel,
			"writer":  map[string]any{"output": "file", "filename": tc.logFile},
			"encoder": map[string]any{"format": "json"},
		}}}
	}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": dir},
		"logging": logging,
		"apps": map[string]any{
			"http": map[string]any{"servers": map[string]any{"registry": server}},
			"tls": map[string]any{
				"certificates": map[string]any{"automate": []string{"localhost", "mydocker", "mydocker.local"}},
				"automation": map[string]any{"policies": []any{map[string]any{
					"issuers": []any{map[string]any{"module": "internal"}},
				}}},
			},
			"pki": map[string]any{"certificate_authorities": map[string]any{
				"local": map[string]any{"install_trust": false},
			}},
		},
	}
	body, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(body, true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})

	rootPEM, err := os.ReadFile(filepath.Join(dir, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatalf("reading internal CA root: %v", err)
	}
	tc.rootCAs = x509.NewCertPool()
	tc.rootCAs.AppendCertsFromPEM(rootPEM)
	for _, name := range []string{"localhost", "mydocker", "mydocker.local"} {
		tc.waitForCertificate(t, name)
	}
	return tc
}

// tempDir returns a directory for Caddy's storage that is removed after
// Caddy stopped. Unlike t.TempDir, the removal retries, because
// certificate maintenance may still finish a write after Stop returns.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "caddy-docker-registry-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for os.RemoveAll(dir) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	return dir
}

// waitForCertificate blocks until the server completes a TLS handshake,
// because the internal issuer signs the certificate in the background.
func (tc *testCaddy) waitForCertificate(t *testing.T, serverName string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err := tls.Dial("tcp", tc.addr, &tls.Config{ServerName: serverName, RootCAs: tc.rootCAs})
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TLS handshake with %s: %v", tc.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// client returns an HTTP client that trusts the internal CA and dials the
// test server whatever host name a URL names. http2 selects HTTP/2.
// Compression is off so that requests carry no Accept-Encoding unless a
// test sets one.
func (tc *testCaddy) client(http2 bool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	transport := &http.Transport{
		TLSClientConfig:    &tls.Config{RootCAs: tc.rootCAs},
		DisableCompression: true,
		ForceAttemptHTTP2:  http2,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, tc.addr)
		},
	}
	if !http2 {
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{
		Transport: transport,
		// a registry front never redirects; a test must see it if it does
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// url returns the public URL of path under host, with the server's port.
func (tc *testCaddy) url(host, path string) string {
	return "https://" + host + ":" + tc.port + path
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// recordedRequest is what an upstream stand-in received.
type recordedRequest struct {
	Method           string
	RequestURI       string
	Host             string
	Header           http.Header
	BodyLength       int64
	ContentLength    int64
	TransferEncoding []string
	Proto            string
}

// upstream is a recording HTTP server standing in for a registry; respond
// writes the response after the body has been read.
type upstream struct {
	*httptest.Server
	name string

	mu       sync.Mutex
	requests []recordedRequest
}

func newUpstream(t *testing.T, name string, respond http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{name: name}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		u.mu.Lock()
		u.requests = append(u.requests, recordedRequest{
			Method:           r.Method,
			RequestURI:       r.RequestURI,
			Host:             r.Host,
			Header:           r.Header.Clone(),
			BodyLength:       n,
			ContentLength:    r.ContentLength,
			TransferEncoding: r.TransferEncoding,
			Proto:            r.Proto,
		})
		u.mu.Unlock()
		if respond != nil {
			respond(w, r)
			return
		}
		w.Header().Set("X-Upstream", name)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(u.Close)
	return u
}

// dial returns the upstream's address for a reverse_proxy upstream.
func (u *upstream) dial() string { return strings.TrimPrefix(u.URL, "http://") }

func (u *upstream) received() []recordedRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recordedRequest(nil), u.requests...)
}

func (u *upstream) last(t *testing.T) recordedRequest {
	t.Helper()
	got := u.received()
	if len(got) == 0 {
		t.Fatalf("upstream %s received no request", u.name)
	}
	return got[len(got)-1]
}

// proxyTo returns a target object whose reverse_proxy dials addresses.
func proxyTo(addresses ...string) map[string]any {
	var ups []any
	for _, a := range addresses {
		ups = append(ups, map[string]any{"dial": a})
	}
	return map[string]any{"proxy": map[string]any{"handler": "reverse_proxy", "upstreams": ups}}
}

// ociError decodes an OCI error body and returns its first code.
func ociErrorCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	var body ociErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decoding OCI error body: %v", err)
	}
	if len(body.Errors) == 0 || body.Errors[0].Message == "" {
		t.Fatalf("OCI error body has no error with a message: %+v", body)
	}
	return body.Errors[0].Code
}

// do sends a request and fails the test on transport errors.
func do(t *testing.T, c *http.Client, method, url string, body io.Reader, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
