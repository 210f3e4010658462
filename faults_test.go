package dockerregistry

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// Tests in this file break the upstream or the client in the ways that
// happen on a CI runner's path to a registry. They check that the module
// responds clearly, keeps serving, and never lets a broken transfer pass
// for a complete one.

// rawUpstream is a TCP server that reads one HTTP/1.1 request per
// connection and hands the connection to respond, which writes whatever
// bytes it likes, so a test can send responses that net/http would
// refuse to produce.
type rawUpstream struct {
	listener net.Listener
	mu       sync.Mutex
	conns    []net.Conn
	requests int
}

func newRawUpstream(t *testing.T, respond func(conn net.Conn, req *http.Request)) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{listener: ln}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns = append(u.conns, conn)
			u.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				br := bufio.NewReader(conn)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if _, err := io.Copy(io.Discard, req.Body); err != nil {
						return
					}
					u.mu.Lock()
					u.requests++
					u.mu.Unlock()
					respond(conn, req)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for _, c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		wg.Wait()
	})
	return u
}

func (u *rawUpstream) dial() string { return u.listener.Addr().String() }

func (u *rawUpstream) received() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests
}

// resetConn closes a TCP connection with RST instead of FIN, as a crashed
// process or a middlebox dropping state does.
func resetConn(conn net.Conn) {
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	conn.Close()
}

// proxyWithTransport returns a target whose reverse_proxy dials address
// with the given http transport settings.
func proxyWithTransport(address string, transport map[string]any) map[string]any {
	target := proxyTo(address)
	transport["protocol"] = "http"
	target["proxy"].(map[string]any)["transport"] = transport
	return target
}

// checkUnavailableError checks an OCI error response of the module for a
// failed upstream round trip.
func checkUnavailableError(t *testing.T, resp *http.Response, status int, message string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status: got %d, want %d", resp.StatusCode, status)
	}
	if got := resp.Header.Values(apiVersionHeader); len(got) != 1 || got[0] != defaultAPIVersion {
		t.Errorf("%s: got %q, want exactly one %s", apiVersionHeader, got, defaultAPIVersion)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the error body: %v", err)
	}
	if !strings.Contains(string(body), `"code":"`+codeUnavailable+`"`) || !strings.Contains(string(body), message) {
		t.Errorf("body: got %s, want code %s and message %q", body, codeUnavailable, message)
	}
}

func TestRefusedUpstreamAnswers502WithinDialTimeout(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	const dialTimeout = 3 * time.Second
	tc := startCaddy(t, map[string]any{
		"handler": "docker_registry",
		"pull":    proxyWithTransport(addr, map[string]any{"dial_timeout": dialTimeout.String()}),
	}, caddyOptions{})

	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			start := time.Now()
			resp := do(t, tc.client(h2), http.MethodGet, tc.url("mydocker", "/v2/app/manifests/latest"), nil, nil)
			elapsed := time.Since(start)
			checkUnavailableError(t, resp, http.StatusBadGateway, "unreachable")
			if elapsed >= dialTimeout {
				t.Errorf("answer took %v, want less than the dial timeout %v for a refused connection", elapsed, dialTimeout)
			}
		})
	}
}

func TestSilentUpstreamAnswers504AfterTimeout(t *testing.T) {
	// an upstream that accepts connections, reads requests and never
	// responds, like a Nexus stuck in a full garbage collection
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	go func() {
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				_, _ = io.Copy(io.Discard, conn)
				conn.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		conns.Wait()
	})

	const timeout = 300 * time.Millisecond
	for _, setting := range []string{"response_header_timeout", "read_timeout"} {
		t.Run(setting, func(t *testing.T) {
			tc := startCaddy(t, map[string]any{
				"handler": "docker_registry",
				"pull":    proxyWithTransport(silent.Addr().String(), map[string]any{setting: timeout.String()}),
			}, caddyOptions{})
			c := tc.client(false)
			c.Transport.(*http.Transport).DisableKeepAlives = true

			start := time.Now()
			resp := do(t, c, http.MethodGet, tc.url("mydocker", "/v2/app/manifests/latest"), nil, nil)
			elapsed := time.Since(start)
			checkUnavailableError(t, resp, http.StatusGatewayTimeout, "timed out")
			if elapsed < timeout || elapsed > timeout+5*time.Second {
				t.Errorf("answer after %v, want it shortly after the %s of %v", elapsed, setting, timeout)
			}
		})
	}
}

