package dockerregistry

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// recordingWriter keeps every write separately.
type recordingWriter struct {
	writes [][]byte
	failAt int // 1-based index of the write that fails; 0 never
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	if w.failAt != 0 && len(w.writes)+1 == w.failAt {
		return 0, errors.New("write failed")
	}
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func (w *recordingWriter) joined() []byte { return bytes.Join(w.writes, nil) }

func TestFrameAlignerWritesWholePieces(t *testing.T) {
	body := make([]byte, 3<<20+777)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	// the sizes that reverse_proxy's reads from a socket produce
	for _, sizes := range [][]int{{32 << 10}, {1, 100, 40000, 16375, 16376, 5}, {70000}} {
		t.Run(fmt.Sprint(sizes), func(t *testing.T) {
			rec := &recordingWriter{}
			a := &frameAligner{w: rec}
			for rest, i := body, 0; len(rest) > 0; i++ {
				n := min(sizes[i%len(sizes)], len(rest))
				if written, err := a.Write(rest[:n]); written != n || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v", n, written, err)
				}
				rest = rest[n:]
			}
			if err := a.flush(); err != nil {
				t.Fatal(err)
			}
			a.close()
			if !bytes.Equal(rec.joined(), body) {
				t.Fatal("the bytes passed on differ from the body")
			}
			for i, w := range rec.writes[:len(rec.writes)-1] {
				if len(w) != alignedPieceLen {
					t.Fatalf("write %d of %d: %d bytes, want %d", i, len(rec.writes), len(w), alignedPieceLen)
				}
			}
		})
	}
}

func TestFrameAlignerFlushSendsHeldBytes(t *testing.T) {
	rec := &recordingWriter{}
	a := &frameAligner{w: rec}
	a.Write([]byte("partial"))
	if len(rec.writes) != 0 {
		t.Fatalf("a short write went out at once: %q", rec.writes)
	}
	if err := a.flush(); err != nil {
		t.Fatal(err)
	}
	if got := string(rec.joined()); got != "partial" {
		t.Fatalf("after flush: got %q, want %q", got, "partial")
	}
	if err := a.flush(); err != nil || len(rec.writes) != 1 {
		t.Fatalf("a second flush wrote again: %d writes, %v", len(rec.writes), err)
	}
}

func TestFrameAlignerReportsFailedWrites(t *testing.T) {
	// the held bytes and the first bytes of the next write fail together:
	// none of the next write counts as written
	rec := &recordingWriter{failAt: 1}
	a := &frameAligner{w: rec}
	a.Write(make([]byte, 100))
	n, err := a.Write(make([]byte, alignedPieceLen))
	if err == nil || n != 0 {
		t.Fatalf("Write with a failing underlying write = %d, %v; want 0 and an error", n, err)
	}

	// the bytes reported as not written never go out later
	rec.failAt = 0
	if err := a.flush(); err != nil {
		t.Fatal(err)
	}
	if got := len(rec.joined()); got != 100 {
		t.Fatalf("flush after the failed write sent %d bytes, want the 100 held before it", got)
	}

	// a failing whole piece counts the pieces before it
	rec = &recordingWriter{failAt: 2}
	a = &frameAligner{w: rec}
	n, err = a.Write(make([]byte, 3*alignedPieceLen))
	if err == nil || n != alignedPieceLen {
		t.Fatalf("Write failing at the second piece = %d, %v; want %d and an error", n, err, alignedPieceLen)
	}
}

// lockedRecorder is a recordingWriter that the hold timer's goroutine
// may write to.
type lockedRecorder struct {
	mu      sync.Mutex
	rec     recordingWriter
	flushes int
}

func (l *lockedRecorder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec.Write(p)
}

func (l *lockedRecorder) flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushes++
	return nil
}

func (l *lockedRecorder) state() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.rec.joined()), l.flushes
}

func TestFrameAlignerSendsHeldBytesAfterHoldTime(t *testing.T) {
	l := &lockedRecorder{}
	a := &frameAligner{w: l, flusher: l.flush}
	defer a.close()
	a.Write(make([]byte, 1000))

	deadline := time.Now().Add(5 * time.Second)
	for {
		sent, flushes := l.state()
		if sent == 1000 && flushes == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after a 1000-byte write: %d bytes sent and %d flushes, want 1000 and 1 after %v", sent, flushes, maxHoldTime)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFrameAlignerClosedSendsNothing(t *testing.T) {
	l := &lockedRecorder{}
	a := &frameAligner{w: l, flusher: l.flush}
	a.Write(make([]byte, 1000))
	a.close()

	time.Sleep(5 * maxHoldTime)
	if sent, flushes := l.state(); sent != 0 || flushes != 0 {
		t.Fatalf("after close: %d bytes sent and %d flushes, want none", sent, flushes)
	}
	if n, err := a.Write([]byte("late")); err == nil || n != 0 {
		t.Fatalf("Write after close = %d, %v; want 0 and an error", n, err)
	}
}

func TestFinishBodyReportsGoneClient(t *testing.T) {
	// the hold timer must not send the held bytes before finishBody does
	saved := maxHoldTime
	maxHoldTime = time.Minute
	t.Cleanup(func() { maxHoldTime = saved })

	fixer := &responseFixer{
		ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: httptest.NewRecorder()},
		request:               httptest.NewRequest(http.MethodGet, "/v2/a/blobs/sha256:x", nil),
		aligner:               &frameAligner{w: &recordingWriter{failAt: 1}},
	}
	fixer.aligner.Write(make([]byte, 100))

	if err := fixer.finishBody(); err == nil {
		t.Fatal("finishBody with a failing final write: got no error, want one")
	}
	if n, err := fixer.aligner.Write([]byte("late")); err == nil || n != 0 {
		t.Fatalf("Write after finishBody = %d, %v; want 0 and an error", n, err)
	}
}

