package dockerregistry

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// updateGolden makes the golden tests write the adapter's output as the
// expected JSON instead of comparing against it. Review the diff before
// committing the result.
var updateGolden = flag.Bool("update", false, "rewrite the expected JSON of the golden Caddyfile adapt tests with the adapter's output")

const (
	goldenDir          = "testdata/caddyfile_adapt"
	goldenSeparator    = "\n----------\n"
	examplesDir        = "examples"
	exampleGoldenDir   = "testdata/caddyfile_adapt/examples"
	threePortCaddyfile = "examples/Caddyfile.three-port"
	threePortJSON      = "examples/three-port.json"
)

// TestCaddyfileAdaptGolden adapts the Caddyfile part of every
// testdata/caddyfile_adapt/*.caddyfiletest file and compares the result
// with the JSON part.
func TestCaddyfileAdaptGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("got no *.caddyfiletest files in %s, want at least one", goldenDir)
	}

	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddyfiletest"), func(t *testing.T) {
			input, expected := readGoldenFile(t, file)
			got := adaptCaddyfile(t, file, input)
			if *updateGolden {
				content := string(input) + strings.TrimPrefix(goldenSeparator, "\n") + got + "\n"
				if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			compareAdaptedJSON(t, got, expected)
		})
	}
}

// TestExampleCaddyfilesAdapt adapts every examples/Caddyfile.* as it is,
// so that an example that stops adapting, or adapts to something else,
// fails here. The expected JSON lives in testdata/caddyfile_adapt/examples.
func TestExampleCaddyfilesAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(examplesDir, "Caddyfile.*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{threePortCaddyfile, "examples/Caddyfile.one-hostname"} {
		if !containsString(files, want) {
			t.Errorf("got example Caddyfiles %q, want them to include %s", files, want)
		}
	}

	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			input, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			got := adaptCaddyfile(t, file, input)

			golden := filepath.Join(exampleGoldenDir, name+".json")
			if *updateGolden {
				if err := os.MkdirAll(exampleGoldenDir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			expected, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading the expected JSON of %s: %v (run the test with -update to create it)", file, err)
			}
			compareAdaptedJSON(t, got, string(expected))
		})
	}

	// an expected JSON file whose example was renamed or removed would
	// otherwise go unnoticed
	goldens, err := filepath.Glob(filepath.Join(exampleGoldenDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, golden := range goldens {
		example := filepath.Join(examplesDir, strings.TrimSuffix(filepath.Base(golden), ".json"))
		if !containsString(files, example) {
			t.Errorf("got expected JSON %s without an example %s, want it removed", golden, example)
		}
	}
}

// TestExampleThreePortJSONMatchesCaddyfile keeps the JSON example, as it
// would be POSTed to the admin API's /load, equal to the adapted
// three-port Caddyfile once the @id tags are removed as Caddy removes them.
func TestExampleThreePortJSONMatchesCaddyfile(t *testing.T) {
	input, err := os.ReadFile(threePortCaddyfile)
	if err != nil {
		t.Fatal(err)
	}
	adapted := adaptCaddyfile(t, threePortCaddyfile, input)

	raw, err := os.ReadFile(threePortJSON)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON, fromCaddyfile any
	if err := json.Unmarshal(caddy.RemoveMetaFields(raw), &fromJSON); err != nil {
		t.Fatalf("decoding %s without @id tags: %v", threePortJSON, err)
	}
	if err := json.Unmarshal([]byte(adapted), &fromCaddyfile); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromJSON, fromCaddyfile) {
		t.Errorf("%s without @id tags differs from the adapted %s\ngot:\n%s\nwant:\n%s",
			threePortJSON, threePortCaddyfile, indentJSON(t, caddy.RemoveMetaFields(raw)), adapted)
	}
}

