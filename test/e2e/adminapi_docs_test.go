package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/caddyreg/caddy-docker-registry/test/caddyrun"
	"github.com/caddyreg/caddy-docker-registry/test/standin"
)

// adminAPIDoc is the page whose curl commands TestAdminAPIDocExamples runs.
const adminAPIDoc = "docs/admin-api.md"

// unmappedAddress finds a listener or Nexus address in a JSON body that
// the test did not point at a loopback port.
var unmappedAddress = regexp.MustCompile(`"(nexus\w*:\d+|:\d+)"`)

// curlCommand is a curl call from the documentation, reduced to the
// request it sends.
type curlCommand struct {
	line   string // the command as written, for messages
	method string
	url    string
	header http.Header

	hasBody       bool
	body          string
	bodyFile      string // from @file, relative to the repository root
	stripNewlines bool   // curl's -d @file drops CR and LF
}

// docCommands returns the curl commands of every fenced sh block of a
// Markdown page, in order.
func docCommands(t *testing.T, page string) []curlCommand {
	t.Helper()
	var commands []curlCommand
	inBlock := false
	var block strings.Builder
	for _, line := range strings.SplitAfter(page, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case !inBlock && trimmed == "```sh":
			inBlock = true
			block.Reset()
		case inBlock && trimmed == "```":
			inBlock = false
			lines, err := shellCommands(block.String())
			if err != nil {
				t.Fatalf("%s: %v in block:\n%s", adminAPIDoc, err, block.String())
			}
			for _, words := range lines {
				cmd, err := parseCurl(words)
				if err != nil {
					t.Fatalf("%s: %v in: %s", adminAPIDoc, err, strings.Join(words, " "))
				}
				commands = append(commands, cmd)
			}
		case inBlock:
			block.WriteString(line)
		}
	}
	if inBlock {
		t.Fatalf("%s: a fenced sh block is not closed", adminAPIDoc)
	}
	return commands
}

