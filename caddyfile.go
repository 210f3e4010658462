package dockerregistry

import (
	"errors"
	"net/url"
	"regexp"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("docker_registry", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("docker_registry", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(helper httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h := new(Handler)
	proxies, err := h.unmarshal(helper.Dispenser)
	if err != nil {
		return nil, err
	}
	// handle_response blocks inside a target need the helper to parse
	// their routes, and the targets are encoded only after that
	for _, p := range proxies {
		if err := p.proxy.FinalizeUnmarshalCaddyfile(helper); err != nil {
			return nil, err
		}
		p.target.ProxyRaw = caddyconfig.JSONModuleObject(p.proxy, "handler", "reverse_proxy", nil)
	}
	return h, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	docker_registry [<upstream>] {
//	    # targets; <upstream> is host:port or http(s)://host:port[/<path prefix>]
//	    pull <upstream...> [{
//	        <reverse_proxy subdirectives...>
//	    }]
//	    push <upstream...> [{
//	        <reverse_proxy subdirectives...>
//	    }]
//	    push off
//
//	    # routing and client policy
//	    blob_head push|pull
//	    reject_user_agent <regexp...>
//	    reject_user_agent off
//	    api_version <value>
//	}
//
// An inline upstream is the pull target and, unless push is given, also
// the push target. handle_response blocks inside a target are parsed only
// through the Caddyfile adapter, which supplies what they need.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	proxies, err := h.unmarshal(d)
	if err != nil {
		return err
	}
	for _, p := range proxies {
		p.target.ProxyRaw = caddyconfig.JSONModuleObject(p.proxy, "handler", "reverse_proxy", nil)
	}
	return nil
}

// pendingProxy is a target whose reverse_proxy is parsed but not encoded.
type pendingProxy struct {
	target *Target
	proxy  *reverseproxy.Handler
}

func (h *Handler) unmarshal(d *caddyfile.Dispenser) ([]pendingProxy, error) {
	d.Next() // consume the directive name
	directive := d.Token()

	var proxies []pendingProxy
	if inline := d.RemainingArgsAsTokens(); len(inline) > 0 {
		tokens := append([]caddyfile.Token{directive}, inline...)
		target, proxy, err := parseTarget(d, tokens)
		if err != nil {
			return nil, err
		}
		h.Pull = target
		proxies = append(proxies, pendingProxy{target, proxy})
	}

	inlineUpstream := h.Pull != nil
	seen := map[string]bool{}
	for d.NextBlock(0) {
		option := d.Val()
		// push is checked in its case, because push off together with a
		// push upstream deserves a clearer message than a duplicate
		if seen[option] && option != "push" {
			return nil, d.Errf("duplicate subdirective %s", option)
		}
		seen[option] = true

		switch option {
		case "pull":
			if inlineUpstream {
				return nil, d.Err("pull cannot be combined with an upstream on the directive line")
			}
			target, proxy, err := parseTarget(d, d.NextSegment())
			if err != nil {
				return nil, err
			}
			h.Pull = target
			proxies = append(proxies, pendingProxy{target, proxy})

		case "push":
			segment := d.NextSegment()
			off := len(segment) > 1 && segment[1].Text == "off"
			if off && len(segment) > 2 {
				return nil, d.Err("push off takes no other arguments and no block")
			}
			if h.ReadOnly || h.Push != nil {
				if off == h.ReadOnly {
					return nil, d.Errf("duplicate subdirective %s", option)
				}
				return nil, d.Err("push off cannot be combined with a push upstream")
			}
			if off {
				h.ReadOnly = true
				continue
			}
			target, proxy, err := parseTarget(d, segment)
			if err != nil {
				return nil, err
			}
			h.Push = target
			proxies = append(proxies, pendingProxy{target, proxy})

		case "blob_head":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			if d.Val() != "push" && d.Val() != "pull" {
				return nil, d.Errf("invalid blob_head value %s: must be push or pull", d.Val())
			}
			h.BlobHead = d.Val()
			if d.NextArg() {
				return nil, d.ArgErr()
			}

		case "reject_user_agent":
			patterns := d.RemainingArgs()
			if len(patterns) == 0 {
				return nil, d.ArgErr()
			}
			if len(patterns) == 1 && patterns[0] == "off" {
				h.AllowOldClients = true
				continue
			}
			if containsString(patterns, "off") {
				return nil, d.Err("reject_user_agent off takes no patterns")
			}
			for _, p := range patterns {
				if _, err := regexp.Compile(p); err != nil {
					return nil, d.Errf("invalid reject_user_agent pattern %s: %v", p, err)
				}
			}
			h.RejectUserAgents = patterns

		case "api_version":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			h.APIVersion = d.Val()
			if d.NextArg() {
				return nil, d.ArgErr()
			}

		default:
			return nil, d.Errf("unrecognized subdirective %s", option)
		}
	}

	if h.Pull == nil {
		return nil, d.Err("missing upstream: give one on the directive line or in a pull subdirective")
	}
	return proxies, nil
}

// parseTarget hands the tokens of one target, from its name to the end of
// its block, to reverse_proxy's own Caddyfile parser. URL upstreams lose
// their path first, because reverse_proxy accepts none: the path becomes
// the target's path prefix for Nexus path-based routing.
func parseTarget(d *caddyfile.Dispenser, tokens []caddyfile.Token) (*Target, *reverseproxy.Handler, error) {
	name := tokens[0].Text
	target := new(Target)
	for i := 1; i < len(tokens) && tokens[i].Text != "{"; i++ {
		base, prefix, err := splitUpstreamURL(tokens[i].Text)
		if err != nil {
			return nil, nil, d.Errf("invalid upstream %s: %v", tokens[i].Text, err)
		}
		if i > 1 && prefix != target.PathPrefix {
			return nil, nil, d.Errf("upstreams of one target must share the same path prefix, got %q and %q", target.PathPrefix, prefix)
		}
		target.PathPrefix = prefix
		tokens[i].Text = base
	}
	if err := validatePathPrefix(target.PathPrefix); err != nil {
		return nil, nil, d.Err(err.Error())
	}

	proxy := new(reverseproxy.Handler)
	if err := proxy.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
		return nil, nil, err
	}
	if len(proxy.Upstreams) == 0 && proxy.DynamicUpstreams == nil {
		return nil, nil, d.Errf("%s needs at least one upstream", name)
	}
	return target, proxy, nil
}

// splitUpstreamURL splits "http://nexus:8081/repository/docker-group" into
// the upstream without its path and the path prefix. Other forms are
// returned unchanged with no prefix.
func splitUpstreamURL(upstream string) (base, prefix string, err error) {
	if !strings.Contains(upstream, "://") {
		return upstream, "", nil
	}
	u, err := url.Parse(upstream)
	if err != nil {
		return "", "", err
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", "", errors.New("an upstream URL may carry a path prefix but no query, fragment or user info")
	}
	prefix = strings.TrimSuffix(u.EscapedPath(), "/")
	u.Path, u.RawPath = "", ""
	return u.String(), prefix, nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
