package standin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const (
	testUser     = "alice"
	testPassword = "wonderland"
)

var testUsers = map[string]string{testUser: testPassword}

func startNexus(t *testing.T, opts Options) *Nexus {
	t.Helper()
	n, err := Start(opts)
	if err != nil {
		t.Fatalf("Start(%+v): %v", opts, err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

// testRequest describes one raw HTTP request sent by send.
type testRequest struct {
	method string
	url    string
	// host overrides the Host header, while the connection still goes to url.
	host   string
	header http.Header
	body   []byte
}

type testResponse struct {
	status int
	header http.Header
	body   []byte
}

func send(t *testing.T, req testRequest) testResponse {
	t.Helper()
	httpRequest, err := http.NewRequestWithContext(t.Context(), req.method, req.url, bytes.NewReader(req.body))
	if err != nil {
		t.Fatalf("build %s %s: %v", req.method, req.url, err)
	}
	if req.host != "" {
		httpRequest.Host = req.host
	}
	for key, values := range req.header {
		httpRequest.Header[key] = values
	}

	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{
		Transport: transport,
		// Location headers are checked, not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	response, err := client.Do(httpRequest)
	if err != nil {
		t.Fatalf("%s %s: %v", req.method, req.url, err)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		t.Fatalf("read body of %s %s: %v", req.method, req.url, err)
	}
	return testResponse{status: response.StatusCode, header: response.Header, body: body}
}

func errorCodes(t *testing.T, body []byte) []string {
	t.Helper()
	var envelope struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		t.Fatalf("decode OCI error body %q: %v", body, err)
	}
	codes := make([]string, 0, len(envelope.Errors))
	for _, e := range envelope.Errors {
		codes = append(codes, e.Code)
	}
	return codes
}

// checkOCIError checks the status, JSON content type, API version header
// and first error code of a registry error response.
func checkOCIError(t *testing.T, got testResponse, wantStatus int, wantCode string) {
	t.Helper()
	if got.status != wantStatus {
		t.Errorf("status: got %d, want %d (body %q)", got.status, wantStatus, got.body)
	}
	if contentType := got.header.Get("Content-Type"); !strings.HasPrefix(contentType, "application/json") {
		t.Errorf("Content-Type: got %q, want application/json", contentType)
	}
	if version := got.header.Get("Docker-Distribution-Api-Version"); version != "registry/2.0" {
		t.Errorf("Docker-Distribution-Api-Version: got %q, want registry/2.0", version)
	}
	if codes := errorCodes(t, got.body); len(codes) == 0 || codes[0] != wantCode {
		t.Errorf("error codes: got %v, want first %s", codes, wantCode)
	}
}

func imageDigest(t *testing.T, image v1.Image) v1.Hash {
	t.Helper()
	digest, err := image.Digest()
	if err != nil {
		t.Fatalf("image digest: %v", err)
	}
	return digest
}

func layerDigests(t *testing.T, image v1.Image) []v1.Hash {
	t.Helper()
	layers, err := image.Layers()
	if err != nil {
		t.Fatalf("image layers: %v", err)
	}
	digests := make([]v1.Hash, 0, len(layers))
	for _, layer := range layers {
		digest, err := layer.Digest()
		if err != nil {
			t.Fatalf("layer digest: %v", err)
		}
		digests = append(digests, digest)
	}
	return digests
}

func TestHostedPushAndPull(t *testing.T) {
	n := startNexus(t, Options{})

	pushed, err := SeedImage(t.Context(), n.Hosted.BaseURL(), "team/app", "v1", 3)
	if err != nil {
		t.Fatalf("SeedImage: %v", err)
	}

	// Pull with plain go-containerregistry, without the package helpers.
	ref, err := name.NewTag(n.Hosted.Addr+"/team/app:v1", name.Insecure)
	if err != nil {
		t.Fatalf("parse reference: %v", err)
	}
	pulled, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("remote.Image: %v", err)
	}
	if got, want := imageDigest(t, pulled), imageDigest(t, pushed); got != want {
		t.Errorf("pulled digest: got %s, want %s", got, want)
	}
	if err := readLayers(pulled); err != nil {
		t.Errorf("read pulled layers: %v", err)
	}
	if got := len(layerDigests(t, pulled)); got != 3 {
		t.Errorf("pulled layer count: got %d, want 3", got)
	}
}

func TestHostedRejectsManifestWithMissingBlobs(t *testing.T) {
	n := startNexus(t, Options{})
	image, err := random.Image(64, 2)
	if err != nil {
		t.Fatalf("random.Image: %v", err)
	}
	manifest, err := image.RawManifest()
	if err != nil {
		t.Fatalf("RawManifest: %v", err)
	}
	mediaType, err := image.MediaType()
	if err != nil {
		t.Fatalf("MediaType: %v", err)
	}

	got := send(t, testRequest{
		method: http.MethodPut,
		url:    n.Hosted.URL + "/v2/app/manifests/v1",
		header: http.Header{"Content-Type": {string(mediaType)}},
		body:   manifest,
	})

	checkOCIError(t, got, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN")
}

func TestHostedAcceptsBlobsOfOtherImageName(t *testing.T) {
	n := startNexus(t, Options{})
	image, err := SeedImage(t.Context(), n.Hosted.BaseURL(), "other", "v1", 2)
	if err != nil {
		t.Fatalf("SeedImage: %v", err)
	}
	manifest, err := image.RawManifest()
	if err != nil {
		t.Fatalf("RawManifest: %v", err)
	}
	mediaType, err := image.MediaType()
	if err != nil {
		t.Fatalf("MediaType: %v", err)
	}

	got := send(t, testRequest{
		method: http.MethodPut,
		url:    n.Hosted.URL + "/v2/app/manifests/v1",
		header: http.Header{"Content-Type": {string(mediaType)}},
		body:   manifest,
	})

	if got.status != http.StatusCreated {
		t.Fatalf("PUT manifest under a second name: got status %d, want 201 (body %q)", got.status, got.body)
	}
	pulled, err := PullImage(t.Context(), n.Hosted.BaseURL(), "app", "v1")
	if err != nil {
		t.Fatalf("PullImage: %v", err)
	}
	if got, want := imageDigest(t, pulled), imageDigest(t, image); got != want {
		t.Errorf("pulled digest: got %s, want %s", got, want)
	}
}

func TestGroupServesMemberImages(t *testing.T) {
	n := startNexus(t, Options{})
	tests := []struct {
		name   string
		member *Registry
		repo   string
	}{
		{name: "from hosted", member: n.Hosted, repo: "team/app"},
		{name: "from hub", member: n.Hub, repo: "library/alpine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pushed, err := SeedImage(t.Context(), tt.member.BaseURL(), tt.repo, "1", 2)
			if err != nil {
				t.Fatalf("SeedImage: %v", err)
			}

			pulled, err := PullImage(t.Context(), n.Group.BaseURL(), tt.repo, "1")
			if err != nil {
				t.Fatalf("PullImage from group: %v", err)
			}

			if got, want := imageDigest(t, pulled), imageDigest(t, pushed); got != want {
				t.Errorf("digest through group: got %s, want %s", got, want)
			}
		})
	}
}

func TestGroupMissingManifest(t *testing.T) {
	n := startNexus(t, Options{})

	got := send(t, testRequest{method: http.MethodGet, url: n.Group.URL + "/v2/nothing/manifests/latest"})

	checkOCIError(t, got, http.StatusNotFound, "MANIFEST_UNKNOWN")
}

func TestGroupRejectsWrites(t *testing.T) {
	n := startNexus(t, Options{})
	tests := []struct {
		method string
		path   string
	}{
		{http.MethodPut, "/v2/app/manifests/v1"},
		{http.MethodPost, "/v2/app/blobs/uploads/"},
		{http.MethodPatch, "/v2/app/blobs/uploads/some-upload"},
		{http.MethodDelete, "/v2/app/manifests/sha256:" + strings.Repeat("a", 64)},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			got := send(t, testRequest{method: tt.method, url: n.Group.URL + tt.path, body: []byte("{}")})

			checkOCIError(t, got, http.StatusMethodNotAllowed, "UNSUPPORTED")
		})
	}
}