func TestUpstreamResetMidDownloadFailsTransfer(t *testing.T) {
	const full = 1 << 20
	const sent = 256 << 10
	chunk := strings.Repeat("x", 32<<10)

	// the upstream announces a 1 MiB layer, sends a quarter of it and
	// resets the connection
	up := newRawUpstream(t, func(conn net.Conn, req *http.Request) {
		w := bufio.NewWriter(conn)
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nDocker-Content-Digest: %s\r\n", testDigest)
		chunked := req.URL.Query().Has("chunked")
		if chunked {
			w.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		} else {
			fmt.Fprintf(w, "Content-Length: %d\r\n\r\n", full)
		}
		for n := 0; n < sent; n += len(chunk) {
			if chunked {
				fmt.Fprintf(w, "%x\r\n%s\r\n", len(chunk), chunk)
			} else {
				w.WriteString(chunk)
			}
		}
		_ = w.Flush()
		resetConn(conn)
	})
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())}, caddyOptions{})

	for _, chunked := range []bool{false, true} {
		for _, h2 := range []bool{false, true} {
			framing := map[bool]string{false: "content-length", true: "chunked"}[chunked]
			t.Run(framing+" upstream "+protoName(h2)+" client", func(t *testing.T) {
				uri := "/v2/app/blobs/" + testDigest
				if chunked {
					uri += "?chunked"
				}
				resp := do(t, tc.client(h2), http.MethodGet, tc.url("mydocker", uri), nil, nil)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status: got %d, want the upstream's 200", resp.StatusCode)
				}
				if !chunked && !h2 && resp.ContentLength != full {
					t.Errorf("Content-Length: got %d, want the upstream's %d so that the client can see the loss", resp.ContentLength, full)
				}
				body, err := io.ReadAll(resp.Body)
				if err == nil {
					t.Fatalf("the client read %d bytes and a clean end of the body, want a failed transfer", len(body))
				}
				if len(body) >= full {
					t.Errorf("the client read %d bytes, want fewer than %d", len(body), full)
				}
			})
		}
	}
}

func TestSlowFinalPutIndependentOfIdleTimeouts(t *testing.T) {
	// Caddy's default read and write idle timeouts are one minute, which
	// a test cannot wait for cheaply. The idle deadlines only bound a
	// read or write in flight, and none is in flight while the upstream
	// checksums. So the same push must pass at every scale with a pause
	// three times the timeouts. A stalled client is still cut off at that
	// scale.
	for _, idle := range []time.Duration{250 * time.Millisecond, 600 * time.Millisecond} {
		t.Run(idle.String(), func(t *testing.T) {
			pause := 3 * idle
			tc, up := startSingle(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPut {
					time.Sleep(pause)
				}
				w.Header().Set("Docker-Content-Digest", testDigest)
				w.WriteHeader(http.StatusCreated)
			}, caddyOptions{server: map[string]any{
				"read_idle_timeout":  idle.String(),
				"write_idle_timeout": idle.String(),
				"idle_timeout":       idle.String(),
			}})

			for _, h2 := range []bool{false, true} {
				const size = 2 << 20
				start := time.Now()
				uri := "/v2/app/blobs/uploads/" + testUpload + "?digest=" + testDigest
				resp := do(t, tc.client(h2), http.MethodPut, tc.url("mydocker", uri), unsizedBody{io.LimitReader(zeroReader{}, size)}, nil)
				if resp.StatusCode != http.StatusCreated {
					t.Fatalf("%s: status: got %d, want 201", protoName(h2), resp.StatusCode)
				}
				if elapsed := time.Since(start); elapsed < pause {
					t.Errorf("%s: the push took %v, want at least the upstream's pause %v", protoName(h2), elapsed, pause)
				}
				if got := up.last(t).BodyLength; got != size {
					t.Errorf("%s: upstream body: got %d bytes, want %d", protoName(h2), got, size)
				}
			}

			// the timeouts are live: a client that stops sending its body
			// is cut off after about one idle period
			before := len(up.received())
			conn := dialTLS(t, tc)
			fmt.Fprintf(conn, "PATCH /v2/app/blobs/uploads/%s HTTP/1.1\r\nHost: mydocker\r\nContent-Length: 1000\r\n\r\npartial", testUpload)
			start := time.Now()
			_ = conn.SetReadDeadline(time.Now().Add(idle*20 + 5*time.Second))
			_, _ = io.Copy(io.Discard, conn)
			elapsed := time.Since(start)
			if elapsed < idle || elapsed > idle*20+4*time.Second {
				t.Errorf("stalled upload ended after %v, want about the idle timeout %v", elapsed, idle)
			}
			for _, r := range up.received()[before:] {
				if r.BodyLength >= 1000 {
					t.Errorf("the stalled upload reached the upstream with %d bytes, want fewer than 1000", r.BodyLength)
				}
			}
		})
	}
}

