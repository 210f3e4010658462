package dockerregistry

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Tests in this file drive the frame aligner of h2frames.go through
// Caddy's HTTP/2 server with upstream bodies, clients and proxy settings
// that h2frames_test.go does not use.

// generatedBody returns size deterministic bytes that differ for each seed,
// so that a response carrying another response's bytes fails the check.
func generatedBody(size int, seed uint64) []byte {
	body := make([]byte, size)
	rng := rand.New(rand.NewPCG(seed, uint64(size)))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	return body
}

// splitWriter passes each write on in pieces of varying odd sizes and
// flushes after each, so that reverse_proxy's reads from the upstream
// return as many different sizes.
type splitWriter struct {
	http.ResponseWriter
	next int
}

var splitSizes = []int{1, 7, 4095, 16376, 33000, 16374, 3}

func (s *splitWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(splitSizes[s.next%len(splitSizes)], len(p))
		s.next++
		if _, err := s.ResponseWriter.Write(p[:n]); err != nil {
			return written, err
		}
		s.ResponseWriter.(http.Flusher).Flush()
		written += n
		p = p[n:]
	}
	return written, nil
}

// serveGeneratedBlob serves generatedBody for the query parameters size
// and seed, with an ETag, ranges and conditional requests. The parameter
// odd makes the upstream write in pieces of odd sizes.
func serveGeneratedBlob(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size, err := strconv.Atoi(q.Get("size"))
	if err != nil {
		http.Error(w, "invalid size: "+err.Error(), http.StatusBadRequest)
		return
	}
	seed, _ := strconv.ParseUint(q.Get("seed"), 10, 64)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", fmt.Sprintf(`"%d-%d"`, size, seed))
	if q.Has("odd") {
		w = &splitWriter{ResponseWriter: w}
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(generatedBody(size, seed)))
}

func generatedBlobPath(size int, seed uint64, odd bool) string {
	path := fmt.Sprintf("/v2/team/app/blobs/%s?size=%d&seed=%d", testDigest, size, seed)
	if odd {
		path += "&odd"
	}
	return path
}

func TestHTTP2DownloadIntactUnderFlushIntervals(t *testing.T) {
	sizes := []int{
		alignMinLength - 1, alignMinLength, alignMinLength + 1,
		4*alignedPieceLen - 1, 4 * alignedPieceLen, 4*alignedPieceLen + 1,
		1<<20 + 3,
	}
	up := newUpstream(t, "registry", serveGeneratedBlob)

	// nil keeps reverse_proxy's default, and -1 flushes after every write.
	// A short interval flushes from a timer goroutine in the middle of the
	// body.
	for _, interval := range []any{nil, -1, "2ms"} {
		t.Run(fmt.Sprintf("flush_interval %v", interval), func(t *testing.T) {
			target := proxyTo(up.dial())
			if interval != nil {
				target["proxy"].(map[string]any)["flush_interval"] = interval
			}
			tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": target}, caddyOptions{})
			client := tc.client(true)

			for _, size := range sizes {
				for _, odd := range []bool{false, true} {
					body := generatedBody(size, 7)
					resp := do(t, client, http.MethodGet, tc.url("localhost", generatedBlobPath(size, 7, odd)), nil, nil)
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil {
						t.Fatalf("size %d, odd writes %v: reading the body: %v", size, odd, err)
					}
					if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
						t.Fatalf("size %d, odd writes %v: got %s %d, want HTTP/2 200", size, odd, resp.Proto, resp.StatusCode)
					}
					if !bytes.Equal(got, body) {
						t.Errorf("size %d, odd writes %v: got %d bytes differing from the %d bytes of the blob at offset %d",
							size, odd, len(got), len(body), firstDifference(got, body))
					}
				}
			}

			// a range that starts in the middle of a piece, written in odd
			// sizes
			size := 1<<20 + 3
			body := generatedBody(size, 7)
			header := http.Header{"Range": {"bytes=12345-900000"}}
			resp := do(t, client, http.MethodGet, tc.url("localhost", generatedBlobPath(size, 7, true)), nil, header)
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusPartialContent {
				t.Fatalf("range: got status %d and error %v, want 206 and a whole body", resp.StatusCode, err)
			}
			if !bytes.Equal(got, body[12345:900001]) {
				t.Errorf("range: got %d bytes differing from the %d bytes of the range", len(got), 900001-12345)
			}

			// HEAD and 304 carry the length of the blob and no body
			resp = do(t, client, http.MethodHead, tc.url("localhost", generatedBlobPath(size, 7, false)), nil, nil)
			if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(size) {
				t.Errorf("HEAD: got %d with Content-Length %d, want 200 with %d", resp.StatusCode, resp.ContentLength, size)
			}
			header = http.Header{"If-None-Match": {fmt.Sprintf(`"%d-7"`, size)}}
			resp = do(t, client, http.MethodGet, tc.url("localhost", generatedBlobPath(size, 7, false)), nil, header)
			got, err = io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusNotModified || len(got) != 0 || err != nil {
				t.Errorf("conditional GET: got %d with %d body bytes and error %v, want 304 without a body", resp.StatusCode, len(got), err)
			}
		})
	}
}

