package dockerregistry

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Names of the targets in logs and placeholders.
const (
	targetPull   = "pull"
	targetPush   = "push"
	targetModule = "module"
)

// ServeHTTP routes a registry API request to its target and fixes the
// response on its way out. Requests outside /v2 go to next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !isAPIPath(r.URL.Path) {
		return h.serveOutsideAPI(w, r, next)
	}
	start := time.Now()
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)

	req, targetName, target, rerr := h.route(r)
	setPlaceholders(repl, req, targetName)
	observer := h.observe(w, r, repl, req, targetName, start)
	if rerr != nil {
		h.logRejection(r, req, rerr)
		writeRegistryError(w, r, h.APIVersion, rerr)
		observer.rejected(rerr)
		return nil
	}

	// a registry speaks plain request and response; an Upgrade header
	// would make reverse_proxy switch protocols with the upstream
	if r.Header.Get("Upgrade") != "" {
		r.Header.Del("Upgrade")
	}
	// reverse_proxy replaces the X-Forwarded headers of untrusted clients
	// but passes Forwarded (RFC 7239) on, and Jetty, which Nexus runs on,
	// builds URLs from it
	if _, ok := r.Header["Forwarded"]; ok && !isTrustedProxy(r) {
		r.Header.Del("Forwarded")
	}
	// Nexus serves its token endpoint at the root of the base URL, also
	// for repositories reached through path-based routing
	if target.PathPrefix != "" && req.operation != opToken {
		addPathPrefix(r, target.PathPrefix)
	}

	observer.forward(r)
	fixer := &responseFixer{
		ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: observer},
		apiVersion:            h.APIVersion,
		rewriter:              newOriginRewriter(r, h.upstreamHosts, target.PathPrefix),
		request:               r,
		logger:                h.logger,
	}
	defer fixer.releaseBody()
	proxyErr := target.proxy.ServeHTTP(fixer, r, notFoundHandler{apiVersion: h.APIVersion})
	if proxyErr == nil {
		proxyErr = fixer.finishBody()
	}
	err := proxyErr
	if err != nil {
		err = h.handleProxyError(fixer, r, err)
	}
	h.logProxied(r, repl, req, targetName, fixer.status, start, proxyErr)
	observer.finish(r, err)
	return err
}

// route classifies the request and picks its target, or returns the error
// that the module sends instead.
func (h *Handler) route(r *http.Request) (apiRequest, string, *Target, *registryError) {
	if reason := h.uaRule.rejection(r.Header.Values("User-Agent")); reason != reasonUnset {
		return apiRequest{operation: opInvalid}, targetModule, nil, &registryError{
			status:  http.StatusNotFound,
			code:    codeUnsupported,
			message: "this client is too old for the registry API v2; upgrade Docker to 1.6 or later",
			reason:  reason,
		}
	}
	if !isAllowedMethod(r.Method) {
		return apiRequest{operation: opInvalid}, targetModule, nil, &registryError{
			status:  http.StatusMethodNotAllowed,
			code:    codeUnsupported,
			message: "method " + r.Method + " is not supported by the registry API",
			reason:  reasonMethod,
			allow:   "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
		}
	}

	req, rerr := classifyRequest(r.Method, r.URL.EscapedPath())
	if rerr != nil {
		return req, targetModule, nil, rerr
	}

	if !h.goesToPush(r.Method, req) {
		return req, targetPull, h.Pull, nil
	}
	if h.ReadOnly {
		return req, targetModule, nil, &registryError{
			status:  http.StatusMethodNotAllowed,
			code:    codeUnsupported,
			message: "this registry endpoint is read-only; push to a hosted repository endpoint instead",
			reason:  reasonReadOnly,
			allow:   readOnlyAllow(req),
		}
	}
	if h.Push == nil {
		return req, targetPull, h.Pull, nil
	}
	return req, targetPush, h.Push, nil
}

// readOnlyAllow lists the methods that a read-only endpoint accepts on the
// path of a rejected write: none for upload sessions.
func readOnlyAllow(req apiRequest) string {
	if req.operation == opUpload {
		return ""
	}
	return "GET, HEAD, OPTIONS"
}

// goesToPush applies the routing table. Upload sessions and writes go to
// the push target, and blob HEAD follows blob_head. The token endpoint and
// reads go to the pull target.
func (h *Handler) goesToPush(method string, req apiRequest) bool {
	switch {
	case req.operation == opToken:
		return false
	case req.operation == opUpload:
		return true
	case req.operation == opBlob && method == http.MethodHead:
		return h.blobHeadPush
	}
	return req.write
}

