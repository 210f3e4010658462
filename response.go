package dockerregistry

import (
	"bufio"
	"io"
	"net"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// responseFixer applies the registry rules to a proxied response at the
// moment its header is written: exactly one API version header, and
// upstream URLs in Location, Content-Location and Bearer realms moved to
// the public origin. The body passes through untouched.
type responseFixer struct {
	caddyhttp.ResponseWriterWrapper
	apiVersion  string
	rewriter    originRewriter
	wroteHeader bool
	status      int
}

func (f *responseFixer) WriteHeader(status int) {
	if f.wroteHeader {
		f.ResponseWriter.WriteHeader(status)
		return
	}
	// informational responses (100 Continue, 103 Early Hints) go out as
	// they are and the final header comes later
	if status >= 100 && status < 200 && status != http.StatusSwitchingProtocols {
		f.ResponseWriter.WriteHeader(status)
		return
	}
	f.wroteHeader = true
	f.status = status
	f.fixHeader(f.ResponseWriter.Header())
	f.ResponseWriter.WriteHeader(status)
}

func (f *responseFixer) Write(p []byte) (int, error) {
	if !f.wroteHeader {
		f.WriteHeader(http.StatusOK)
	}
	return f.ResponseWriter.Write(p)
}

// ReadFrom keeps the fast path of the underlying writer (sendfile, splice)
// after making sure the header was fixed.
func (f *responseFixer) ReadFrom(r io.Reader) (int64, error) {
	if !f.wroteHeader {
		f.WriteHeader(http.StatusOK)
	}
	return f.ResponseWriterWrapper.ReadFrom(r)
}

// FlushError lets http.ResponseController flush; like net/http, a flush
// before any header commits a 200.
func (f *responseFixer) FlushError() error {
	if !f.wroteHeader {
		f.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(f.ResponseWriter).Flush()
}

// Hijack is reached only by protocol upgrades, which the module strips
// from requests; it is implemented so that the fixer hides nothing.
func (f *responseFixer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	f.wroteHeader = true
	return http.NewResponseController(f.ResponseWriter).Hijack()
}

func (f *responseFixer) fixHeader(h http.Header) {
	setAPIVersion(h, f.apiVersion)
	for _, name := range [...]string{"Location", "Content-Location"} {
		values := h[name]
		for i, v := range values {
			if rewritten, changed := f.rewriter.rewriteURL(v); changed {
				values[i] = rewritten
			}
		}
	}
	challenges := h["Www-Authenticate"]
	for i, c := range challenges {
		if rewritten, changed := f.rewriter.rewriteBearerRealm(c); changed {
			challenges[i] = rewritten
		}
	}
}

// passTracker records whether the handlers after the module wrote anything
// for a request outside the registry API.
type passTracker struct {
	caddyhttp.ResponseWriterWrapper
	wrote bool
}

func (t *passTracker) WriteHeader(status int) {
	if status >= 200 || status == http.StatusSwitchingProtocols {
		t.wrote = true
	}
	t.ResponseWriter.WriteHeader(status)
}

func (t *passTracker) Write(p []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(p)
}

func (t *passTracker) ReadFrom(r io.Reader) (int64, error) {
	t.wrote = true
	return t.ResponseWriterWrapper.ReadFrom(r)
}

func (t *passTracker) FlushError() error {
	t.wrote = true
	return http.NewResponseController(t.ResponseWriter).Flush()
}

func (t *passTracker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	t.wrote = true
	return http.NewResponseController(t.ResponseWriter).Hijack()
}
