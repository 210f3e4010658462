package conformance

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyreg/caddy-docker-registry/test/caddyrun"
	"github.com/caddyreg/caddy-docker-registry/test/standin"
)

// suitePackage is the conformance suite, a main package pinned by the tool
// directive in test/go.mod.
const suitePackage = "github.com/opencontainers/distribution-spec/conformance"

const (
	testUser     = "conformance"
	testPassword = "c0nformance-pass"
)

// suiteTimeout bounds one run of the suite. A run takes about ten
// seconds on a 2-core machine.
const suiteTimeout = 5 * time.Minute

func TestSuiteDirectAndThroughModule(t *testing.T) {
	resultsDir := resultsRoot(t)
	suite := buildSuite(t)

	registry, err := standin.StartPlain(map[string]string{testUser: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := registry.Close(); err != nil {
			t.Errorf("closing the registry: %v", err)
		}
	})

	port, err := caddyrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	rootCert := startCaddy(t, "localhost", port, "\ttls internal\n\tdocker_registry "+registry.Addr)

	direct := runSuite(t, suite, suiteRun{
		name:       "direct",
		registry:   registry.Addr,
		tls:        "disabled",
		resultsDir: filepath.Join(resultsDir, "direct"),
	})
	checkRequestsCameVia(t, registry.Requests(), registry.Addr, "")

	registry.ResetRequests()
	publicHost := fmt.Sprintf("localhost:%d", port)
	module := runSuite(t, suite, suiteRun{
		name:       "module",
		registry:   publicHost,
		tls:        "enabled",
		rootCert:   rootCert,
		resultsDir: filepath.Join(resultsDir, "module"),
	})
	checkRequestsCameVia(t, registry.Requests(), publicHost, "https")

	// the direct run must have tested something, or an equal result
	// would prove nothing
	directTotals := totalsOf(direct.cases)
	if directTotals.Passed == 0 {
		t.Fatalf("direct run: got 0 passed test cases of %d, want most of them to pass", directTotals.Total())
	}

	differences := compareRuns(direct, module)
	for _, d := range differences {
		t.Errorf("result differs through the module: %s", d)
	}
	if got, want := totalsOf(module.cases), directTotals; got != want {
		t.Errorf("totals through the module: got %+v, want %+v as directly", got, want)
	}

	summary := summarize(direct, module, differences)
	summary.SuiteVersion = suiteVersion(t, suite)
	const distribution, caddy = "github.com/distribution/distribution/v3", "github.com/caddyserver/caddy/v2"
	versions := moduleVersions(t, distribution, caddy)
	summary.Registry = fmt.Sprintf("Distribution %s (`%s`, in-memory storage, "+
		"htpasswd Basic authentication), started by `standin.StartPlain`", versions[distribution], distribution)
	summary.Proxy = fmt.Sprintf("Caddy %s with `http.handlers.docker_registry`, site `localhost:<port>` "+
		"with `tls internal` and `docker_registry <registry>` (one upstream for pulls and pushes)", versions[caddy])
	if err := summary.WriteFile(filepath.Join(resultsDir, "summary.json")); err != nil {
		t.Errorf("writing the summary: %v", err)
	}
	t.Logf("direct: %+v; through the module: %+v", summary.Direct, summary.Module)
}

// checkRequestsCameVia checks that the registry received requests, and
// that each carried the Host and X-Forwarded-Proto of the expected path:
// the registry's own address and no forwarding header directly, the public
// host and "https" through Caddy.
func checkRequestsCameVia(t *testing.T, requests []standin.RecordedRequest, wantHost, wantProto string) {
	t.Helper()
	if len(requests) == 0 {
		t.Fatalf("the registry recorded no requests, want the suite's requests with Host %q", wantHost)
	}
	for _, r := range requests {
		proto := r.Header.Get("X-Forwarded-Proto")
		if r.Host != wantHost || proto != wantProto {
			t.Fatalf("%s %s reached the registry with Host %q and X-Forwarded-Proto %q, want %q and %q",
				r.Method, r.Path, r.Host, proto, wantHost, wantProto)
		}
	}
}