// dialTLS opens a TLS connection to the test server for hand-written
// HTTP/1.1 requests, and closes it when the test ends.
func dialTLS(t *testing.T, tc *testCaddy) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", tc.addr, &tls.Config{ServerName: "mydocker", RootCAs: tc.rootCAs, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// switchableUpstream is a recording upstream that can be stopped and
// started again on the same address, as a restarted Nexus node is.
type switchableUpstream struct {
	name    string
	addr    string
	handler http.Handler

	mu       sync.Mutex
	server   *http.Server
	requests int
}

func newSwitchableUpstream(t *testing.T, name string, handler http.HandlerFunc) *switchableUpstream {
	t.Helper()
	u := &switchableUpstream{name: name}
	u.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.requests++
		u.mu.Unlock()
		w.Header().Set("X-Upstream", name)
		handler(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = ln.Addr().String()
	u.serve(ln)
	t.Cleanup(u.stop)
	return u
}

func (u *switchableUpstream) serve(ln net.Listener) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.server = &http.Server{Handler: u.handler}
	go func(s *http.Server) { _ = s.Serve(ln) }(u.server)
}

// stop closes the listener and every connection, in-flight requests
// included.
func (u *switchableUpstream) stop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.server != nil {
		u.server.Close()
		u.server = nil
	}
}

func (u *switchableUpstream) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", u.addr)
	if err != nil {
		t.Fatalf("restarting upstream %s on %s: %v", u.name, u.addr, err)
	}
	u.serve(ln)
}

func (u *switchableUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests
}

// runningPullUpstreams returns the upstreams of the pull target of the
// docker_registry handler in the running configuration.
func runningPullUpstreams(t *testing.T) []*reverseproxy.Upstream {
	t.Helper()
	app, err := caddy.ActiveContext().App("http")
	if err != nil {
		t.Fatal(err)
	}
	h, ok := app.(*caddyhttp.App).Servers["registry"].Routes[0].Handlers[0].(*Handler)
	if !ok {
		t.Fatal("the first handler of the running configuration is no docker_registry handler")
	}
	return h.Pull.proxy.(*reverseproxy.Handler).Upstreams
}