// TestExampleThreePortJSONUpstreamIDs checks that each registry target's
// upstream, and the UI's, carries the @id that PATCH /id/<id>/dial uses.
func TestExampleThreePortJSONUpstreamIDs(t *testing.T) {
	raw, err := os.ReadFile(threePortJSON)
	if err != nil {
		t.Fatal(err)
	}
	var config any
	if err := json.Unmarshal(raw, &config); err != nil {
		t.Fatalf("decoding %s: %v", threePortJSON, err)
	}

	type taggedObject struct {
		path   string
		object map[string]any
	}
	tagged := map[string][]taggedObject{}
	walkJSON(config, "", func(path string, object map[string]any) {
		if id, ok := object["@id"].(string); ok {
			tagged[id] = append(tagged[id], taggedObject{path, object})
		}
	})

	tests := []struct {
		id         string
		dial       string
		pathSuffix string
	}{
		{"group_upstream", "nexus:8082", "/pull/proxy/upstreams/0"},
		{"snapshots_upstream", "nexus:8083", "/pull/proxy/upstreams/0"},
		{"releases_upstream", "nexus:8084", "/pull/proxy/upstreams/0"},
		{"ui_upstream", "nexus:8081", "/handle/1/upstreams/0"},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			objects := tagged[tc.id]
			if len(objects) != 1 {
				t.Fatalf("got %d objects tagged %q, want 1", len(objects), tc.id)
			}
			if got := objects[0].object["dial"]; got != tc.dial {
				t.Errorf("got dial %v, want %q", got, tc.dial)
			}
			if got := objects[0].path; !strings.HasSuffix(got, tc.pathSuffix) {
				t.Errorf("got the tag at %s, want a path ending in %s", got, tc.pathSuffix)
			}
		})
	}
	if len(tagged) != len(tests) {
		ids := make([]string, 0, len(tagged))
		for id := range tagged {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		t.Errorf("got @id tags %q, want exactly the %d above", ids, len(tests))
	}
}