// shellCommands splits a block of shell text into commands and each
// command into words. It handles the part of the shell language that plain
// curl calls use: blanks between words, single quotes (kept literally,
// newlines included), double quotes with backslash escapes, backslash
// escapes and line continuations, and comment lines. Everything that
// would make the shell expand or redirect something is an error, so that
// a command works the same when pasted into a shell.
func shellCommands(text string) ([][]string, error) {
	var commands [][]string
	var words []string
	var word strings.Builder
	inWord := false
	endWord := func() {
		if inWord {
			words = append(words, word.String())
			word.Reset()
			inWord = false
		}
	}
	endCommand := func() {
		endWord()
		if len(words) > 0 {
			commands = append(commands, words)
			words = nil
		}
	}

	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '\\' && i+1 < len(text) && text[i+1] == '\n':
			i++ // line continuation
		case c == '\\' && i+1 < len(text):
			i++
			word.WriteByte(text[i])
			inWord = true
		case c == '\'':
			end := strings.IndexByte(text[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated single quote")
			}
			word.WriteString(text[i+1 : i+1+end])
			inWord = true
			i += end + 1
		case c == '"':
			i++
			for ; i < len(text) && text[i] != '"'; i++ {
				switch {
				case text[i] == '$' || text[i] == '`':
					return nil, fmt.Errorf("expansion %q inside double quotes", text[i])
				case text[i] == '\\' && i+1 < len(text) && strings.IndexByte("\"\\$`", text[i+1]) >= 0:
					i++
				}
				word.WriteByte(text[i])
			}
			if i == len(text) {
				return nil, fmt.Errorf("unterminated double quote")
			}
			inWord = true
		case c == '#' && !inWord:
			for i < len(text) && text[i] != '\n' {
				i++
			}
			endCommand()
		case c == '\n':
			endCommand()
		case c == ' ' || c == '\t':
			endWord()
		case strings.IndexByte("$`|;&<>(){}*?[~", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q that the test does not run", c)
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	endCommand()
	return commands, nil
}

// parseCurl reads the options of a curl call that the documentation may
// use: -X, -H, -d (with curl's @file form, which drops newlines),
// --data-binary (whose @file keeps them) and one URL.
func parseCurl(words []string) (curlCommand, error) {
	cmd := curlCommand{line: strings.Join(words, " "), header: http.Header{}}
	if words[0] != "curl" {
		return cmd, fmt.Errorf("got command %s, want only curl", words[0])
	}
	for i := 1; i < len(words); i++ {
		option := words[i]
		if !strings.HasPrefix(option, "-") {
			if cmd.url != "" {
				return cmd, fmt.Errorf("got a second URL %s", option)
			}
			cmd.url = option
			continue
		}
		switch option {
		case "-X", "--request", "-H", "--header", "-d", "--data", "--data-binary":
		default:
			return cmd, fmt.Errorf("unsupported curl option %s", option)
		}
		if i+1 == len(words) {
			return cmd, fmt.Errorf("option %s has no value", option)
		}
		i++
		value := words[i]
		switch option {
		case "-X", "--request":
			cmd.method = value
		case "-H", "--header":
			name, v, ok := strings.Cut(value, ":")
			if !ok {
				return cmd, fmt.Errorf("invalid header %q", value)
			}
			cmd.header.Add(strings.TrimSpace(name), strings.TrimSpace(v))
		case "-d", "--data", "--data-binary":
			if cmd.hasBody {
				return cmd, fmt.Errorf("got a second body")
			}
			cmd.hasBody = true
			if file, ok := strings.CutPrefix(value, "@"); ok {
				cmd.bodyFile = file
				cmd.stripNewlines = option != "--data-binary"
				continue
			}
			cmd.body = value
		}
	}
	if cmd.url == "" {
		return cmd, fmt.Errorf("no URL")
	}
	if !strings.Contains(cmd.url, "://") {
		cmd.url = "http://" + cmd.url // curl's default scheme
	}
	if cmd.method == "" {
		cmd.method = http.MethodGet
		if cmd.hasBody {
			cmd.method = http.MethodPost
		}
	}
	return cmd, nil
}

// requestBody returns the body that curl would send for cmd.
func (cmd curlCommand) requestBody(t *testing.T) string {
	t.Helper()
	if cmd.bodyFile == "" {
		return cmd.body
	}
	body := readFile(t, cmd.bodyFile)
	if cmd.stripNewlines {
		body = strings.NewReplacer("\r", "", "\n", "").Replace(body)
	}
	return body
}

// withoutRedirectListener turns off the HTTP-to-HTTPS redirect listener of
// a server object, which would listen on port 80 of every interface.
func withoutRedirectListener(t *testing.T, server []byte) []byte {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal(server, &s); err != nil {
		t.Fatalf("decoding the server object: %v", err)
	}
	autoHTTPS, _ := s["automatic_https"].(map[string]any)
	if autoHTTPS == nil {
		autoHTTPS = map[string]any{}
	}
	autoHTTPS["disable_redirects"] = true
	s["automatic_https"] = autoHTTPS
	out, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// withoutAutosave keeps Caddy from writing the loaded config to the
// autosave file in the user's home directory.
func withoutAutosave(t *testing.T, cfg []byte) []byte {
	t.Helper()
	var c map[string]any
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	admin, _ := c["admin"].(map[string]any)
	if admin == nil {
		admin = map[string]any{}
		c["admin"] = admin
	}
	admin["config"] = map[string]any{"persist": false}
	out, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAdminAPIDocExamples runs every curl command of docs/admin-api.md
// against a running admin API, in the order of the page, and checks
// after each one that registry traffic behaves as the page describes. The
// page's section "How the examples are tested" lists what the test
// changes in the commands.
func TestAdminAPIDocExamples(t *testing.T) {
	ctx := testContext(t)
	commands := docCommands(t, readFile(t, adminAPIDoc))

	// stand-ins: the first Nexus has the group and snapshots, the second
	// one the releases, the third the group of nexus2 and the new hosted
	// repository behind port 8085. They use basic authentication, because
	// the new port pulls from the first and pushes to the third, and a
	// Nexus bearer token is valid only in the Nexus that issued it.
	basicAuth := func(o *standin.Options) { o.Auth = standin.AuthBasic }
	nexus := startNexus(t, basicAuth)
	releases := startNexus(t, basicAuth)
	nexus2 := startNexus(t, basicAuth)
	ui := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "nexus ui")
	}))
	t.Cleanup(ui.Close)

	admin, group, snapshots, releasesPort, staging := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	dataDir := caddyrun.DataDir(t)
	addresses := strings.NewReplacer(
		`"localhost:2019"`, fmt.Sprintf(`"127.0.0.1:%d"`, admin),
		`":443"`, fmt.Sprintf(`"127.0.0.1:%d"`, group),
		`":8083"`, fmt.Sprintf(`"127.0.0.1:%d"`, snapshots),
		`":8084"`, fmt.Sprintf(`"127.0.0.1:%d"`, releasesPort),
		`":8085"`, fmt.Sprintf(`"127.0.0.1:%d"`, staging),
		`"nexus:8081"`, `"`+strings.TrimPrefix(ui.URL, "http://")+`"`,
		`"nexus:8082"`, `"`+nexus.Group.Addr+`"`,
		`"nexus:8083"`, `"`+nexus.Hosted.Addr+`"`,
		`"nexus:8084"`, `"`+releases.Hosted.Addr+`"`,
		`"nexus:8085"`, `"`+nexus2.Hosted.Addr+`"`,
		`"nexus2:8082"`, `"`+nexus2.Group.Addr+`"`,
	)

	// a running Caddy with only its admin API, as after "caddy run"
	bootstrap := fmt.Sprintf(`{"admin":{"listen":"127.0.0.1:%d","config":{"persist":false}}}`, admin)
	if err := caddyrun.Load([]byte(bootstrap)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := caddyrun.Load([]byte(`{"admin":{"disabled":true,"config":{"persist":false}}}`)); err != nil {
			t.Errorf("stopping the admin API: %v", err)
		}
		if err := caddyrun.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})

	// a new client for every step, because a config change closes idle
	// connections and a request racing with the close would fail
	var newClient func() *registryClient
	// newImage returns a function that pushes a new random image as ref
	// to a port of the front
	newImage := func(ref string) func(port int) error {
		img, err := random.Image(8<<10, 2)
		if err != nil {
			t.Fatal(err)
		}
		return func(port int) error {
			return newClient().push(ctx, hostPort("mydocker", port)+"/"+ref, img)
		}
	}
	pushFirst := newImage("team/app:1.0")

	checks := map[string]func(t *testing.T, response []byte){
		"POST /load": func(t *testing.T, _ []byte) {
			pool := waitForCertificates(t, dataDir,
				hostPort("mydocker", group), hostPort("mydocker", snapshots), hostPort("mydocker", releasesPort))
			newClient = func() *registryClient { return newRegistryClient(pool, testUser, testPassword) }
			if err := pushFirst(snapshots); err != nil {
				t.Fatalf("push to the snapshots port: %v", err)
			}
			if _, err := newClient().pull(ctx, hostPort("mydocker", group)+"/team/app:1.0"); err != nil {
				t.Errorf("pull through the group port: %v", err)
			}
			// a new image, since the group holds the first one by now
			if err := newImage("team/app:0.1")(group); statusOf(err) != http.StatusMethodNotAllowed {
				t.Errorf("push to the group port: got %v, want 405", err)
			}
		},
		"GET /id/group_upstream": func(t *testing.T, response []byte) {
			var upstream struct{ Dial string }
			if err := json.Unmarshal(response, &upstream); err != nil || upstream.Dial != nexus.Group.Addr {
				t.Errorf("group upstream: got %s (%v), want dial %s", response, err, nexus.Group.Addr)
			}
		},
		"GET /config/apps/http/servers/srv1/routes/0/handle/0/routes/0/handle/0": func(t *testing.T, response []byte) {
			var handler struct {
				Handler string
				Pull    struct {
					Proxy struct{ Upstreams []struct{ Dial string } }
				}
			}
			if err := json.Unmarshal(response, &handler); err != nil {
				t.Fatalf("decoding %s: %v", response, err)
			}
			if handler.Handler != "docker_registry" || len(handler.Pull.Proxy.Upstreams) != 1 ||
				handler.Pull.Proxy.Upstreams[0].Dial != nexus.Hosted.Addr {
				t.Errorf("snapshots handler: got %s, want docker_registry pulling from %s", response, nexus.Hosted.Addr)
			}
		},
		"PATCH /id/group_upstream/dial": func(t *testing.T, _ []byte) {
			base, err := nexus2.SeedBaseImage(ctx, "library/only-in-nexus2", "1.0", 1)
			if err != nil {
				t.Fatal(err)
			}
			nexus.Group.ResetRequests()
			pulled, err := newClient().pull(ctx, hostPort("mydocker", group)+"/library/only-in-nexus2:1.0")
			if err != nil {
				t.Fatalf("pull through the group port after the PATCH: %v", err)
			}
			if got, want := mustDigest(t, pulled), mustDigest(t, base); got != want {
				t.Errorf("digest: got %s, want %s", got, want)
			}
			if n := len(nexus.Group.Requests()); n != 0 {
				t.Errorf("the old group received %d requests after the PATCH, want 0", n)
			}
		},
		"PUT /config/apps/http/servers/staging": func(t *testing.T, _ []byte) {
			waitForCertificates(t, dataDir, hostPort("mydocker", staging))
			push := newImage("team/staged:1.0")
			if err := push(staging); err != nil {
				t.Fatalf("push to the new port: %v", err)
			}
			if _, err := standin.PullImage(ctx, nexus2.Hosted.URL, "team/staged", "1.0", standin.WithCredentials(testUser, testPassword)); err != nil {
				t.Errorf("the image pushed to the new port is not in its hosted repository: %v", err)
			}
			// pulls through the new port come from the group
			if _, err := newClient().pull(ctx, hostPort("mydocker", staging)+"/team/app:1.0"); err != nil {
				t.Errorf("pull through the new port: %v", err)
			}
		},
		"PATCH /id/staging_registry": func(t *testing.T, _ []byte) {
			// the group stand-in rejects writes with 405 too, so the
			// module must reject the push before any upstream receives it
			nexus.Group.ResetRequests()
			nexus2.Hosted.ResetRequests()
			push := newImage("team/staged:2.0")
			if err := push(staging); statusOf(err) != http.StatusMethodNotAllowed {
				t.Errorf("push to the read-only new port: got %v, want 405", err)
			}
			checkNoWrites(t, nexus.Group, nexus2.Hosted)
			if _, err := newClient().pull(ctx, hostPort("mydocker", staging)+"/team/app:1.0"); err != nil {
				t.Errorf("pull through the read-only new port: %v", err)
			}
		},
		"POST /config/apps/http/servers/srv1/routes/0/handle/0/routes/0/handle/0/read_only": func(t *testing.T, _ []byte) {
			nexus.Hosted.ResetRequests()
			push := newImage("team/app:2.0")
			if err := push(snapshots); statusOf(err) != http.StatusMethodNotAllowed {
				t.Errorf("push to the read-only snapshots port: got %v, want 405", err)
			}
			checkNoWrites(t, nexus.Hosted)
		},
		"DELETE /config/apps/http/servers/srv1/routes/0/handle/0/routes/0/handle/0/read_only": func(t *testing.T, _ []byte) {
			push := newImage("team/app:3.0")
			if err := push(snapshots); err != nil {
				t.Errorf("push to the snapshots port after the DELETE: %v", err)
			}
		},
		"DELETE /config/apps/http/servers/staging": func(t *testing.T, _ []byte) {
			waitForClosedPort(t, staging)
		},
	}

	for _, cmd := range commands {
		u, err := http.NewRequest(cmd.method, cmd.url, nil)
		if err != nil {
			t.Fatalf("%s: %v", cmd.line, err)
		}
		if u.URL.Host != "localhost:2019" {
			t.Fatalf("%s: got host %s, want the admin API at localhost:2019", cmd.line, u.URL.Host)
		}
		key := cmd.method + " " + u.URL.Path
		check, ok := checks[key]
		if !ok {
			t.Fatalf("%s: the test has no check for %s; add one", cmd.line, key)
		}
		delete(checks, key)

		body := []byte(addresses.Replace(cmd.requestBody(t)))
		switch {
		case key == "POST /load":
			body = withoutAutosave(t, prepareTestConfig(t, body, dataDir))
		case cmd.method == http.MethodPut && strings.HasPrefix(u.URL.Path, "/config/apps/http/servers/"):
			body = withoutRedirectListener(t, body)
		}
		if address := unmappedAddress.Find(body); address != nil {
			t.Fatalf("%s: the body has an address the test does not map: %s", cmd.line, address)
		}

		response := sendAdminCommand(t, admin, cmd, u.URL.RequestURI(), body)
		t.Run(key, func(t *testing.T) { check(t, response) })
		if t.Failed() {
			return
		}
	}
	for key := range checks {
		t.Errorf("%s has no %s command", adminAPIDoc, key)
	}
}

