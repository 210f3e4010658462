package clients

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// podman runs podman as root with all of its state in the test's
// directory: image storage (vfs), run root, libpod's temporary files,
// configuration files and credentials. The CA is in a --cert-dir directory.
//
// NOTE: as root, containers/image keeps its blob-info cache in
// /var/lib/containers/cache, and neither podman 4.3 nor skopeo 1.9 has an
// option to move it. The cache only records where blobs were seen, so the
// tests do not depend on what an earlier run left there.
type podman struct {
	command
	authFile     string
	certDir      string
	emptyCertDir string
	policy       string
}

func newPodman(t *testing.T) *podman {
	t.Helper()
	program := requireBinary(t, "podman", "podman")
	dir := t.TempDir()
	root, runRoot, tmp := filepath.Join(dir, "root"), mkdir(t, filepath.Join(dir, "run")), mkdir(t, filepath.Join(dir, "tmp"))

	storageConf := filepath.Join(dir, "storage.conf")
	writeFile(t, storageConf, fmt.Sprintf("[storage]\ndriver = \"vfs\"\nrunroot = %q\ngraphroot = %q\n", runRoot, root))
	containersConf := filepath.Join(dir, "containers.conf")
	writeFile(t, containersConf, fmt.Sprintf(`[engine]
events_logger = "none"
cgroup_manager = "cgroupfs"
image_copy_tmp_dir = %q

[network]
network_config_dir = %q
`, tmp, mkdir(t, filepath.Join(dir, "networks"))))

	p := &podman{
		authFile:     filepath.Join(dir, "auth.json"),
		certDir:      writeCertDir(t, filepath.Join(dir, "certs")),
		emptyCertDir: mkdir(t, filepath.Join(dir, "no-certs")),
		policy:       writePolicy(t, dir),
	}
	p.command = command{
		program: program,
		globals: []string{"--root", root, "--runroot", runRoot, "--tmpdir", tmp, "--storage-driver", "vfs",
			"--cgroup-manager", "cgroupfs", "--events-backend", "none"},
		env: cleanEnv(
			"HOME="+mkdir(t, filepath.Join(dir, "home")),
			"TMPDIR="+tmp,
			"CONTAINERS_CONF="+containersConf,
			"CONTAINERS_STORAGE_CONF="+storageConf,
			"CONTAINERS_REGISTRIES_CONF="+writeRegistriesConf(t, dir),
			"REGISTRY_AUTH_FILE="+p.authFile,
		),
	}

	// the test's registries.conf must be the one in effect: no search
	// registries, so no short name can reach a public registry
	var registries map[string]any
	output := p.mustRun(t, "info", "--format", "{{json .Registries}}")
	if err := json.Unmarshal([]byte(output), &registries); err != nil {
		t.Fatalf("podman info: invalid registries JSON %q: %v", output, err)
	}
	if search, ok := registries["search"]; ok {
		t.Fatalf("podman info: got search registries %v, want none", search)
	}
	return p
}

// version returns the version that podman reports, such as "4.3.1".
func (p *podman) version(t *testing.T) string {
	t.Helper()
	output := p.mustRun(t, "--version")
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(output), "podman version"))
}

// login logs in to localhost:<port> and returns the output.
func (p *podman) login(t *testing.T, port int, password, authFile string) (string, error) {
	t.Helper()
	return p.runWithInput(t, password+"\n", "login", "--authfile", authFile, "--cert-dir", p.certDir,
		"--username", testUser, "--password-stdin", hostPort(port))
}

// inspect returns a Go template field of a local image.
func (p *podman) inspect(t *testing.T, ref, field string) string {
	t.Helper()
	return strings.TrimSpace(p.mustRun(t, "image", "inspect", "--format", "{{"+field+"}}", ref))
}

// pull pulls through the CA directory with the test's signature policy.
func (p *podman) pull(t *testing.T, args ...string) string {
	t.Helper()
	return p.mustRun(t, append([]string{"pull", "--cert-dir", p.certDir, "--signature-policy", p.policy}, args...)...)
}

// push pushes through the CA directory and returns the pushed digest.
func (p *podman) push(t *testing.T, args ...string) string {
	t.Helper()
	digestFile := filepath.Join(t.TempDir(), "digest")
	p.mustRun(t, append([]string{"push", "--cert-dir", p.certDir, "--signature-policy", p.policy, "--digestfile", digestFile}, args...)...)
	return readDigestFile(t, digestFile).String()
}