// TestCaddyfileUnmarshal parses the directive with a test dispenser, the
// way other modules and tools call UnmarshalCaddyfile, and checks the
// resulting fields.
func TestCaddyfileUnmarshal(t *testing.T) {
	type target struct {
		dials      []string
		pathPrefix string
		tls        bool
	}
	tests := []struct {
		name             string
		input            string
		pull             target
		push             *target
		readOnly         bool
		blobHead         string
		rejectUserAgents []string
		allowOldClients  bool
		apiVersion       string
	}{
		{
			name:  "bare upstream",
			input: `docker_registry nexus:8083`,
			pull:  target{dials: []string{"nexus:8083"}},
		},
		{
			name:  "several inline upstreams",
			input: `docker_registry nexus-a:8083 nexus-b:8083`,
			pull:  target{dials: []string{"nexus-a:8083", "nexus-b:8083"}},
		},
		{
			name: "inline upstream with options",
			input: `docker_registry nexus:8083 {
				blob_head pull
				api_version registry/2.1
			}`,
			pull:       target{dials: []string{"nexus:8083"}},
			blobHead:   "pull",
			apiVersion: "registry/2.1",
		},
		{
			name: "pull and push",
			input: `docker_registry {
				pull nexus:8082
				push nexus:8083
			}`,
			pull: target{dials: []string{"nexus:8082"}},
			push: &target{dials: []string{"nexus:8083"}},
		},
		{
			name: "push off",
			input: `docker_registry {
				pull nexus:8082
				push off
			}`,
			pull:     target{dials: []string{"nexus:8082"}},
			readOnly: true,
		},
		{
			name: "push off before pull",
			input: `docker_registry {
				push off
				pull nexus:8082
			}`,
			pull:     target{dials: []string{"nexus:8082"}},
			readOnly: true,
		},
		{
			name: "pull block",
			input: `docker_registry {
				pull nexus-a:8082 nexus-b:8082 {
					lb_policy first
				}
			}`,
			pull: target{dials: []string{"nexus-a:8082", "nexus-b:8082"}},
		},
		{
			name:  "https upstream",
			input: `docker_registry https://nexus:8443`,
			pull:  target{dials: []string{"nexus:8443"}, tls: true},
		},
		{
			name:  "path prefix",
			input: `docker_registry http://nexus:8081/repository/docker-group`,
			pull:  target{dials: []string{"nexus:8081"}, pathPrefix: "/repository/docker-group"},
		},
		{
			name:  "path prefix with trailing slash",
			input: `docker_registry http://nexus:8081/repository/docker-group/`,
			pull:  target{dials: []string{"nexus:8081"}, pathPrefix: "/repository/docker-group"},
		},
		{
			name:  "URL with root path",
			input: `docker_registry http://nexus:8082/`,
			pull:  target{dials: []string{"nexus:8082"}},
		},
		{
			name:  "several URLs with one prefix",
			input: `docker_registry https://nexus-a:8443/repository/docker-group https://nexus-b:8443/repository/docker-group`,
			pull:  target{dials: []string{"nexus-a:8443", "nexus-b:8443"}, pathPrefix: "/repository/docker-group", tls: true},
		},
		{
			name: "path prefixes per target",
			input: `docker_registry {
				pull http://nexus:8081/repository/docker-group
				push http://nexus:8081/repository/docker-hosted
			}`,
			pull: target{dials: []string{"nexus:8081"}, pathPrefix: "/repository/docker-group"},
			push: &target{dials: []string{"nexus:8081"}, pathPrefix: "/repository/docker-hosted"},
		},
		{
			name: "reject_user_agent patterns",
			input: `docker_registry nexus:8083 {
				reject_user_agent ^curl/ "^Wget/1\.(1|2)\."
			}`,
			pull:             target{dials: []string{"nexus:8083"}},
			rejectUserAgents: []string{`^curl/`, `^Wget/1\.(1|2)\.`},
		},
		{
			name: "reject_user_agent off",
			input: `docker_registry nexus:8083 {
				reject_user_agent off
			}`,
			pull:            target{dials: []string{"nexus:8083"}},
			allowOldClients: true,
		},
	}

	checkTarget := func(t *testing.T, name string, got *Target, want target) {
		t.Helper()
		if got.PathPrefix != want.pathPrefix {
			t.Errorf("%s: got path prefix %q, want %q", name, got.PathPrefix, want.pathPrefix)
		}
		var proxy struct {
			Handler   string `json:"handler"`
			Upstreams []struct {
				Dial string `json:"dial"`
			} `json:"upstreams"`
			Transport struct {
				TLS json.RawMessage `json:"tls"`
			} `json:"transport"`
		}
		if err := json.Unmarshal(got.ProxyRaw, &proxy); err != nil {
			t.Fatalf("%s: decoding proxy %s: %v", name, got.ProxyRaw, err)
		}
		if proxy.Handler != "reverse_proxy" {
			t.Errorf("%s: got proxy handler %q, want reverse_proxy", name, proxy.Handler)
		}
		var dials []string
		for _, u := range proxy.Upstreams {
			dials = append(dials, u.Dial)
		}
		if !reflect.DeepEqual(dials, want.dials) {
			t.Errorf("%s: got upstreams %q, want %q", name, dials, want.dials)
		}
		if gotTLS := proxy.Transport.TLS != nil; gotTLS != want.tls {
			t.Errorf("%s: got TLS to the upstream %t, want %t", name, gotTLS, want.tls)
		}
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input)); err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			if h.Pull == nil {
				t.Fatal("got no pull target, want one")
			}
			checkTarget(t, "pull", h.Pull, tc.pull)
			switch {
			case tc.push == nil && h.Push != nil:
				t.Errorf("got push target %s, want none", h.Push.ProxyRaw)
			case tc.push != nil && h.Push == nil:
				t.Errorf("got no push target, want one")
			case tc.push != nil:
				checkTarget(t, "push", h.Push, *tc.push)
			}
			if h.ReadOnly != tc.readOnly {
				t.Errorf("got read_only %t, want %t", h.ReadOnly, tc.readOnly)
			}
			if h.BlobHead != tc.blobHead {
				t.Errorf("got blob_head %q, want %q", h.BlobHead, tc.blobHead)
			}
			if !reflect.DeepEqual(h.RejectUserAgents, tc.rejectUserAgents) {
				t.Errorf("got reject_user_agents %q, want %q", h.RejectUserAgents, tc.rejectUserAgents)
			}
			if h.AllowOldClients != tc.allowOldClients {
				t.Errorf("got allow_old_clients %t, want %t", h.AllowOldClients, tc.allowOldClients)
			}
			if h.APIVersion != tc.apiVersion {
				t.Errorf("got api_version %q, want %q", h.APIVersion, tc.apiVersion)
			}
		})
	}
}