func TestGroupPing(t *testing.T) {
	n := startNexus(t, Options{})

	got := send(t, testRequest{method: http.MethodGet, url: n.Group.URL + "/v2/"})

	if got.status != http.StatusOK {
		t.Errorf("status: got %d, want 200", got.status)
	}
	if version := got.header.Get("Docker-Distribution-Api-Version"); version != "registry/2.0" {
		t.Errorf("Docker-Distribution-Api-Version: got %q, want registry/2.0", version)
	}
}

func TestGroupBaseLayerOnlyInHub(t *testing.T) {
	n := startNexus(t, Options{})
	base, err := n.SeedBaseImage(t.Context(), "library/alpine", "3", 2)
	if err != nil {
		t.Fatalf("SeedBaseImage: %v", err)
	}

	for _, layer := range layerDigests(t, base) {
		path := "/v2/app/blobs/" + layer.String()
		if got := send(t, testRequest{method: http.MethodHead, url: n.Group.URL + path}); got.status != http.StatusOK {
			t.Errorf("HEAD %s on group: got status %d, want 200", path, got.status)
		}
		if got := send(t, testRequest{method: http.MethodHead, url: n.Hosted.URL + path}); got.status != http.StatusNotFound {
			t.Errorf("HEAD %s on hosted: got status %d, want 404", path, got.status)
		}
	}

	// Without the base layers, Hosted rejects the manifest of an image
	// built on the base.
	app, err := ImageOnBase(base, 1)
	if err != nil {
		t.Fatalf("ImageOnBase: %v", err)
	}
	if got := len(layerDigests(t, app)); got != 3 {
		t.Fatalf("layers of image on base: got %d, want 3", got)
	}
	manifest, err := app.RawManifest()
	if err != nil {
		t.Fatalf("RawManifest: %v", err)
	}
	mediaType, err := app.MediaType()
	if err != nil {
		t.Fatalf("MediaType: %v", err)
	}
	got := send(t, testRequest{
		method: http.MethodPut,
		url:    n.Hosted.URL + "/v2/app/manifests/v1",
		header: http.Header{"Content-Type": {string(mediaType)}},
		body:   manifest,
	})
	checkOCIError(t, got, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN")
}

func TestGroupMergesLists(t *testing.T) {
	n := startNexus(t, Options{})
	if _, err := SeedImage(t.Context(), n.Hosted.BaseURL(), "app", "v1", 1); err != nil {
		t.Fatalf("SeedImage to hosted: %v", err)
	}
	if _, err := SeedImage(t.Context(), n.Hub.BaseURL(), "app", "v2", 1); err != nil {
		t.Fatalf("SeedImage to hub: %v", err)
	}
	if _, err := SeedImage(t.Context(), n.Hub.BaseURL(), "library/alpine", "3", 1); err != nil {
		t.Fatalf("SeedImage to hub: %v", err)
	}

	tests := []struct {
		name     string
		path     string
		field    string
		want     []string
		wantLink string
	}{
		{name: "tags", path: "/v2/app/tags/list", field: "tags", want: []string{"v1", "v2"}},
		{name: "tags first page", path: "/v2/app/tags/list?n=1", field: "tags", want: []string{"v1"},
			wantLink: `</v2/app/tags/list?last=v1&n=1>; rel="next"`},
		{name: "tags after last", path: "/v2/app/tags/list?last=v1", field: "tags", want: []string{"v2"}},
		{name: "catalog", path: "/v2/_catalog", field: "repositories", want: []string{"app", "library/alpine"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := send(t, testRequest{method: http.MethodGet, url: n.Group.URL + tt.path})

			if got.status != http.StatusOK {
				t.Fatalf("status: got %d, want 200 (body %q)", got.status, got.body)
			}
			var lists map[string]json.RawMessage
			if err := json.Unmarshal(got.body, &lists); err != nil {
				t.Fatalf("decode body %q: %v", got.body, err)
			}
			var items []string
			if err := json.Unmarshal(lists[tt.field], &items); err != nil {
				t.Fatalf("decode %s of %q: %v", tt.field, got.body, err)
			}
			if !slices.Equal(items, tt.want) {
				t.Errorf("%s: got %v, want %v", tt.field, items, tt.want)
			}
			if link := got.header.Get("Link"); link != tt.wantLink {
				t.Errorf("Link: got %q, want %q", link, tt.wantLink)
			}
		})
	}
}

func TestBearerChallengeRealm(t *testing.T) {
	tests := []struct {
		name      string
		opts      Options
		host      string
		header    http.Header
		wantRealm string
	}{
		{
			name:      "host header only",
			host:      "nexus.internal:8081",
			wantRealm: "http://nexus.internal:8081/v2/token",
		},
		{
			name:      "forwarded proto and host",
			host:      "nexus.internal:8081",
			header:    http.Header{"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"registry.example"}},
			wantRealm: "https://registry.example/v2/token",
		},
		{
			name:      "forwarded host with port, no quirk",
			host:      "nexus.internal:8081",
			header:    http.Header{"X-Forwarded-Host": {"registry.example:5001"}},
			wantRealm: "http://registry.example:5001/v2/token",
		},
		{
			name:      "null scheme without proto",
			opts:      Options{NullSchemeWithoutProto: true},
			host:      "nexus.internal:8081",
			wantRealm: "null://nexus.internal:8081/v2/token",
		},
		{
			name:      "null scheme quirk with proto",
			opts:      Options{NullSchemeWithoutProto: true},
			host:      "nexus.internal:8081",
			header:    http.Header{"X-Forwarded-Proto": {"https"}},
			wantRealm: "https://nexus.internal:8081/v2/token",
		},
		{
			name:      "appended port after forwarded port",
			opts:      Options{AppendPortToForwardedHost: true},
			host:      "registry.example:5001",
			header:    http.Header{"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"registry.example:5001"}},
			wantRealm: "https://registry.example:5001:5001/v2/token",
		},
		{
			name:      "appended connector port",
			opts:      Options{AppendPortToForwardedHost: true},
			host:      "nexus.internal:8081",
			header:    http.Header{"X-Forwarded-Host": {"registry.example"}},
			wantRealm: "http://registry.example:8081/v2/token",
		},
		{
			name:      "append quirk with portless host",
			opts:      Options{AppendPortToForwardedHost: true},
			host:      "nexus.internal",
			header:    http.Header{"X-Forwarded-Host": {"registry.example"}},
			wantRealm: "http://registry.example/v2/token",
		},
		{
			name:      "append quirk without forwarded host",
			opts:      Options{AppendPortToForwardedHost: true},
			host:      "nexus.internal:8081",
			wantRealm: "http://nexus.internal:8081/v2/token",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.Auth = AuthNexusBearer
			opts.Users = testUsers
			n := startNexus(t, opts)

			for _, registry := range []*Registry{n.Hosted, n.Group} {
				got := send(t, testRequest{method: http.MethodGet, url: registry.URL + "/v2/", host: tt.host, header: tt.header})

				checkOCIError(t, got, http.StatusUnauthorized, "UNAUTHORIZED")
				want := `Bearer realm="` + tt.wantRealm + `",service="` + tt.wantRealm + `"`
				if challenge := got.header.Get("WWW-Authenticate"); challenge != want {
					t.Errorf("%s WWW-Authenticate: got %q, want %q", registry.Name, challenge, want)
				}
			}
		})
	}
}

func TestTokenEndpoint(t *testing.T) {
	n := startNexus(t, Options{Auth: AuthNexusBearer, Users: testUsers})
	tests := []struct {
		name       string
		user       string
		password   string
		noAuth     bool
		wantStatus int
	}{
		{name: "valid credentials", user: testUser, password: testPassword, wantStatus: http.StatusOK},
		{name: "wrong password", user: testUser, password: "guess", wantStatus: http.StatusUnauthorized},
		{name: "unknown user", user: "mallory", password: testPassword, wantStatus: http.StatusUnauthorized},
		{name: "no credentials", noAuth: true, wantStatus: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			request, err := http.NewRequest(http.MethodGet, n.Hosted.URL+"/v2/token?service=x&scope=repository:app:pull,push", nil)
			if err != nil {
				t.Fatalf("build request: %v", err)
			}
			if !tt.noAuth {
				request.SetBasicAuth(tt.user, tt.password)
			}

			got := send(t, testRequest{method: http.MethodGet, url: request.URL.String(), header: request.Header})

			if got.status != tt.wantStatus {
				t.Fatalf("status: got %d, want %d (body %q)", got.status, tt.wantStatus, got.body)
			}
			if tt.wantStatus != http.StatusOK {
				checkOCIError(t, got, http.StatusUnauthorized, "UNAUTHORIZED")
				return
			}
			var tokens struct {
				Token       string `json:"token"`
				AccessToken string `json:"access_token"`
			}
			if err := json.Unmarshal(got.body, &tokens); err != nil {
				t.Fatalf("decode token body %q: %v", got.body, err)
			}
			if tokens.Token == "" || tokens.Token != tokens.AccessToken {
				t.Errorf("token body: got token %q and access_token %q, want both equal and set", tokens.Token, tokens.AccessToken)
			}
			for _, registry := range []*Registry{n.Hosted, n.Group} {
				ping := send(t, testRequest{method: http.MethodGet, url: registry.URL + "/v2/",
					header: http.Header{"Authorization": {"Bearer " + tokens.Token}}})
				if ping.status != http.StatusOK {
					t.Errorf("%s ping with token: got status %d, want 200", registry.Name, ping.status)
				}
			}
		})
	}
}

func TestBearerRejectsForgedToken(t *testing.T) {
	n := startNexus(t, Options{Auth: AuthNexusBearer, Users: testUsers})
	other := startNexus(t, Options{Auth: AuthNexusBearer, Users: testUsers})
	foreign := other.Hosted.front.tokens.issue(testUser)
	tests := []struct {
		name  string
		token string
	}{
		{name: "token of another instance", token: foreign},
		{name: "made up", token: tokenPrefix + "YWxpY2U.AAAA"},
		{name: "empty", token: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := send(t, testRequest{method: http.MethodGet, url: n.Hosted.URL + "/v2/",
				header: http.Header{"Authorization": {"Bearer " + tt.token}}})

			checkOCIError(t, got, http.StatusUnauthorized, "UNAUTHORIZED")
		})
	}
}

