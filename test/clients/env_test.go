package clients

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caddyreg/caddy-docker-registry/test/caddyrun"
	"github.com/caddyreg/caddy-docker-registry/test/standin"
)

const (
	testUser      = "ci"
	testPassword  = "s3cret-pass"
	wrongPassword = "not-the-password"

	// registryName is the registry host name of the examples. Only dockerd
	// resolves it, to ::1, in its own mount namespace. The other clients
	// use localhost.
	registryName = "mydocker"

	// baseRepository is the repository of the base image that only the
	// group's Docker Hub member has.
	baseRepository = "library/base"
	baseTag        = "1.0"
)

// environment is what every client test talks to: Caddy on free ports of
// 127.0.0.1 and ::1, each site named both registryName:<port> and
// localhost:<port>, in front of three stand-in Nexus instances.
type environment struct {
	// bearer has the Nexus-like bearer-token authentication and the
	// Nexus quirks that the module corrects. Its Hosted is the snapshots
	// repository.
	bearer *standin.Nexus
	// releases is a second instance whose Hosted is the releases
	// repository of the three-port setup.
	releases *standin.Nexus
	// basic uses Basic authentication.
	basic *standin.Nexus

	// base is the image seeded as library/base:1.0 into bearer's Hub.
	base v1.Image

	ports        sitePorts
	dataDir      string
	caddyRunning bool
	rootCert     string
	roots        *x509.CertPool
}

// sitePorts are the Caddy sites, in the shapes of the examples.
type sitePorts struct {
	// three-port setup over bearer: the read-only group, and one hosted
	// repository per port
	group, snapshots, releases int
	// one-hostname setup over bearer: pulls from the group, pushes to the
	// hosted repository
	split int
	// the same shapes over basic
	basicGroup, basicSplit int
}

func startEnvironment() (*environment, error) {
	e := &environment{}
	if err := e.start(); err != nil {
		return nil, errors.Join(err, e.close())
	}
	return e, nil
}

func (e *environment) start() error {
	users := map[string]string{testUser: testPassword}
	var err error
	bearerOptions := standin.Options{
		Auth:  standin.AuthNexusBearer,
		Users: users,
		// the Nexus quirks behind a proxy: the realm port appended again
		// (Nexus 3.77 to 3.80) and Locations naming the connector
		AppendPortToForwardedHost: true,
		InternalLocation:          true,
	}
	if e.bearer, err = standin.Start(bearerOptions); err != nil {
		return err
	}
	if e.releases, err = standin.Start(bearerOptions); err != nil {
		return err
	}
	if e.basic, err = standin.Start(standin.Options{Auth: standin.AuthBasic, Users: users}); err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if e.base, err = e.bearer.SeedBaseImage(ctx, baseRepository, baseTag, 2, standin.WithLayerSize(32<<10)); err != nil {
		return err
	}

	for _, port := range []*int{&e.ports.group, &e.ports.snapshots, &e.ports.releases, &e.ports.split, &e.ports.basicGroup, &e.ports.basicSplit} {
		if *port, err = caddyrun.FreePort(); err != nil {
			return err
		}
	}
	if e.dataDir, err = os.MkdirTemp("", "caddy-docker-registry-clients-"); err != nil {
		return err
	}
	return e.startCaddy(ctx)
}

// caddyfile returns the configuration: the three-port and one-hostname
// shapes of examples/ over the bearer stand-ins, and both again over the
// basic ones. The global options keep the run to itself: no admin API, no
// autosave of the config in the user's home, no trust-store install, no
// HTTP redirect listener, logs in the data directory.
func (e *environment) caddyfile() string {
	var b strings.Builder
	fmt.Fprintf(&b, `{
	admin off
	persist_config off
	default_bind 127.0.0.1 [::1]
	storage file_system %q
	skip_install_trust
	auto_https disable_redirects
	log {
		output file %q
		level ERROR
	}
}

(registry_tls) {
	tls internal {
		protocols tls1.2 tls1.3
	}
}
`, e.dataDir, filepath.Join(e.dataDir, "caddy.log"))

	site := func(port int, body string) {
		fmt.Fprintf(&b, "\n%s:%d, localhost:%d {\n\timport registry_tls\n%s}\n", registryName, port, port, body)
	}
	readOnly := func(n *standin.Nexus) string {
		return fmt.Sprintf("\tdocker_registry {\n\t\tpull %s\n\t\tpush off\n\t}\n", n.Group.Addr)
	}
	split := func(n *standin.Nexus) string {
		return fmt.Sprintf("\tdocker_registry {\n\t\tpull %s\n\t\tpush %s\n\t}\n", n.Group.Addr, n.Hosted.Addr)
	}
	site(e.ports.group, readOnly(e.bearer))
	site(e.ports.snapshots, fmt.Sprintf("\tdocker_registry %s\n", e.bearer.Hosted.Addr))
	site(e.ports.releases, fmt.Sprintf("\tdocker_registry %s\n", e.releases.Hosted.Addr))
	site(e.ports.split, split(e.bearer))
	site(e.ports.basicGroup, readOnly(e.basic))
	site(e.ports.basicSplit, split(e.basic))
	return b.String()
}

