package faults

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/caddyreg/caddy-docker-registry/test/caddyrun"
)

const (
	transferSize = 1 << 30   // one layer of 1 GiB
	gateAt       = 256 << 20 // where each transfer waits for the reload
	blockSize    = 64 << 10
)

// patternBlock is the content of every 64 KiB block of a test layer,
// except for the block index stamped on its first 8 bytes, so that a
// lost, repeated or reordered block changes the digest.
var patternBlock = func() []byte {
	b := make([]byte, blockSize)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}()

// layerReader produces a test layer of size bytes without allocating it.
type layerReader struct {
	offset, size int64
}

func (r *layerReader) Read(p []byte) (int, error) {
	if r.offset >= r.size {
		return 0, io.EOF
	}
	if remaining := r.size - r.offset; int64(len(p)) > remaining {
		p = p[:remaining]
	}
	n := 0
	for n < len(p) {
		inBlock := int(r.offset % blockSize)
		c := copy(p[n:], patternBlock[inBlock:])
		// stamp the block index over the first 8 bytes of the block
		var index [8]byte
		binary.BigEndian.PutUint64(index[:], uint64(r.offset/blockSize))
		for i := inBlock; i < 8 && i-inBlock < c; i++ {
			p[n+i-inBlock] = index[i]
		}
		n += c
		r.offset += int64(c)
	}
	return n, nil
}

// gatedReader passes reads through until at bytes, then reports that on
// reached and blocks until release is closed.
type gatedReader struct {
	io.Reader
	at      int64
	read    int64
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGatedReader(r io.Reader, at int64) *gatedReader {
	return &gatedReader{Reader: r, at: at, reached: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.read >= g.at {
		g.once.Do(func() { close(g.reached) })
		<-g.release
	} else if remaining := g.at - g.read; int64(len(p)) > remaining {
		p = p[:remaining]
	}
	n, err := g.Reader.Read(p)
	g.read += int64(n)
	return n, err
}

// layerUpstream serves 1 GiB layer downloads and accepts 1 GiB uploads,
// hashing what it sends and receives.
type layerUpstream struct {
	addr string

	mu       sync.Mutex
	download *gatedReader
	sent     chan string // digest of each download body sent
}

func startLayerUpstream(t *testing.T) *layerUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &layerUpstream{addr: ln.Addr().String(), sent: make(chan string, 1)}
	server := &http.Server{Handler: http.HandlerFunc(u.serve)}
	go func() { _ = server.Serve(ln) }()
	t.Cleanup(func() { server.Close() })
	return u
}

func (u *layerUpstream) serve(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPut:
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("Docker-Content-Digest", "sha256:"+hex.EncodeToString(h.Sum(nil)))
		w.Header().Set("X-Received", strconv.FormatInt(n, 10))
		w.WriteHeader(http.StatusCreated)
	case http.MethodGet:
		u.mu.Lock()
		body := u.download
		u.mu.Unlock()
		if body == nil || !strings.HasPrefix(r.URL.Path, "/v2/app/blobs/") {
			w.WriteHeader(http.StatusOK)
			return
		}
		h := sha256.New()
		w.Header().Set("Content-Length", strconv.Itoa(transferSize))
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = io.Copy(w, io.TeeReader(body, h))
		u.sent <- "sha256:" + hex.EncodeToString(h.Sum(nil))
	}
}

// transfers is one upload and one download of 1 GiB in flight.
type transfers struct {
	upload, download *gatedReader
	uploadDone       chan error
	downloadDone     chan error
}

