package dockerregistry

import (
	"bufio"
	"io"
	"net"
	"net/http"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

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
	request     *http.Request
	logger      *zap.Logger
	wroteHeader bool
	status      int

	// replaced is set when the upstream response carried a URL header
	// that cannot be made safe and the module sent a 502 instead. The
	// upstream's header and body then go nowhere.
	replaced      bool
	droppedHeader http.Header

	// aligner is set for large HTTP/2 downloads (see h2frames.go)
	aligner *frameAligner
}

// Header returns the header map of the response, or a detached map once
// the upstream response was replaced, so that trailers copied later by
// reverse_proxy do not reach the client.
func (f *responseFixer) Header() http.Header {
	if f.replaced {
		return f.droppedHeader
	}
	return f.ResponseWriter.Header()
}

func (f *responseFixer) WriteHeader(status int) {
	if f.wroteHeader {
		if !f.replaced {
			f.ResponseWriter.WriteHeader(status)
		}
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
	if unsafe := f.fixHeader(f.ResponseWriter.Header()); unsafe != "" {
		f.replaceWithError(status, unsafe)
		return
	}
	if shouldAlignFrames(f.request, status, f.ResponseWriter.Header()) {
		f.aligner = &frameAligner{
			w:       f.ResponseWriter,
			flusher: http.NewResponseController(f.ResponseWriter).Flush,
		}
	}
	f.ResponseWriter.WriteHeader(status)
}

// replaceWithError sends a 502 with OCI error JSON in place of an upstream
// response whose header field named unsafe cannot be made safe.
func (f *responseFixer) replaceWithError(upstreamStatus int, unsafe string) {
	if f.logger != nil {
		if c := f.logger.Check(zapcore.ErrorLevel, "upstream response rejected"); c != nil {
			c.Write(
				zap.String("method", f.request.Method),
				zap.String("uri", f.request.RequestURI),
				zap.Int("upstream_status", upstreamStatus),
				zap.String("header", unsafe),
			)
		}
	}
	h := f.ResponseWriter.Header()
	for name := range h {
		// Server and Alt-Svc come from Caddy, everything else from the
		// upstream
		if name != "Server" && name != "Alt-Svc" {
			delete(h, name)
		}
	}
	f.replaced = true
	f.droppedHeader = http.Header{}
	f.status = http.StatusBadGateway
	writeRegistryError(f.ResponseWriter, f.request, f.apiVersion, &registryError{
		status:  http.StatusBadGateway,
		code:    codeUnavailable,
		message: "the upstream registry sent a " + unsafe + " header that cannot be passed on safely",
		detail:  map[string]string{"header": unsafe},
	})
}

// Write passes the body on, or discards it after the response was
// replaced; reverse_proxy then reads the upstream body to its end.
func (f *responseFixer) Write(p []byte) (int, error) {
	if !f.wroteHeader {
		f.WriteHeader(http.StatusOK)
	}
	if f.replaced {
		return len(p), nil
	}
	if f.aligner != nil {
		return f.aligner.Write(p)
	}
	return f.ResponseWriter.Write(p)
}

// ReadFrom keeps the fast path of the underlying writer (sendfile, splice)
// after making sure the header was fixed.
func (f *responseFixer) ReadFrom(r io.Reader) (int64, error) {
	if !f.wroteHeader {
		f.WriteHeader(http.StatusOK)
	}
	if f.replaced {
		return io.Copy(io.Discard, r)
	}
	if f.aligner != nil {
		return io.Copy(f.aligner, r)
	}
	return f.ResponseWriterWrapper.ReadFrom(r)
}

// FlushError lets http.ResponseController flush; like net/http, a flush
// before any header commits a 200.
func (f *responseFixer) FlushError() error {
	if !f.wroteHeader {
		f.WriteHeader(http.StatusOK)
	}
	if f.aligner != nil {
		if err := f.aligner.flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(f.ResponseWriter).Flush()
}

// finishBody sends the end of the body that the aligner held back, once
// the proxy has copied the whole body. An error means that the client is
// gone.
func (f *responseFixer) finishBody() error {
	if f.aligner == nil {
		return nil
	}
	err := f.aligner.flush()
	f.aligner.close()
	return err
}

// releaseBody stops the aligner however the proxy ended, a panic
// included, so that its timer never writes after the handler returned.
func (f *responseFixer) releaseBody() {
	if f.aligner != nil {
		f.aligner.close()
	}
}

// Hijack is reached only by protocol upgrades, which the module strips
// from requests; it is implemented so that the fixer hides nothing.
func (f *responseFixer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	f.wroteHeader = true
	return http.NewResponseController(f.ResponseWriter).Hijack()
}

// fixHeader applies the registry rules to the upstream's response header.
// It returns the name of the first header field that cannot be made safe
// (see isSafeURL and isSafeChallenge), or "".
func (f *responseFixer) fixHeader(h http.Header) string {
	setAPIVersion(h, f.apiVersion)
	for _, name := range [...]string{"Location", "Content-Location"} {
		values := h[name]
		for i, v := range values {
			if rewritten, changed := f.rewriter.rewriteURL(v); changed {
				values[i] = rewritten
			}
			if !isSafeURL(values[i]) {
				return name
			}
		}
	}
	// pagination of the catalog and tag lists names the next page in a
	// Link header, with the path prefix of path-based routing
	links := h["Link"]
	for i, v := range links {
		if rewritten, changed := f.rewriter.rewriteLinks(v); changed {
			links[i] = rewritten
		}
	}
	challenges := h["Www-Authenticate"]
	for i, c := range challenges {
		if rewritten, changed := f.rewriter.rewriteBearerRealm(c); changed {
			challenges[i] = rewritten
		}
		if !isSafeChallenge(challenges[i]) {
			return "WWW-Authenticate"
		}
	}
	return ""
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
