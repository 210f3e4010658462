package dockerregistry

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Each test in this file reproduces a failure that operators reported with
// registries behind reverse proxies, reduced to the smallest exchange.

// zeroReader yields an endless stream of zero bytes without allocating.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// unsizedBody hides the length of a reader from net/http, so the client
// sends it with chunked transfer encoding.
type unsizedBody struct{ io.Reader }

func startSingle(t *testing.T, respond http.HandlerFunc, opts caddyOptions) (*testCaddy, *upstream) {
	t.Helper()
	up := newUpstream(t, "registry", respond)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())}, opts)
	return tc, up
}

func TestLargeMonolithicUploadHasNoSizeLimit(t *testing.T) {
	tc, up := startSingle(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) }, caddyOptions{})
	const size = 50 << 20

	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			uri := "/v2/app/blobs/uploads/" + testUpload + "?digest=" + testDigest
			resp := do(t, tc.client(h2), http.MethodPut, tc.url("mydocker", uri), io.LimitReader(zeroReader{}, size), http.Header{"Content-Length": {strconv.Itoa(size)}})
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("status: got %d, want 201", resp.StatusCode)
			}
			got := up.last(t)
			if got.BodyLength != size {
				t.Errorf("upstream body: got %d bytes, want %d", got.BodyLength, size)
			}
		})
	}
}

func TestChunkedUploadIsStreamedWithoutLength(t *testing.T) {
	tc, up := startSingle(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }, caddyOptions{})
	const size = 50 << 20

	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			uri := "/v2/app/blobs/uploads/" + testUpload
			req, err := http.NewRequest(http.MethodPatch, tc.url("mydocker", uri), unsizedBody{io.LimitReader(zeroReader{}, size)})
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/octet-stream")
			resp, err := tc.client(h2).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("status: got %d, want 202", resp.StatusCode)
			}
			got := up.last(t)
			if got.BodyLength != size {
				t.Errorf("upstream body: got %d bytes, want %d", got.BodyLength, size)
			}
			if got.ContentLength != -1 {
				t.Errorf("upstream Content-Length: got %d, want none (-1): the proxy must not compute it", got.ContentLength)
			}
			if len(got.TransferEncoding) != 1 || got.TransferEncoding[0] != "chunked" {
				t.Errorf("upstream Transfer-Encoding: got %v, want [chunked]", got.TransferEncoding)
			}
		})
	}
}

func TestUploadLocationMovedToPublicOrigin(t *testing.T) {
	var upstreamURL string
	tc, up := startSingle(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", upstreamURL+"/v2/app/blobs/uploads/"+testUpload+"?_state=aGVsbG8%2Bd29ybGQ%3D%3D&x=a+b")
		w.Header().Set("Docker-Upload-Uuid", testUpload)
		w.WriteHeader(http.StatusAccepted)
	}, caddyOptions{})
	upstreamURL = up.URL

	resp := do(t, tc.client(false), http.MethodPost, tc.url("mydocker", "/v2/app/blobs/uploads/"), nil, nil)
	want := "https://mydocker:" + tc.port + "/v2/app/blobs/uploads/" + testUpload + "?_state=aGVsbG8%2Bd29ybGQ%3D%3D&x=a+b"
	if got := resp.Header.Get("Location"); got != want {
		t.Errorf("Location:\n got %s\nwant %s", got, want)
	}
}

func TestExplicitPort443DroppedFromLocation(t *testing.T) {
	tc, _ := startSingle(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://mydocker:443/v2/app/blobs/uploads/"+testUpload+"?_state=s")
		w.WriteHeader(http.StatusAccepted)
	}, caddyOptions{})

	req, _ := http.NewRequest(http.MethodPost, tc.url("mydocker", "/v2/app/blobs/uploads/"), nil)
	req.Host = "mydocker" // the client used https://mydocker, port 443
	resp, err := tc.client(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := "https://mydocker/v2/app/blobs/uploads/" + testUpload + "?_state=s"
	if got := resp.Header.Get("Location"); got != want {
		t.Errorf("Location: got %s, want %s", got, want)
	}
}

