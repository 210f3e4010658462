// Package dockerregistry provides the http.handlers.docker_registry Caddy
// module: a front for Docker and OCI registries such as Sonatype Nexus
// Repository, with the conventions that Docker clients expect of a
// registry behind a TLS proxy.
package dockerregistry

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler serves the Docker registry HTTP API v2 under /v2 by routing each
// request to a pull or a push target, each a nested handler, usually
// reverse_proxy. Reads go to the pull target (a Nexus group repository,
// say) and writes and upload sessions to the push target (a hosted
// repository). Requests outside /v2 go to the next handler.
//
// The handler rejects malformed paths, old Docker clients and, on a
// read-only endpoint, writes, with OCI error JSON. It keeps exactly one
// Docker-Distribution-Api-Version header on every response, and moves
// upstream URLs in Location, Content-Location and Bearer realms to the
// public origin that the client used.
type Handler struct {
	// The target for reads: ping, token, catalog, tags, manifest and blob
	// downloads, referrers. Required.
	Pull *Target `json:"pull,omitempty"`

	// The target for writes and upload sessions. If absent, writes go to
	// the pull target, unless ReadOnly is set.
	Push *Target `json:"push,omitempty"`

	// Rejects every write and upload request with 405 UNSUPPORTED without
	// contacting an upstream. Cannot be combined with Push.
	// Default: false.
	ReadOnly bool `json:"read_only,omitempty"`

	// Where HEAD requests for blobs go: "push" or "pull". A client
	// pushing an image sends HEAD to learn whether each layer exists. A group
	// repository returns 200 for layers that only another member holds, so
	// the client skips the upload, and the hosted repository then rejects
	// the manifest with MANIFEST_BLOB_UNKNOWN. Default: "push" when a push
	// target is configured, else "pull".
	BlobHead string `json:"blob_head,omitempty"`

	// Regular expressions (Go syntax, RE2) matched against User-Agent;
	// matching clients get 404. They add to the built-in rejection of
	// Docker 1.5 and older unless AllowOldClients is set.
	RejectUserAgents []string `json:"reject_user_agents,omitempty"`

	// Turns off the built-in rejection of Docker 1.5 and older clients
	// (agents "docker/1.3", "docker/1.4", "docker/1.5" except
	// "docker/1.5.<digit>-dev", and "Go ..."). Default: false.
	AllowOldClients bool `json:"allow_old_clients,omitempty"`

	// The value of Docker-Distribution-Api-Version on responses whose
	// upstream sent none, and on errors the module sends itself.
	// Default: "registry/2.0".
	APIVersion string `json:"api_version,omitempty"`

	uaRule        userAgentRule
	blobHeadPush  bool
	upstreamHosts []string
	logger        *zap.Logger
	rejectLimit   *rejectionLimiter
	metrics       *registryMetrics
}

// Target is one destination of registry requests.
type Target struct {
	// The handler that serves requests for this target, usually
	// reverse_proxy. Unless configured otherwise, a reverse_proxy here
	// gets registry-friendly transport defaults: HTTP/1.1 to the
	// upstream, no transparent compression, and a read timeout of 900s.
	ProxyRaw json.RawMessage `json:"proxy,omitempty" caddy:"namespace=http.handlers inline_key=handler"`

	// A path prefix added in front of /v2 for the upstream, for Nexus
	// path-based routing (for example "/repository/docker-group"). It is
	// removed again from URLs in responses.
	PathPrefix string `json:"path_prefix,omitempty"`

	proxy caddyhttp.MiddlewareHandler
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.docker_registry",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults, registers the metrics, compiles the user-agent
// patterns and loads the target handlers.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()

	// rejections can come in floods from scanners or a misconfigured
	// client: log the first few each second, then one in a hundred
	h.rejectLimit = new(rejectionLimiter)

	var err error
	if h.metrics, err = provisionMetrics(ctx); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}

	if h.APIVersion == "" {
		h.APIVersion = defaultAPIVersion
	}
	h.blobHeadPush = h.Push != nil && h.BlobHead != "pull"

	h.uaRule = userAgentRule{rejectOldDocker: !h.AllowOldClients}
	for _, pattern := range h.RejectUserAgents {
		re, err := regexp.Compile(pattern)
		if err != nil {
			return fmt.Errorf("compiling reject_user_agents pattern %q: %v", pattern, err)
		}
		h.uaRule.patterns = append(h.uaRule.patterns, re)
	}

	// load the targets, pull first so that errors name the right one
	for _, t := range []struct {
		name   string
		target *Target
	}{{"pull", h.Pull}, {"push", h.Push}} {
		if t.target == nil {
			continue
		}
		if err := t.target.provision(ctx); err != nil {
			return fmt.Errorf("loading %s target: %v", t.name, err)
		}
		h.upstreamHosts = appendUpstreamHosts(h.upstreamHosts, t.target.proxy)
	}
	return nil
}

