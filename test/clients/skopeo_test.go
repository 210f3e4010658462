package clients

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// skopeo runs the skopeo command with configuration files and an auth
// file in the test's directory, and the CA in a --cert-dir directory, which
// is how containers/image tools trust a registry CA without system changes.
type skopeo struct {
	command
	authFile     string
	certDir      string
	emptyCertDir string
}

func newSkopeo(t *testing.T) *skopeo {
	t.Helper()
	program := requireBinary(t, "skopeo", "skopeo")
	dir := t.TempDir()
	s := &skopeo{
		authFile:     filepath.Join(dir, "auth.json"),
		certDir:      writeCertDir(t, filepath.Join(dir, "certs")),
		emptyCertDir: mkdir(t, filepath.Join(dir, "no-certs")),
	}
	registriesConf := writeRegistriesConf(t, dir)
	policy := writePolicy(t, dir)
	s.command = command{
		program: program,
		globals: []string{"--policy", policy, "--tmpdir", mkdir(t, filepath.Join(dir, "tmp"))},
		env: cleanEnv(
			"HOME="+mkdir(t, filepath.Join(dir, "home")),
			"TMPDIR="+filepath.Join(dir, "tmp"),
			"CONTAINERS_REGISTRIES_CONF="+registriesConf,
			"REGISTRY_AUTH_FILE="+s.authFile,
		),
	}
	return s
}

// version returns the version that skopeo reports, such as "1.9.3".
func (s *skopeo) version(t *testing.T) string {
	t.Helper()
	output := s.mustRun(t, "--version")
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(output), "skopeo version"))
}