// serveOutsideAPI passes a request outside /v2 to the next handler, except
// the registry API v1, which gets a registry error. When no later handler
// writes a response, the client gets 404 instead of an empty 200.
func (h *Handler) serveOutsideAPI(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.URL.Path == "/v1" || strings.HasPrefix(r.URL.Path, "/v1/") {
		rerr := &registryError{
			status:  http.StatusNotFound,
			code:    codeUnsupported,
			message: "the registry API v1 is not supported; use a client that speaks v2",
			reason:  reasonUnknownEndpoint,
		}
		writeRegistryError(w, r, h.APIVersion, rerr)
		h.metrics.countRejection(opInvalid, rerr)
		return nil
	}
	tracker := &passTracker{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	if err := next.ServeHTTP(tracker, r); err != nil {
		return err
	}
	if !tracker.wrote {
		return caddyhttp.Error(http.StatusNotFound, errors.New("no handler for a path outside the registry API"))
	}
	return nil
}

// handleProxyError sends OCI error JSON for a failed upstream round trip,
// because registry clients show the message of such a body and
// nothing of an empty one. Once the response has started, the error goes
// back to Caddy, which aborts the connection so that a short body cannot
// pass for a complete one.
func (h *Handler) handleProxyError(fixer *responseFixer, r *http.Request, err error) error {
	if fixer.wroteHeader {
		return err
	}
	status := http.StatusBadGateway
	var handlerErr caddyhttp.HandlerError
	if errors.As(err, &handlerErr) && handlerErr.StatusCode != 0 {
		status = handlerErr.StatusCode
	}
	// 499 means that the client closed the connection, so no response can
	// reach it
	if status == 499 {
		return err
	}
	message := "the request to the upstream registry failed"
	switch status {
	case http.StatusBadGateway:
		message = "the upstream registry is unreachable"
	case http.StatusGatewayTimeout:
		message = "the upstream registry timed out"
	}
	h.logger.Error("upstream round trip failed",
		zap.String("method", r.Method),
		zap.String("uri", r.RequestURI),
		zap.Int("status", status),
		zap.Error(err))
	writeRegistryError(fixer, r, h.APIVersion, &registryError{
		status:  status,
		code:    codeUnavailable,
		message: message,
	})
	return nil
}

// notFoundHandler is the next handler of a target: a target handler that
// passes a request on (not reverse_proxy) ends here.
type notFoundHandler struct{ apiVersion string }

func (n notFoundHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	writeRegistryError(w, r, n.apiVersion, &registryError{
		status:  http.StatusNotFound,
		code:    codeUnsupported,
		message: "the target handler passed the request on without a response",
	})
	return nil
}

// isTrustedProxy reports whether Caddy's trusted_proxies matched the
// client.
func isTrustedProxy(r *http.Request) bool {
	trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	return trusted
}

// isAPIPath reports whether a decoded path belongs to the registry API v2,
// also in a disguise that the classifier then rejects.
func isAPIPath(p string) bool {
	return p == "/v2" || strings.HasPrefix(p, "/v2/") || isDisguisedAPIPath(p)
}

func isAllowedMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

// addPathPrefix puts the path prefix of path-based routing in front of the
// path, in both its decoded and its escaped form, so that the escaped path
// reaches the upstream byte for byte.
func addPathPrefix(r *http.Request, prefix string) {
	u := *r.URL
	u.Path = prefix + u.Path
	if u.RawPath != "" {
		u.RawPath = prefix + u.RawPath
	}
	r.URL = &u
}

func setPlaceholders(repl *caddy.Replacer, req apiRequest, target string) {
	repl.Set("http.docker_registry.operation", req.operation)
	repl.Set("http.docker_registry.repository", req.repository)
	repl.Set("http.docker_registry.reference", req.reference)
	repl.Set("http.docker_registry.upload_id", req.uploadID)
	repl.Set("http.docker_registry.target", target)
}

func (h *Handler) logRejection(r *http.Request, req apiRequest, rerr *registryError) {
	c := h.logger.Check(zapcore.InfoLevel, "rejected registry request")
	if c != nil && h.rejectLimit.allow(time.Now()) {
		// split as in Caddy's access log, which has the same two fields
		remoteIP, remotePort, _ := net.SplitHostPort(r.RemoteAddr)
		c.Write(
			zap.String("method", r.Method),
			zap.String("uri", r.RequestURI),
			zap.String("user_agent", r.Header.Get("User-Agent")),
			zap.String("remote_ip", remoteIP),
			zap.String("remote_port", remotePort),
			zap.String("operation", req.operation),
			zap.Int("status", rerr.status),
			zap.String("code", rerr.code),
			zap.String("reason", rerr.message),
			zap.String("rejection", rejectionReasonNames[rejectionReasonOf(rerr)]),
		)
	}
}

func (h *Handler) logProxied(r *http.Request, repl *caddy.Replacer, req apiRequest, target string, status int, start time.Time, err error) {
	c := h.logger.Check(zapcore.DebugLevel, "routed registry request")
	if c == nil {
		return
	}
	upstream, _ := repl.GetString("http.reverse_proxy.upstream.hostport")
	fields := []zap.Field{
		zap.String("method", r.Method),
		zap.String("operation", req.operation),
		zap.String("repository", req.repository),
		zap.String("target", target),
		zap.String("upstream", upstream),
		zap.Int("status", status),
		zap.Duration("duration", time.Since(start)),
	}
	if req.reference != "" {
		fields = append(fields, zap.String("reference", req.reference))
	}
	if req.uploadID != "" {
		fields = append(fields, zap.String("upload_id", req.uploadID))
	}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	c.Write(fields...)
}