// TestCaddyfileInvalidInputs runs each invalid directive through the
// Caddyfile adapter and through UnmarshalCaddyfile, and checks the error.
func TestCaddyfileInvalidInputs(t *testing.T) {
	tests := []struct {
		name      string
		directive string
		want      string
	}{
		{
			name:      "no upstream",
			directive: `docker_registry`,
			want:      "missing upstream: give one on the directive line or in a pull subdirective",
		},
		{
			name: "no upstream with options",
			directive: `docker_registry {
				api_version registry/2.0
			}`,
			want: "missing upstream: give one on the directive line or in a pull subdirective",
		},
		{
			name: "push without pull",
			directive: `docker_registry {
				push nexus:8083
			}`,
			want: "missing upstream: give one on the directive line or in a pull subdirective",
		},
		{
			name: "unknown subdirective",
			directive: `docker_registry nexus:8083 {
				upstream nexus:8082
			}`,
			want: "unrecognized subdirective upstream",
		},
		{
			name: "duplicate api_version",
			directive: `docker_registry nexus:8083 {
				api_version registry/2.0
				api_version registry/2.1
			}`,
			want: "duplicate subdirective api_version",
		},
		{
			name: "duplicate pull",
			directive: `docker_registry {
				pull nexus:8082
				pull nexus:8083
			}`,
			want: "duplicate subdirective pull",
		},
		{
			name: "duplicate push upstream",
			directive: `docker_registry {
				pull nexus:8082
				push nexus:8083
				push nexus:8084
			}`,
			want: "duplicate subdirective push",
		},
		{
			name: "duplicate push off",
			directive: `docker_registry {
				pull nexus:8082
				push off
				push off
			}`,
			want: "duplicate subdirective push",
		},
		{
			name: "duplicate reject_user_agent",
			directive: `docker_registry nexus:8083 {
				reject_user_agent ^curl/
				reject_user_agent off
			}`,
			want: "duplicate subdirective reject_user_agent",
		},
		{
			name: "pull with inline upstream",
			directive: `docker_registry nexus:8083 {
				pull nexus:8082
			}`,
			want: "pull cannot be combined with an upstream on the directive line",
		},
		{
			name: "push off then push upstream",
			directive: `docker_registry {
				pull nexus:8082
				push off
				push nexus:8083
			}`,
			want: "push off cannot be combined with a push upstream",
		},
		{
			name: "push upstream then push off",
			directive: `docker_registry {
				pull nexus:8082
				push nexus:8083
				push off
			}`,
			want: "push off cannot be combined with a push upstream",
		},
		{
			name: "push off with extra argument",
			directive: `docker_registry {
				pull nexus:8082
				push off nexus:8083
			}`,
			want: "push off takes no other arguments and no block",
		},
		{
			name: "push off with block",
			directive: `docker_registry {
				pull nexus:8082
				push off {
					lb_policy first
				}
			}`,
			want: "push off takes no other arguments and no block",
		},
		{
			name: "bad blob_head",
			directive: `docker_registry nexus:8083 {
				blob_head group
			}`,
			want: "invalid blob_head value group: must be push or pull",
		},
		{
			name: "blob_head without argument",
			directive: `docker_registry nexus:8083 {
				blob_head
			}`,
			want: "wrong argument count or unexpected line ending after 'blob_head'",
		},
		{
			name: "blob_head with two arguments",
			directive: `docker_registry nexus:8083 {
				blob_head push pull
			}`,
			want: "wrong argument count or unexpected line ending after 'pull'",
		},
		{
			name: "api_version without argument",
			directive: `docker_registry nexus:8083 {
				api_version
			}`,
			want: "wrong argument count or unexpected line ending after 'api_version'",
		},
		{
			name: "api_version with two arguments",
			directive: `docker_registry nexus:8083 {
				api_version registry/2.0 registry/2.1
			}`,
			want: "wrong argument count or unexpected line ending after 'registry/2.1'",
		},
		{
			name: "invalid reject_user_agent regexp",
			directive: `docker_registry nexus:8083 {
				reject_user_agent ^curl/ ^docker/(1
			}`,
			want: "invalid reject_user_agent pattern ^docker/(1: error parsing regexp: missing closing ): `^docker/(1`",
		},
		{
			name: "reject_user_agent off with patterns",
			directive: `docker_registry nexus:8083 {
				reject_user_agent off ^curl/
			}`,
			want: "reject_user_agent off takes no patterns",
		},
		{
			name: "reject_user_agent without argument",
			directive: `docker_registry nexus:8083 {
				reject_user_agent
			}`,
			want: "wrong argument count or unexpected line ending after 'reject_user_agent'",
		},
		{
			name:      "upstream URL with query",
			directive: `docker_registry http://nexus:8081/repository/docker-group?format=docker`,
			want:      "invalid upstream http://nexus:8081/repository/docker-group?format=docker: an upstream URL may carry a path prefix but no query, fragment or user info",
		},
		{
			name:      "upstream URL with user info",
			directive: `docker_registry http://admin:admin123@nexus:8081/repository/docker-group`,
			want:      "invalid upstream http://admin:admin123@nexus:8081/repository/docker-group: an upstream URL may carry a path prefix but no query, fragment or user info",
		},
		{
			name:      "upstream URL with fragment",
			directive: `docker_registry http://nexus:8081/repository/docker-group#v2`,
			want:      "an upstream URL may carry a path prefix but no query, fragment or user info",
		},
		{
			name:      "path prefix with dot segment",
			directive: `docker_registry http://nexus:8081/repository/../docker-group`,
			want:      `invalid path_prefix "/repository/../docker-group": empty or dot segment`,
		},
		{
			name:      "path prefix with encoded dot segment",
			directive: `docker_registry http://nexus:8081/repository/%2e%2e/docker-group`,
			want:      `invalid path_prefix "/repository/%2e%2e/docker-group"`,
		},
		{
			name:      "path prefix with empty segment",
			directive: `docker_registry http://nexus:8081/repository//docker-group`,
			want:      `invalid path_prefix "/repository//docker-group": empty or dot segment`,
		},
		{
			name: "different path prefixes in one target",
			directive: `docker_registry {
				pull http://nexus-a:8081/repository/docker-group http://nexus-b:8081/repository/docker-proxy
			}`,
			want: `upstreams of one target must share the same path prefix, got "/repository/docker-group" and "/repository/docker-proxy"`,
		},
		{
			name:      "directive line mixing prefix and none",
			directive: `docker_registry http://nexus:8081/repository/docker-group nexus:8082`,
			want:      `upstreams of one target must share the same path prefix, got "/repository/docker-group" and ""`,
		},
		{
			name:      "directive line mixing none and prefix",
			directive: `docker_registry nexus:8082 http://nexus:8081/repository/docker-group`,
			want:      `upstreams of one target must share the same path prefix, got "" and "/repository/docker-group"`,
		},
		{
			name: "pull with no upstream",
			directive: `docker_registry {
				pull
			}`,
			want: "pull needs at least one upstream",
		},
		{
			name: "pull block with no upstream",
			directive: `docker_registry {
				pull {
					lb_policy first
				}
			}`,
			want: "pull needs at least one upstream",
		},
		{
			name: "push with no upstream",
			directive: `docker_registry {
				pull nexus:8082
				push
			}`,
			want: "push needs at least one upstream",
		},
		{
			name:      "unsupported scheme",
			directive: `docker_registry ftp://nexus:8082`,
			want:      "unsupported URL scheme ftp://",
		},
		{
			name:      "unsupported scheme with path prefix",
			directive: `docker_registry ws://nexus:8081/repository/docker-group`,
			want:      "the scheme ws:// is only supported in browsers",
		},
		{
			name:      "mixed schemes",
			directive: `docker_registry http://nexus-a:8082 https://nexus-b:8443`,
			want:      "all proxy upstreams must use the same scheme",
		},
		{
			name: "unknown reverse_proxy subdirective",
			directive: `docker_registry {
				pull nexus:8082 {
					health_url /service/rest/v1/status
				}
			}`,
			want: "unrecognized subdirective health_url",
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Run("adapter", func(t *testing.T) {
				input := ":8443 {\n" + tc.directive + "\n}\n"
				_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
				if err == nil {
					t.Fatalf("got no error, want one containing %q", tc.want)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("got error %q, want one containing %q", err, tc.want)
				}
			})
			t.Run("dispenser", func(t *testing.T) {
				var h Handler
				err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.directive))
				if err == nil {
					t.Fatalf("got no error, want one containing %q", tc.want)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("got error %q, want one containing %q", err, tc.want)
				}
			})
		})
	}
}

