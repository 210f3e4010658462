package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const testUpload = "3f6c1a5e-9d2b-4c8e-a1f0-7b3d2e4c5a69"

// uploadUpstream is a registry stand-in that reads upload bodies and
// reports how each body read ended.
type uploadUpstream struct {
	server  *http.Server
	addr    string
	started chan struct{}
	ended   chan error
}

func startUploadUpstream(t *testing.T) *uploadUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &uploadUpstream{addr: ln.Addr().String(), started: make(chan struct{}, 16), ended: make(chan error, 16)}
	u.server = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPatch {
			w.WriteHeader(http.StatusOK)
			return
		}
		u.started <- struct{}{}
		n, err := io.Copy(io.Discard, r.Body)
		u.ended <- err
		if err != nil {
			return
		}
		w.Header().Set("Range", fmt.Sprintf("0-%d", n-1))
		w.WriteHeader(http.StatusAccepted)
	})}
	// no idle connections, so that every connection of a request is gone
	// once it ends and the goroutine and descriptor counts can settle
	u.server.SetKeepAlivesEnabled(false)
	go func() { _ = u.server.Serve(ln) }()
	t.Cleanup(func() { u.server.Close() })
	return u
}

// openFiles counts the descriptors of the test process.
func openFiles(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting file descriptors: %v", err)
	}
	return len(entries)
}

// upload sends a complete PATCH of size bytes and checks the response.
func upload(t *testing.T, c *http.Client, tc *testCaddy, size int64) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPatch, tc.url("/v2/app/blobs/uploads/"+testUpload), io.LimitReader(zeros{}, size))
	req.ContentLength = size
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != fmt.Sprintf("0-%d", size-1) {
		t.Fatalf("upload: got %d with Range %q, want 202 with 0-%d", resp.StatusCode, resp.Header.Get("Range"), size-1)
	}
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestClientDisconnectMidUploadLeaksNothing(t *testing.T) {
	up := startUploadUpstream(t)
	// a log file would be opened, with its cleanup goroutine, on the
	// first entry, which the counts below would take for a leak
	tc := startCaddy(t, caddyOptions{discardLogs: true}, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.addr)})
	transport := tc.transport(true)
	c := &http.Client{Transport: transport}

	// warm up every pool and lazily started goroutine, then take the
	// baseline
	upload(t, c, tc, 1<<20)
	<-up.started
	if err := <-up.ended; err != nil {
		t.Fatal(err)
	}
	transport.CloseIdleConnections()
	baselineGoroutines := goleak.IgnoreCurrent()
	baselineFiles := openFiles(t)
	baselineList := listOpenFiles(t)

	const rounds = 10
	for i := range rounds {
		// HTTP/1.1: the client closes its connection in the middle
		// of the body
		conn := tc.dialTLS(t)
		fmt.Fprintf(conn, "PATCH /v2/app/blobs/uploads/%s HTTP/1.1\r\nHost: mydocker\r\nContent-Length: %d\r\n\r\n", testUpload, 64<<20)
		if _, err := conn.Write(make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		waitForUploadStart(t, up)
		conn.Close()
		checkUploadCancelled(t, up, fmt.Sprintf("HTTP/1.1 round %d", i))

		// HTTP/2: the client cancels its stream
		ctx, cancel := context.WithCancel(context.Background())
		bodyReader, bodyWriter := io.Pipe()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPatch, tc.url("/v2/app/blobs/uploads/"+testUpload), bodyReader)
		done := make(chan error, 1)
		go func() {
			resp, err := c.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		if _, err := bodyWriter.Write(make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		waitForUploadStart(t, up)
		cancel()
		bodyWriter.CloseWithError(context.Canceled)
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("HTTP/2 round %d: cancelled request ended with %v, want context.Canceled", i, err)
		}
		checkUploadCancelled(t, up, fmt.Sprintf("HTTP/2 round %d", i))
	}

	// the next upload succeeds on both protocols
	transports := []*http.Transport{transport}
	for _, h2 := range []bool{false, true} {
		next := tc.transport(h2)
		transports = append(transports, next)
		upload(t, &http.Client{Transport: next}, tc, 4<<20)
		<-up.started
		if err := <-up.ended; err != nil {
			t.Errorf("upstream body of the next upload: %v", err)
		}
	}

	// an HTTP/2 connection whose stream was just reset may not count as
	// idle yet, so the client side is closed again until the counts
	// settle. A leak on the server side stays whatever the client does.
	var leaks error
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, tr := range transports {
			tr.CloseIdleConnections()
		}
		leaks = goleak.Find(baselineGoroutines)
		if leaks == nil && openFiles(t) <= baselineFiles || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if leaks != nil {
		t.Errorf("goroutines left after %d disconnected uploads per protocol: %v", rounds, leaks)
	}
	if n := openFiles(t); n > baselineFiles {
		t.Errorf("open files: got %d, want at most the baseline %d\nnow open: %s\nbaseline: %s", n, baselineFiles, listOpenFiles(t), baselineList)
	}
}

