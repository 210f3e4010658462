package clients

import (
	"maps"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// cranePackage is crane's main package, pinned by the tool directive in
// test/go.mod, so the version under test is the one in go.sum.
const cranePackage = "github.com/google/go-containerregistry/cmd/crane"

// crane runs the crane command built from test/go.mod. It trusts Caddy's
// CA through SSL_CERT_FILE, as Go programs do, and keeps its credentials
// in a DOCKER_CONFIG directory of the test.
type crane struct {
	program string
	dir     string
}

func newCrane(t *testing.T) *crane {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not in PATH, and building crane needs it: %v", err)
	}
	c := &crane{program: filepath.Join(t.TempDir(), "crane"), dir: t.TempDir()}
	build := exec.CommandContext(t.Context(), goTool, "build", "-o", c.program, cranePackage)
	if output, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", cranePackage, err, output)
	}
	return c
}

// withConfig returns crane with credentials in configDir, trusting the CA
// when trusted is true and only the system roots otherwise.
func (c *crane) withConfig(t *testing.T, configDir string, trusted bool) command {
	t.Helper()
	vars := []string{"HOME=" + mkdir(t, filepath.Join(c.dir, "home")), "DOCKER_CONFIG=" + mkdir(t, configDir)}
	if trusted {
		// crypto/x509 on Linux reads the roots from this file instead of
		// the system bundle
		vars = append(vars, "SSL_CERT_FILE="+env.rootCert)
	}
	return command{program: c.program, env: cleanEnv(vars...)}
}

