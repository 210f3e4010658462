package standin

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// AuthMode selects how the Hosted and Group stand-ins authenticate clients.
// The Hub member never requires authentication because only the Group
// reaches it, in-process.
type AuthMode int

const (
	// AuthNone accepts every request without credentials, as a Nexus with
	// anonymous access enabled does.
	AuthNone AuthMode = iota
	// AuthBasic uses Distribution's own htpasswd access controller, which
	// returns 401 with "WWW-Authenticate: Basic realm=...".
	AuthBasic
	// AuthNexusBearer imitates the Nexus "Docker Bearer Token Realm": every
	// registry request needs "Authorization: Bearer <token>", and the token
	// comes from GET /v2/token with Basic credentials.
	AuthNexusBearer
)

// String returns the mode's constant name, for test names and messages.
func (m AuthMode) String() string {
	switch m {
	case AuthNone:
		return "AuthNone"
	case AuthBasic:
		return "AuthBasic"
	case AuthNexusBearer:
		return "AuthNexusBearer"
	}
	return fmt.Sprintf("AuthMode(%d)", int(m))
}

// Options configures Start. The zero value starts three anonymous
// registries without any Nexus quirk.
type Options struct {
	// Auth selects the authentication of Hosted and Group.
	Auth AuthMode
	// Users maps user names to passwords for AuthBasic and AuthNexusBearer.
	Users map[string]string

	// NullSchemeWithoutProto makes the bearer challenge realm start with
	// "null://" when the request has no X-Forwarded-Proto header, imitating
	// a Nexus that takes the realm scheme only from that header and prints
	// a missing value as "null". It only matters with AuthNexusBearer.
	// NOTE: this is not verified against a specific Nexus release.
	NullSchemeWithoutProto bool
	// AppendPortToForwardedHost imitates Nexus 3.77 to 3.80: the realm host
	// is X-Forwarded-Host plus ":" and the port of the Host header, even when
	// X-Forwarded-Host already has a port. Users of 3.78.2 and 3.80.0
	// reported realms such as "https://host:5001:5001/v2/token". Nothing is
	// appended when the Host header has no port. It only matters with
	// AuthNexusBearer.
	AppendPortToForwardedHost bool
	// InternalLocation rewrites every Location and Content-Location header
	// that Hosted and Group send to http://<stand-in listen address><path>,
	// as a Nexus does that builds URLs from its own connector instead of the
	// forwarded headers.
	InternalLocation bool
	// PathPrefix imitates Nexus repository paths such as
	// "/repository/docker-hosted": Hosted and Group serve the registry API
	// only under <PathPrefix>/v2/ and return 404 elsewhere, and the Location
	// headers they send carry the prefix. The token endpoint stays at
	// /v2/token, where the Nexus realm points. Both registries use the same
	// prefix because each listens on its own port.
	PathPrefix string

	// Ports fixes the loopback ports of the three registries, for the
	// quickstart, whose printed commands name them. Zero picks a free port.
	Ports Ports
}

// Ports are the loopback ports of the three stand-in registries.
type Ports struct {
	Hosted, Group, Hub int
}

// Nexus is one stand-in Nexus instance: a hosted repository, a Docker Hub
// member and a group of both, each on its own loopback port.
type Nexus struct {
	// Hosted is the read-write repository. Distribution rejects a manifest
	// whose blobs it does not hold with MANIFEST_BLOB_UNKNOWN.
	Hosted *Registry
	// Hub is the stand-in for the group's Docker Hub proxy member. It is
	// read-write and anonymous so tests can seed base images straight into
	// it, and it has none of the quirks in Options.
	Hub *Registry
	// Group is the read-only group of Hosted then Hub.
	Group *Registry

	tempDir string
}

// Start starts Hub, Hosted and Group on free ports of 127.0.0.1. The caller
// must call Close, also when a test fails.
func Start(opts Options) (*Nexus, error) {
	opts, err := normalizeOptions(opts)
	if err != nil {
		return nil, err
	}
	silenceRegistryLogs()

	n := &Nexus{}
	if err := n.start(opts); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

func normalizeOptions(opts Options) (Options, error) {
	switch opts.Auth {
	case AuthNone:
	case AuthBasic, AuthNexusBearer:
		if len(opts.Users) == 0 {
			return opts, fmt.Errorf("standin: Options.Users is empty, but %v needs at least one user", opts.Auth)
		}
	default:
		return opts, fmt.Errorf("standin: invalid Options.Auth %v", opts.Auth)
	}

	if opts.PathPrefix != "" {
		prefix := "/" + strings.Trim(opts.PathPrefix, "/")
		if prefix == "/" || strings.ContainsAny(prefix, "?#") || strings.HasSuffix(prefix, "/v2") {
			return opts, fmt.Errorf("standin: invalid Options.PathPrefix %q, want a path such as /repository/docker-hosted", opts.PathPrefix)
		}
		opts.PathPrefix = prefix
	}
	return opts, nil
}

func (n *Nexus) start(opts Options) error {
	var err error
	n.Hub, err = newDistributionRegistry("hub", distributionConfig{port: opts.Ports.Hub})
	if err != nil {
		return err
	}

	hostedConfig := distributionConfig{port: opts.Ports.Hosted, prefix: opts.PathPrefix}
	if opts.Auth == AuthBasic {
		n.tempDir, err = os.MkdirTemp("", "standin-htpasswd-")
		if err != nil {
			return fmt.Errorf("standin: create htpasswd directory: %w", err)
		}
		hostedConfig.htpasswdPath, err = writeHtpasswd(n.tempDir, opts.Users)
		if err != nil {
			return err
		}
	}
	n.Hosted, err = newDistributionRegistry("hosted", hostedConfig)
	if err != nil {
		return err
	}
	n.Group, err = newGroupRegistry(opts.Ports.Group, opts.PathPrefix, n.Hosted, n.Hub)
	if err != nil {
		return err
	}

	// The front checks are set before any server accepts a request, so the
	// handlers read them without locking.
	if err := configureFronts(opts, hostedConfig.htpasswdPath, n.Hosted, n.Group); err != nil {
		return err
	}
	for _, r := range []*Registry{n.Hub, n.Hosted, n.Group} {
		r.serve()
	}
	return nil
}

// Close stops all three servers, waits for their serving goroutines and
// requests in progress to end, and removes the temporary htpasswd file. It
// may be called more than once.
func (n *Nexus) Close() error {
	var errs []error
	for _, r := range []*Registry{n.Group, n.Hosted, n.Hub} {
		if r != nil {
			errs = append(errs, r.close())
		}
	}
	if n.tempDir != "" {
		errs = append(errs, os.RemoveAll(n.tempDir))
		n.tempDir = ""
	}
	return errors.Join(errs...)
}
