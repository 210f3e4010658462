package faults

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caddyreg/caddy-docker-registry/test/caddyrun"
	"github.com/caddyreg/caddy-docker-registry/test/standin"
)

func TestDebugLogsHoldNoCredentials(t *testing.T) {
	const user, password = "ci", "s3cret-Pa55word"
	nexus, err := standin.Start(standin.Options{
		Auth:                      standin.AuthNexusBearer,
		Users:                     map[string]string{user: password},
		AppendPortToForwardedHost: true,
		InternalLocation:          true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nexus.Close(); err != nil {
			t.Errorf("closing stand-ins: %v", err)
		}
	})
	opts := caddyOptions{logLevel: "DEBUG", accessLogs: true}
	split := map[string]any{"handler": "docker_registry", "pull": proxyTo(nexus.Group.Addr), "push": proxyTo(nexus.Hosted.Addr)}
	tc := startCaddy(t, opts, split)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	transport := tc.transport(true)
	defer transport.CloseIdleConnections()
	push := func(repo, pass string) error {
		img, err := random.Image(4096, 2)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(tc.registry()+"/"+repo+":1.0", name.StrictValidation)
		if err != nil {
			t.Fatal(err)
		}
		return remote.Write(ref, img, remote.WithContext(ctx), remote.WithTransport(transport),
			remote.WithAuth(&authn.Basic{Username: user, Password: pass}),
			remote.WithRetryBackoff(remote.Backoff{Duration: 10 * time.Millisecond, Steps: 1}))
	}

	// a push and a pull that succeed...
	if err := push("team/app", password); err != nil {
		t.Fatalf("push with the right password: %v", err)
	}
	pullRef, _ := name.ParseReference(tc.registry()+"/team/app:1.0", name.StrictValidation)
	if _, err := remote.Image(pullRef, remote.WithContext(ctx), remote.WithTransport(transport),
		remote.WithAuth(&authn.Basic{Username: user, Password: password})); err != nil {
		t.Fatalf("pull: %v", err)
	}
	// ...one with a wrong password...
	if err := push("team/denied", password+"-wrong"); err == nil {
		t.Fatal("push with a wrong password succeeded")
	}
	// ...and one whose push target is down, so that the proxy logs
	// errors for requests that carry a bearer token
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	broken := map[string]any{"handler": "docker_registry", "pull": proxyTo(nexus.Group.Addr), "push": proxyTo(closed.Addr().String())}
	if err := caddyrun.Load(tc.config(opts, broken)); err != nil {
		t.Fatal(err)
	}
	transport.CloseIdleConnections()
	if err := push("team/unreachable", password); err == nil {
		t.Fatal("push to an unreachable push target succeeded")
	}

	raw, err := os.ReadFile(tc.logFile)
	if err != nil {
		t.Fatal(err)
	}
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	for what, secret := range map[string]string{
		"the password":               password,
		"the wrong password":         password + "-wrong",
		"Basic credentials":          basic,
		"Basic credentials (no pad)": strings.TrimRight(basic, "="),
		"a Nexus bearer token":       "DockerToken.",
	} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the log contains %s (%q)", what, secret)
		}
	}

	for _, line := range bytes.Split(raw, []byte("\n")) {
		var entry any
		if len(line) == 0 {
			continue
		}
		if err := json.Unmarshal(line, &entry); err != nil {
			t.Fatalf("log line is no JSON: %v: %s", err, line)
		}
		checkCredentialFields(t, entry)
	}

	// the log is not empty by accident: it has the module's debug entries,
	// the proxy's errors and redacted Authorization headers
	for _, want := range []string{`"routed registry request"`, `"upstream round trip failed"`, `"Authorization":["REDACTED"]`} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("the log has no %s; it has %d bytes", want, len(raw))
		}
	}
}

// checkCredentialFields walks a log entry and checks that every header
// that carries credentials is logged as REDACTED.
func checkCredentialFields(t *testing.T, value any) {
	t.Helper()
	switch v := value.(type) {
	case map[string]any:
		for key, inner := range v {
			switch strings.ToLower(key) {
			case "authorization", "proxy-authorization", "cookie", "set-cookie":
				values, _ := inner.([]any)
				for _, got := range values {
					if got != "REDACTED" {
						t.Errorf("log field %s: got %q, want REDACTED", key, got)
					}
				}
			default:
				checkCredentialFields(t, inner)
			}
		}
	case []any:
		for _, inner := range v {
			checkCredentialFields(t, inner)
		}
	}
}