func TestCrane(t *testing.T) {
	c := newCrane(t)
	craneCmd := c.withConfig(t, filepath.Join(c.dir, "docker"), true)
	version := strings.TrimSpace(craneCmd.mustRun(t, "version"))
	client := matrix.client("crane", version, "`go build` of "+cranePackage+" from test/go.mod")
	ports := env.ports
	login := func(t *testing.T, cmd command, port int, password string) {
		t.Helper()
		output, err := cmd.runWithInput(t, password+"\n", "auth", "login", hostPort(port), "--username", testUser, "--password-stdin")
		if err != nil || !strings.Contains(output, "logged in via") {
			t.Fatalf("crane auth login %s: got %v, want \"logged in via\":\n%s", hostPort(port), err, output)
		}
	}

	matrix.step(t, client, OpTrust, func(t *testing.T) {
		untrusting := c.withConfig(t, filepath.Join(t.TempDir(), "docker"), false)
		output, err := untrusting.run(t, "digest", localhost(ports.group, baseRepository+":"+baseTag))
		if err == nil || !unknownAuthority(output) {
			t.Fatalf("crane digest without the CA: got %v, want an unknown authority error:\n%s", err, output)
		}
	})

	matrix.step(t, client, OpLogin, func(t *testing.T) {
		for _, port := range []int{ports.snapshots, ports.split, ports.group} {
			login(t, craneCmd, port, testPassword)
		}
		// crane auth login only stores the credentials, so the first
		// request through the group is what proves them
		output := craneCmd.mustRun(t, "digest", localhost(ports.group, baseRepository+":"+baseTag))
		if got, want := parseDigest(t, strings.TrimSpace(output)), digestOf(t, env.base); got != want {
			t.Errorf("digest of the base image through the group: got %s, want %s", got, want)
		}
	})

	app := buildImage(t, "amd64", ociMediaTypes)
	appLayout := writeLayout(t, app, "app")
	appDigest := digestOf(t, app)

	matrix.step(t, client, OpWrongLogin, func(t *testing.T) {
		wrong := c.withConfig(t, filepath.Join(t.TempDir(), "docker"), true)
		login(t, wrong, ports.snapshots, wrongPassword)
		wrong.mustFail(t, "UNAUTHORIZED", "push", appLayout, localhost(ports.snapshots, "crane/wrong:1.0"))
		matrix.note(client, "`crane auth login` stores the credentials without contacting the registry, "+
			"so a wrong password shows up on the next push or pull as UNAUTHORIZED.")
	})

	for _, target := range []struct {
		op         Operation
		port       int
		repository string
	}{
		{OpPushHosted, ports.snapshots, "crane/app"},
		{OpPushSplit, ports.split, "crane/split"},
	} {
		matrix.step(t, client, target.op, func(t *testing.T) {
			ref := localhost(target.port, target.repository+":1.0")
			output := craneCmd.mustRun(t, "push", appLayout, ref)
			if got := findDigest(t, output, localhost(target.port, target.repository)+"@"); got != appDigest {
				t.Errorf("pushed digest: got %s, want %s, the local image's", got, appDigest)
			}
			if got := digestOf(t, storedImage(t, env.bearer, target.repository, "1.0")); got != appDigest {
				t.Errorf("digest in the hosted stand-in: got %s, want %s", got, appDigest)
			}
		})
	}

	matrix.step(t, client, OpPullGroup, func(t *testing.T) {
		for _, repository := range []string{"crane/app", "crane/split"} {
			pulled := filepath.Join(t.TempDir(), "pulled")
			craneCmd.mustRun(t, "pull", "--format", "oci", localhost(ports.group, repository+":1.0"), pulled)
			if got := layoutEntry(t, pulled).Digest; got != appDigest {
				t.Errorf("%s pulled through the group: got digest %s, want %s", repository, got, appDigest)
			}
		}
	})

	matrix.step(t, client, OpPushIndex, func(t *testing.T) {
		index, images := buildIndex(t)
		indexDigest := digestOf(t, index)
		output := craneCmd.mustRun(t, "push", writeLayout(t, index, "multi"), localhost(ports.split, "crane/multi:1.0"))
		if got := findDigest(t, output, localhost(ports.split, "crane/multi")+"@"); got != indexDigest {
			t.Errorf("pushed index digest: got %s, want %s, the local index's", got, indexDigest)
		}

		stored := storedIndex(t, env.bearer, "crane/multi", "1.0")
		if got := digestOf(t, stored); got != indexDigest {
			t.Errorf("index digest in the hosted stand-in: got %s, want %s", got, indexDigest)
		}
		gotChildren, wantChildren := map[string]string{}, map[string]string{}
		for arch, digest := range indexChildren(t, stored) {
			gotChildren[arch] = digest.String()
		}
		for arch, image := range images {
			wantChildren[arch] = digestOf(t, image).String()
		}
		if !maps.Equal(gotChildren, wantChildren) {
			t.Errorf("index children by architecture: got %v, want %v", gotChildren, wantChildren)
		}

		pulled := filepath.Join(t.TempDir(), "pulled")
		craneCmd.mustRun(t, "pull", "--format", "oci", localhost(ports.group, "crane/multi:1.0"), pulled)
		if got := layoutEntry(t, pulled).Digest; got != indexDigest {
			t.Errorf("index pulled through the group: got digest %s, want %s", got, indexDigest)
		}
	})

	matrix.step(t, client, OpPushOnBase, func(t *testing.T) {
		base, _ := seedBase(t, "crane")
		checkOnlyInHub(t, env.bearer, base)
		// crane pushes the layout's compressed blobs as they are, so it
		// checks the very base layer digests that the group has
		onBase := imageOnBase(t, base)
		first := len(env.bearer.Hosted.Requests())
		craneCmd.mustRun(t, "push", writeLayout(t, onBase, "onbase"), localhost(ports.split, "crane/onbase:1.0"))
		noteBaseLayerChecks(t, client, first, base, "crane/onbase")
		if got, want := digestOf(t, storedImage(t, env.bearer, "crane/onbase", "1.0")), digestOf(t, onBase); got != want {
			t.Errorf("digest in the hosted stand-in: got %s, want %s", got, want)
		}
	})

	matrix.step(t, client, OpPushReadOnly, func(t *testing.T) {
		craneCmd.mustFail(t, "read-only", "push", appLayout, localhost(ports.group, "crane/app:ro"))
	})

	matrix.step(t, client, OpBasicAuth, func(t *testing.T) {
		wrong := c.withConfig(t, filepath.Join(t.TempDir(), "docker"), true)
		login(t, wrong, ports.basicSplit, wrongPassword)
		wrong.mustFail(t, "401 Unauthorized", "push", appLayout, localhost(ports.basicSplit, "crane/basic:1.0"))

		basic := c.withConfig(t, filepath.Join(t.TempDir(), "docker"), true)
		login(t, basic, ports.basicSplit, testPassword)
		login(t, basic, ports.basicGroup, testPassword)
		basic.mustRun(t, "push", appLayout, localhost(ports.basicSplit, "crane/basic:1.0"))
		if got := digestOf(t, storedImage(t, env.basic, "crane/basic", "1.0")); got != appDigest {
			t.Errorf("digest in the hosted stand-in: got %s, want %s", got, appDigest)
		}
		pulled := filepath.Join(t.TempDir(), "pulled")
		basic.mustRun(t, "pull", "--format", "oci", localhost(ports.basicGroup, "crane/basic:1.0"), pulled)
		if got := layoutEntry(t, pulled).Digest; got != appDigest {
			t.Errorf("pulled through the group: got digest %s, want %s", got, appDigest)
		}
	})
}