func TestBearerPushAndPull(t *testing.T) {
	n := startNexus(t, Options{Auth: AuthNexusBearer, Users: testUsers})
	credentials := WithCredentials(testUser, testPassword)

	if _, err := SeedImage(t.Context(), n.Hosted.BaseURL(), "app", "v1", 1); err == nil {
		t.Errorf("anonymous SeedImage: got success, want an authentication error")
	}
	pushed, err := SeedImage(t.Context(), n.Hosted.BaseURL(), "app", "v1", 2, credentials)
	if err != nil {
		t.Fatalf("SeedImage with credentials: %v", err)
	}
	pulled, err := PullImage(t.Context(), n.Group.BaseURL(), "app", "v1", credentials)
	if err != nil {
		t.Fatalf("PullImage from group with credentials: %v", err)
	}
	if got, want := imageDigest(t, pulled), imageDigest(t, pushed); got != want {
		t.Errorf("digest through group: got %s, want %s", got, want)
	}
}

func TestBasicAuth(t *testing.T) {
	n := startNexus(t, Options{Auth: AuthBasic, Users: testUsers})
	wantChallenge := `Basic realm="Sonatype Nexus Repository Manager"`

	for _, registry := range []*Registry{n.Hosted, n.Group} {
		t.Run(registry.Name, func(t *testing.T) {
			anonymous := send(t, testRequest{method: http.MethodGet, url: registry.URL + "/v2/"})
			checkOCIError(t, anonymous, http.StatusUnauthorized, "UNAUTHORIZED")
			if challenge := anonymous.header.Get("WWW-Authenticate"); challenge != wantChallenge {
				t.Errorf("WWW-Authenticate: got %q, want %q", challenge, wantChallenge)
			}

			request, err := http.NewRequest(http.MethodGet, registry.URL+"/v2/", nil)
			if err != nil {
				t.Fatalf("build request: %v", err)
			}
			request.SetBasicAuth(testUser, "wrong")
			wrong := send(t, testRequest{method: http.MethodGet, url: registry.URL + "/v2/", header: request.Header.Clone()})
			checkOCIError(t, wrong, http.StatusUnauthorized, "UNAUTHORIZED")

			request.SetBasicAuth(testUser, testPassword)
			valid := send(t, testRequest{method: http.MethodGet, url: registry.URL + "/v2/", header: request.Header})
			if valid.status != http.StatusOK {
				t.Errorf("ping with valid credentials: got status %d, want 200", valid.status)
			}
		})
	}

	credentials := WithCredentials(testUser, testPassword)
	pushed, err := SeedImage(t.Context(), n.Hosted.BaseURL(), "app", "v1", 2, credentials)
	if err != nil {
		t.Fatalf("SeedImage with credentials: %v", err)
	}
	pulled, err := PullImage(t.Context(), n.Group.BaseURL(), "app", "v1", credentials)
	if err != nil {
		t.Fatalf("PullImage from group with credentials: %v", err)
	}
	if got, want := imageDigest(t, pulled), imageDigest(t, pushed); got != want {
		t.Errorf("digest through group: got %s, want %s", got, want)
	}
}

