package dockerregistry

import (
	"net"
	"net/http"
	"strings"
)

// originRewriter turns URLs that an upstream built for itself into URLs on
// the public origin the client used. Registries put absolute URLs in
// Location (upload sessions), Content-Location and the realm of a Bearer
// challenge. Behind a proxy they often name their own dial address, plain
// http, an explicit :443, a doubled port or the scheme "null".
type originRewriter struct {
	// origin is scheme://host[:port] as the client reached the module,
	// without a default port.
	origin string
	// publicHost is the host name of origin, lowercase.
	publicHost string
	// upstreamHosts are the lowercase host names of the upstreams.
	upstreamHosts []string
	// prefix is the path prefix of path-based routing, removed from
	// rewritten paths.
	prefix string
}

// newOriginRewriter derives the public origin from the request: https on a
// TLS connection, and the Host the client sent.
func newOriginRewriter(r *http.Request, upstreamHosts []string, prefix string) originRewriter {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host, port := splitHostPort(r.Host)
	if strings.IndexByte(r.Host, '@') >= 0 || !isPublicHost(host, port) {
		// Go accepts Host values (and absolute-form request targets) with
		// characters such as ',', '"' or '@', which would change the
		// meaning of a URL or auth-param built from them. Such a request
		// gets the upstream's URLs unchanged.
		return originRewriter{upstreamHosts: upstreamHosts, prefix: prefix}
	}
	hostport := host
	if port != "" && !(scheme == "https" && port == "443") && !(scheme == "http" && port == "80") {
		hostport = net.JoinHostPort(strings.Trim(host, "[]"), port)
	}
	return originRewriter{
		origin:        scheme + "://" + hostport,
		publicHost:    strings.ToLower(strings.Trim(host, "[]")),
		upstreamHosts: upstreamHosts,
		prefix:        prefix,
	}
}

// rewriteURL returns the public form of a URL sent by the upstream and
// whether it changed. Absolute URLs on an upstream host or on the public
// host are moved to the public origin. The path, query and fragment are
// kept byte for byte, less the path prefix. Relative URLs only lose the
// prefix. URLs on any other host are returned unchanged.
func (o originRewriter) rewriteURL(u string) (string, bool) {
	if o.publicHost == "" {
		return u, false
	}
	if strings.HasPrefix(u, "/") && !strings.HasPrefix(u, "//") {
		trimmed := o.trimPrefix(u)
		if isNetworkPathReference(trimmed) {
			// "/prefix//evil.example/" without its prefix would name
			// another host; keep it on the public origin instead
			return o.origin + trimmed, true
		}
		return trimmed, trimmed != u
	}

	authority, rest, ok := splitAbsoluteURL(u)
	if !ok {
		return u, false
	}
	host, _ := splitHostPort(authority)
	host = strings.ToLower(strings.Trim(host, "[]"))
	if !o.isOwnHost(host) {
		return u, false
	}
	out := o.origin + o.trimPrefix(rest)
	return out, out != u
}

func (o originRewriter) isOwnHost(host string) bool {
	if host == o.publicHost {
		return true
	}
	for _, h := range o.upstreamHosts {
		if host == h {
			return true
		}
	}
	return false
}

// trimPrefix removes the path prefix from a path that starts with it as a
// whole segment. A path that would still start with the prefix afterwards
// is left as it is, so that rewriting a rewritten URL changes nothing.
func (o originRewriter) trimPrefix(pathAndQuery string) string {
	trimmed, ok := o.cutPrefix(pathAndQuery)
	if !ok {
		return pathAndQuery
	}
	if _, again := o.cutPrefix(trimmed); again {
		return pathAndQuery
	}
	return trimmed
}

func (o originRewriter) cutPrefix(pathAndQuery string) (string, bool) {
	if o.prefix == "" {
		return pathAndQuery, false
	}
	rest, ok := strings.CutPrefix(pathAndQuery, o.prefix)
	if !ok {
		return pathAndQuery, false
	}
	if rest == "" {
		return "/", true
	}
	switch rest[0] {
	case '/':
		return rest, true
	case '?', '#':
		return "/" + rest, true
	}
	return pathAndQuery, false
}