// waitFor polls condition until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, condition func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !condition() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHealthChecksRemoveAndRestoreUpstream(t *testing.T) {
	checks := map[string]map[string]any{
		"active": {"active": map[string]any{
			"uri": "/v2/", "interval": "100ms", "timeout": "1s", "passes": 1, "fails": 1,
		}},
		"passive": {"passive": map[string]any{"fail_duration": "1s", "max_fails": 1}},
	}
	for _, kind := range []string{"active", "passive"} {
		t.Run(kind, func(t *testing.T) {
			// an upload handler that reports which node took the session
			// and reads the body as it arrives
			uploads := make(chan string, 2)
			handler := func(name string) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					if r.Method == http.MethodPatch {
						uploads <- name
						n, err := io.Copy(io.Discard, r.Body)
						if err != nil {
							w.WriteHeader(http.StatusBadRequest)
							return
						}
						w.Header().Set("Range", "0-"+strconv.FormatInt(n-1, 10))
						w.WriteHeader(http.StatusAccepted)
						return
					}
					w.WriteHeader(http.StatusOK)
				}
			}
			nodes := map[string]*switchableUpstream{
				"a": newSwitchableUpstream(t, "a", handler("a")),
				"b": newSwitchableUpstream(t, "b", handler("b")),
			}
			target := proxyTo(nodes["a"].addr, nodes["b"].addr)
			proxy := target["proxy"].(map[string]any)
			proxy["health_checks"] = checks[kind]
			proxy["load_balancing"] = map[string]any{
				"selection_policy": map[string]any{"policy": "round_robin"},
				"try_duration":     "3s",
				"try_interval":     "20ms",
			}
			tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": target}, caddyOptions{})
			c := tc.client(true)
			upstreams := runningPullUpstreams(t)
			healthOf := func(name string) bool {
				for _, u := range upstreams {
					if u.Dial == nodes[name].addr {
						return u.Healthy()
					}
				}
				t.Fatalf("no running upstream dials %s", nodes[name].addr)
				return false
			}

			// a push streams its layer to one node...
			bodyReader, bodyWriter := io.Pipe()
			type result struct {
				status int
				rng    string
				err    error
			}
			done := make(chan result, 1)
			go func() {
				req, _ := http.NewRequest(http.MethodPatch, tc.url("mydocker", "/v2/app/blobs/uploads/"+testUpload), bodyReader)
				resp, err := c.Do(req)
				if err != nil {
					done <- result{err: err}
					return
				}
				resp.Body.Close()
				done <- result{status: resp.StatusCode, rng: resp.Header.Get("Range")}
			}()
			const half = 1 << 20
			if _, err := bodyWriter.Write(make([]byte, half)); err != nil {
				t.Fatal(err)
			}
			pushNode := <-uploads
			deadNode := map[string]string{"a": "b", "b": "a"}[pushNode]

			// ...while the other node dies
			nodes[deadNode].stop()
			deadline := time.Now().Add(10 * time.Second)
			for healthOf(deadNode) {
				if time.Now().After(deadline) {
					t.Fatalf("node %s still counts as healthy 10s after it died", deadNode)
				}
				resp := do(t, c, http.MethodGet, tc.url("mydocker", "/v2/"), nil, nil)
				if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Upstream") != pushNode {
					t.Fatalf("read while %s is dying: got %d from %q, want 200 from %s", deadNode, resp.StatusCode, resp.Header.Get("X-Upstream"), pushNode)
				}
			}
			for i := 0; i < 10; i++ {
				resp := do(t, c, http.MethodGet, tc.url("mydocker", "/v2/"), nil, nil)
				if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Upstream") != pushNode {
					t.Fatalf("read %d with %s out: got %d from %q, want 200 from %s", i, deadNode, resp.StatusCode, resp.Header.Get("X-Upstream"), pushNode)
				}
			}

			// the node comes back and gets requests again
			nodes[deadNode].start(t)
			before := nodes[deadNode].count()
			waitFor(t, 10*time.Second, "node "+deadNode+" is healthy again", func() bool { return healthOf(deadNode) })
			waitFor(t, 10*time.Second, "node "+deadNode+" serves reads again", func() bool {
				resp := do(t, c, http.MethodGet, tc.url("mydocker", "/v2/"), nil, nil)
				return resp.Header.Get("X-Upstream") == deadNode && nodes[deadNode].count() > before
			})

			// the push in progress never noticed
			if _, err := bodyWriter.Write(make([]byte, half)); err != nil {
				t.Fatal(err)
			}
			bodyWriter.Close()
			res := <-done
			if res.err != nil {
				t.Fatalf("the push on node %s failed: %v", pushNode, res.err)
			}
			if res.status != http.StatusAccepted || res.rng != "0-"+strconv.Itoa(2*half-1) {
				t.Errorf("push on node %s: got status %d with Range %q, want 202 with 0-%d", pushNode, res.status, res.rng, 2*half-1)
			}
		})
	}
}