// Validate checks the configuration for contradictions.
func (h *Handler) Validate() error {
	if h.Pull == nil || h.Pull.proxy == nil {
		return fmt.Errorf("a pull target is required")
	}
	if h.ReadOnly && h.Push != nil {
		return fmt.Errorf("read_only cannot be combined with a push target")
	}
	if h.Push != nil && h.Push.proxy == nil {
		return fmt.Errorf("the push target has no proxy handler")
	}
	switch h.BlobHead {
	case "", "push", "pull":
	default:
		return fmt.Errorf(`invalid blob_head %q: must be "push" or "pull"`, h.BlobHead)
	}
	if h.BlobHead == "push" && h.Push == nil {
		return fmt.Errorf("blob_head push needs a push target")
	}
	if !isValidHeaderValue(h.APIVersion) {
		return fmt.Errorf("invalid api_version %q: must be printable ASCII", h.APIVersion)
	}
	for _, t := range []*Target{h.Pull, h.Push} {
		if t != nil {
			if err := validatePathPrefix(t.PathPrefix); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *Target) provision(ctx caddy.Context) error {
	if t.ProxyRaw == nil {
		return fmt.Errorf("missing proxy handler")
	}
	raw, err := withProxyDefaults(t.ProxyRaw)
	if err != nil {
		return err
	}
	t.ProxyRaw = raw
	mod, err := ctx.LoadModule(t, "ProxyRaw")
	if err != nil {
		return err
	}
	t.proxy = mod.(caddyhttp.MiddlewareHandler)
	return nil
}

// appendUpstreamHosts collects the host names of a reverse_proxy's static
// upstreams, so that URLs naming them can be recognised in responses.
func appendUpstreamHosts(hosts []string, handler caddyhttp.MiddlewareHandler) []string {
	rp, ok := handler.(*reverseproxy.Handler)
	if !ok {
		return hosts
	}
	// NOTE: dynamic upstreams (SRV, A lookups) are resolved per request,
	// so their host names are unknown here; URLs naming them are only
	// rewritten when they name the public host.
	for _, u := range rp.Upstreams {
		addr, err := caddy.ParseNetworkAddress(u.Dial)
		if err != nil || addr.IsUnixNetwork() {
			continue
		}
		host := strings.ToLower(strings.Trim(addr.Host, "[]"))
		if host != "" && !containsString(hosts, host) {
			hosts = append(hosts, host)
		}
	}
	return hosts
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// validatePathPrefix accepts "" or a path like /repository/docker-group:
// a leading slash, no trailing slash, and only characters that need no
// percent-encoding, so that adding it to an escaped path is exact.
func validatePathPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if !strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("invalid path_prefix %q: must start with a slash and not end with one", prefix)
	}
	for _, seg := range strings.Split(prefix[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("invalid path_prefix %q: empty or dot segment", prefix)
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(isAlnum(c) || strings.IndexByte("-._~", c) >= 0) {
				return fmt.Errorf("invalid path_prefix %q: only letters, digits and -._~ are allowed between slashes, without percent-encoding", prefix)
			}
		}
	}
	return nil
}

const defaultAPIVersion = "registry/2.0"

// isValidHeaderValue accepts non-empty printable ASCII with inner spaces,
// which every HTTP version sends unchanged.
func isValidHeaderValue(v string) bool {
	if v == "" || v[0] == ' ' || v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < ' ' || v[i] >= 0x7f {
			return false
		}
	}
	return true
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