// nexusChallenge imitates how Nexus builds the realm of its Bearer
// challenge from forwarded headers. Nexus 3.77 to 3.80 append the port of
// the Host header to X-Forwarded-Host even when it already has one, and a
// Nexus that receives no X-Forwarded-Proto writes the scheme "null".
func nexusChallenge(w http.ResponseWriter, r *http.Request) {
	scheme := r.Header.Get("X-Forwarded-Proto")
	if scheme == "" {
		scheme = "null"
	}
	host := r.Host
	if fh := r.Header.Get("X-Forwarded-Host"); fh != "" {
		host = fh
		if _, port := splitHostPort(r.Host); port != "" {
			host += ":" + port
		}
	}
	w.Header().Set("Www-Authenticate", `Bearer realm="`+scheme+"://"+host+`/v2/token",service="nexus"`)
	w.WriteHeader(http.StatusUnauthorized)
}

func TestForwardedHostWithoutPortAvoidsDoubledPort(t *testing.T) {
	tc, up := startSingle(t, nexusChallenge, caddyOptions{})

	req, _ := http.NewRequest(http.MethodGet, tc.url("mydocker", "/v2/"), nil)
	req.Host = "mydocker:8083"
	resp, err := tc.client(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	got := up.last(t)
	if fh := got.Header.Values("X-Forwarded-Host"); len(fh) != 1 || fh[0] != "mydocker" {
		t.Errorf("upstream X-Forwarded-Host: got %q, want one value mydocker", fh)
	}
	if got.Host != "mydocker:8083" {
		t.Errorf("upstream Host: got %s, want mydocker:8083", got.Host)
	}
	want := `Bearer realm="https://mydocker:8083/v2/token",service="nexus"`
	if challenge := resp.Header.Get("Www-Authenticate"); challenge != want {
		t.Errorf("challenge: got %s, want %s", challenge, want)
	}
}

func TestDoubledPortRealmRewritten(t *testing.T) {
	tc, _ := startSingle(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Www-Authenticate", `Bearer realm="https://mydocker:8083:8083/v2/token",service="nexus",scope="repository:app:pull"`)
		w.WriteHeader(http.StatusUnauthorized)
	}, caddyOptions{})

	req, _ := http.NewRequest(http.MethodGet, tc.url("mydocker", "/v2/"), nil)
	req.Host = "mydocker:8083"
	resp, err := tc.client(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := `Bearer realm="https://mydocker:8083/v2/token",service="nexus",scope="repository:app:pull"`
	if got := resp.Header.Get("Www-Authenticate"); got != want {
		t.Errorf("challenge: got %s, want %s", got, want)
	}
}

func TestNullSchemeRealmRewritten(t *testing.T) {
	tc, up := startSingle(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Www-Authenticate", `Bearer realm="null://mydocker:8083/v2/token",service="nexus"`)
		w.WriteHeader(http.StatusUnauthorized)
	}, caddyOptions{})

	req, _ := http.NewRequest(http.MethodGet, tc.url("mydocker", "/v2/"), nil)
	req.Host = "mydocker:8083"
	resp, err := tc.client(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if proto := up.last(t).Header.Get("X-Forwarded-Proto"); proto != "https" {
		t.Errorf("upstream X-Forwarded-Proto: got %q, want https", proto)
	}
	want := `Bearer realm="https://mydocker:8083/v2/token",service="nexus"`
	if got := resp.Header.Get("Www-Authenticate"); got != want {
		t.Errorf("challenge: got %s, want %s", got, want)
	}
}

func TestUnreachableUpstreamGivesJSON502(t *testing.T) {
	closed := newUpstream(t, "closed", nil)
	closed.Close()
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(closed.dial())}, caddyOptions{})

	for _, method := range []string{http.MethodGet, http.MethodHead} {
		t.Run(method, func(t *testing.T) {
			resp := do(t, tc.client(false), method, tc.url("mydocker", "/v2/"), nil, nil)
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("status: got %d, want 502", resp.StatusCode)
			}
			if got := resp.Header.Values(apiVersionHeader); len(got) != 1 || got[0] != "registry/2.0" {
				t.Errorf("%s: got %q, want exactly one registry/2.0", apiVersionHeader, got)
			}
			if method == http.MethodGet {
				if code := ociErrorCode(t, resp); code != codeUnavailable {
					t.Errorf("code: got %s, want %s", code, codeUnavailable)
				}
			}
		})
	}
}

