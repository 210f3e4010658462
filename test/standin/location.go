package standin

import (
	"net/http"
	"net/url"
)

// locationWriter imitates a Nexus that builds URLs from its own connector:
// it rewrites the Location and Content-Location headers of a response to
// http://<listen address><path>, whatever host, scheme or forwarded headers
// the request carried. Relative values are first resolved against the
// request URL.
type locationWriter struct {
	http.ResponseWriter
	// origin is "http://" plus the stand-in's listen address.
	origin      string
	request     *http.Request
	wroteHeader bool
}

func (lw *locationWriter) WriteHeader(code int) {
	if !lw.wroteHeader {
		lw.wroteHeader = true
		lw.rewrite("Location")
		lw.rewrite("Content-Location")
	}
	lw.ResponseWriter.WriteHeader(code)
}

func (lw *locationWriter) Write(b []byte) (int, error) {
	if !lw.wroteHeader {
		lw.WriteHeader(http.StatusOK)
	}
	return lw.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (lw *locationWriter) Unwrap() http.ResponseWriter {
	return lw.ResponseWriter
}

func (lw *locationWriter) rewrite(name string) {
	value := lw.Header().Get(name)
	if value == "" {
		return
	}
	target, err := url.Parse(value)
	if err != nil {
		// An unparsable value is passed on unchanged, so a test can check
		// what the registry sent.
		return
	}
	resolved := lw.request.URL.ResolveReference(target)
	lw.Header().Set(name, lw.origin+resolved.RequestURI())
}
