// Package e2e runs Caddy with the docker_registry module over TLS from its
// internal CA in front of real registry servers standing in for Nexus, and
// pushes and pulls real images through it with go-containerregistry's
// registry client.
package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/caddyreg/caddy-docker-registry/test/standin"
)

const (
	testUser     = "ci"
	testPassword = "s3cret-pass"
)

// startNexus starts stand-ins with the Nexus behaviours that a proxy must
// correct: Bearer realms built from forwarded headers with the port
// appended again (Nexus 3.77 to 3.80), and upload Locations naming the
// stand-in's own plain-HTTP address.
func startNexus(t *testing.T, extra func(*standin.Options)) *standin.Nexus {
	t.Helper()
	opts := standin.Options{
		Auth:                      standin.AuthNexusBearer,
		Users:                     map[string]string{testUser: testPassword},
		AppendPortToForwardedHost: true,
		InternalLocation:          true,
	}
	if extra != nil {
		extra(&opts)
	}
	n, err := standin.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("closing stand-ins: %v", err)
		}
	})
	return n
}

// oneHostnameCaddyfile is the one-hostname shape of the examples: pulls
// from the group, pushes to the hosted repository, anything else to the
// Nexus UI, which the group stand-in plays here.
func oneHostnameCaddyfile(port int, group, hosted string) string {
	ui, _, _ := strings.Cut(strings.TrimPrefix(group, "http://"), "/")
	return fmt.Sprintf(`{
	default_bind 127.0.0.1
}
mydocker:%d {
	tls internal
	docker_registry {
		pull %s
		push %s
	}
	reverse_proxy %s
}
`, port, group, hosted, ui)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestSplitEndpointPushAndPullByDigest(t *testing.T) {
	ctx := testContext(t)
	nexus := startNexus(t, nil)
	port := freePort(t)
	roots := startCaddyfile(t, oneHostnameCaddyfile(port, nexus.Group.Addr, nexus.Hosted.Addr), hostPort("mydocker", port))
	client := newRegistryClient(roots, testUser, testPassword)

	img, err := random.Image(64<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := mustDigest(t, img)
	if err := client.push(ctx, hostPort("mydocker", port)+"/team/app:1.0", img); err != nil {
		t.Fatalf("push through the module: %v", err)
	}

	// the image is in the hosted repository...
	hosted, err := standin.PullImage(ctx, nexus.Hosted.URL, "team/app", "1.0", standin.WithCredentials(testUser, testPassword))
	if err != nil {
		t.Fatalf("pull from the hosted stand-in: %v", err)
	}
	if got := mustDigest(t, hosted); got != want {
		t.Errorf("hosted digest: got %s, want %s", got, want)
	}

	// ...and comes back through the group by digest
	pulled, err := client.pull(ctx, fmt.Sprintf("%s/team/app@%s", hostPort("mydocker", port), want))
	if err != nil {
		t.Fatalf("pull by digest through the module: %v", err)
	}
	if got := mustDigest(t, pulled); got != want {
		t.Errorf("pulled digest: got %s, want %s", got, want)
	}

	// the read-only group never saw a write
	for _, r := range nexus.Group.Requests() {
		if r.Method != "GET" && r.Method != "HEAD" {
			t.Errorf("group received %s %s", r.Method, r.Path)
		}
	}
}

func TestSplitEndpointPushesMultiPlatformIndex(t *testing.T) {
	ctx := testContext(t)
	nexus := startNexus(t, nil)
	port := freePort(t)
	roots := startCaddyfile(t, oneHostnameCaddyfile(port, nexus.Group.Addr, nexus.Hosted.Addr), hostPort("mydocker", port))
	client := newRegistryClient(roots, testUser, testPassword)

	idx, err := random.Index(32<<10, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref := hostPort("mydocker", port) + "/team/multi:1.0"
	if err := client.pushIndex(ctx, ref, idx); err != nil {
		t.Fatalf("push index through the module: %v", err)
	}
	manifest, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range manifest.Manifests {
		pulled, err := client.pull(ctx, fmt.Sprintf("%s/team/multi@%s", hostPort("mydocker", port), m.Digest))
		if err != nil {
			t.Fatalf("pull child %s: %v", m.Digest, err)
		}
		if got := mustDigest(t, pulled); got != m.Digest {
			t.Errorf("child digest: got %s, want %s", got, m.Digest)
		}
	}
}

func TestBaseLayersOnlyInGroupMemberArePushed(t *testing.T) {
	ctx := testContext(t)
	nexus := startNexus(t, nil)
	base, err := nexus.SeedBaseImage(ctx, "library/base", "1.0", 2)
	if err != nil {
		t.Fatal(err)
	}
	app, err := standin.ImageOnBase(base, 1)
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	roots := startCaddyfile(t, oneHostnameCaddyfile(port, nexus.Group.Addr, nexus.Hosted.Addr), hostPort("mydocker", port))
	client := newRegistryClient(roots, testUser, testPassword)

	if err := client.push(ctx, hostPort("mydocker", port)+"/team/app:2.0", app); err != nil {
		t.Fatalf("push of an image on group-only base layers: %v", err)
	}
	hosted, err := standin.PullImage(ctx, nexus.Hosted.URL, "team/app", "2.0", standin.WithCredentials(testUser, testPassword))
	if err != nil {
		t.Fatalf("the manifest in the hosted stand-in is incomplete: %v", err)
	}
	if got, want := mustDigest(t, hosted), mustDigest(t, app); got != want {
		t.Errorf("hosted digest: got %s, want %s", got, want)
	}
}

func TestReadOnlyEndpointRejectsPush(t *testing.T) {
	ctx := testContext(t)
	nexus := startNexus(t, nil)
	port := freePort(t)
	roots := startCaddyfile(t, fmt.Sprintf(`{
	default_bind 127.0.0.1
}
mydocker:%d {
	tls internal
	docker_registry {
		pull %s
		push off
	}
}
`, port, nexus.Group.Addr), hostPort("mydocker", port))
	client := newRegistryClient(roots, testUser, testPassword)

	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	err = client.push(ctx, hostPort("mydocker", port)+"/team/app:1.0", img)
	if err == nil {
		t.Fatal("push to a read-only endpoint succeeded")
	}
	if status := statusOf(err); status != 405 {
		t.Errorf("status: got %d (%v), want 405", status, err)
	}
	if !strings.Contains(err.Error(), "UNSUPPORTED") || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("error: got %q, want the module's UNSUPPORTED read-only message", err)
	}
	for _, r := range nexus.Group.Requests() {
		if r.Method != "GET" && r.Method != "HEAD" {
			t.Errorf("group received %s %s", r.Method, r.Path)
		}
	}
}

func TestPathBasedRoutingPushAndPull(t *testing.T) {
	ctx := testContext(t)
	const prefix = "/repository/docker-hosted"
	nexus := startNexus(t, func(o *standin.Options) { o.PathPrefix = prefix })
	port := freePort(t)
	roots := startCaddyfile(t, oneHostnameCaddyfile(port,
		"http://"+nexus.Group.Addr+prefix, "http://"+nexus.Hosted.Addr+prefix), hostPort("mydocker", port))
	client := newRegistryClient(roots, testUser, testPassword)

	img, err := random.Image(16<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.push(ctx, hostPort("mydocker", port)+"/app:1.0", img); err != nil {
		t.Fatalf("push through a path-prefixed upstream: %v", err)
	}
	pulled, err := client.pull(ctx, fmt.Sprintf("%s/app@%s", hostPort("mydocker", port), mustDigest(t, img)))
	if err != nil {
		t.Fatalf("pull through a path-prefixed upstream: %v", err)
	}
	if got, want := mustDigest(t, pulled), mustDigest(t, img); got != want {
		t.Errorf("digest: got %s, want %s", got, want)
	}
	for _, r := range nexus.Hosted.Requests() {
		if !strings.HasPrefix(r.Path, prefix+"/v2") && r.Path != "/v2/token" {
			t.Errorf("hosted received %s %s without the prefix", r.Method, r.Path)
		}
	}
}