func TestUpstreamAPIVersionHeaderNotDuplicated(t *testing.T) {
	tc, _ := startSingle(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header()[apiVersionHeader] = []string{"registry/2.0"}
		if r.URL.Query().Has("twice") {
			w.Header().Add(apiVersionHeader, "registry/2.1")
		}
		w.WriteHeader(http.StatusOK)
	}, caddyOptions{})

	for _, uri := range []string{"/v2/", "/v2/?twice"} {
		for _, h2 := range []bool{false, true} {
			t.Run(uri+" "+protoName(h2), func(t *testing.T) {
				resp := do(t, tc.client(h2), http.MethodGet, tc.url("mydocker", uri), nil, nil)
				if got := resp.Header.Values(apiVersionHeader); len(got) != 1 || got[0] != "registry/2.0" {
					t.Errorf("%s: got %q, want exactly one registry/2.0", apiVersionHeader, got)
				}
			})
		}
	}
}

func TestEveryRegistryMethodProxied(t *testing.T) {
	tc, up := startSingle(t, nil, caddyOptions{})
	cases := []struct{ method, uri string }{
		{http.MethodPut, "/v2/app/manifests/latest"},
		{http.MethodPatch, "/v2/app/blobs/uploads/" + testUpload},
		{http.MethodDelete, "/v2/app/manifests/" + testDigest},
		{http.MethodOptions, "/v2/app/manifests/latest"},
		{http.MethodOptions, "/v2/"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.uri, func(t *testing.T) {
			resp := do(t, tc.client(false), c.method, tc.url("mydocker", c.uri), nil, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status: got %d, want the upstream's 200", resp.StatusCode)
			}
			if got := up.last(t); got.Method != c.method || got.RequestURI != c.uri {
				t.Errorf("upstream received %s %s, want %s %s", got.Method, got.RequestURI, c.method, c.uri)
			}
		})
	}

	t.Run("TRACE refused as JSON", func(t *testing.T) {
		before := len(up.received())
		resp := do(t, tc.client(false), "TRACE", tc.url("mydocker", "/v2/"), nil, nil)
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("status: got %d, want 405", resp.StatusCode)
		}
		if code := ociErrorCode(t, resp); code != codeUnsupported {
			t.Errorf("code: got %s, want %s", code, codeUnsupported)
		}
		if len(up.received()) != before {
			t.Error("a refused method reached the upstream")
		}
	})
}

func TestSlowFinalPutSurvivesServerTimeouts(t *testing.T) {
	// Nexus checksums or scans a layer after reading the whole body and
	// responds to the final PUT minutes later. Here the pause is five
	// times the server's idle timeouts.
	const pause = 1500 * time.Millisecond
	tc, up := startSingle(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(pause)
		w.Header().Set("Docker-Content-Digest", testDigest)
		w.WriteHeader(http.StatusCreated)
	}, caddyOptions{server: map[string]any{
		"read_idle_timeout":  "300ms",
		"write_idle_timeout": "300ms",
		"idle_timeout":       "300ms",
	}})

	for _, h2 := range []bool{false, true} {
		for _, chunked := range []bool{false, true} {
			name := protoName(h2) + map[bool]string{false: " sized", true: " chunked"}[chunked]
			t.Run(name, func(t *testing.T) {
				const size = 4 << 20
				var body io.Reader = io.LimitReader(zeroReader{}, size)
				if chunked {
					body = unsizedBody{body}
				}
				req, _ := http.NewRequest(http.MethodPut, tc.url("mydocker", "/v2/app/blobs/uploads/"+testUpload+"?digest="+testDigest), body)
				if !chunked {
					req.ContentLength = size
				}
				resp, err := tc.client(h2).Do(req)
				if err != nil {
					t.Fatalf("final PUT failed: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					t.Fatalf("status: got %d, want 201", resp.StatusCode)
				}
				if got := up.last(t).BodyLength; got != size {
					t.Errorf("upstream body: got %d bytes, want %d", got, size)
				}
			})
		}
	}
}

