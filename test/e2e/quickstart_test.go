package e2e

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/caddyreg/caddy-docker-registry/test/caddyrun"
	"github.com/caddyreg/caddy-docker-registry/test/quickstart"
	"github.com/caddyreg/caddy-docker-registry/test/standin"
)

// TestQuickstartPushAndPull runs the README's quickstart on free ports and
// follows its guide: pull the base image through the group, push an
// image built on it, find it in the hosted stand-in, and see the
// read-only endpoint reject a push.
func TestQuickstartPushAndPull(t *testing.T) {
	ctx := testContext(t)
	cfg := quickstart.DefaultConfig()
	cfg.Port, cfg.ReadOnlyPort = freePort(t), freePort(t)
	cfg.AdminAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.DataDir = caddyrun.DataDir(t)
	cfg.Ports = standin.Ports{}
	env, err := quickstart.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the quickstart: %v", err)
		}
	})
	roots, err := caddyrun.RootCAs(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	client := newRegistryClient(roots, cfg.User, cfg.Password)
	endpoint := hostPort("localhost", cfg.Port)

	base, err := client.pull(ctx, fmt.Sprintf("%s/%s:%s", endpoint, quickstart.BaseRepository, quickstart.BaseTag))
	if err != nil {
		t.Fatalf("pull of the base image through the group: %v", err)
	}
	app, err := standin.ImageOnBase(base, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.push(ctx, endpoint+"/team/app:1.0", app); err != nil {
		t.Fatalf("push of an image on the base: %v", err)
	}
	hosted, err := standin.PullImage(ctx, env.Nexus.Hosted.URL, "team/app", "1.0", standin.WithCredentials(cfg.User, cfg.Password))
	if err != nil {
		t.Fatalf("the image is not complete in the hosted stand-in: %v", err)
	}
	if got, want := mustDigest(t, hosted), mustDigest(t, app); got != want {
		t.Errorf("hosted digest: got %s, want %s", got, want)
	}

	// a new image, because a client skips uploads the group already has
	other, err := standin.ImageOnBase(base, 1)
	if err != nil {
		t.Fatal(err)
	}
	err = client.push(ctx, hostPort("localhost", cfg.ReadOnlyPort)+"/team/app:2.0", other)
	if statusOf(err) != http.StatusMethodNotAllowed {
		t.Errorf("push to the read-only endpoint: got %v, want 405", err)
	}
}
