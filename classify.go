package dockerregistry

import (
	"net/http"
	"net/url"
	"strings"
)

// Operations of the registry API, as reported in logs and placeholders.
// The set is closed so that it can serve as a metric label.
const (
	opPing      = "ping"
	opToken     = "token"
	opCatalog   = "catalog"
	opTags      = "tags"
	opManifest  = "manifest"
	opBlob      = "blob"
	opUpload    = "upload"
	opReferrers = "referrers"
	opExtension = "extension"
	opInvalid   = "invalid"
)

// maxNameLength is the limit on a repository name that the distribution
// registry enforces (names of 256 characters and more are rejected there).
const maxNameLength = 255

// apiRequest is the classification of a request under /v2.
type apiRequest struct {
	operation  string
	repository string
	reference  string // tag or digest of a manifest, digest of a blob or referrers subject
	uploadID   string
	write      bool // the method changes registry state
}

// classifyRequest parses the escaped path of a request under /v2 into an
// apiRequest. It rejects what must never be forwarded: dot segments, empty
// segments, encoded slashes, control and non-ASCII characters, invalid
// names, references and digests, and paths that are no endpoint of the
// registry API.
func classifyRequest(method, escapedPath string) (apiRequest, *registryError) {
	req := apiRequest{operation: opInvalid, write: isWriteMethod(method)}

	rest, ok := strings.CutPrefix(escapedPath, "/v2")
	if !ok || (rest != "" && rest[0] != '/') {
		return req, invalidPath("the path must start with /v2/")
	}
	if rest == "" || rest == "/" {
		req.operation = opPing
		return req, nil
	}

	segments, rerr := decodeSegments(rest[1:])
	if rerr != nil {
		return req, rerr
	}
	if rerr := classifySegments(&req, segments); rerr != nil {
		return req, rerr
	}
	return req, nil
}

// decodeSegments splits the escaped path after "/v2/" at each slash and
// decodes every segment. Only the last segment may be empty, and only
// where an upload endpoint ends in a slash; classifySegments checks that.
func decodeSegments(escaped string) ([]string, *registryError) {
	segments := strings.Split(escaped, "/")
	for i, raw := range segments {
		if raw == "" {
			if i == len(segments)-1 {
				continue
			}
			return nil, invalidPath("the path has an empty segment")
		}
		seg := raw
		if strings.IndexByte(raw, '%') >= 0 {
			decoded, err := url.PathUnescape(raw)
			if err != nil {
				return nil, invalidPath("the path has an invalid percent-encoding")
			}
			seg = decoded
		}
		if seg == "." || seg == ".." {
			return nil, invalidPath("the path has a dot segment")
		}
		if !isSafeSegment(seg) {
			return nil, invalidPath("a path segment contains a slash, backslash, semicolon, percent sign, control or non-ASCII character")
		}
		segments[i] = seg
	}
	return segments, nil
}

// isSafeSegment reports whether a decoded segment consists of printable
// ASCII other than the slash, backslash, space, semicolon and percent
// sign. Java servers such as Jetty, which Nexus runs on, cut path
// parameters at ";" before they resolve dot segments, so "..;" is ".."
// for them. A "%" left after decoding means that the client encoded
// twice, for a backend that decodes twice. No repository name,
// reference, digest or upload id contains either character.
func isSafeSegment(seg string) bool {
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == '\\' || c == ';' || c == '%' {
			return false
		}
	}
	return true
}

// isDisguisedAPIPath reports whether a decoded path that is neither /v2
// nor under /v2/ becomes one once a backend normalises it. The
// normalisation is that of common HTTP servers: decoding
// percent-encodings again, treating a backslash as a slash, dropping
// empty segments and path parameters (";..."), and resolving dot
// segments. Such a request belongs to the registry API and must not reach
// the next handler, where a Nexus UI upstream could serve it as /v2. Case
// is kept, because Go, Caddy and Jetty treat /V2 as another path.
func isDisguisedAPIPath(p string) bool {
	if !strings.Contains(p, "%") && !strings.Contains(p, "v2") {
		return false
	}
	// three rounds of decoding cover any realistic chain of proxies
	for range 3 {
		decoded, err := url.PathUnescape(p)
		if err != nil || decoded == p {
			break
		}
		p = decoded
	}
	p = strings.ReplaceAll(p, "\\", "/")

	var resolved []string
	for _, seg := range strings.Split(p, "/") {
		seg, _, _ = strings.Cut(seg, ";")
		switch seg {
		case "", ".":
		case "..":
			if len(resolved) > 0 {
				resolved = resolved[:len(resolved)-1]
			}
		default:
			resolved = append(resolved, seg)
		}
	}
	return len(resolved) > 0 && resolved[0] == "v2"
}