func TestBlobHeadDuringPushAsksHostedRepository(t *testing.T) {
	// the group holds the base layer through its Docker Hub member, the
	// hosted repository does not
	group := newUpstream(t, "group", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1234")
		w.WriteHeader(http.StatusOK)
	})
	hosted := newUpstream(t, "hosted", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	})
	tc := startCaddy(t, map[string]any{
		"handler": "docker_registry",
		"pull":    proxyTo(group.dial()),
		"push":    proxyTo(hosted.dial()),
	}, caddyOptions{})

	resp := do(t, tc.client(false), http.MethodHead, tc.url("mydocker", "/v2/app/blobs/"+testDigest), nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("blob HEAD: got %d, want the hosted repository's 404 so that the client uploads the layer", resp.StatusCode)
	}
	if n := len(group.received()); n != 0 {
		t.Errorf("group received %d requests, want 0", n)
	}
}

func TestUploadStatusStaysOnHostedRepository(t *testing.T) {
	group := newUpstream(t, "group", nil)
	hosted := newUpstream(t, "hosted", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Range", "0-1023")
		w.WriteHeader(http.StatusNoContent)
	})
	tc := startCaddy(t, map[string]any{
		"handler": "docker_registry",
		"pull":    proxyTo(group.dial()),
		"push":    proxyTo(hosted.dial()),
	}, caddyOptions{})

	resp := do(t, tc.client(false), http.MethodGet, tc.url("mydocker", "/v2/app/blobs/uploads/"+testUpload), nil, nil)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != "0-1023" {
		t.Errorf("upload status: got %d with Range %q, want the hosted repository's 204 with 0-1023", resp.StatusCode, resp.Header.Get("Range"))
	}
	if n := len(group.received()); n != 0 {
		t.Errorf("group received %d requests, want 0", n)
	}
}

func TestPingForwardedWithAndWithoutSlash(t *testing.T) {
	tc, up := startSingle(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Www-Authenticate", `Basic realm="Sonatype Nexus Repository Manager"`)
		w.WriteHeader(http.StatusUnauthorized)
	}, caddyOptions{})

	for _, path := range []string{"/v2", "/v2/"} {
		for _, h2 := range []bool{false, true} {
			t.Run(path+" "+protoName(h2), func(t *testing.T) {
				resp := do(t, tc.client(h2), http.MethodGet, tc.url("mydocker", path), nil, nil)
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("status: got %d, want the upstream's 401", resp.StatusCode)
				}
				if got := resp.Header.Get("Www-Authenticate"); !strings.HasPrefix(got, "Basic ") {
					t.Errorf("challenge: got %q, want the upstream's Basic challenge", got)
				}
				if got := up.last(t).RequestURI; got != path {
					t.Errorf("upstream path: got %s, want %s", got, path)
				}
			})
		}
	}
}

func TestManifestHeadKeepsEntityHeaders(t *testing.T) {
	const index = "application/vnd.oci.image.index.v1+json"
	tc, _ := startSingle(t, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Length", "1609")
		h.Set("Content-Type", index)
		h.Set("Docker-Content-Digest", testDigest)
		h.Set("Etag", `"`+testDigest+`"`)
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(bytes.Repeat([]byte("x"), 1609))
		}
	}, caddyOptions{})

	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			c := tc.client(h2)
			resp := do(t, c, http.MethodHead, tc.url("mydocker", "/v2/app/manifests/1.0"), nil, nil)
			want := map[string]string{
				"Content-Length":        "1609",
				"Content-Type":          index,
				"Docker-Content-Digest": testDigest,
				"Etag":                  `"` + testDigest + `"`,
			}
			for name, value := range want {
				if got := resp.Header.Values(name); len(got) != 1 || got[0] != value {
					t.Errorf("%s: got %q, want %q", name, got, value)
				}
			}
			if resp.ContentLength != 1609 {
				t.Errorf("response length: got %d, want 1609", resp.ContentLength)
			}
			if body, _ := io.ReadAll(resp.Body); len(body) != 0 {
				t.Errorf("HEAD response body: got %d bytes, want none", len(body))
			}
			// a body sent after a HEAD response would corrupt the next
			// response on a reused HTTP/1.1 connection
			next := do(t, c, http.MethodGet, tc.url("mydocker", "/v2/app/manifests/1.0"), nil, nil)
			if body, _ := io.ReadAll(next.Body); len(body) != 1609 {
				t.Errorf("GET after HEAD: got %d bytes, want 1609", len(body))
			}
		})
	}
}