func (e *environment) startCaddy(ctx context.Context) error {
	cfg, err := caddyrun.Adapt([]byte(e.caddyfile()))
	if err != nil {
		return err
	}
	if err := caddyrun.Load(cfg); err != nil {
		return fmt.Errorf("loading the Caddy config: %w", err)
	}
	e.caddyRunning = true

	// the internal CA writes its root when the config loads, and signs
	// the site certificates in the background after that
	for {
		e.roots, err = caddyrun.RootCAs(e.dataDir)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the internal CA wrote no root certificate: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	e.rootCert = caddyrun.RootCertPath(e.dataDir)
	for _, port := range e.allPorts() {
		for _, server := range []struct{ addr, name string }{
			{fmt.Sprintf("127.0.0.1:%d", port), "localhost"},
			{fmt.Sprintf("[::1]:%d", port), registryName},
		} {
			if err := caddyrun.WaitForTLS(ctx, server.addr, server.name, e.roots); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *environment) allPorts() []int {
	p := e.ports
	return []int{p.group, p.snapshots, p.releases, p.split, p.basicGroup, p.basicSplit}
}

// close stops Caddy and the stand-ins and removes Caddy's storage.
func (e *environment) close() error {
	var errs []error
	if e.caddyRunning {
		errs = append(errs, caddyrun.Stop())
	}
	for _, n := range []*standin.Nexus{e.bearer, e.releases, e.basic} {
		if n != nil {
			errs = append(errs, n.Close())
		}
	}
	if e.dataDir != "" {
		// certificate maintenance may finish a write after Stop returns
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := os.RemoveAll(e.dataDir)
			if err == nil || time.Now().After(deadline) {
				errs = append(errs, err)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// localhost returns localhost:<port>/<repository>, how podman, skopeo and
// crane name a repository of a site.
func localhost(port int, repository string) string {
	return fmt.Sprintf("localhost:%d/%s", port, repository)
}

// standinOptions are the go-containerregistry options for reading a
// stand-in directly, without Caddy.
func standinOptions(ctx context.Context) []remote.Option {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// every stand-in is on loopback, and no proxy may carry the requests
	transport.Proxy = nil
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(transport),
		remote.WithAuth(&authn.Basic{Username: testUser, Password: testPassword}),
	}
}

// standinReference names repository:tag, or repository@digest, on a
// stand-in registry.
func standinReference(t *testing.T, r *standin.Registry, repository, reference string) name.Reference {
	t.Helper()
	separator := ":"
	if strings.HasPrefix(reference, "sha256:") {
		separator = "@"
	}
	text := r.Addr + "/" + repository + separator + reference
	ref, err := name.ParseReference(text, name.Insecure, name.StrictValidation)
	if err != nil {
		t.Fatalf("invalid reference %q: %v", text, err)
	}
	return ref
}

// storedImage fetches an image from a stand-in's Hosted directly and reads
// every blob, so that a manifest naming a missing or corrupt blob fails.
func storedImage(t *testing.T, n *standin.Nexus, repository, reference string) v1.Image {
	t.Helper()
	ref := standinReference(t, n.Hosted, repository, reference)
	image, err := remote.Image(ref, standinOptions(t.Context())...)
	if err != nil {
		t.Fatalf("fetching %s from the hosted stand-in: %v", ref, err)
	}
	if err := readImage(image); err != nil {
		t.Fatalf("%s in the hosted stand-in is incomplete: %v", ref, err)
	}
	return image
}

// storedIndex fetches an image index from a stand-in's Hosted directly and
// reads every child image completely.
func storedIndex(t *testing.T, n *standin.Nexus, repository, reference string) v1.ImageIndex {
	t.Helper()
	ref := standinReference(t, n.Hosted, repository, reference)
	index, err := remote.Index(ref, standinOptions(t.Context())...)
	if err != nil {
		t.Fatalf("fetching the index %s from the hosted stand-in: %v", ref, err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		t.Fatalf("reading the index %s: %v", ref, err)
	}
	for _, child := range manifest.Manifests {
		image, err := index.Image(child.Digest)
		if err != nil {
			t.Fatalf("reading child %s of %s: %v", child.Digest, ref, err)
		}
		if err := readImage(image); err != nil {
			t.Fatalf("child %s of %s in the hosted stand-in is incomplete: %v", child.Digest, ref, err)
		}
	}
	return index
}

// unknownAuthority reports whether a client's output contains the TLS
// error that Go shows for a server certificate from a CA it does not trust.
// Every client here is written in Go.
func unknownAuthority(output string) bool {
	return strings.Contains(output, "certificate signed by unknown authority")
}