func firstDifference(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// rawHTTP2Result is what a raw HTTP/2 client received on one stream.
type rawHTTP2Result struct {
	status string
	frames []int // payload size of each DATA frame
	body   []byte
	reset  *http2.RSTStreamFrame // the RST_STREAM that ended the stream, or nil after END_STREAM
}

// rawHTTP2Download sends a GET for path on a new raw HTTP/2 connection and
// reads its stream to the end. The client announces window as its
// initial stream window and returns each DATA frame's bytes to both
// windows after pause, so a small window and a pause make a slow reader.
func rawHTTP2Download(t *testing.T, tc *testCaddy, path string, window uint32, pause time.Duration) rawHTTP2Result {
	t.Helper()
	conn, fr := dialRawHTTP2(t, tc, http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	defer conn.Close()
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	writeRawGet(fr, tc, path)

	var result rawHTTP2Result
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading frames after %d bytes of body: %v", len(result.body), err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			result.status = f.PseudoValue("status")
		case *http2.DataFrame:
			n := len(f.Data())
			result.frames = append(result.frames, n)
			result.body = append(result.body, f.Data()...)
			if f.StreamEnded() {
				return result
			}
			if n > 0 {
				time.Sleep(pause)
				fr.WriteWindowUpdate(1, uint32(n))
				fr.WriteWindowUpdate(0, uint32(n))
			}
		case *http2.RSTStreamFrame:
			result.reset = f
			return result
		case *http2.GoAwayFrame:
			t.Fatalf("server sent GOAWAY after %d bytes of body: %v", len(result.body), f)
		}
	}
}

func TestHTTP2DownloadToSlowReader(t *testing.T) {
	up := newUpstream(t, "registry", serveGeneratedBlob)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())}, caddyOptions{})

	// windows that split the pieces at a different place every time
	for _, window := range []uint32{1000, 16376, 40000} {
		t.Run(fmt.Sprintf("window %d", window), func(t *testing.T) {
			size := 300000 + int(window)
			got := rawHTTP2Download(t, tc, generatedBlobPath(size, uint64(window), true), window, 200*time.Microsecond)
			if got.reset != nil {
				t.Fatalf("the stream was reset after %d bytes: %v", len(got.body), got.reset)
			}
			if got.status != "200" {
				t.Fatalf("status: got %q, want 200", got.status)
			}
			if want := generatedBody(size, uint64(window)); !bytes.Equal(got.body, want) {
				t.Fatalf("got %d bytes differing from the %d bytes of the blob at offset %d", len(got.body), len(want), firstDifference(got.body, want))
			}
			for i, n := range got.frames {
				if n > int(window) {
					t.Fatalf("DATA frame %d carries %d bytes, more than the window of %d", i, n, window)
				}
			}
		})
	}
}

