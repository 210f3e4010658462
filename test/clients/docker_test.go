package clients

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// oldDockerAgent is the User-Agent of Docker 1.4.1, which speaks only the
// registry API v1 and which the module rejects by default.
const oldDockerAgent = "docker/1.4.1 go/go1.3.3 git-commit/5bc2ff8 kernel/3.16.0 os/linux arch/amd64"

func TestDocker(t *testing.T) {
	d := startDockerEngine(t)
	client := matrix.client("Docker", d.version(t), "Debian package docker.io (dockerd and CLI)")
	ports := env.ports
	registry := func(port int) string { return fmt.Sprintf("%s:%d", registryName, port) }
	ref := func(port int, repository string) string { return registry(port) + "/" + repository }
	login := func(t *testing.T, port int, password string) (string, error) {
		return d.runWithInput(t, password+"\n", "login", "--username", testUser, "--password-stdin", registry(port))
	}

	// the group port gets its CA in the trust step, after a failed login,
	// as a user adds it
	for _, port := range []int{ports.snapshots, ports.releases, ports.split, ports.basicGroup, ports.basicSplit} {
		d.trust(t, port)
	}

	matrix.step(t, client, OpTrust, func(t *testing.T) {
		output, err := login(t, ports.group, testPassword)
		d.trust(t, ports.group)
		if err == nil || !unknownAuthority(output) {
			t.Fatalf("login to %s without its CA: got %v, want an unknown authority error:\n%s", registry(ports.group), err, output)
		}
		output, err = login(t, ports.group, testPassword)
		if err != nil || !strings.Contains(output, "Login Succeeded") {
			t.Fatalf("login to %s with its CA in certs.d: got %v, want Login Succeeded:\n%s", registry(ports.group), err, output)
		}

		// the reason dockerd resolves registryName to ::1: for a name on
		// 127.0.0.0/8 it skips certificate verification
		loopback := fmt.Sprintf("localhost:%d", ports.snapshots)
		output, err = d.runWithInput(t, testPassword+"\n", "login", "--username", testUser, "--password-stdin", loopback)
		if err != nil {
			t.Errorf("login to %s without its CA: got %v, want success, because dockerd does not verify TLS for registries on 127.0.0.0/8:\n%s", loopback, err, output)
		} else {
			matrix.note(client, "dockerd counts every registry whose name resolves into 127.0.0.0/8 as insecure and skips "+
				"certificate verification for it (`localhost:<port>` works without the CA), so the test resolves "+
				"`mydocker` to ::1 to check real TLS trust.")
		}
	})

	matrix.step(t, client, OpLogin, func(t *testing.T) {
		for _, port := range []int{ports.group, ports.snapshots, ports.releases, ports.split} {
			output, err := login(t, port, testPassword)
			if err != nil || !strings.Contains(output, "Login Succeeded") {
				t.Fatalf("login to %s: got %v, want Login Succeeded:\n%s", registry(port), err, output)
			}
		}
	})

	matrix.step(t, client, OpWrongLogin, func(t *testing.T) {
		output, err := login(t, ports.snapshots, wrongPassword)
		if err == nil || !strings.Contains(output, "unauthorized") {
			t.Fatalf("login with a wrong password: got %v, want an unauthorized error:\n%s", err, output)
		}
	})

	matrix.step(t, client, OpThreePort, func(t *testing.T) {
		// pull a Docker Hub image through the group, then publish it to the
		// snapshots and the releases port
		baseRef := ref(ports.group, baseRepository+":"+baseTag)
		output := d.mustRun(t, "pull", baseRef)
		if got, want := findDigest(t, output, "Digest: "), digestOf(t, env.base); got != want {
			t.Errorf("pulled base digest: got %s, want %s", got, want)
		}
		for _, target := range []struct {
			port  int
			nexus string
		}{{ports.snapshots, "snapshots"}, {ports.releases, "releases"}} {
			tagged := ref(target.port, "docker/base:1.0")
			d.mustRun(t, "tag", baseRef, tagged)
			pushed := findDigest(t, d.mustRun(t, "push", tagged), "digest: ")
			stand := env.bearer
			if target.nexus == "releases" {
				stand = env.releases
			}
			stored := storedImage(t, stand, "docker/base", "1.0")
			if got := digestOf(t, stored); got != pushed {
				t.Errorf("digest in the %s stand-in: got %s, want %s, which docker push reported", target.nexus, got, pushed)
			}
			checkSameContent(t, stored, env.base)
		}
	})

	// dockerd compresses the layers again on push, so pushed digests are
	// compared with the registry and the content with the local image
	app := buildImage(t, "amd64", dockerMediaTypes)
	appRef := ref(ports.snapshots, "docker/app:1.0")
	d.mustRun(t, "load", "--input", writeDockerArchive(t, app, appRef))
	pushed := map[string]v1.Hash{}

	for _, target := range []struct {
		op         Operation
		port       int
		repository string
	}{
		{OpPushHosted, ports.snapshots, "docker/app"},
		{OpPushSplit, ports.split, "docker/split"},
	} {
		matrix.step(t, client, target.op, func(t *testing.T) {
			tagged := ref(target.port, target.repository+":1.0")
			d.mustRun(t, "tag", appRef, tagged)
			digest := findDigest(t, d.mustRun(t, "push", tagged), "digest: ")
			stored := storedImage(t, env.bearer, target.repository, "1.0")
			if got := digestOf(t, stored); got != digest {
				t.Errorf("digest in the hosted stand-in: got %s, want %s, which docker push reported", got, digest)
			}
			checkSameContent(t, stored, app)
			pushed[target.repository] = digest
		})
	}

	matrix.step(t, client, OpPushReadOnly, func(t *testing.T) {
		tagged := ref(ports.group, "docker/app:ro")
		d.mustRun(t, "tag", appRef, tagged)
		d.mustFail(t, "read-only", "push", tagged)
	})

	matrix.step(t, client, OpPullGroup, func(t *testing.T) {
		// removing the image by ID drops every tag, so the pull downloads
		// every layer
		imageID := "sha256:" + configDigest(t, app).Hex
		d.mustRun(t, "rmi", "--force", imageID)
		for _, repository := range []string{"docker/app", "docker/split"} {
			if _, ok := pushed[repository]; !ok {
				t.Fatalf("%s was not pushed, so there is nothing to pull", repository)
			}
			groupRef := ref(ports.group, repository+":1.0")
			if got := findDigest(t, d.mustRun(t, "pull", groupRef), "Digest: "); got != pushed[repository] {
				t.Errorf("%s pulled through the group: got digest %s, want %s", repository, got, pushed[repository])
			}
			if got := strings.TrimSpace(d.mustRun(t, "image", "inspect", "--format", "{{.Id}}", groupRef)); got != imageID {
				t.Errorf("%s pulled through the group: got image ID %s, want %s, the local config digest", repository, got, imageID)
			}
		}
	})

	matrix.step(t, client, OpPushIndex, func(t *testing.T) {
		// docker manifest builds a list from images already in the
		// registry; buildx is not in Debian's docker.io
		images := map[string]v1.Image{"amd64": app, "arm64": buildImage(t, "arm64", dockerMediaTypes)}
		wantChildren := map[string]string{}
		var sources []string
		for _, arch := range []string{"amd64", "arm64"} {
			tagged := ref(ports.split, "docker/multi:"+arch)
			d.mustRun(t, "load", "--input", writeDockerArchive(t, images[arch], tagged))
			wantChildren[arch] = findDigest(t, d.mustRun(t, "push", tagged), "digest: ").String()
			sources = append(sources, tagged)
		}
		list := ref(ports.split, "docker/multi:1.0")
		d.mustRun(t, append([]string{"manifest", "create", list}, sources...)...)
		listDigest := findDigest(t, d.mustRun(t, "manifest", "push", "--purge", list), "")

		stored := storedIndex(t, env.bearer, "docker/multi", "1.0")
		if got := digestOf(t, stored); got != listDigest {
			t.Errorf("list digest in the hosted stand-in: got %s, want %s, which docker manifest push reported", got, listDigest)
		}
		gotChildren := map[string]string{}
		for arch, digest := range indexChildren(t, stored) {
			gotChildren[arch] = digest.String()
		}
		if !maps.Equal(gotChildren, wantChildren) {
			t.Errorf("list children by architecture: got %v, want %v", gotChildren, wantChildren)
		}
		if got := findDigest(t, d.mustRun(t, "pull", ref(ports.group, "docker/multi:1.0")), "Digest: "); got != listDigest {
			t.Errorf("list pulled through the group: got digest %s, want %s", got, listDigest)
		}
		matrix.note(client, "`docker manifest create` and `push` run in the CLI, which reaches the registry itself: "+
			"it needs the CA in the same certs.d directory as dockerd.")
	})

	matrix.step(t, client, OpPushOnBase, func(t *testing.T) {
		// the user's flow: pull the base through the endpoint, so dockerd
		// records its layer digests, build on it (here: load an image
		// whose lower layers are the base's), and push
		base, repository := seedBase(t, "docker")
		checkOnlyInHub(t, env.bearer, base)
		output := d.mustRun(t, "pull", ref(ports.split, repository+":"+baseTag))
		if got, want := findDigest(t, output, "Digest: "), digestOf(t, base); got != want {
			t.Errorf("pulled base digest: got %s, want %s", got, want)
		}
		onBase := imageOnBase(t, base)
		tagged := ref(ports.split, "docker/onbase:1.0")
		d.mustRun(t, "load", "--input", writeDockerArchive(t, onBase, tagged))
		first := len(env.bearer.Hosted.Requests())
		digest := findDigest(t, d.mustRun(t, "push", tagged), "digest: ")
		noteBaseLayerChecks(t, client, first, base, "docker/onbase")
		stored := storedImage(t, env.bearer, "docker/onbase", "1.0")
		if got := digestOf(t, stored); got != digest {
			t.Errorf("digest in the hosted stand-in: got %s, want %s, which docker push reported", got, digest)
		}
		checkSameContent(t, stored, onBase)
	})

	matrix.step(t, client, OpBasicAuth, func(t *testing.T) {
		output, err := login(t, ports.basicSplit, wrongPassword)
		if err == nil || !strings.Contains(output, "401 Unauthorized") {
			t.Fatalf("login with a wrong password: got %v, want 401 Unauthorized:\n%s", err, output)
		}
		for _, port := range []int{ports.basicSplit, ports.basicGroup} {
			if output, err := login(t, port, testPassword); err != nil {
				t.Fatalf("login to %s: %v\n%s", registry(port), err, output)
			}
		}
		tagged := ref(ports.basicSplit, "docker/basic:1.0")
		d.mustRun(t, "tag", ref(ports.group, "docker/app:1.0"), tagged)
		digest := findDigest(t, d.mustRun(t, "push", tagged), "digest: ")
		if got := digestOf(t, storedImage(t, env.basic, "docker/basic", "1.0")); got != digest {
			t.Errorf("digest in the hosted stand-in: got %s, want %s, which docker push reported", got, digest)
		}
		d.mustRun(t, "rmi", "--force", "sha256:"+configDigest(t, app).Hex)
		if got := findDigest(t, d.mustRun(t, "pull", ref(ports.basicGroup, "docker/basic:1.0")), "Digest: "); got != digest {
			t.Errorf("pulled through the group: got digest %s, want %s", got, digest)
		}
	})

	matrix.step(t, client, OpUserAgent, func(t *testing.T) {
		checkUserAgentGate(t)
	})
}