// classifySegments matches the decoded segments against the endpoints of
// the registry API. The repository name may contain slashes, so the API
// keyword is found from the right.
func classifySegments(req *apiRequest, segs []string) *registryError {
	n := len(segs)
	last := segs[n-1]

	// endpoints without a repository name: Nexus's token endpoint, the
	// catalog, and extensions such as /v2/_oci/ext/discover
	if n == 1 && last == "token" {
		req.operation = opToken
		return nil
	}
	if strings.HasPrefix(segs[0], "_") {
		if n == 1 && last == "_catalog" {
			req.operation = opCatalog
			return nil
		}
		return classifyExtension(req, segs, 0)
	}

	// name components never start with an underscore, so the first such
	// segment begins a repository-scoped extension
	for i := 1; i < n; i++ {
		if strings.HasPrefix(segs[i], "_") {
			return classifyExtension(req, segs, i)
		}
	}

	switch {
	case n >= 4 && segs[n-3] == "blobs" && segs[n-2] == "uploads":
		// /blobs/uploads/ (trailing slash) or /blobs/uploads/<id>
		req.operation = opUpload
		req.uploadID = last
		if last != "" && !isValidUploadID(last) {
			return &registryError{status: http.StatusBadRequest, code: codeUploadInvalid, message: "invalid upload id"}
		}
		return setRepository(req, segs[:n-3])
	case last == "":
		return invalidPath("the path has an empty segment")
	case n >= 3 && segs[n-2] == "blobs" && last == "uploads":
		req.operation = opUpload
		return setRepository(req, segs[:n-2])
	case n >= 3 && segs[n-2] == "manifests":
		req.operation = opManifest
		return setReference(req, segs[:n-2], last, true)
	case n >= 3 && segs[n-2] == "blobs":
		req.operation = opBlob
		return setReference(req, segs[:n-2], last, false)
	case n >= 3 && segs[n-2] == "referrers":
		req.operation = opReferrers
		return setReference(req, segs[:n-2], last, false)
	case n >= 3 && segs[n-2] == "tags" && last == "list":
		req.operation = opTags
		return setRepository(req, segs[:n-2])
	}
	return &registryError{
		status:  http.StatusNotFound,
		code:    codeUnsupported,
		message: "no registry API endpoint at this path",
	}
}

// classifyExtension accepts an extension endpoint (a segment starting with
// an underscore at index at) under an optional repository name.
func classifyExtension(req *apiRequest, segs []string, at int) *registryError {
	req.operation = opExtension
	if segs[len(segs)-1] == "" {
		return invalidPath("the path has an empty segment")
	}
	if at == 0 {
		return nil
	}
	return setRepository(req, segs[:at])
}

func setRepository(req *apiRequest, components []string) *registryError {
	name := strings.Join(components, "/")
	if len(name) > maxNameLength {
		return &registryError{
			status:  http.StatusBadRequest,
			code:    codeNameInvalid,
			message: "repository name longer than 255 characters",
		}
	}
	for _, c := range components {
		if !isValidNameComponent(c) {
			return &registryError{
				status:  http.StatusBadRequest,
				code:    codeNameInvalid,
				message: "invalid repository name",
				detail:  map[string]string{"name": name},
			}
		}
	}
	req.repository = name
	return nil
}

func setReference(req *apiRequest, components []string, ref string, tagAllowed bool) *registryError {
	if rerr := setRepository(req, components); rerr != nil {
		return rerr
	}
	switch {
	case isValidDigest(ref):
	case tagAllowed && isValidTag(ref):
	case tagAllowed:
		return &registryError{status: http.StatusBadRequest, code: codeTagInvalid, message: "invalid tag or digest"}
	default:
		return &registryError{status: http.StatusBadRequest, code: codeDigestInvalid, message: "invalid digest"}
	}
	req.reference = ref
	return nil
}

func invalidPath(message string) *registryError {
	return &registryError{status: http.StatusBadRequest, code: codeNameInvalid, message: "invalid request path: " + message}
}

// isWriteMethod reports whether method may change registry state. OPTIONS
// is safe in the sense of RFC 9110 and travels like a read.
func isWriteMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}
