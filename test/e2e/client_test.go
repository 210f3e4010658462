package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// registryClient talks to the module the way a registry client does:
// over TLS, trusting only Caddy's internal CA, with the credentials of
// the stand-in user. Every host name dials the Caddy listener it names
// on 127.0.0.1.
type registryClient struct {
	transport *http.Transport
	auth      authn.Authenticator
}

func newRegistryClient(roots *x509.CertPool, user, password string) *registryClient {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &registryClient{
		transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
			},
		},
		auth: &authn.Basic{Username: user, Password: password},
	}
}

func (c *registryClient) options(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithTransport(c.transport), remote.WithAuth(c.auth)}
}

func (c *registryClient) push(ctx context.Context, ref string, img v1.Image) error {
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		return err
	}
	return remote.Write(r, img, c.options(ctx)...)
}

func (c *registryClient) pushIndex(ctx context.Context, ref string, idx v1.ImageIndex) error {
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		return err
	}
	return remote.WriteIndex(r, idx, c.options(ctx)...)
}

// pull fetches an image and reads every layer, so that a digest mismatch
// anywhere fails the call.
func (c *registryClient) pull(ctx context.Context, ref string) (v1.Image, error) {
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		return nil, err
	}
	img, err := remote.Image(r, c.options(ctx)...)
	if err != nil {
		return nil, err
	}
	return img, readAllLayers(img)
}

func readAllLayers(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// statusOf returns the HTTP status of a registry error, or 0.
func statusOf(err error) int {
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode
	}
	return 0
}

func mustDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}