// startTransfers starts a 1 GiB upload over one protocol and a 1 GiB
// download over the other, both checked against their digests.
func startTransfers(tc *testCaddy, up *layerUpstream, uploadH2 bool) *transfers {
	tr := &transfers{
		upload:       newGatedReader(&layerReader{size: transferSize}, gateAt),
		download:     newGatedReader(&layerReader{size: transferSize}, gateAt),
		uploadDone:   make(chan error, 1),
		downloadDone: make(chan error, 1),
	}
	up.mu.Lock()
	up.download = tr.download
	up.mu.Unlock()

	go func() {
		h := sha256.New()
		req, _ := http.NewRequest(http.MethodPut, tc.url("/v2/app/blobs/uploads/"+testUpload+"?digest=sha256:x"), io.TeeReader(tr.upload, h))
		req.ContentLength = transferSize
		resp, err := (&http.Client{Transport: tc.transport(uploadH2)}).Do(req)
		if err != nil {
			tr.uploadDone <- fmt.Errorf("upload: %w", err)
			return
		}
		resp.Body.Close()
		want := "sha256:" + hex.EncodeToString(h.Sum(nil))
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != want {
			tr.uploadDone <- fmt.Errorf("upload: got %d with digest %s (%s bytes), want 201 with %s",
				resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), resp.Header.Get("X-Received"), want)
			return
		}
		tr.uploadDone <- nil
	}()

	go func() {
		resp, err := (&http.Client{Transport: tc.transport(!uploadH2)}).Get(tc.url("/v2/app/blobs/sha256:" + hex.EncodeToString(make([]byte, 32))))
		if err != nil {
			tr.downloadDone <- fmt.Errorf("download: %w", err)
			return
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil || n != transferSize {
			tr.downloadDone <- fmt.Errorf("download: read %d bytes (%v), want %d", n, err, transferSize)
			return
		}
		got := "sha256:" + hex.EncodeToString(h.Sum(nil))
		if sent := <-up.sent; got != sent {
			tr.downloadDone <- fmt.Errorf("download: digest %s, want the upstream's %s", got, sent)
			return
		}
		tr.downloadDone <- nil
	}()
	return tr
}

// waitInFlight waits until both transfers reached their gate.
func (tr *transfers) waitInFlight(t *testing.T) {
	t.Helper()
	for _, g := range []*gatedReader{tr.upload, tr.download} {
		select {
		case <-g.reached:
		case err := <-tr.uploadDone:
			t.Fatalf("upload ended before the reload: %v", err)
		case err := <-tr.downloadDone:
			t.Fatalf("download ended before the reload: %v", err)
		}
	}
}

func (tr *transfers) finish(t *testing.T) {
	t.Helper()
	close(tr.upload.release)
	close(tr.download.release)
	if err := <-tr.uploadDone; err != nil {
		t.Error(err)
	}
	if err := <-tr.downloadDone; err != nil {
		t.Error(err)
	}
}

// apiVersionOf returns the Docker-Distribution-Api-Version of a new
// request, which shows the configuration that serves it.
func apiVersionOf(t *testing.T, tc *testCaddy) string {
	t.Helper()
	c := &http.Client{Transport: tc.transport(false)}
	defer c.CloseIdleConnections()
	resp, err := c.Get(tc.url("/v2/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Docker-Distribution-Api-Version")
}

func TestReloadDuringGiBTransfers(t *testing.T) {
	up := startLayerUpstream(t)
	opts := caddyOptions{admin: true}
	handler := func(apiVersion string) map[string]any {
		return map[string]any{"handler": "docker_registry", "pull": proxyTo(up.addr), "api_version": apiVersion}
	}
	tc := startCaddy(t, opts, handler("registry/2.0"))

	t.Run("caddy.Load", func(t *testing.T) {
		tr := startTransfers(tc, up, false)
		tr.waitInFlight(t)
		if err := caddyrun.Load(tc.config(opts, handler("registry/2.0-reloaded"))); err != nil {
			t.Fatalf("reloading: %v", err)
		}
		if got := apiVersionOf(t, tc); got != "registry/2.0-reloaded" {
			t.Errorf("after the reload, new requests get API version %q, want registry/2.0-reloaded", got)
		}
		tr.finish(t)
	})

	t.Run("admin API", func(t *testing.T) {
		tr := startTransfers(tc, up, true)
		tr.waitInFlight(t)
		path := "/config/apps/http/servers/registry/routes/0/handle/0/api_version"
		req, _ := http.NewRequest(http.MethodPatch, "http://127.0.0.1:"+strconv.Itoa(tc.admin)+path, bytes.NewReader([]byte(`"registry/2.0-patched"`)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("PATCH %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PATCH %s: got %d %s, want 200", path, resp.StatusCode, body)
		}
		if got := apiVersionOf(t, tc); got != "registry/2.0-patched" {
			t.Errorf("after the PATCH, new requests get API version %q, want registry/2.0-patched", got)
		}
		tr.finish(t)
	})
}