func listOpenFiles(t *testing.T) string {
	entries, _ := os.ReadDir("/proc/self/fd")
	var names []string
	for _, e := range entries {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		names = append(names, e.Name()+"="+target)
	}
	return fmt.Sprint(names)
}

func waitForUploadStart(t *testing.T, up *uploadUpstream) {
	t.Helper()
	select {
	case <-up.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the upload did not reach the upstream within 10s")
	}
}

// checkUploadCancelled checks that the upstream's body read failed, that
// is, that the module and reverse_proxy cancelled the upstream request
// instead of letting it wait for the rest of the body.
func checkUploadCancelled(t *testing.T, up *uploadUpstream, round string) {
	t.Helper()
	select {
	case err := <-up.ended:
		if err == nil {
			t.Errorf("%s: the upstream read a complete body, want a cancelled request", round)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the upstream request still runs 10s after the client left", round)
	}
}

func TestStalledClientsCutOffWhileOthersServed(t *testing.T) {
	up := startUploadUpstream(t)
	const headerTimeout = 500 * time.Millisecond
	tc := startCaddy(t, caddyOptions{server: map[string]any{
		"read_header_timeout": headerTimeout.String(),
		"read_idle_timeout":   "500ms",
		"read_min_rate":       4096,
	}}, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.addr)})

	// slowloris: many connections that send their headers a byte at a
	// time and never finish them
	const attackers = 20
	var wg sync.WaitGroup
	ended := make(chan time.Duration, attackers)
	stop := make(chan struct{})
	defer close(stop)
	for range attackers {
		conn := tc.dialTLS(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			// a reader notices when the server closes the connection
			closed := make(chan struct{})
			go func() {
				_, _ = io.Copy(io.Discard, conn)
				close(closed)
			}()
			_, _ = io.WriteString(conn, "GET /v2/ HTTP/1.1\r\nHost: mydocker\r\nX-Slow: ")
			ticker := time.NewTicker(50 * time.Millisecond)
			defer ticker.Stop()
			for {
				select {
				case <-closed:
					ended <- time.Since(start)
					return
				case <-stop:
					return
				case <-ticker.C:
					_, _ = io.WriteString(conn, "a")
				}
			}
		}()
	}

	// a body that trickles in far below read_min_rate
	trickle := tc.dialTLS(t)
	fmt.Fprintf(trickle, "PATCH /v2/app/blobs/uploads/%s HTTP/1.1\r\nHost: mydocker\r\nContent-Length: %d\r\n\r\n", testUpload, 1<<20)
	trickleClosed := make(chan time.Duration, 1)
	trickleStart := time.Now()
	go func() {
		br := bufio.NewReader(trickle)
		_, _ = io.Copy(io.Discard, br)
		trickleClosed <- time.Since(trickleStart)
	}()
	go func() {
		for range 100 {
			if _, err := io.WriteString(trickle, "x"); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	// meanwhile a normal client is served promptly
	normal := &http.Client{Transport: tc.transport(false)}
	for i := range 20 {
		start := time.Now()
		resp, err := normal.Get(tc.url("/v2/"))
		if err != nil {
			t.Fatalf("normal request %d during the attack: %v", i, err)
		}
		resp.Body.Close()
		if elapsed := time.Since(start); resp.StatusCode != http.StatusOK || elapsed > time.Second {
			t.Errorf("normal request %d: got %d after %v, want 200 within 1s", i, resp.StatusCode, elapsed)
		}
		time.Sleep(25 * time.Millisecond)
	}

	for i := range attackers {
		select {
		case d := <-ended:
			// the server starts its clock when it starts reading, a
			// little before this client starts its own
			if d < headerTimeout/2 || d > headerTimeout+3*time.Second {
				t.Errorf("slow header connection %d ended after %v, want about the read_header_timeout %v", i, d, headerTimeout)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d slow header connections ended within 10s", i, attackers)
		}
	}
	select {
	case d := <-trickleClosed:
		if d > 5*time.Second {
			t.Errorf("trickling body ended after %v, want within a few seconds", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the trickling body still runs after 10s")
	}
	select {
	case err := <-up.ended:
		if err == nil {
			t.Error("the upstream read a complete body from the trickling client")
		}
	case <-time.After(5 * time.Second):
		t.Error("the trickling upload never ended at the upstream")
	}
	wg.Wait()
}