// checkNoWrites fails the test if a stand-in received a request other
// than GET or HEAD since its requests were last reset.
func checkNoWrites(t *testing.T, registries ...*standin.Registry) {
	t.Helper()
	for _, r := range registries {
		for _, req := range r.Requests() {
			if req.Method != http.MethodGet && req.Method != http.MethodHead {
				t.Errorf("stand-in %s received %s %s from a read-only endpoint", r.Addr, req.Method, req.Path)
			}
		}
	}
}

// sendAdminCommand sends a documented command to the admin API on the
// loopback port and returns the response body, failing the test unless
// the status is 200.
func sendAdminCommand(t *testing.T, port int, cmd curlCommand, requestURI string, body []byte) []byte {
	t.Helper()
	var reader io.Reader
	if cmd.hasBody {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequest(cmd.method, fmt.Sprintf("http://127.0.0.1:%d%s", port, requestURI), reader)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = cmd.header.Clone()
	// the admin API itself restarts when a config changes, so every
	// command gets a new connection
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", cmd.line, err)
	}
	defer resp.Body.Close()
	response, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: got status %d (%s), want 200", cmd.line, resp.StatusCode, response)
	}
	return response
}

// waitForClosedPort returns once nothing accepts connections on the
// loopback port, because Caddy closes a removed listener after the
// requests on it finished.
func waitForClosedPort(t *testing.T, port int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return
		}
		conn.Close()
		select {
		case <-ctx.Done():
			t.Fatalf("port %d still accepts connections", port)
		case <-time.After(25 * time.Millisecond):
		}
	}
}