// checkUserAgentGate sends requests with the engine's User-Agent, taken
// from what the group stand-in recorded, and with Docker 1.4.1's to the
// group site on the listener that dockerd used.
func checkUserAgentGate(t *testing.T) {
	var engineAgent string
	for _, r := range env.bearer.Group.Requests() {
		if agent := r.Header.Get("User-Agent"); strings.HasPrefix(agent, "docker/") {
			engineAgent = agent
			break
		}
	}
	if engineAgent == "" {
		t.Fatalf("the group stand-in recorded no request with a docker/ User-Agent, want the engine's requests")
	}

	dialer := &net.Dialer{Timeout: 5 * time.Second}
	transport := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: env.roots, ServerName: registryName},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, fmt.Sprintf("[::1]:%d", env.ports.group))
		},
	}
	defer transport.CloseIdleConnections()
	httpClient := &http.Client{Transport: transport}
	get := func(agent string) (*http.Response, []byte) {
		t.Helper()
		request, err := http.NewRequestWithContext(t.Context(), http.MethodGet, fmt.Sprintf("https://%s:%d/v2/", registryName, env.ports.group), nil)
		if err != nil {
			t.Fatal(err)
		}
		request.Header.Set("User-Agent", agent)
		response, err := httpClient.Do(request)
		if err != nil {
			t.Fatalf("GET /v2/ as %q: %v", agent, err)
		}
		defer response.Body.Close()
		body, err := io.ReadAll(response.Body)
		if err != nil {
			t.Fatal(err)
		}
		return response, body
	}

	before := len(env.bearer.Group.Requests())
	response, body := get(oldDockerAgent)
	if response.StatusCode != http.StatusNotFound {
		t.Errorf("old client: got status %d, want 404 (body %s)", response.StatusCode, body)
	}
	if got := response.Header.Get("Content-Type"); !strings.HasPrefix(got, "application/json") {
		t.Errorf("old client: got Content-Type %q, want application/json", got)
	}
	if got := response.Header.Get("Docker-Distribution-Api-Version"); got != "registry/2.0" {
		t.Errorf("old client: got Docker-Distribution-Api-Version %q, want registry/2.0", got)
	}
	var envelope struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil || len(envelope.Errors) == 0 || envelope.Errors[0].Code != "UNSUPPORTED" {
		t.Errorf("old client: got body %s, want OCI error JSON with code UNSUPPORTED", body)
	}
	if after := len(env.bearer.Group.Requests()); after != before {
		t.Errorf("old client: the group stand-in received %d requests, want 0: the module must answer itself", after-before)
	}

	response, body = get(engineAgent)
	// the stand-in's bearer challenge shows that the request passed the
	// module
	if response.StatusCode != http.StatusUnauthorized {
		t.Errorf("engine agent %q: got status %d, want the stand-in's 401 (body %s)", engineAgent, response.StatusCode, body)
	}
	requests := env.bearer.Group.Requests()
	if len(requests) != before+1 || requests[len(requests)-1].Header.Get("User-Agent") != engineAgent {
		t.Errorf("engine agent: the group stand-in received %d requests, want 1 with User-Agent %q", len(requests)-before, engineAgent)
	}
	t.Logf("engine User-Agent: %s", engineAgent)
}
