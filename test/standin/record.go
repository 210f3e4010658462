package standin

import (
	"net/http"
	"strings"
	"sync"
)

// RecordedRequest is one request as a stand-in received it, before any
// routing, authentication or rewriting.
type RecordedRequest struct {
	// Method is the HTTP method.
	Method string
	// Path is the escaped path exactly as it appeared in the request line.
	Path string
	// RawQuery is the query string without the leading "?".
	RawQuery string
	// Header is a copy of the request headers.
	Header http.Header
	// Host is the Host header value.
	Host string
}

// requestLog stores every request a stand-in receives, in arrival order.
type requestLog struct {
	mu       sync.Mutex
	requests []RecordedRequest
}

func (l *requestLog) add(r *http.Request) {
	// RequestURI keeps the path as the client escaped it, while r.URL.Path
	// is already decoded.
	path, _, _ := strings.Cut(r.RequestURI, "?")
	entry := RecordedRequest{
		Method:   r.Method,
		Path:     path,
		RawQuery: r.URL.RawQuery,
		Header:   r.Header.Clone(),
		Host:     r.Host,
	}

	l.mu.Lock()
	l.requests = append(l.requests, entry)
	l.mu.Unlock()
}

func (l *requestLog) snapshot() []RecordedRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]RecordedRequest(nil), l.requests...)
}

func (l *requestLog) reset() {
	l.mu.Lock()
	l.requests = nil
	l.mu.Unlock()
}