func TestUploadLocation(t *testing.T) {
	forwarded := http.Header{"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"registry.example"}}
	tests := []struct {
		name       string
		opts       Options
		wantPrefix func(n *Nexus) string
	}{
		{
			name:       "forwarded headers by default",
			wantPrefix: func(*Nexus) string { return "https://registry.example/v2/app/blobs/uploads/" },
		},
		{
			name:       "internal location",
			opts:       Options{InternalLocation: true},
			wantPrefix: func(n *Nexus) string { return "http://" + n.Hosted.Addr + "/v2/app/blobs/uploads/" },
		},
		{
			name: "internal location with path prefix",
			opts: Options{InternalLocation: true, PathPrefix: "/repository/docker-hosted"},
			wantPrefix: func(n *Nexus) string {
				return "http://" + n.Hosted.Addr + "/repository/docker-hosted/v2/app/blobs/uploads/"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := startNexus(t, tt.opts)

			got := send(t, testRequest{
				method: http.MethodPost,
				url:    n.Hosted.BaseURL() + "/v2/app/blobs/uploads/",
				host:   "proxy.example:8443",
				header: forwarded,
			})

			if got.status != http.StatusAccepted {
				t.Fatalf("status: got %d, want 202 (body %q)", got.status, got.body)
			}
			location, want := got.header.Get("Location"), tt.wantPrefix(n)
			if !strings.HasPrefix(location, want) || len(location) == len(want) {
				t.Errorf("Location: got %q, want %q followed by an upload id", location, want)
			}
		})
	}
}

func TestInternalLocationUploadCompletes(t *testing.T) {
	n := startNexus(t, Options{InternalLocation: true})

	// go-containerregistry follows the rewritten Locations of every upload.
	pushed, err := SeedImage(t.Context(), n.Hosted.BaseURL(), "app", "v1", 2)
	if err != nil {
		t.Fatalf("SeedImage: %v", err)
	}
	pulled, err := PullImage(t.Context(), n.Hosted.BaseURL(), "app", "v1")
	if err != nil {
		t.Fatalf("PullImage: %v", err)
	}
	if got, want := imageDigest(t, pulled), imageDigest(t, pushed); got != want {
		t.Errorf("digest: got %s, want %s", got, want)
	}
}

func TestPathPrefix(t *testing.T) {
	const prefix = "/repository/docker-hosted"
	n := startNexus(t, Options{PathPrefix: prefix})
	tests := []struct {
		path       string
		wantStatus int
	}{
		{path: prefix + "/v2/", wantStatus: http.StatusOK},
		{path: "/v2/", wantStatus: http.StatusNotFound},
		{path: "/repository/other/v2/", wantStatus: http.StatusNotFound},
		{path: prefix + "/", wantStatus: http.StatusNotFound},
		{path: prefix + "/v2/app/manifests/v1", wantStatus: http.StatusNotFound},
	}
	for _, registry := range []*Registry{n.Hosted, n.Group} {
		for _, tt := range tests {
			t.Run(registry.Name+tt.path, func(t *testing.T) {
				got := send(t, testRequest{method: http.MethodGet, url: registry.URL + tt.path})

				if got.status != tt.wantStatus {
					t.Errorf("GET %s: got status %d, want %d", tt.path, got.status, tt.wantStatus)
				}
			})
		}
	}

	n.Hosted.ResetRequests()
	pushed, err := SeedImage(t.Context(), n.Hosted.BaseURL(), "app", "v1", 2)
	if err != nil {
		t.Fatalf("SeedImage under prefix: %v", err)
	}
	pulled, err := PullImage(t.Context(), n.Group.BaseURL(), "app", "v1")
	if err != nil {
		t.Fatalf("PullImage from group under prefix: %v", err)
	}
	if got, want := imageDigest(t, pulled), imageDigest(t, pushed); got != want {
		t.Errorf("digest through group: got %s, want %s", got, want)
	}
	for _, request := range n.Hosted.Requests() {
		if !strings.HasPrefix(request.Path, prefix+"/v2/") {
			t.Errorf("hosted received %s %s, want every path under %s/v2/", request.Method, request.Path, prefix)
		}
	}
}

func TestPathPrefixBearerToken(t *testing.T) {
	n := startNexus(t, Options{PathPrefix: "/repository/docker-hosted", Auth: AuthNexusBearer, Users: testUsers})
	credentials := WithCredentials(testUser, testPassword)

	pushed, err := SeedImage(t.Context(), n.Hosted.BaseURL(), "app", "v1", 1, credentials)
	if err != nil {
		t.Fatalf("SeedImage under prefix with bearer auth: %v", err)
	}
	pulled, err := PullImage(t.Context(), n.Group.BaseURL(), "app", "v1", credentials)
	if err != nil {
		t.Fatalf("PullImage from group under prefix with bearer auth: %v", err)
	}
	if got, want := imageDigest(t, pulled), imageDigest(t, pushed); got != want {
		t.Errorf("digest through group: got %s, want %s", got, want)
	}
	sawToken := slices.ContainsFunc(n.Hosted.Requests(), func(r RecordedRequest) bool { return r.Path == "/v2/token" })
	if !sawToken {
		t.Errorf("hosted requests: got no GET /v2/token, want the token fetched at the root")
	}
}

func TestRequestRecording(t *testing.T) {
	n := startNexus(t, Options{})
	if _, err := SeedImage(t.Context(), n.Hosted.BaseURL(), "app", "v1", 1); err != nil {
		t.Fatalf("SeedImage: %v", err)
	}
	n.Hosted.ResetRequests()
	if got := len(n.Hosted.Requests()); got != 0 {
		t.Fatalf("requests after ResetRequests: got %d, want 0", got)
	}

	send(t, testRequest{method: http.MethodGet, url: n.Group.URL + "/v2/app/tags/list?n=5",
		host: "registry.example", header: http.Header{"X-Test": {"one"}}})
	send(t, testRequest{method: http.MethodHead, url: n.Group.URL + "/v2/app/blobs/sha256%3A" + strings.Repeat("0", 64)})

	want := []RecordedRequest{
		{Method: http.MethodGet, Path: "/v2/app/tags/list", RawQuery: "n=5", Host: "registry.example"},
		{Method: http.MethodHead, Path: "/v2/app/blobs/sha256%3A" + strings.Repeat("0", 64), Host: n.Group.Addr},
	}
	got := n.Group.Requests()
	if len(got) != len(want) {
		t.Fatalf("group request count: got %d, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Method != want[i].Method || got[i].Path != want[i].Path || got[i].RawQuery != want[i].RawQuery || got[i].Host != want[i].Host {
			t.Errorf("request %d: got %s %s?%s host %s, want %s %s?%s host %s", i,
				got[i].Method, got[i].Path, got[i].RawQuery, got[i].Host,
				want[i].Method, want[i].Path, want[i].RawQuery, want[i].Host)
		}
	}
	if header := got[0].Header.Get("X-Test"); header != "one" {
		t.Errorf("recorded X-Test header: got %q, want one", header)
	}
	if hosted := n.Hosted.Requests(); len(hosted) != 0 {
		t.Errorf("hosted requests after group reads: got %d, want 0 because the group reads members in-process", len(hosted))
	}
}

func TestCloseStopsServers(t *testing.T) {
	n, err := Start(Options{Auth: AuthBasic, Users: testUsers})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	addrs := []string{n.Hosted.Addr, n.Hub.Addr, n.Group.Addr}
	tempDir := n.tempDir

	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}

	for _, addr := range addrs {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
			t.Errorf("dial %s after Close: got a connection, want an error", addr)
		}
	}
	if tempDir == "" {
		t.Fatalf("temporary htpasswd directory: got none, want one for AuthBasic")
	}
	if _, err := os.Stat(tempDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat %s after Close: got %v, want not exist", tempDir, err)
	}
}

func TestStartRejectsInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{name: "basic without users", opts: Options{Auth: AuthBasic}},
		{name: "bearer without users", opts: Options{Auth: AuthNexusBearer}},
		{name: "unknown auth mode", opts: Options{Auth: AuthMode(7)}},
		{name: "root prefix", opts: Options{PathPrefix: "/"}},
		{name: "prefix ending in v2", opts: Options{PathPrefix: "/repository/x/v2"}},
		{name: "user name with colon", opts: Options{Auth: AuthBasic, Users: map[string]string{"a:b": "c"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := Start(tt.opts)
			if err == nil {
				_ = n.Close()
				t.Fatalf("Start(%+v): got no error, want one", tt.opts)
			}
			if !strings.HasPrefix(err.Error(), "standin: ") {
				t.Errorf("Start(%+v) error: got %q, want it to start with \"standin: \"", tt.opts, err)
			}
		})
	}
}