// TestCaddyfileGoldenJSONRoundTrip decodes every docker_registry handler
// of the golden and example JSON into a Handler and provisions and
// validates it. Every dial address is first pointed at a loopback
// listener of the test, because active health checks connect as soon as
// they are provisioned.
func TestCaddyfileGoldenJSONRoundTrip(t *testing.T) {
	configs := map[string][]byte{}
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		_, expected := readGoldenFile(t, file)
		configs[filepath.Base(file)] = []byte(expected)
	}
	examples, err := filepath.Glob(filepath.Join(exampleGoldenDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range append(examples, threePortJSON) {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		configs[file] = raw
	}

	for name, raw := range configs {
		t.Run(name, func(t *testing.T) {
			var config any
			if err := json.Unmarshal(caddy.RemoveMetaFields(raw), &config); err != nil {
				t.Fatalf("decoding the config: %v", err)
			}
			var handlers []map[string]any
			walkJSON(config, "", func(_ string, object map[string]any) {
				if object["handler"] == "docker_registry" {
					handlers = append(handlers, object)
				}
			})
			if len(handlers) == 0 {
				t.Fatal("got no docker_registry handler in the config, want at least one")
			}
			for i, handler := range handlers {
				t.Run(fmt.Sprint(i), func(t *testing.T) {
					checkHandlerRoundTrip(t, handler)
				})
			}
		})
	}
}

// checkHandlerRoundTrip decodes one docker_registry handler object
// strictly, checks that encoding it again loses nothing, and provisions
// and validates it.
func checkHandlerRoundTrip(t *testing.T, handler map[string]any) {
	sink := newDialSink(t)
	delete(handler, "handler")
	healthChecked := 0
	walkJSON(handler, "", func(_ string, object map[string]any) {
		if _, ok := object["dial"].(string); ok {
			object["dial"] = sink.addr
		}
		if hasActiveHealthChecks(object) {
			upstreams, _ := object["upstreams"].([]any)
			healthChecked += len(upstreams)
		}
	})
	raw, err := json.Marshal(handler)
	if err != nil {
		t.Fatal(err)
	}

	// decode strictly, as Caddy does, so that a field the adapter emits
	// but Handler lacks is an error, then check that nothing is lost
	var h Handler
	if err := caddy.StrictUnmarshalJSON(raw, &h); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
	encoded, err := json.Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	var reencoded any
	if err := json.Unmarshal(encoded, &reencoded); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(reencoded, any(handler)) {
		t.Errorf("got %s after decoding and encoding, want %s", encoded, raw)
	}

	ctx, cancel := newTestContext(t)
	defer cancel()
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision: got error %v, want nil", err)
	}
	if err := h.Validate(); err != nil {
		t.Errorf("Validate: got error %v, want nil", err)
	}
	if h.Pull == nil || h.Pull.proxy == nil {
		t.Errorf("got no provisioned pull proxy, want one")
	}
	if _, ok := handler["push"]; ok && (h.Push == nil || h.Push.proxy == nil) {
		t.Errorf("got no provisioned push proxy, want one")
	}

	// let the first round of active health checks reach the listener
	// before the context and then the listener are closed
	sink.waitForConnections(t, healthChecked)
}