func TestSkopeo(t *testing.T) {
	s := newSkopeo(t)
	client := matrix.client("skopeo", s.version(t), "Debian package skopeo")
	ports := env.ports
	login := func(t *testing.T, port int, password, authFile string) (string, error) {
		return s.runWithInput(t, password+"\n", "login", "--authfile", authFile, "--cert-dir", s.certDir,
			"--username", testUser, "--password-stdin", hostPort(port))
	}

	matrix.step(t, client, OpTrust, func(t *testing.T) {
		output, err := s.runWithInput(t, testPassword+"\n", "login", "--authfile", s.authFile, "--cert-dir", s.emptyCertDir,
			"--username", testUser, "--password-stdin", hostPort(ports.snapshots))
		if err == nil || !unknownAuthority(output) {
			t.Fatalf("login without the CA: got %v, want an unknown authority error:\n%s", err, output)
		}
	})

	matrix.step(t, client, OpLogin, func(t *testing.T) {
		for _, port := range []int{ports.snapshots, ports.split, ports.group} {
			output, err := login(t, port, testPassword, s.authFile)
			if err != nil || !strings.Contains(output, "Login Succeeded") {
				t.Fatalf("login to %s: got %v, want Login Succeeded:\n%s", hostPort(port), err, output)
			}
		}
	})

	matrix.step(t, client, OpWrongLogin, func(t *testing.T) {
		output, err := login(t, ports.snapshots, wrongPassword, filepath.Join(t.TempDir(), "auth.json"))
		if err == nil || !strings.Contains(output, "invalid username/password") {
			t.Fatalf("login with a wrong password: got %v, want invalid username/password:\n%s", err, output)
		}
	})

	app := buildImage(t, "amd64", ociMediaTypes)
	appLayout := writeLayout(t, app, "app")
	appDigest := digestOf(t, app)
	pushed := map[string]string{} // repository name -> port it was pushed to

	for _, target := range []struct {
		op         Operation
		port       int
		repository string
	}{
		{OpPushHosted, ports.snapshots, "skopeo/app"},
		{OpPushSplit, ports.split, "skopeo/split"},
	} {
		matrix.step(t, client, target.op, func(t *testing.T) {
			digestFile := filepath.Join(t.TempDir(), "digest")
			s.mustRun(t, "copy", "--dest-cert-dir", s.certDir, "--digestfile", digestFile,
				"oci:"+appLayout+":app", "docker://"+localhost(target.port, target.repository+":1.0"))
			if got := readDigestFile(t, digestFile); got != appDigest {
				t.Errorf("pushed digest: got %s, want %s, the local image's", got, appDigest)
			}
			if got := digestOf(t, storedImage(t, env.bearer, target.repository, "1.0")); got != appDigest {
				t.Errorf("digest in the hosted stand-in: got %s, want %s", got, appDigest)
			}
			pushed[target.repository] = hostPort(target.port)
		})
	}

	matrix.step(t, client, OpPullGroup, func(t *testing.T) {
		for _, repository := range []string{"skopeo/app", "skopeo/split"} {
			if pushed[repository] == "" {
				t.Fatalf("%s was not pushed, so there is nothing to pull", repository)
			}
			pulled := filepath.Join(t.TempDir(), "pulled")
			s.mustRun(t, "copy", "--src-cert-dir", s.certDir,
				"docker://"+localhost(ports.group, repository+":1.0"), "oci:"+pulled+":pulled")
			if got := layoutEntry(t, pulled).Digest; got != appDigest {
				t.Errorf("%s pulled through the group: got digest %s, want %s", repository, got, appDigest)
			}
		}
	})

	matrix.step(t, client, OpPushIndex, func(t *testing.T) {
		index, images := buildIndex(t)
		indexLayout := writeLayout(t, index, "multi")
		digestFile := filepath.Join(t.TempDir(), "digest")
		s.mustRun(t, "copy", "--all", "--dest-cert-dir", s.certDir, "--digestfile", digestFile,
			"oci:"+indexLayout+":multi", "docker://"+localhost(ports.split, "skopeo/multi:1.0"))
		pushedDigest := readDigestFile(t, digestFile)

		stored := storedIndex(t, env.bearer, "skopeo/multi", "1.0")
		if got := digestOf(t, stored); got != pushedDigest {
			t.Errorf("index digest in the hosted stand-in: got %s, want %s, which skopeo reported", got, pushedDigest)
		}
		wantChildren := map[string]string{}
		for arch, image := range images {
			wantChildren[arch] = digestOf(t, image).String()
		}
		gotChildren := map[string]string{}
		for arch, digest := range indexChildren(t, stored) {
			gotChildren[arch] = digest.String()
		}
		if !maps.Equal(gotChildren, wantChildren) {
			t.Errorf("index children by architecture: got %v, want %v", gotChildren, wantChildren)
		}
		if local := digestOf(t, index); pushedDigest != local {
			// skopeo 1.9.3 encodes the index again with the descriptor
			// fields of its own types, which drops the artifactType that
			// go-containerregistry sets. The children checked above keep
			// their digests.
			matrix.note(client, "`copy --all` of an OCI index encodes the index again with the descriptor fields of skopeo's own types "+
				"(go-containerregistry's artifactType is dropped), so the index digest changes. The image manifests keep theirs.")
			t.Logf("skopeo re-encoded the index: local %s, pushed %s", local, pushedDigest)
		}

		pulled := filepath.Join(t.TempDir(), "pulled")
		s.mustRun(t, "copy", "--all", "--src-cert-dir", s.certDir,
			"docker://"+localhost(ports.group, "skopeo/multi:1.0"), "oci:"+pulled+":multi")
		if got := layoutEntry(t, pulled).Digest; got != pushedDigest {
			t.Errorf("index pulled through the group: got digest %s, want %s", got, pushedDigest)
		}
	})

	matrix.step(t, client, OpPushOnBase, func(t *testing.T) {
		base, _ := seedBase(t, "skopeo")
		checkOnlyInHub(t, env.bearer, base)
		// dir: keeps the compressed blobs, so skopeo checks the very base
		// layer digests that the group has
		onBase := imageOnBase(t, base)
		first := len(env.bearer.Hosted.Requests())
		s.mustRun(t, "copy", "--dest-cert-dir", s.certDir,
			"dir:"+writeDirImage(t, onBase), "docker://"+localhost(ports.split, "skopeo/onbase:1.0"))
		noteBaseLayerChecks(t, client, first, base, "skopeo/onbase")
		if got, want := digestOf(t, storedImage(t, env.bearer, "skopeo/onbase", "1.0")), digestOf(t, onBase); got != want {
			t.Errorf("digest in the hosted stand-in: got %s, want %s", got, want)
		}
	})

	matrix.step(t, client, OpPushReadOnly, func(t *testing.T) {
		s.mustFail(t, "read-only", "copy", "--dest-cert-dir", s.certDir,
			"oci:"+appLayout+":app", "docker://"+localhost(ports.group, "skopeo/app:ro"))
	})

	matrix.step(t, client, OpBasicAuth, func(t *testing.T) {
		basicAuthFile := filepath.Join(t.TempDir(), "auth.json")
		output, err := login(t, ports.basicSplit, wrongPassword, basicAuthFile)
		if err == nil || !strings.Contains(output, "invalid username/password") {
			t.Fatalf("login with a wrong password: got %v, want invalid username/password:\n%s", err, output)
		}
		s.mustFail(t, "unauthorized", "copy", "--authfile", basicAuthFile, "--dest-creds", testUser+":"+wrongPassword,
			"--dest-cert-dir", s.certDir, "oci:"+appLayout+":app", "docker://"+localhost(ports.basicSplit, "skopeo/basic:1.0"))

		creds := testUser + ":" + testPassword
		s.mustRun(t, "copy", "--authfile", basicAuthFile, "--dest-creds", creds, "--dest-cert-dir", s.certDir,
			"oci:"+appLayout+":app", "docker://"+localhost(ports.basicSplit, "skopeo/basic:1.0"))
		if got := digestOf(t, storedImage(t, env.basic, "skopeo/basic", "1.0")); got != appDigest {
			t.Errorf("digest in the hosted stand-in: got %s, want %s", got, appDigest)
		}
		pulled := filepath.Join(t.TempDir(), "pulled")
		s.mustRun(t, "copy", "--authfile", basicAuthFile, "--src-creds", creds, "--src-cert-dir", s.certDir,
			"docker://"+localhost(ports.basicGroup, "skopeo/basic:1.0"), "oci:"+pulled+":pulled")
		if got := layoutEntry(t, pulled).Digest; got != appDigest {
			t.Errorf("pulled through the group: got digest %s, want %s", got, appDigest)
		}
	})
}

// hostPort returns localhost:<port>, the registry part of a reference.
func hostPort(port int) string {
	return strings.TrimSuffix(localhost(port, ""), "/")
}

// writeCertDir creates a --cert-dir directory holding Caddy's root CA as
// ca.crt, the layout containers/image reads.
func writeCertDir(t *testing.T, dir string) string {
	t.Helper()
	mkdir(t, dir)
	copyFile(t, env.rootCert, filepath.Join(dir, "ca.crt"))
	return dir
}

// writeRegistriesConf writes a registries.conf that allows only fully
// qualified image names, so that no command can fall back to a public
// registry.
func writeRegistriesConf(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "registries.conf")
	writeFile(t, path, "unqualified-search-registries = []\n")
	return path
}

// writePolicy writes a signature policy that accepts unsigned images, the
// policy Debian installs, so the tests do not depend on the system file.
func writePolicy(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "policy.json")
	writeFile(t, path, `{"default": [{"type": "insecureAcceptAnything"}]}`+"\n")
	return path
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