func TestPodman(t *testing.T) {
	p := newPodman(t)
	client := matrix.client("podman", p.version(t), "Debian package podman")
	ports := env.ports

	matrix.step(t, client, OpTrust, func(t *testing.T) {
		output, err := p.runWithInput(t, testPassword+"\n", "login", "--cert-dir", p.emptyCertDir,
			"--username", testUser, "--password-stdin", hostPort(ports.snapshots))
		if err == nil || !unknownAuthority(output) {
			t.Fatalf("login without the CA: got %v, want an unknown authority error:\n%s", err, output)
		}
	})

	matrix.step(t, client, OpLogin, func(t *testing.T) {
		for _, port := range []int{ports.snapshots, ports.split, ports.group} {
			output, err := p.login(t, port, testPassword, p.authFile)
			if err != nil || !strings.Contains(output, "Login Succeeded") {
				t.Fatalf("login to %s: got %v, want Login Succeeded:\n%s", hostPort(port), err, output)
			}
		}
	})

	matrix.step(t, client, OpWrongLogin, func(t *testing.T) {
		output, err := p.login(t, ports.snapshots, wrongPassword, filepath.Join(t.TempDir(), "auth.json"))
		if err == nil || !strings.Contains(output, "invalid username/password") {
			t.Fatalf("login with a wrong password: got %v, want invalid username/password:\n%s", err, output)
		}
	})

	// podman compresses the layers again on push, so the pushed digests
	// are compared with the registry, and the content with the local image
	app := buildImage(t, "amd64", dockerMediaTypes)
	appRef := localhost(ports.snapshots, "podman/app:1.0")
	p.mustRun(t, "load", "--input", writeDockerArchive(t, app, appRef))
	pushed := map[string]string{} // repository -> pushed digest

	matrix.step(t, client, OpPushHosted, func(t *testing.T) {
		digest := p.push(t, appRef)
		stored := storedImage(t, env.bearer, "podman/app", "1.0")
		if got := digestOf(t, stored).String(); got != digest {
			t.Errorf("digest in the hosted stand-in: got %s, want %s, which podman reported", got, digest)
		}
		checkSameContent(t, stored, app)
		pushed["podman/app"] = digest
	})

	matrix.step(t, client, OpPushSplit, func(t *testing.T) {
		digest := p.push(t, appRef, "docker://"+localhost(ports.split, "podman/split:1.0"))
		stored := storedImage(t, env.bearer, "podman/split", "1.0")
		if got := digestOf(t, stored).String(); got != digest {
			t.Errorf("digest in the hosted stand-in: got %s, want %s, which podman reported", got, digest)
		}
		checkSameContent(t, stored, app)
		pushed["podman/split"] = digest
	})

	matrix.step(t, client, OpPullGroup, func(t *testing.T) {
		// an empty store makes the pull download every layer
		p.mustRun(t, "rmi", "--all", "--force")
		for _, repository := range []string{"podman/app", "podman/split"} {
			if pushed[repository] == "" {
				t.Fatalf("%s was not pushed, so there is nothing to pull", repository)
			}
			ref := localhost(ports.group, repository+":1.0")
			p.pull(t, ref)
			if got := p.inspect(t, ref, ".Digest"); got != pushed[repository] {
				t.Errorf("%s pulled through the group: got digest %s, want %s", repository, got, pushed[repository])
			}
			if got, want := p.inspect(t, ref, ".Id"), configDigest(t, app).Hex; got != want {
				t.Errorf("%s pulled through the group: got image ID %s, want %s, the local config digest", repository, got, want)
			}
		}
	})

	matrix.step(t, client, OpPushIndex, func(t *testing.T) {
		list := localhost(ports.split, "podman/multi:1.0")
		amd64Ref, arm64Ref := localhost(ports.split, "podman/multi:amd64"), localhost(ports.split, "podman/multi:arm64")
		p.mustRun(t, "load", "--input", writeDockerArchive(t, buildImage(t, "amd64", dockerMediaTypes), amd64Ref))
		p.mustRun(t, "load", "--input", writeDockerArchive(t, buildImage(t, "arm64", dockerMediaTypes), arm64Ref))
		p.mustRun(t, "manifest", "create", list)
		p.mustRun(t, "manifest", "add", list, "containers-storage:"+amd64Ref)
		p.mustRun(t, "manifest", "add", list, "containers-storage:"+arm64Ref)
		digestFile := filepath.Join(t.TempDir(), "digest")
		p.mustRun(t, "manifest", "push", "--all", "--cert-dir", p.certDir, "--digestfile", digestFile, list, "docker://"+list)
		listDigest := readDigestFile(t, digestFile)

		stored := storedIndex(t, env.bearer, "podman/multi", "1.0")
		if got := digestOf(t, stored); got != listDigest {
			t.Errorf("list digest in the hosted stand-in: got %s, want %s, which podman reported", got, listDigest)
		}
		children := indexChildren(t, stored)
		if len(children) != 2 || children["amd64"] == children["arm64"] {
			t.Fatalf("list children by architecture: got %v, want one amd64 and one arm64 image", children)
		}

		// the arm64 image is still in local storage from the load, so the
		// pull adds the group's digests to it, the list's and the image's
		groupRef := localhost(ports.group, "podman/multi:1.0")
		p.pull(t, "--arch", "arm64", groupRef)
		repoDigests := p.inspect(t, groupRef, ".RepoDigests")
		for _, digest := range []string{listDigest.String(), children["arm64"].String()} {
			want := localhost(ports.group, "podman/multi@"+digest)
			if !strings.Contains(repoDigests, want) {
				t.Errorf("repository digests of the arm64 image pulled through the group: got %s, want them to include %s", repoDigests, want)
			}
		}
	})

	matrix.step(t, client, OpPushOnBase, func(t *testing.T) {
		// the user's flow: pull the base through the endpoint, build on it
		// (here: load an image whose lower layers are the base's), push
		base, repository := seedBase(t, "podman")
		checkOnlyInHub(t, env.bearer, base)
		p.pull(t, localhost(ports.split, repository+":"+baseTag))
		onBase := imageOnBase(t, base)
		ref := localhost(ports.split, "podman/onbase:1.0")
		p.mustRun(t, "load", "--input", writeDockerArchive(t, onBase, ref))
		first := len(env.bearer.Hosted.Requests())
		digest := p.push(t, ref)
		noteBaseLayerChecks(t, client, first, base, "podman/onbase")
		stored := storedImage(t, env.bearer, "podman/onbase", "1.0")
		if got := digestOf(t, stored).String(); got != digest {
			t.Errorf("digest in the hosted stand-in: got %s, want %s, which podman reported", got, digest)
		}
		checkSameContent(t, stored, onBase)
	})

	matrix.step(t, client, OpPushReadOnly, func(t *testing.T) {
		output := p.mustFail(t, "read-only", "push", "--cert-dir", p.certDir, "--signature-policy", p.policy,
			localhost(ports.group, "podman/app:1.0"), "docker://"+localhost(ports.group, "podman/app:ro"))
		if strings.Contains(output, "retrying") {
			matrix.note(client, "A push that the registry rejects with 405 UNSUPPORTED is retried three times, "+
				"a second apart, before podman fails.")
		}
	})

	matrix.step(t, client, OpBasicAuth, func(t *testing.T) {
		basicAuthFile := filepath.Join(t.TempDir(), "auth.json")
		output, err := p.login(t, ports.basicSplit, wrongPassword, basicAuthFile)
		if err == nil || !strings.Contains(output, "invalid username/password") {
			t.Fatalf("login with a wrong password: got %v, want invalid username/password:\n%s", err, output)
		}
		for _, port := range []int{ports.basicSplit, ports.basicGroup} {
			if output, err := p.login(t, port, testPassword, basicAuthFile); err != nil {
				t.Fatalf("login to %s: %v\n%s", hostPort(port), err, output)
			}
		}

		source := localhost(ports.group, "podman/app:1.0")
		digest := p.push(t, "--authfile", basicAuthFile, source, "docker://"+localhost(ports.basicSplit, "podman/basic:1.0"))
		stored := storedImage(t, env.basic, "podman/basic", "1.0")
		if got := digestOf(t, stored).String(); got != digest {
			t.Errorf("digest in the hosted stand-in: got %s, want %s, which podman reported", got, digest)
		}

		p.mustRun(t, "rmi", "--all", "--force")
		ref := localhost(ports.basicGroup, "podman/basic:1.0")
		p.pull(t, "--authfile", basicAuthFile, ref)
		if got := p.inspect(t, ref, ".Digest"); got != digest {
			t.Errorf("pulled through the group: got digest %s, want %s", got, digest)
		}
		if got, want := p.inspect(t, ref, ".Id"), configDigest(t, app).Hex; got != want {
			t.Errorf("pulled through the group: got image ID %s, want %s, the local config digest", got, want)
		}
	})
}