// isNetworkPathReference reports whether a relative URL starts with two
// slashes, or a slash and a backslash, which clients (browsers treat a
// backslash like a slash) resolve against another host.
func isNetworkPathReference(u string) bool {
	return len(u) >= 2 && u[0] == '/' && (u[1] == '/' || u[1] == '\\')
}

// isPublicHost reports whether a host and port from the request can be
// put into URLs as they are: a DNS name or IPv4 address (letters, digits,
// "-", ".", "_", "~"), or a bracketed IPv6 literal, and a numeric port.
func isPublicHost(host, port string) bool {
	if host == "" {
		return false
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	if strings.HasPrefix(host, "[") {
		inner, ok := strings.CutSuffix(host[1:], "]")
		if !ok || inner == "" {
			return false
		}
		for i := 0; i < len(inner); i++ {
			c := inner[i]
			if !(isAlnum(c) || c == ':' || c == '.') {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(isAlnum(c) || strings.IndexByte("-._~", c) >= 0) {
			return false
		}
	}
	return true
}

// splitAbsoluteURL splits "scheme://authority/rest" or "//authority/rest"
// without decoding anything, so that rest is kept byte for byte. Any
// scheme is accepted, including Nexus's "null".
func splitAbsoluteURL(u string) (authority, rest string, ok bool) {
	after, found := "", false
	if strings.HasPrefix(u, "//") {
		after, found = u[2:], true
	} else if i := strings.Index(u, "://"); i > 0 && isScheme(u[:i]) {
		after, found = u[i+3:], true
	}
	if !found {
		return "", "", false
	}
	end := strings.IndexAny(after, "/?#")
	if end < 0 {
		return after, "", after != ""
	}
	return after[:end], after[end:], end > 0
}

func isScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}

// splitHostPort splits an authority into host and port leniently: a
// malformed port such as Nexus's doubled "host:8083:8083" still yields the
// host. IPv6 literals keep their brackets. Userinfo is dropped.
func splitHostPort(authority string) (host, port string) {
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		authority = authority[at+1:]
	}
	if strings.HasPrefix(authority, "[") {
		end := strings.IndexByte(authority, ']')
		if end < 0 {
			return authority, ""
		}
		host, rest := authority[:end+1], authority[end+1:]
		port, _ = strings.CutPrefix(rest, ":")
		return host, port
	}
	host, port, _ = strings.Cut(authority, ":")
	return host, port
}

// rewriteBearerRealm rewrites the realm parameter of a Bearer challenge in
// a WWW-Authenticate value. Other schemes and parameters are kept as sent.
func (o originRewriter) rewriteBearerRealm(challenge string) (string, bool) {
	// NOTE: only a challenge that starts the header line is recognised; a
	// Bearer challenge after another scheme on one line keeps its realm.
	if len(challenge) < 7 || !strings.EqualFold(challenge[:7], "bearer ") {
		return challenge, false
	}
	start, end, quoted := findParam(challenge, "realm")
	if start < 0 {
		return challenge, false
	}
	realm := challenge[start:end]
	if quoted && strings.IndexByte(realm, '\\') >= 0 {
		// a realm URL has no reason to contain quoted-pair escapes
		return challenge, false
	}
	rewritten, changed := o.rewriteURL(realm)
	if !changed {
		return challenge, false
	}
	if quoted {
		rewritten = strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(rewritten)
	}
	return challenge[:start] + rewritten + challenge[end:], true
}

// findParam locates the value of an auth-param (RFC 9110, section 11.2)
// named name in a challenge, as byte offsets of the value without quotes.
// It returns start -1 when the parameter is absent or malformed.
func findParam(challenge, name string) (start, end int, quoted bool) {
	i := strings.IndexByte(challenge, ' ')
	for i >= 0 && i < len(challenge) {
		// skip separators before the parameter name
		for i < len(challenge) && (challenge[i] == ' ' || challenge[i] == ',' || challenge[i] == '\t') {
			i++
		}
		eq := strings.IndexByte(challenge[i:], '=')
		if eq < 0 {
			return -1, -1, false
		}
		key := strings.TrimSpace(challenge[i : i+eq])
		v := i + eq + 1
		for v < len(challenge) && challenge[v] == ' ' {
			v++
		}
		valueStart, valueEnd, isQuoted := v, v, false
		if v < len(challenge) && challenge[v] == '"' {
			isQuoted = true
			valueStart = v + 1
			valueEnd = closingQuote(challenge, valueStart)
			if valueEnd < 0 {
				return -1, -1, false
			}
			i = valueEnd + 1
		} else {
			for valueEnd < len(challenge) && challenge[valueEnd] != ',' {
				valueEnd++
			}
			i = valueEnd
		}
		if strings.EqualFold(key, name) {
			return valueStart, valueEnd, isQuoted
		}
	}
	return -1, -1, false
}

// closingQuote returns the index of the quote that ends a quoted-string
// whose content starts at from, honouring backslash escapes, or -1.
func closingQuote(s string, from int) int {
	for i := from; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// maxURLHeaderLength bounds Location, Content-Location and
// WWW-Authenticate values passed to clients. Upload URLs with their state
// and signed storage redirects stay well below it, and common servers
// reject request lines of more than 8 KiB anyway, so a client could not
// follow a longer URL.
const maxURLHeaderLength = 8 << 10

// isSafeURL reports whether a Location or Content-Location value, after
// rewriting, can be passed to a client. It cannot in these cases:
//   - It is longer than maxURLHeaderLength.
//   - It contains anything but printable ASCII, or a backslash, which
//     browsers and Go read differently in an authority.
//   - It has a scheme other than http or https, such as javascript:,
//     data:, or "null:" on a host that is not rewritten.
//   - It has userinfo, which RFC 9110 (section 4.2.4) forbids in http
//     URIs and which hides the real host from a reader
//     ("http://mydocker@evil/").
func isSafeURL(u string) bool {
	if len(u) > maxURLHeaderLength {
		return false
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; c <= ' ' || c >= 0x7f || c == '\\' {
			return false
		}
	}

	// a scheme is everything before the first colon, unless a slash,
	// question mark or hash comes first (then it is a relative reference)
	if colon := strings.IndexByte(u, ':'); colon >= 0 && !strings.ContainsAny(u[:colon], "/?#") {
		scheme := u[:colon]
		if !strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https") {
			return false
		}
		if !strings.HasPrefix(u[colon+1:], "//") {
			return false
		}
	}
	if authority, _, ok := splitAbsoluteURL(u); ok && strings.IndexByte(authority, '@') >= 0 {
		return false
	}
	return true
}

// isSafeChallenge reports whether a WWW-Authenticate value, after
// rewriting, can be passed to a client: at most maxURLHeaderLength long,
// printable ASCII with spaces and tabs, and a Bearer realm, if any, that
// isSafeURL accepts, since clients send credentials to it.
func isSafeChallenge(challenge string) bool {
	if len(challenge) > maxURLHeaderLength {
		return false
	}
	for i := 0; i < len(challenge); i++ {
		if c := challenge[i]; (c < ' ' && c != '\t') || c >= 0x7f {
			return false
		}
	}
	if len(challenge) < 7 || !strings.EqualFold(challenge[:7], "bearer ") {
		return true
	}
	start, end, quoted := findParam(challenge, "realm")
	if start < 0 {
		return true
	}
	realm := challenge[start:end]
	if quoted && strings.IndexByte(realm, '\\') >= 0 {
		// a realm URL has no reason to contain quoted-pair escapes
		return false
	}
	return isSafeURL(realm)
}

// rewriteLinks rewrites each URI reference between angle brackets in a
// Link header value (RFC 8288), such as the next page of a tag list, and
// keeps the link parameters as sent.
func (o originRewriter) rewriteLinks(value string) (string, bool) {
	var out strings.Builder
	changed := false
	rest := value
	for {
		start := strings.IndexByte(rest, '<')
		if start < 0 {
			break
		}
		end := strings.IndexByte(rest[start:], '>')
		if end < 0 {
			break
		}
		end += start
		rewritten, ok := o.rewriteURL(rest[start+1 : end])
		if ok && isSafeURL(rewritten) {
			if !changed {
				out.Grow(len(value))
				changed = true
			}
			out.WriteString(rest[:start+1])
			out.WriteString(rewritten)
		} else {
			out.WriteString(rest[:end])
		}
		out.WriteByte('>')
		rest = rest[end+1:]
	}
	if !changed {
		return value, false
	}
	out.WriteString(rest)
	return out.String(), true
}
