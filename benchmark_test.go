package dockerregistry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// BenchmarkServeHTTP measures the module's own cost per request: the
// targets are benchTarget handlers in the same process, and the request,
// its context and the response writer are reused, so that the
// allocations reported are those of ServeHTTP alone.
func BenchmarkServeHTTP(b *testing.B) {
	cases := []struct {
		name, method, path string
		body               []byte
		accessLog          bool
	}{
		{"manifest_get", http.MethodGet, "/v2/team/app/manifests/1.0", nil, false},
		{"manifest_get_access_log", http.MethodGet, "/v2/team/app/manifests/1.0", nil, true},
		{"blob_get", http.MethodGet, "/v2/team/app/blobs/" + testDigest, nil, false},
		{"upload_patch", http.MethodPatch, "/v2/team/app/blobs/uploads/" + testUpload, bytes.Repeat([]byte("x"), 32<<10), false},
		{"read_only_rejection", http.MethodPut, "/v2/team/app/manifests/1.0", []byte("{}"), false},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h := provisionBenchHandler(b, c.name == "read_only_rejection")
			bench := newBenchRequest(b, c.method, c.path, c.body, c.accessLog)
			w := &discardResponseWriter{header: http.Header{}}
			next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

			b.ReportAllocs()
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				r := bench.reset()
				clear(w.header)
				if err := h.ServeHTTP(w, r, next); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// provisionBenchHandler provisions a handler whose pull and push targets
// respond with 200 from memory. readOnly makes it reject writes instead.
func provisionBenchHandler(b *testing.B, readOnly bool) *Handler {
	b.Helper()
	ctx, cancel := newBenchContext(b)
	b.Cleanup(cancel)

	target := func(size int) *Target {
		return &Target{ProxyRaw: json.RawMessage(`{"handler":"docker_registry_bench_target","size":` + strconv.Itoa(size) + `}`)}
	}
	h := &Handler{Pull: target(4096)}
	if readOnly {
		h.ReadOnly = true
	} else {
		h.Push = target(0)
	}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		b.Fatal(err)
	}
	return h
}

func newBenchContext(b *testing.B) (caddy.Context, context.CancelFunc) {
	b.Helper()
	var config caddy.Config
	if err := json.Unmarshal([]byte(`{
		"admin": {"disabled": true},
		"logging": {"logs": {"default": {"writer": {"output": "discard"}}}}
	}`), &config); err != nil {
		b.Fatal(err)
	}
	base, err := caddy.ProvisionContext(&config)
	if err != nil {
		b.Fatalf("provisioning a context: %v", err)
	}
	return caddy.NewContext(base)
}

// benchRequest is a request whose context values, URL and body are set
// up once and restored before each iteration, as Caddy's server would
// prepare them for a new request.
type benchRequest struct {
	req        *http.Request
	url        url.URL
	currentURL url.URL
	extra      *caddyhttp.ExtraLogFields
	body       *resettableBody
}

// newBenchRequest prepares a request; accessLog puts a server that writes
// access logs into its context.
func newBenchRequest(b *testing.B, method, path string, body []byte, accessLog bool) *benchRequest {
	b.Helper()
	u, err := url.Parse("https://mydocker" + path)
	if err != nil {
		b.Fatal(err)
	}
	br := &benchRequest{url: *u, extra: new(caddyhttp.ExtraLogFields)}
	ctx := context.WithValue(context.Background(), caddy.ReplacerCtxKey, caddy.NewReplacer())
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	ctx = context.WithValue(ctx, caddyhttp.ExtraLogFieldsCtxKey, br.extra)
	if accessLog {
		ctx = context.WithValue(ctx, caddyhttp.ServerCtxKey, &caddyhttp.Server{Logs: &caddyhttp.ServerLogConfig{}})
	}
	br.req = (&http.Request{
		Method:     method,
		Host:       "mydocker",
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{"User-Agent": {"docker/27.3.1 go/go1.22.7"}},
		RemoteAddr: "127.0.0.1:50000",
		RequestURI: path,
		Body:       http.NoBody,
	}).WithContext(ctx)
	if body != nil {
		br.body = &resettableBody{data: body}
		br.req.ContentLength = int64(len(body))
	}
	return br
}

// reset returns the request in its original state for the next iteration.
func (br *benchRequest) reset() *http.Request {
	br.currentURL = br.url
	br.req.URL = &br.currentURL
	if br.body != nil {
		br.body.Reset(br.body.data)
		br.req.Body = br.body
	}
	// a fresh list of access log fields, as Caddy's server makes one for
	// every request
	*br.extra = caddyhttp.ExtraLogFields{}
	return br.req
}

// resettableBody is a request body that can be read again after Reset.
type resettableBody struct {
	bytes.Reader
	data []byte
}

func (*resettableBody) Close() error { return nil }

// discardResponseWriter drops the response body and keeps its header map
// across iterations.
type discardResponseWriter struct {
	header http.Header
	status int
}

func (w *discardResponseWriter) Header() http.Header { return w.header }

func (w *discardResponseWriter) Write(p []byte) (int, error) { return len(p), nil }

func (w *discardResponseWriter) WriteHeader(status int) { w.status = status }

func init() {
	caddy.RegisterModule(benchTarget{})
}

// benchTarget is a target handler for benchmarks. It reads the request
// body to the end and responds with 200 and Size bytes, written through
// ReadFrom as file_server and other copying handlers do.
type benchTarget struct {
	Size int `json:"size,omitempty"`

	body []byte
}

func (benchTarget) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.docker_registry_bench_target",
		New: func() caddy.Module { return new(benchTarget) },
	}
}

func (t *benchTarget) Provision(caddy.Context) error {
	t.body = bytes.Repeat([]byte("b"), t.Size)
	return nil
}

func (t *benchTarget) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		return err
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(t.body)))
	w.WriteHeader(http.StatusOK)
	if len(t.body) == 0 {
		return nil
	}
	var reader bytes.Reader
	reader.Reset(t.body)
	_, err := w.(io.ReaderFrom).ReadFrom(&reader)
	return err
}

// ReadFrom stands for the sendfile and splice fast paths of net/http's
// response writer.
func (w *discardResponseWriter) ReadFrom(r io.Reader) (int64, error) { return io.Copy(io.Discard, r) }