// TestCaddyfileInvalidJSONConfigs checks that JSON configs that the
// Caddyfile cannot produce are rejected when the handler is loaded.
func TestCaddyfileInvalidJSONConfigs(t *testing.T) {
	sink := newDialSink(t)
	proxy := `{"handler":"reverse_proxy","upstreams":[{"dial":"` + sink.addr + `"}]}`

	tests := []struct {
		name   string
		config string
		want   string
	}{
		{
			name:   "missing pull",
			config: `{}`,
			want:   "a pull target is required",
		},
		{
			name:   "push without pull",
			config: `{"push":{"proxy":` + proxy + `}}`,
			want:   "a pull target is required",
		},
		{
			name:   "pull without proxy",
			config: `{"pull":{}}`,
			want:   "loading pull target: missing proxy handler",
		},
		{
			name:   "push without proxy",
			config: `{"pull":{"proxy":` + proxy + `},"push":{"path_prefix":"/repository/docker-hosted"}}`,
			want:   "loading push target: missing proxy handler",
		},
		{
			name:   "unknown proxy module",
			config: `{"pull":{"proxy":{"handler":"nexus_proxy"}}}`,
			want:   "loading pull target:",
		},
		{
			name:   "read_only with push",
			config: `{"pull":{"proxy":` + proxy + `},"push":{"proxy":` + proxy + `},"read_only":true}`,
			want:   "read_only cannot be combined with a push target",
		},
		{
			name:   "bad blob_head",
			config: `{"pull":{"proxy":` + proxy + `},"blob_head":"group"}`,
			want:   `invalid blob_head "group": must be "push" or "pull"`,
		},
		{
			name:   "upper-case blob_head",
			config: `{"pull":{"proxy":` + proxy + `},"blob_head":"PUSH"}`,
			want:   `invalid blob_head "PUSH": must be "push" or "pull"`,
		},
		{
			name:   "path_prefix without leading slash",
			config: `{"pull":{"proxy":` + proxy + `,"path_prefix":"repository/docker-group"}}`,
			want:   `invalid path_prefix "repository/docker-group": must start with a slash and not end with one`,
		},
		{
			name:   "path_prefix with trailing slash",
			config: `{"pull":{"proxy":` + proxy + `,"path_prefix":"/repository/docker-group/"}}`,
			want:   `invalid path_prefix "/repository/docker-group/": must start with a slash and not end with one`,
		},
		{
			name:   "path_prefix with dot segment",
			config: `{"pull":{"proxy":` + proxy + `,"path_prefix":"/repository/../docker-group"}}`,
			want:   `invalid path_prefix "/repository/../docker-group": empty or dot segment`,
		},
		{
			name:   "path_prefix with space",
			config: `{"pull":{"proxy":` + proxy + `,"path_prefix":"/repository/docker group"}}`,
			want:   `invalid path_prefix "/repository/docker group": only letters, digits and -._~ are allowed`,
		},
		{
			name:   "push path_prefix with empty segment",
			config: `{"pull":{"proxy":` + proxy + `},"push":{"proxy":` + proxy + `,"path_prefix":"/repository//docker-hosted"}}`,
			want:   `invalid path_prefix "/repository//docker-hosted": empty or dot segment`,
		},
		{
			name:   "bad regexp",
			config: `{"pull":{"proxy":` + proxy + `},"reject_user_agents":["^curl/","^docker/(1"]}`,
			want:   `compiling reject_user_agents pattern "^docker/(1": error parsing regexp: missing closing )`,
		},
		{
			name:   "misspelled field",
			config: `{"pull":{"proxy":` + proxy + `},"read-only":true}`,
			want:   `unknown field "read-only"`,
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := loadHandlerJSON(t, tc.config)
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error %q, want one containing %q", err, tc.want)
			}
		})
	}
}