func TestFramesAlignedOnlyForLargeHTTP2Downloads(t *testing.T) {
	large := http.Header{"Content-Length": {strconv.Itoa(alignMinLength)}}
	small := http.Header{"Content-Length": {strconv.Itoa(alignMinLength - 1)}}
	tests := []struct {
		name   string
		proto  int
		method string
		status int
		header http.Header
		want   bool
	}{
		{"blob over HTTP/2", 2, http.MethodGet, http.StatusOK, large, true},
		{"range over HTTP/2", 2, http.MethodGet, http.StatusPartialContent, large, true},
		{"blob over HTTP/1.1", 1, http.MethodGet, http.StatusOK, large, false},
		{"manifest-sized body", 2, http.MethodGet, http.StatusOK, small, false},
		{"unknown length", 2, http.MethodGet, http.StatusOK, http.Header{}, false},
		{"HEAD", 2, http.MethodHead, http.StatusOK, large, false},
		{"error status", 2, http.MethodGet, http.StatusNotFound, large, false},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(tt.method, "/v2/a/blobs/sha256:x", nil)
		r.ProtoMajor = tt.proto
		if got := shouldAlignFrames(r, tt.status, tt.header); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// blobBody is a deterministic body whose length is no multiple of the
// piece size, so that the last piece is a partial one.
func blobBody() []byte { return generatedBody(1<<20+4321, 3) }

func serveBlob(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}
}

func TestHTTP2DownloadFramesFillTLSRecords(t *testing.T) {
	// a loaded machine may pause the upstream for longer than the hold
	// time, which sends a short frame on purpose
	saved := maxHoldTime
	maxHoldTime = time.Minute
	t.Cleanup(func() { maxHoldTime = saved })

	body := blobBody()
	up := newUpstream(t, "registry", serveBlob(body))
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())}, caddyOptions{})

	frames, got := rawHTTP2Get(t, tc, "/v2/team/app/blobs/sha256:"+fmt.Sprintf("%x", sha256.Sum256(body)))
	if !bytes.Equal(got, body) {
		t.Fatalf("HTTP/2 body: got %d bytes, want the %d bytes of the blob", len(got), len(body))
	}
	// the server ends the stream with an empty frame
	for len(frames) > 0 && frames[len(frames)-1] == 0 {
		frames = frames[:len(frames)-1]
	}
	for i, n := range frames[:len(frames)-1] {
		if n != alignedPieceLen {
			t.Fatalf("DATA frame %d of %d carries %d bytes, want %d (a frame and its header filling one TLS record); all: %v",
				i, len(frames), n, alignedPieceLen, frames)
		}
	}
}

func TestHTTP2RangeDownloadArrivesWhole(t *testing.T) {
	body := blobBody()
	up := newUpstream(t, "registry", serveBlob(body))
	tc := startCaddy(t, map[string]any{"handler": "docker_registry", "pull": proxyTo(up.dial())}, caddyOptions{})

	header := http.Header{"Range": {"bytes=1000-"}}
	resp := do(t, tc.client(true), http.MethodGet, tc.url("localhost", fmt.Sprintf("/v2/team/app/blobs/sha256:%x", sha256.Sum256(body))), nil, header)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("got %s %d, want HTTP/2 206", resp.Proto, resp.StatusCode)
	}
	if !bytes.Equal(got, body[1000:]) {
		t.Fatalf("range body: got %d bytes, want the last %d bytes of the blob", len(got), len(body)-1000)
	}
}

// rawHTTP2Get sends one GET over a raw HTTP/2 connection with large flow
// control windows and a 1 MiB frame limit, and returns the payload size of
// every DATA frame and the body.
func rawHTTP2Get(t *testing.T, tc *testCaddy, path string) ([]int, []byte) {
	t.Helper()
	conn, fr := dialRawHTTP2(t, tc,
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20},
	)
	defer conn.Close()
	fr.WriteWindowUpdate(0, 1<<30)
	writeRawGet(fr, tc, path)

	var frames []int
	var body []byte
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading frames after %d bytes of body: %v", len(body), err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			frames = append(frames, len(f.Data()))
			body = append(body, f.Data()...)
			if f.StreamEnded() {
				return frames, body
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("server ended the exchange: %v", f)
		}
	}
}

// dialRawHTTP2 opens an HTTP/2 connection to the test server, sends the
// client preface and settings, and returns a framer on it. The caller
// closes the connection.
func dialRawHTTP2(t *testing.T, tc *testCaddy, settings ...http2.Setting) (*tls.Conn, *http2.Framer) {
	t.Helper()
	conn, err := tls.Dial("tcp", tc.addr, &tls.Config{RootCAs: tc.rootCAs, ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		conn.Close()
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.WriteSettings(settings...)
	return conn, fr
}

// writeRawGet sends the HEADERS frame of a GET for path on stream 1.
func writeRawGet(fr *http2.Framer, tc *testCaddy, path string) {
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "localhost:" + tc.port}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
}