func TestHTTP2UpstreamBodyLengthMismatch(t *testing.T) {
	const declared = 300000
	// leaves a part of a piece for the aligner to hold
	const short = 5*alignedPieceLen + 4321
	body := generatedBody(declared, 11)
	// Go's transport logs the bytes after the declared end, so they are
	// text
	const extra = "bytes after the declared Content-Length"

	// the upstream declares 300000 bytes, then sends fewer and closes the
	// connection cleanly, or sends more
	up := newRawUpstream(t, func(conn net.Conn, req *http.Request) {
		w := bufio.NewWriter(conn)
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", declared)
		n := declared
		if req.URL.Query().Has("short") {
			n = short
		}
		// writes of an odd size, flushed one by one
		for sent := 0; sent < n; {
			chunk := min(9999, n-sent)
			w.Write(body[sent : sent+chunk])
			w.Flush()
			sent += chunk
		}
		if !req.URL.Query().Has("short") {
			w.WriteString(extra)
			w.Flush()
		}
		conn.Close()
	})
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())}, caddyOptions{})

	t.Run("fewer bytes", func(t *testing.T) {
		got := rawHTTP2Download(t, tc, "/v2/app/blobs/"+testDigest+"?short", 1<<30, 0)
		if got.reset == nil {
			t.Fatalf("the stream ended cleanly after %d of %d declared bytes, want RST_STREAM", len(got.body), declared)
		}
		// reverse_proxy flushes before it aborts, and the flush must also
		// send the bytes that the aligner holds
		if !bytes.Equal(got.body, body[:short]) {
			t.Errorf("got %d bytes before RST_STREAM, want the %d bytes that the upstream sent", len(got.body), short)
		}
	})
	t.Run("more bytes", func(t *testing.T) {
		got := rawHTTP2Download(t, tc, "/v2/app/blobs/"+testDigest+"?long", 1<<30, 0)
		if got.reset != nil {
			t.Fatalf("the stream was reset after %d bytes: %v", len(got.body), got.reset)
		}
		if !bytes.Equal(got.body, body) {
			t.Errorf("got %d bytes, want the %d declared bytes", len(got.body), declared)
		}
	})
}

// TestHTTP2DownloadFlowsDuringUpstreamPause checks that the response
// header and the body bytes that the upstream has sent reach the client
// while the upstream pauses in the middle of a large blob. Over HTTP/1.1,
// and over HTTP/2 before frame alignment, Go's servers keep at most a few
// KiB of them back.
func TestHTTP2DownloadFlowsDuringUpstreamPause(t *testing.T) {
	const size = 1 << 20
	// less than one aligned piece
	const beforePause = 16000
	// the bytes that the client must receive during the pause. The rest
	// fits in the buffers of Go's servers: 2 KiB and 4 KiB over HTTP/1.1
	// (net/http of Go 1.26), 4 KiB over HTTP/2 (x/net/http2 v0.60.0).
	const duringPause = 8000
	body := generatedBody(size, 5)

	// each request pauses until the test closes the channel that it got
	var mu sync.Mutex
	resumes := make(chan chan struct{}, 2)
	pending := []chan struct{}{}
	resumeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, ch := range pending {
			close(ch)
		}
		pending = nil
	}
	up := newUpstream(t, "registry", func(w http.ResponseWriter, r *http.Request) {
		resume := make(chan struct{})
		mu.Lock()
		pending = append(pending, resume)
		mu.Unlock()
		resumes <- resume
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Write(body[:beforePause])
		w.(http.Flusher).Flush()
		select {
		case <-resume:
		case <-time.After(20 * time.Second):
		}
		w.Write(body[beforePause:])
	})
	// runs before the upstream's Close, which waits for the handler
	t.Cleanup(resumeAll)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())}, caddyOptions{})

	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			type firstBytes struct {
				resp *http.Response
				head []byte
				err  error
			}
			headerArrived := make(chan struct{})
			arrived := make(chan firstBytes, 1)
			go func() {
				req, _ := http.NewRequest(http.MethodGet, tc.url("localhost", "/v2/team/app/blobs/"+testDigest), nil)
				resp, err := tc.client(h2).Do(req)
				close(headerArrived)
				if err != nil {
					arrived <- firstBytes{err: err}
					return
				}
				head := make([]byte, duringPause)
				n, err := io.ReadFull(resp.Body, head)
				arrived <- firstBytes{resp: resp, head: head[:n], err: err}
			}()
			<-resumes

			var first firstBytes
			select {
			case first = <-arrived:
			case <-time.After(3 * time.Second):
				select {
				case <-headerArrived:
					t.Errorf("3 s into the upstream's pause the client had the response header but not %d of the %d body bytes sent before the pause",
						duringPause, beforePause)
				default:
					t.Errorf("3 s into the upstream's pause the client had no response header, although the upstream had sent its header and %d body bytes",
						beforePause)
				}
				resumeAll()
				first = <-arrived
			}
			resumeAll()
			if first.err != nil {
				t.Fatalf("reading the first bytes: %v", first.err)
			}
			defer first.resp.Body.Close()
			if first.resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
				t.Fatalf("got %s, want %s", first.resp.Proto, protoName(h2))
			}
			rest, err := io.ReadAll(first.resp.Body)
			if err != nil {
				t.Fatalf("reading the rest of the body: %v", err)
			}
			got := append(first.head, rest...)
			if !bytes.Equal(got, body) {
				t.Errorf("got %d bytes differing from the %d bytes of the blob", len(got), size)
			}
		})
	}
}

