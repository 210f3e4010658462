package standin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/distribution/v3/registry/auth"
	"golang.org/x/crypto/bcrypt"
)

// tokenPath is where Nexus serves Docker bearer tokens. Nexus serves it at
// the root of the connector, also when repositories have path prefixes.
const tokenPath = "/v2/token"

// tokenPrefix marks tokens the way Nexus does ("DockerToken.<id>").
const tokenPrefix = "DockerToken."

// tokenService issues and verifies the bearer tokens of one stand-in Nexus,
// shared by Hosted and Group as one Nexus instance shares its token realm.
// A token is the user name with an HMAC-SHA256 over it. It grants every
// action to that user, ignores the requested scope and never expires.
type tokenService struct {
	secret []byte
	users  map[string]string
}

func newTokenService(users map[string]string) (*tokenService, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("standin: generate token secret: %w", err)
	}
	return &tokenService{secret: secret, users: users}, nil
}

func (t *tokenService) issue(user string) string {
	mac := hmac.New(sha256.New, t.secret)
	mac.Write([]byte(user))
	encode := base64.RawURLEncoding.EncodeToString
	return tokenPrefix + encode([]byte(user)) + "." + encode(mac.Sum(nil))
}

func (t *tokenService) valid(token string) bool {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return false
	}
	encodedUser, _, ok := strings.Cut(rest, ".")
	if !ok {
		return false
	}
	user, err := base64.RawURLEncoding.DecodeString(encodedUser)
	if err != nil {
		return false
	}
	return hmac.Equal([]byte(t.issue(string(user))), []byte(token))
}

func (t *tokenService) checkPassword(user, password string) bool {
	want, ok := t.users[user]
	return ok && subtle.ConstantTimeCompare([]byte(want), []byte(password)) == 1
}

// serveToken serves GET /v2/token. It accepts the scope, service and
// account query parameters that Docker clients send but does not use them.
func (t *tokenService) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(w, errcode.ErrorCodeUnsupported.WithMessage("the token endpoint only supports GET"))
		return
	}
	user, password, ok := r.BasicAuth()
	if !ok || !t.checkPassword(user, password) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", basicRealm))
		writeError(w, errcode.ErrorCodeUnauthorized)
		return
	}

	token := t.issue(user)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"token": token, "access_token": token})
}

// bearerAuthorizer imitates the Nexus Docker Bearer Token Realm on one
// Registry.
type bearerAuthorizer struct {
	tokens                    *tokenService
	nullSchemeWithoutProto    bool
	appendPortToForwardedHost bool
}

func (b *bearerAuthorizer) authorize(w http.ResponseWriter, r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok && b.tokens.valid(strings.TrimSpace(token)) {
		return true
	}

	realm := b.realm(r)
	w.Header().Set("WWW-Authenticate", fmt.Sprintf("Bearer realm=%q,service=%q", realm, realm))
	writeError(w, errcode.ErrorCodeUnauthorized)
	return false
}

// realm builds the token URL the way Nexus does: the scheme from
// X-Forwarded-Proto, the host from X-Forwarded-Host or else the Host
// header. Nexus sends the same URL as realm and as service.
func (b *bearerAuthorizer) realm(r *http.Request) string {
	scheme := r.Header.Get("X-Forwarded-Proto")
	if scheme == "" {
		scheme = "http"
		if b.nullSchemeWithoutProto {
			scheme = "null"
		}
	}

	host := r.Host
	if forwarded := r.Header.Get("X-Forwarded-Host"); forwarded != "" {
		host = forwarded
		if b.appendPortToForwardedHost {
			host += hostPortSuffix(r.Host)
		}
	}
	return scheme + "://" + host + tokenPath
}

// hostPortSuffix returns ":<port>" of a Host header value, or "" when it
// has no port.
func hostPortSuffix(hostHeader string) string {
	_, port, err := net.SplitHostPort(hostHeader)
	if err != nil || port == "" {
		return ""
	}
	return ":" + port
}

// basicAuthorizer runs Distribution's htpasswd access controller in front
// of the Group, which is no Distribution app and so has no auth of its own.
type basicAuthorizer struct {
	controller auth.AccessController
}

func (b *basicAuthorizer) authorize(w http.ResponseWriter, r *http.Request) bool {
	_, err := b.controller.Authorized(r)
	if err == nil {
		return true
	}
	if challenge, ok := err.(auth.Challenge); ok {
		challenge.SetHeaders(r, w)
		writeError(w, errcode.ErrorCodeUnauthorized)
		return false
	}
	writeError(w, errcode.ErrorCodeUnknown.WithDetail(err.Error()))
	return false
}

// configureFronts sets the authentication and Nexus quirks of Hosted and
// Group. Hub is left alone because clients never reach it through Nexus.
func configureFronts(opts Options, htpasswdPath string, hosted, group *Registry) error {
	for _, r := range []*Registry{hosted, group} {
		r.front.internalLocation = opts.InternalLocation
	}

	switch opts.Auth {
	case AuthBasic:
		// Hosted is a Distribution app configured with htpasswd already.
		controller, err := auth.GetAccessController("htpasswd", map[string]any{"realm": basicRealm, "path": htpasswdPath})
		if err != nil {
			return fmt.Errorf("standin: configure group basic auth: %w", err)
		}
		group.front.authorize = (&basicAuthorizer{controller: controller}).authorize
	case AuthNexusBearer:
		tokens, err := newTokenService(opts.Users)
		if err != nil {
			return err
		}
		for _, r := range []*Registry{hosted, group} {
			authorizer := &bearerAuthorizer{
				tokens:                    tokens,
				nullSchemeWithoutProto:    opts.NullSchemeWithoutProto,
				appendPortToForwardedHost: opts.AppendPortToForwardedHost,
			}
			r.front.tokens = tokens
			r.front.authorize = authorizer.authorize
		}
	}
	return nil
}

// writeHtpasswd writes users to an htpasswd file with bcrypt hashes, the
// format Distribution's htpasswd access controller reads.
func writeHtpasswd(dir string, users map[string]string) (string, error) {
	names := make([]string, 0, len(users))
	for name := range users {
		if name == "" || strings.Contains(name, ":") {
			return "", fmt.Errorf("standin: invalid user name %q in Options.Users", name)
		}
		names = append(names, name)
	}
	sort.Strings(names)

	var b strings.Builder
	for _, name := range names {
		// MinCost keeps Start fast, and these hashes protect nothing.
		hash, err := bcrypt.GenerateFromPassword([]byte(users[name]), bcrypt.MinCost)
		if err != nil {
			return "", fmt.Errorf("standin: hash password of user %q: %w", name, err)
		}
		fmt.Fprintf(&b, "%s:%s\n", name, hash)
	}

	path := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("standin: write htpasswd file: %w", err)
	}
	return path, nil
}

// writeError sends an OCI error body with the status code of its error
// code, plus the API version header that every Distribution response has.
func writeError(w http.ResponseWriter, err error) {
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	_ = errcode.ServeJSON(w, err)
}