// resultsRoot returns results/conformance at the repository root, emptied
// of the reports of an earlier run.
func resultsRoot(t *testing.T) string {
	t.Helper()
	// the test runs in test/conformance, two levels below the root
	dir, err := filepath.Abs(filepath.Join("..", "..", "results", "conformance"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// buildSuite compiles the pinned conformance suite into a temporary
// directory. The go command is the one running this test.
func buildSuite(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not in PATH, and building the conformance suite needs it: %v", err)
	}
	binary := filepath.Join(t.TempDir(), "conformance")
	cmd := exec.CommandContext(t.Context(), goTool, "build", "-o", binary, suitePackage)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", suitePackage, err, out)
	}
	return binary
}

// suiteVersion returns the version of the conformance module that the
// binary was built from.
func suiteVersion(t *testing.T, binary string) string {
	t.Helper()
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		t.Fatalf("reading the build info of %s: %v", binary, err)
	}
	// a main package built from a dependency module is that module's
	// main package in the build info
	if info.Main.Path == suitePackage {
		return info.Main.Version
	}
	t.Fatalf("the build info of %s names no module %s", binary, suitePackage)
	return ""
}

// moduleVersions returns the versions of modules in test/go.mod's build
// list. A test binary carries no module information of its own, so the go
// command reads them.
func moduleVersions(t *testing.T, paths ...string) map[string]string {
	t.Helper()
	args := append([]string{"list", "-m", "-f", "{{.Path}} {{.Version}}"}, paths...)
	out, err := exec.CommandContext(t.Context(), "go", args...).Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	versions := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, version, _ := strings.Cut(line, " ")
		versions[path] = version
	}
	return versions
}

// suiteRun configures one run of the suite.
type suiteRun struct {
	name       string
	registry   string // host:port
	tls        string // "enabled" or "disabled", the suite's OCI_TLS
	rootCert   string // the only CA the suite trusts, for tls "enabled"
	resultsDir string
}

// runSuite runs the suite binary with its environment variables and reads
// the reports it writes. The suite exits with status 1 when any test case
// fails, which is expected of the registry's own gaps, so only missing
// reports fail the test here.
func runSuite(t *testing.T, binary string, run suiteRun) runResults {
	t.Helper()
	if err := os.MkdirAll(run.resultsDir, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), suiteTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary)
	// without OCI_CONFIGURATION the suite reads oci-conformance.yaml from
	// its working directory, so it gets an empty one
	cmd.Dir = t.TempDir()
	cmd.Env = suiteEnv(run)
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("%s run: %s, exit: %v", run.name, time.Since(start).Round(time.Millisecond), runErr)

	if err := os.WriteFile(filepath.Join(run.resultsDir, "output.txt"), output.Bytes(), 0o644); err != nil {
		t.Errorf("saving the suite output: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s run: the suite did not finish within %s\n%s", run.name, suiteTimeout, output.Bytes())
	}
	results, err := readRunResults(run.resultsDir)
	if err != nil {
		t.Fatalf("%s run: %v (exit: %v)\n%s", run.name, err, runErr, output.Bytes())
	}
	if len(results.cases) == 0 {
		t.Fatalf("%s run: the JUnit report has no test cases\n%s", run.name, output.Bytes())
	}
	return results
}

// suiteEnv returns this process's environment without settings that
// would change the suite's behaviour, plus the run's configuration.
func suiteEnv(run suiteRun) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "OCI_"),
			name == "SSL_CERT_FILE", name == "SSL_CERT_DIR",
			strings.EqualFold(name, "HTTP_PROXY"), strings.EqualFold(name, "HTTPS_PROXY"),
			strings.EqualFold(name, "ALL_PROXY"), strings.EqualFold(name, "NO_PROXY"):
			continue
		}
		env = append(env, kv)
	}
	repoBase := "conformance/" + run.name
	env = append(env,
		"OCI_CONFIGURATION=/dev/null",
		"OCI_VERSION=1.1",
		"OCI_REGISTRY="+run.registry,
		"OCI_TLS="+run.tls,
		"OCI_REPO1="+repoBase+"/repo1",
		"OCI_REPO2="+repoBase+"/repo2",
		"OCI_USERNAME="+testUser,
		"OCI_PASSWORD="+testPassword,
		"OCI_RESULTS_DIR="+run.resultsDir,
		"OCI_LOG=warn",
	)
	if run.rootCert != "" {
		// Go's crypto/x509 on Linux reads this file instead of the
		// system bundle, so the suite trusts Caddy's internal CA
		env = append(env, "SSL_CERT_FILE="+run.rootCert)
	}
	return env
}