// loadHandlerJSON decodes, provisions and validates a handler as Caddy
// loads a module, and returns the first error.
func loadHandlerJSON(t *testing.T, config string) error {
	var h Handler
	if err := caddy.StrictUnmarshalJSON([]byte(config), &h); err != nil {
		return err
	}
	ctx, cancel := newTestContext(t)
	defer cancel()
	if err := h.Provision(ctx); err != nil {
		return err
	}
	return h.Validate()
}

// newTestContext returns a context for provisioning handlers, backed by
// a config without apps whose logs are discarded and whose storage is a
// temporary directory. reverse_proxy needs such a config because it loads
// the events app when it is provisioned. Canceling the context cleans up
// the modules provisioned in it and closes the config's logs.
//
// NOTE: like every Caddy config that is provisioned, this one replaces
// Caddy's global default logger and CertMagic's default storage, so tests
// using it must not run in parallel with tests that start Caddy.
func newTestContext(t *testing.T) (caddy.Context, context.CancelFunc) {
	t.Helper()
	root, err := json.Marshal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	configJSON := `{
		"admin": {"disabled": true},
		"storage": {"module": "file_system", "root": ` + string(root) + `},
		"logging": {"logs": {"default": {"writer": {"output": "discard"}}}}
	}`
	var config caddy.Config
	if err := json.Unmarshal([]byte(configJSON), &config); err != nil {
		t.Fatal(err)
	}
	base, err := caddy.ProvisionContext(&config)
	if err != nil {
		t.Fatalf("provisioning a context: %v", err)
	}
	return caddy.NewContext(base)
}

