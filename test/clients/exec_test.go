package clients

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// commandTimeout bounds one client command, so that a hung client fails
// the test. The slowest commands, docker push and pull, took about two
// seconds each on the 2-core development machine.
const commandTimeout = 3 * time.Minute

// requireBinary returns the path of a client program. A missing program
// fails the test, because CI installs every client.
func requireBinary(t *testing.T, program, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err != nil {
		t.Fatalf("%s is not installed: install the Debian package %s (apt-get install %s): %v", program, debianPackage, debianPackage, err)
	}
	return path
}

// command is how a test runs one client.
type command struct {
	program string
	// prefix is a program and its arguments that run the client, such as
	// nsenter entering dockerd's mount namespace.
	prefix []string
	// globals are the client's options that come before every command.
	globals []string
	env     []string
}

// run runs the client with args and returns its combined output.
func (c command) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return c.runWithInput(t, "", args...)
}

// runWithInput runs the client with stdin and returns its combined output.
func (c command) runWithInput(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), commandTimeout)
	defer cancel()

	line := append([]string{}, c.prefix...)
	line = append(line, c.program)
	line = append(line, c.globals...)
	line = append(line, args...)
	cmd := exec.CommandContext(ctx, line[0], line[1:]...)
	cmd.Env = c.env
	cmd.Stdin = strings.NewReader(stdin)
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	// a helper process that keeps the output pipe open must not hang the
	// test after the client exited
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	return output.String(), err
}

// mustRun runs the client and fails the test when it exits non-zero.
func (c command) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	output, err := c.run(t, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", c.name(), strings.Join(args, " "), err, output)
	}
	return output
}

// mustFail runs the client, fails the test when it exits zero, and checks
// that the output contains want.
func (c command) mustFail(t *testing.T, want string, args ...string) string {
	t.Helper()
	output, err := c.run(t, args...)
	if err == nil {
		t.Fatalf("%s %s: got exit status 0, want a failure showing %q\n%s", c.name(), strings.Join(args, " "), want, output)
	}
	if !strings.Contains(output, want) {
		t.Fatalf("%s %s: output does not contain %q (%v):\n%s", c.name(), strings.Join(args, " "), want, err, output)
	}
	return output
}

func (c command) name() string {
	return c.program[strings.LastIndexByte(c.program, '/')+1:]
}

// cleanEnv returns this process's environment without the variables that
// change how registry clients behave (proxies, trusted CAs, client
// configuration and credentials), plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(key)
		switch {
		case strings.HasSuffix(upper, "_PROXY"),
			strings.HasPrefix(key, "SSL_CERT_"),
			strings.HasPrefix(key, "DOCKER_"),
			strings.HasPrefix(key, "CONTAINERS_"),
			strings.HasPrefix(key, "XDG_"),
			key == "REGISTRY_AUTH_FILE", key == "HOME":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// findDigest returns the digest that follows the last prefix in a
// client's output, such as "digest: " in docker push output. The last one
// is the result: clients report the images of an index before the index.
func findDigest(t *testing.T, output, prefix string) v1.Hash {
	t.Helper()
	pattern := regexp.MustCompile(regexp.QuoteMeta(prefix) + `(sha256:[0-9a-f]{64})`)
	matches := pattern.FindAllStringSubmatch(output, -1)
	if matches == nil {
		t.Fatalf("no %q followed by a digest in the output:\n%s", prefix, output)
	}
	return parseDigest(t, matches[len(matches)-1][1])
}

// readDigestFile returns the digest that a client wrote to a file.
func readDigestFile(t *testing.T, path string) v1.Hash {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the digest file: %v", err)
	}
	return parseDigest(t, strings.TrimSpace(string(b)))
}

func parseDigest(t *testing.T, s string) v1.Hash {
	t.Helper()
	digest, err := v1.NewHash(s)
	if err != nil {
		t.Fatalf("invalid digest %q: %v", s, err)
	}
	return digest
}