func TestHTTP2ConcurrentCancelledDownloadsShareNothing(t *testing.T) {
	up := newUpstream(t, "registry", serveGeneratedBlob)
	// without idle upstream connections the goroutine count after the
	// downloads depends only on what the handlers left behind
	up.Config.SetKeepAlivesEnabled(false)
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())}, caddyOptions{logLevel: "DEBUG"})
	client := tc.client(true)
	transport := client.Transport.(*http.Transport)

	const downloads = 12
	// round runs the downloads at once on one HTTP/2 connection and checks
	// every body read to its end. A download with cancel set stops after
	// part of the body, which resets its stream.
	round := func(r int, cancel func(i int) bool) {
		var wg sync.WaitGroup
		for i := range downloads {
			wg.Add(1)
			go func() {
				defer wg.Done()
				size := alignMinLength + i*7919 + r*13
				if cancel(i) {
					// more than the 4 MiB stream window of Go's client
					// (Go 1.26), so that the handler is still writing when
					// the client resets the stream
					size += 6 << 20
				}
				seed := uint64(r*100 + i)
				req, _ := http.NewRequest(http.MethodGet, tc.url("localhost", generatedBlobPath(size, seed, i%2 == 0)), nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("round %d download %d: %v", r, i, err)
					return
				}
				defer resp.Body.Close()
				if resp.ProtoMajor != 2 {
					t.Errorf("round %d download %d: got %s, want HTTP/2", r, i, resp.Proto)
				}
				if cancel(i) {
					io.ReadFull(resp.Body, make([]byte, 20000))
					return
				}
				got, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Errorf("round %d download %d: reading the body: %v", r, i, err)
					return
				}
				if want := generatedBody(size, seed); !bytes.Equal(got, want) {
					t.Errorf("round %d download %d: got %d bytes differing from its %d bytes at offset %d",
						r, i, len(got), len(want), firstDifference(got, want))
				}
			}()
		}
		wg.Wait()
	}
	settle := func() int {
		transport.CloseIdleConnections()
		time.Sleep(300 * time.Millisecond)
		return runtime.NumGoroutine()
	}

	round(0, func(int) bool { return false })
	baseline := settle()
	for r := 1; r <= 3; r++ {
		round(r, func(i int) bool { return i%3 == r%3 })
	}
	round(4, func(int) bool { return false })

	deadline := time.Now().Add(10 * time.Second)
	count := settle()
	for count > baseline+2 && time.Now().Before(deadline) {
		count = settle()
	}
	if count > baseline+2 {
		t.Errorf("goroutines: %d after 12 cancelled downloads, %d before", count, baseline)
	}
	logged, err := os.ReadFile(tc.logFile)
	if err != nil {
		t.Fatal(err)
	}
	if i := strings.Index(string(logged), "panic serving"); i >= 0 {
		t.Errorf("a handler panicked with a value other than http.ErrAbortHandler: %.600s", logged[i:])
	}
}