// readGoldenFile splits a .caddyfiletest file into its Caddyfile, with
// the single trailing newline that caddy fmt leaves, and its JSON.
func readGoldenFile(t *testing.T, file string) (input []byte, expected string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), goldenSeparator)
	if len(parts) != 2 {
		t.Fatalf("got %d parts separated by %q in %s, want 2", len(parts), strings.TrimSpace(goldenSeparator), file)
	}
	return []byte(strings.TrimSpace(parts[0]) + "\n"), strings.TrimSpace(parts[1])
}

// adaptCaddyfile adapts a Caddyfile and returns the JSON indented with
// tabs. Any adapter warning fails the test, so that every golden input
// and example stays formatted as caddy fmt formats it.
func adaptCaddyfile(t *testing.T, filename string, input []byte) string {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("got no caddyfile adapter, want one registered")
	}
	result, warnings, err := adapter.Adapt(input, map[string]any{"filename": filename})
	if err != nil {
		t.Fatalf("adapting %s: got error %v, want nil", filename, err)
	}
	for _, w := range warnings {
		t.Errorf("adapting %s: got warning at line %d: %s, want none", filename, w.Line, w.Message)
	}
	return indentJSON(t, result)
}

func indentJSON(t *testing.T, raw []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "\t"); err != nil {
		t.Fatalf("indenting JSON: %v", err)
	}
	return buf.String()
}

// compareAdaptedJSON compares adapted JSON with the expected JSON after
// normalising the expected indentation, and reports the first line that
// differs.
func compareAdaptedJSON(t *testing.T, got, expected string) {
	t.Helper()
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(expected)); err != nil {
		t.Fatalf("expected JSON is invalid: %v", err)
	}
	want := indentJSON(t, compact.Bytes())
	if got == want {
		return
	}

	gotLines, wantLines := strings.Split(got, "\n"), strings.Split(want, "\n")
	line := 0
	for line < len(gotLines) && line < len(wantLines) && gotLines[line] == wantLines[line] {
		line++
	}
	lineAt := func(lines []string) string {
		if line < len(lines) {
			return strings.TrimSpace(lines[line])
		}
		return "(end of JSON)"
	}
	t.Errorf("adapted JSON differs at line %d\ngot:  %s\nwant: %s\nfull output (run with -update to accept it if the change is intended):\n%s",
		line+1, lineAt(gotLines), lineAt(wantLines), got)
}

// walkJSON calls visit for every JSON object in value, with the object's
// path as slash-separated keys and indexes.
func walkJSON(value any, path string, visit func(path string, object map[string]any)) {
	switch v := value.(type) {
	case map[string]any:
		visit(path, v)
		for key, child := range v {
			walkJSON(child, path+"/"+key, visit)
		}
	case []any:
		for i, child := range v {
			walkJSON(child, fmt.Sprintf("%s/%d", path, i), visit)
		}
	}
}

// hasActiveHealthChecks reports whether a reverse_proxy JSON object
// enables active health checks, using the fields that make Caddy start
// the checker.
func hasActiveHealthChecks(object map[string]any) bool {
	checks, _ := object["health_checks"].(map[string]any)
	active, _ := checks["active"].(map[string]any)
	for _, field := range []string{"uri", "path", "port"} {
		if _, ok := active[field]; ok {
			return true
		}
	}
	return false
}

// dialSink is a loopback listener that accepts connections, counts them
// and closes them at once. Tests point upstream addresses at it, so that
// nothing provisioned in a test connects anywhere else.
type dialSink struct {
	addr     string
	accepted chan struct{}
}

func newDialSink(t *testing.T) *dialSink {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := &dialSink{addr: listener.Addr().String(), accepted: make(chan struct{}, 64)}
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			conn.Close()
			select {
			case sink.accepted <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { listener.Close() })
	return sink
}

func (s *dialSink) waitForConnections(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-s.accepted:
		case <-timeout:
			t.Errorf("got %d connections from active health checks within 10s, want %d", i, n)
			return
		}
	}
}
