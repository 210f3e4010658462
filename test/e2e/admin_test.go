package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/caddyreg/caddy-docker-registry/test/caddyrun"
	"github.com/caddyreg/caddy-docker-registry/test/standin"
)

// threePortPorts are the loopback ports that stand in for 443, 8083 and
// 8084 of the three-port example.
type threePortPorts struct{ group, snapshots, releases, admin int }

// threePortConfig reads examples/three-port.json and points it at the
// stand-ins: listeners on loopback ports, the group, snapshots and
// releases upstreams at stand-in registries and the UI upstream at ui.
func threePortConfig(t *testing.T, ports threePortPorts, group, snapshots, releases, ui string) []byte {
	t.Helper()
	replacer := strings.NewReplacer(
		`"localhost:2019"`, fmt.Sprintf(`"127.0.0.1:%d"`, ports.admin),
		`":443"`, fmt.Sprintf(`"127.0.0.1:%d"`, ports.group),
		`":8083"`, fmt.Sprintf(`"127.0.0.1:%d"`, ports.snapshots),
		`":8084"`, fmt.Sprintf(`"127.0.0.1:%d"`, ports.releases),
		`"nexus:8082"`, `"`+group+`"`,
		`"nexus:8083"`, `"`+snapshots+`"`,
		`"nexus:8084"`, `"`+releases+`"`,
		`"nexus:8081"`, `"`+ui+`"`,
	)
	cfg := replacer.Replace(readFile(t, "examples/three-port.json"))
	for _, original := range []string{`"nexus:`, `":443"`, `":8083"`, `":8084"`} {
		if strings.Contains(cfg, original) {
			t.Fatalf("examples/three-port.json has an address the test does not map: %s", original)
		}
	}
	return []byte(cfg)
}

// adminRequest sends a request to Caddy's admin API and fails the test
// unless the status is 200.
func adminRequest(t *testing.T, admin int, method, path string, body []byte) {
	t.Helper()
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", admin, path), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: status %d: %s", method, path, resp.StatusCode, msg)
	}
}

func TestThreePortJSONThroughAdminAPI(t *testing.T) {
	ctx := testContext(t)
	nexus := startNexus(t, nil)
	releases := startNexus(t, nil)
	other := startNexus(t, nil)
	ui := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "nexus ui")
	}))
	t.Cleanup(ui.Close)

	ports := threePortPorts{freePort(t), freePort(t), freePort(t), freePort(t)}
	dataDir := caddyrun.DataDir(t)

	// a running Caddy with only its admin API, as after "caddy run"
	bootstrap := fmt.Sprintf(`{"admin":{"listen":"127.0.0.1:%d"}}`, ports.admin)
	if err := caddyrun.Load([]byte(bootstrap)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := caddyrun.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})

	cfg := threePortConfig(t, ports, nexus.Group.Addr, nexus.Hosted.Addr, releases.Hosted.Addr, strings.TrimPrefix(ui.URL, "http://"))
	cfg = prepareTestConfig(t, cfg, dataDir)
	adminRequest(t, ports.admin, http.MethodPost, "/load", cfg)
	roots := waitForCertificates(t, dataDir,
		hostPort("mydocker", ports.group), hostPort("mydocker", ports.snapshots), hostPort("mydocker", ports.releases))
	client := newRegistryClient(roots, testUser, testPassword)

	// push to the snapshots port, pull through the group port
	img, err := random.Image(16<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	digest := mustDigest(t, img)
	if err := client.push(ctx, hostPort("mydocker", ports.snapshots)+"/team/app:1.0-SNAPSHOT", img); err != nil {
		t.Fatalf("push to the snapshots port: %v", err)
	}
	if _, err := client.pull(ctx, fmt.Sprintf("%s/team/app@%s", hostPort("mydocker", ports.group), digest)); err != nil {
		t.Fatalf("pull through the group port: %v", err)
	}
	if err := client.push(ctx, hostPort("mydocker", ports.releases)+"/team/app:1.0", img); err != nil {
		t.Fatalf("push to the releases port: %v", err)
	}
	if _, err := standin.PullImage(ctx, releases.Hosted.URL, "team/app", "1.0", standin.WithCredentials(testUser, testPassword)); err != nil {
		t.Fatalf("the image is not in the releases stand-in: %v", err)
	}
	if err := client.push(ctx, hostPort("mydocker", ports.group)+"/team/app:1.0", img); statusOf(err) != http.StatusMethodNotAllowed {
		t.Errorf("push to the group port: got %v, want 405", err)
	}

	// the Nexus UI behind the group port
	uiResp, err := (&http.Client{Transport: client.transport}).Get(fmt.Sprintf("https://mydocker:%d/", ports.group))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(uiResp.Body)
	uiResp.Body.Close()
	if string(body) != "nexus ui" {
		t.Errorf("UI fallback: got %q, want the UI's page", body)
	}

	// change the group upstream live; traffic follows without a restart
	base, err := other.SeedBaseImage(ctx, "library/only-in-other", "1.0", 1)
	if err != nil {
		t.Fatal(err)
	}
	newDial, _ := json.Marshal(other.Group.Addr)
	adminRequest(t, ports.admin, http.MethodPatch, "/id/group_upstream/dial", newDial)
	nexus.Group.ResetRequests()

	pulled, err := client.pull(ctx, hostPort("mydocker", ports.group)+"/library/only-in-other:1.0")
	if err != nil {
		t.Fatalf("pull after the PATCH: %v", err)
	}
	if got, want := mustDigest(t, pulled), mustDigest(t, base); got != want {
		t.Errorf("digest after the PATCH: got %s, want %s", got, want)
	}
	if n := len(nexus.Group.Requests()); n != 0 {
		t.Errorf("the old group received %d requests after the PATCH, want 0", n)
	}
}