func TestAllAcceptLinesForwardedInOrder(t *testing.T) {
	tc, up := startSingle(t, nil, caddyOptions{})
	accept := []string{
		"application/vnd.oci.image.index.v1+json",
		"application/vnd.docker.distribution.manifest.list.v2+json",
		"application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
	}
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			do(t, tc.client(h2), http.MethodGet, tc.url("mydocker", "/v2/app/manifests/1.0"), nil, http.Header{"Accept": accept})
			got := up.last(t).Header.Values("Accept")
			if strings.Join(got, "\n") != strings.Join(accept, "\n") {
				t.Errorf("upstream Accept lines:\n got %q\nwant %q", got, accept)
			}
		})
	}
}

func TestNoCompressionNegotiatedForClient(t *testing.T) {
	payload := bytes.Repeat([]byte("layer data "), 10000)
	tc, up := startSingle(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			_, _ = zw.Write(payload)
			_ = zw.Close()
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
		_, _ = w.Write(payload)
	}, caddyOptions{})

	t.Run("client sends no Accept-Encoding", func(t *testing.T) {
		resp := do(t, tc.client(false), http.MethodGet, tc.url("mydocker", "/v2/app/blobs/"+testDigest), nil, nil)
		body, _ := io.ReadAll(resp.Body)
		if ae := up.last(t).Header.Values("Accept-Encoding"); len(ae) != 0 {
			t.Errorf("upstream Accept-Encoding: got %q, want none", ae)
		}
		if resp.ContentLength != int64(len(payload)) {
			t.Errorf("Content-Length: got %d, want %d", resp.ContentLength, len(payload))
		}
		if !bytes.Equal(body, payload) {
			t.Errorf("body: got %d bytes, want the upstream's %d bytes unchanged", len(body), len(payload))
		}
	})

	t.Run("client asks for gzip itself", func(t *testing.T) {
		resp := do(t, tc.client(false), http.MethodGet, tc.url("mydocker", "/v2/app/blobs/"+testDigest), nil, http.Header{"Accept-Encoding": {"gzip"}})
		if ce := resp.Header.Get("Content-Encoding"); ce != "gzip" {
			t.Fatalf("Content-Encoding: got %q, want gzip passed through", ce)
		}
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(zr)
		if !bytes.Equal(body, payload) {
			t.Errorf("decompressed body: got %d bytes, want %d", len(body), len(payload))
		}
	})
}

func TestOldDockerClientsRejected(t *testing.T) {
	tc, up := startSingle(t, nil, caddyOptions{})
	cases := []struct {
		agent    string
		rejected bool
	}{
		{"docker/1.5.0 go/go1.4.1 git-commit/a8a31ef kernel/3.13.0 os/linux arch/amd64", true},
		{"docker/1.4.1 go/go1.3.3 git-commit/5bc2ff8", true},
		{"Go 1.1 package http", true},
		{"docker/1.5.0-dev go/go1.4.1", false},
		{"docker/1.6.2 go/go1.4.2 git-commit/7c8fca2 kernel/4.0.5", false},
		{"Go-http-client/1.1", false},
	}
	for _, c := range cases {
		t.Run(c.agent, func(t *testing.T) {
			before := len(up.received())
			resp := do(t, tc.client(false), http.MethodGet, tc.url("mydocker", "/v2/"), nil, http.Header{"User-Agent": {c.agent}})
			reached := len(up.received()) > before
			if !c.rejected {
				if !reached || resp.StatusCode != http.StatusOK {
					t.Errorf("got status %d (upstream reached: %v), want the upstream's 200", resp.StatusCode, reached)
				}
				return
			}
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("status: got %d, want 404", resp.StatusCode)
			}
			if code := ociErrorCode(t, resp); code != codeUnsupported {
				t.Errorf("code: got %s, want %s", code, codeUnsupported)
			}
			if reached {
				t.Error("a rejected client reached the upstream")
			}
		})
	}
}

func protoName(h2 bool) string {
	if h2 {
		return "HTTP/2"
	}
	return "HTTP/1.1"
}
