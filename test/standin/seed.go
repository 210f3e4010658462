package standin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// defaultLayerSize is the size in bytes of each random layer unless
// WithLayerSize sets another.
const defaultLayerSize = 1024

// SeedOption changes how the seed helpers build images or reach a registry.
type SeedOption func(*seedConfig)

type seedConfig struct {
	auth      authn.Authenticator
	layerSize int64
}

func newSeedConfig(opts []SeedOption) seedConfig {
	c := seedConfig{auth: authn.Anonymous, layerSize: defaultLayerSize}
	for _, opt := range opts {
		opt(&c)
	}
	return c
}

// WithCredentials sends these credentials: as Basic auth to an AuthBasic
// registry, and to the token endpoint of an AuthNexusBearer registry.
func WithCredentials(username, password string) SeedOption {
	return func(c *seedConfig) {
		c.auth = &authn.Basic{Username: username, Password: password}
	}
}

// WithLayerSize sets the size in bytes of each random layer.
func WithLayerSize(bytes int64) SeedOption {
	return func(c *seedConfig) {
		c.layerSize = bytes
	}
}

// SeedImage pushes a random image with the given number of layers to
// registryURL as repo:tag and returns it. registryURL is a Registry's
// BaseURL, so it may end in a path prefix.
func SeedImage(ctx context.Context, registryURL, repo, tag string, layers int, opts ...SeedOption) (v1.Image, error) {
	if layers < 0 {
		return nil, fmt.Errorf("standin: invalid layer count %d, want 0 or more", layers)
	}
	c := newSeedConfig(opts)
	image, err := random.Image(c.layerSize, int64(layers))
	if err != nil {
		return nil, fmt.Errorf("standin: build random image with %d layers: %w", layers, err)
	}
	if err := PushImage(ctx, registryURL, repo, tag, image, opts...); err != nil {
		return nil, err
	}
	return image, nil
}

// SeedBaseImage pushes a random image to Hub, the group's Docker Hub
// member, for example as "library/alpine", "3". Through Group, each of its
// layers is then found under any image name while Hosted returns 404.
func (n *Nexus) SeedBaseImage(ctx context.Context, repo, tag string, layers int, opts ...SeedOption) (v1.Image, error) {
	return SeedImage(ctx, n.Hub.BaseURL(), repo, tag, layers, opts...)
}

// ImageOnBase returns base with the given number of random layers appended.
// It is not pushed, so a test can push it, for example through the proxy
// to Hosted while the base layers exist only in Hub.
func ImageOnBase(base v1.Image, layers int, opts ...SeedOption) (v1.Image, error) {
	if layers < 0 {
		return nil, fmt.Errorf("standin: invalid layer count %d, want 0 or more", layers)
	}
	c := newSeedConfig(opts)
	added := make([]v1.Layer, 0, layers)
	for range layers {
		layer, err := random.Layer(c.layerSize, types.DockerLayer)
		if err != nil {
			return nil, fmt.Errorf("standin: build random layer: %w", err)
		}
		added = append(added, layer)
	}
	image, err := mutate.AppendLayers(base, added...)
	if err != nil {
		return nil, fmt.Errorf("standin: append layers to base image: %w", err)
	}
	return image, nil
}

// PushImage pushes image to registryURL as repo:tag.
func PushImage(ctx context.Context, registryURL, repo, tag string, image v1.Image, opts ...SeedOption) error {
	c := newSeedConfig(opts)
	ref, transport, err := tagAt(registryURL, repo, tag)
	if err != nil {
		return err
	}
	defer transport.CloseIdleConnections()

	err = remote.Write(ref, image, remote.WithContext(ctx), remote.WithAuth(c.auth), remote.WithTransport(transport))
	if err != nil {
		return fmt.Errorf("standin: push %s to %s: %w", ref, registryURL, err)
	}
	return nil
}

// PullImage fetches repo:tag from registryURL, reads every layer so that
// go-containerregistry checks its digest, and returns the image.
func PullImage(ctx context.Context, registryURL, repo, tag string, opts ...SeedOption) (v1.Image, error) {
	c := newSeedConfig(opts)
	ref, transport, err := tagAt(registryURL, repo, tag)
	if err != nil {
		return nil, err
	}
	defer transport.CloseIdleConnections()

	image, err := remote.Image(ref, remote.WithContext(ctx), remote.WithAuth(c.auth), remote.WithTransport(transport))
	if err != nil {
		return nil, fmt.Errorf("standin: pull %s from %s: %w", ref, registryURL, err)
	}
	if err := readLayers(image); err != nil {
		return nil, fmt.Errorf("standin: pull %s from %s: %w", ref, registryURL, err)
	}
	return image, nil
}

func readLayers(image v1.Image) error {
	layers, err := image.Layers()
	if err != nil {
		return err
	}
	for _, layer := range layers {
		reader, err := layer.Compressed()
		if err != nil {
			return err
		}
		// The reader returns a digest mismatch error at EOF.
		_, err = io.Copy(io.Discard, reader)
		reader.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// tagAt returns the go-containerregistry reference for repo:tag and the
// transport to reach registryURL with.
func tagAt(registryURL, repo, tag string) (name.Tag, *prefixTransport, error) {
	base, err := url.Parse(registryURL)
	if err != nil || base.Scheme != "http" || base.Host == "" {
		return name.Tag{}, nil, fmt.Errorf("standin: invalid registry URL %q, want http://host:port with an optional path prefix", registryURL)
	}
	ref, err := name.NewTag(base.Host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return name.Tag{}, nil, fmt.Errorf("standin: invalid image reference: %w", err)
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	// Every stand-in is on loopback, so no proxy from the environment may
	// carry these requests elsewhere.
	transport.Proxy = nil
	return ref, &prefixTransport{Transport: transport, prefix: strings.TrimSuffix(base.Path, "/")}, nil
}

// prefixTransport puts a path prefix in front of registry API paths,
// because go-containerregistry image references cannot carry one. Paths
// that already have the prefix, such as upload Locations, and the token
// endpoint /v2/token are sent unchanged.
type prefixTransport struct {
	*http.Transport
	prefix string
}

// RoundTrip sends req with the prefix added where needed.
func (t *prefixTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	path := req.URL.Path
	needsPrefix := t.prefix != "" &&
		path != tokenPath &&
		!strings.HasPrefix(path, t.prefix+"/") &&
		(path == "/v2" || strings.HasPrefix(path, "/v2/"))
	if !needsPrefix {
		return t.Transport.RoundTrip(req)
	}

	prefixed := req.Clone(req.Context())
	prefixed.URL.Path = t.prefix + path
	if req.URL.RawPath != "" {
		prefixed.URL.RawPath = t.prefix + req.URL.RawPath
	}
	return t.Transport.RoundTrip(prefixed)
}
