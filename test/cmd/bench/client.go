package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// clientSpec is one measurement, passed from the orchestrator to a client
// process as JSON.
type clientSpec struct {
	Workload string `json:"workload"`
	// BaseURL is the origin that the client talks to, such as
	// "https://127.0.0.1:41234".
	BaseURL string `json:"base_url"`
	// Proto is "h1" or "h2".
	Proto string `json:"proto"`
	CA    string `json:"ca"`

	// Size is the body size of each transfer in bytes.
	Size int64 `json:"size,omitempty"`
	// Parallel is the number of transfers at once.
	Parallel int `json:"parallel,omitempty"`
	// Concurrency is the number of request loops of a manifest workload.
	Concurrency int `json:"concurrency,omitempty"`
	// Duration is how long a manifest workload runs.
	Duration time.Duration `json:"duration,omitempty"`
	// ManifestPath is the path of the manifest to request.
	ManifestPath string `json:"manifest_path,omitempty"`

	// Layers and LayerSize describe the image of the image workloads.
	Layers    int    `json:"layers,omitempty"`
	LayerSize int64  `json:"layer_size,omitempty"`
	PushRepo  string `json:"push_repo,omitempty"`
}

// clientResult is what a client process prints when its measurement ends.
type clientResult struct {
	Bytes    int64   `json:"bytes"`
	Seconds  float64 `json:"seconds"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	// P50 and P99 are request latencies in microseconds, for the
	// manifest workloads.
	P50 float64 `json:"p50_us,omitempty"`
	P99 float64 `json:"p99_us,omitempty"`
	// Protocol and TLS are what the client negotiated, to check that
	// every contender did the same work.
	Protocol   string `json:"protocol"`
	TLS        string `json:"tls,omitempty"`
	FirstError string `json:"first_error,omitempty"`
}

// The workloads a client runs.
const (
	workloadBlobGet       = "blob-get"
	workloadBlobPut       = "blob-put"
	workloadBlobPatch     = "blob-patch"
	workloadBlobGetN      = "blob-get-parallel"
	workloadMixed         = "mixed-parallel"
	workloadManifestHead  = "manifest-head"
	workloadManifestGet   = "manifest-get"
	workloadImagePush     = "image-push"
	workloadImagePull     = "image-pull"
	manifestAccept        = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
	benchBlobDigest       = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
	clientUserAgent       = "caddy-docker-registry-bench/1.0"
	clientCopyBufferBytes = 1 << 20
)

// runClient reads a spec, prepares connections, prints "ready", waits for
// a line on stdin, runs the measurement, prints the result as JSON and
// waits for the end of stdin.
// The orchestrator reads the proxy's CPU time between "ready" and the
// result, so connection setup and image generation are not counted.
func runClient(args []string) error {
	flags := flag.NewFlagSet("client", flag.ContinueOnError)
	specJSON := flags.String("spec", "", "the measurement as `JSON` (see clientSpec)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	var spec clientSpec
	if err := json.Unmarshal([]byte(*specJSON), &spec); err != nil {
		return fmt.Errorf("invalid -spec: %v", err)
	}
	c, err := newBenchClient(spec)
	if err != nil {
		return err
	}
	run, err := c.prepare()
	if err != nil {
		return err
	}

	fmt.Println("ready")
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the start line: %v", err)
	}
	result := run()
	result.Protocol, result.TLS = c.negotiated()
	line, err := json.Marshal(result)
	if err != nil {
		return err
	}
	fmt.Printf("%s\n", line)
	// exit only when the orchestrator closes stdin: it reads stdout
	// through a pipe that closes as soon as the process is gone
	io.Copy(io.Discard, stdin)
	return nil
}

type benchClient struct {
	spec      clientSpec
	http      *http.Client
	transport *http.Transport

	mu    sync.Mutex
	proto string
	tls   string
}

func newBenchClient(spec clientSpec) (*benchClient, error) {
	roots, err := clientRoots(spec.CA)
	if err != nil {
		return nil, err
	}
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		MaxIdleConnsPerHost: 1024,
		DisableCompression:  true,
		ReadBufferSize:      64 << 10,
		WriteBufferSize:     64 << 10,
	}
	switch spec.Proto {
	case "h2":
		transport.ForceAttemptHTTP2 = true
	case "h1":
		// a non-nil empty map turns HTTP/2 off
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	default:
		return nil, fmt.Errorf("invalid proto %q; want h1 or h2", spec.Proto)
	}
	return &benchClient{
		spec:      spec,
		transport: transport,
		http:      &http.Client{Transport: transport},
	}, nil
}

// prepare opens the connections that the workload needs and returns the
// measurement itself.
func (c *benchClient) prepare() (func() clientResult, error) {
	switch c.spec.Workload {
	case workloadBlobGet:
		return c.prepareTransfers(1, func(int) transfer { return c.blobGet }), c.warmUp(1)
	case workloadBlobGetN:
		return c.prepareTransfers(c.spec.Parallel, func(int) transfer { return c.blobGet }), c.warmUp(c.spec.Parallel)
	case workloadBlobPut:
		return c.prepareTransfers(1, func(int) transfer { return c.blobPut }), c.warmUp(1)
	case workloadBlobPatch:
		return c.prepareTransfers(1, func(int) transfer { return c.blobPatch }), c.warmUp(1)
	case workloadMixed:
		// half downloads, half chunked uploads, all at once
		return c.prepareTransfers(c.spec.Parallel, func(i int) transfer {
			if i%2 == 0 {
				return c.blobGet
			}
			return c.blobPatch
		}), c.warmUp(c.spec.Parallel)
	case workloadManifestHead, workloadManifestGet:
		return c.manifestLoop, c.warmUp(c.spec.Concurrency)
	case workloadImagePush:
		return c.prepareImagePush()
	case workloadImagePull:
		return c.imagePull, c.warmUp(1)
	}
	return nil, fmt.Errorf("unknown workload %q", c.spec.Workload)
}

// warmUp opens n connections (one for HTTP/2) with parallel pings.
func (c *benchClient) warmUp(n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range max(n, 1) {
		wg.Go(func() {
			resp, err := c.do(http.MethodGet, "/v2/", nil, -1, nil)
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("ping %s: status %d, want 200", c.spec.BaseURL, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (c *benchClient) do(method, path string, body io.Reader, length int64, header http.Header) (*http.Response, error) {
	req, err := http.NewRequest(method, c.spec.BaseURL+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", clientUserAgent)
	// a reader of unknown length makes net/http send the body chunked
	// (HTTP/1.1) or as DATA frames without Content-Length (HTTP/2)
	req.ContentLength = length
	if length < 0 && body == nil {
		req.ContentLength = 0
	}
	resp, err := c.http.Do(req)
	if err == nil {
		c.record(resp)
	}
	return resp, err
}

func (c *benchClient) record(resp *http.Response) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proto != "" {
		return
	}
	c.proto = resp.Proto
	if resp.TLS != nil {
		c.tls = tls.VersionName(resp.TLS.Version) + " " + tls.CipherSuiteName(resp.TLS.CipherSuite)
	}
}

func (c *benchClient) negotiated() (string, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proto, c.tls
}

// transfer moves one blob and returns the bytes moved.
type transfer func(index int) (int64, error)

// prepareTransfers returns a measurement that runs n transfers at once.
func (c *benchClient) prepareTransfers(n int, pick func(int) transfer) func() clientResult {
	return func() clientResult {
		var (
			wg       sync.WaitGroup
			total    atomic.Int64
			failures atomic.Int64
			firstErr atomic.Value
		)
		start := time.Now()
		for i := range n {
			run := pick(i)
			wg.Go(func() {
				moved, err := run(i)
				total.Add(moved)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			})
		}
		wg.Wait()
		result := clientResult{
			Bytes:    total.Load(),
			Seconds:  time.Since(start).Seconds(),
			Requests: int64(n),
			Errors:   failures.Load(),
		}
		if s, ok := firstErr.Load().(string); ok {
			result.FirstError = s
		}
		return result
	}
}

func (c *benchClient) blobGet(int) (int64, error) {
	path := "/v2/bench/" + strconv.FormatInt(c.spec.Size, 10) + "/blobs/" + benchBlobDigest
	resp, err := c.do(http.MethodGet, path, nil, -1, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, clientCopyBufferBytes))
	if err != nil {
		return n, fmt.Errorf("reading the blob after %d bytes: %v", n, err)
	}
	if resp.StatusCode != http.StatusOK || n != c.spec.Size {
		return n, fmt.Errorf("GET blob: status %d with %d bytes, want 200 with %d", resp.StatusCode, n, c.spec.Size)
	}
	return n, nil
}

func (c *benchClient) blobPut(i int) (int64, error) {
	path := "/v2/bench/upload/blobs/uploads/put-" + strconv.Itoa(i) + "?digest=" + url.QueryEscape(benchBlobDigest)
	return c.upload(http.MethodPut, path, c.spec.Size, http.StatusCreated)
}

func (c *benchClient) blobPatch(i int) (int64, error) {
	path := "/v2/bench/upload/blobs/uploads/patch-" + strconv.Itoa(i)
	return c.upload(http.MethodPatch, path, -1, http.StatusAccepted)
}

// upload sends Size generated bytes, with Content-Length when length is
// not negative, and checks that the upstream received all of them.
func (c *benchClient) upload(method, path string, length int64, want int) (int64, error) {
	body := &generatorReader{remaining: c.spec.Size}
	header := http.Header{"Content-Type": {"application/octet-stream"}}
	resp, err := c.do(method, path, body, length, header)
	if err != nil {
		return body.sent(c.spec.Size), err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	received, _ := strconv.ParseInt(resp.Header.Get("X-Bench-Received"), 10, 64)
	if resp.StatusCode != want || received != c.spec.Size {
		return received, fmt.Errorf("%s upload: status %d with %d bytes received upstream, want %d with %d", method, resp.StatusCode, received, want, c.spec.Size)
	}
	return received, nil
}

// generatorReader yields remaining bytes of the generator block. It has
// no Len method, so net/http cannot learn its length.
type generatorReader struct {
	remaining int64
	offset    int
}

func (g *generatorReader) Read(p []byte) (int, error) {
	if g.remaining <= 0 {
		return 0, io.EOF
	}
	n := copy(p, generatorBlock[g.offset:])
	n = int(min(int64(n), g.remaining))
	g.offset = (g.offset + n) % generatorBlockSize
	g.remaining -= int64(n)
	return n, nil
}

func (g *generatorReader) sent(size int64) int64 { return size - g.remaining }

// manifestLoop runs Concurrency request loops for Duration and records
// the latency of every request.
func (c *benchClient) manifestLoop() clientResult {
	method := http.MethodGet
	if c.spec.Workload == workloadManifestHead {
		method = http.MethodHead
	}
	header := http.Header{"Accept": {manifestAccept}}
	deadline := time.Now().Add(c.spec.Duration)

	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		latencies []time.Duration
		bytes     atomic.Int64
		failures  atomic.Int64
		firstErr  atomic.Value
	)
	start := time.Now()
	for range c.spec.Concurrency {
		wg.Go(func() {
			own := make([]time.Duration, 0, 1<<14)
			buf := make([]byte, 32<<10)
			for time.Now().Before(deadline) {
				began := time.Now()
				resp, err := c.do(method, c.spec.ManifestPath, nil, -1, header)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				n, _ := io.CopyBuffer(io.Discard, resp.Body, buf)
				resp.Body.Close()
				own = append(own, time.Since(began))
				bytes.Add(n)
				if resp.StatusCode != http.StatusOK {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s %s: status %d, want 200", method, c.spec.ManifestPath, resp.StatusCode))
				}
			}
			mu.Lock()
			latencies = append(latencies, own...)
			mu.Unlock()
		})
	}
	wg.Wait()
	result := clientResult{
		Bytes:    bytes.Load(),
		Seconds:  time.Since(start).Seconds(),
		Requests: int64(len(latencies)),
		Errors:   failures.Load(),
	}
	if s, ok := firstErr.Load().(string); ok {
		result.FirstError = s
	}
	if len(latencies) > 0 {
		slices.Sort(latencies)
		result.P50 = float64(percentile(latencies, 0.50).Nanoseconds()) / 1e3
		result.P99 = float64(percentile(latencies, 0.99).Nanoseconds()) / 1e3
	}
	return result
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

// registryTransport sends go-containerregistry's requests with the scheme
// of BaseURL. go-containerregistry picks plain HTTP for every loopback
// registry and would otherwise send plain HTTP to a TLS port on 127.0.0.1.
type registryTransport struct {
	scheme string
	next   http.RoundTripper
	client *benchClient
}

func (t *registryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != t.scheme {
		u := *req.URL
		u.Scheme = t.scheme
		req = req.Clone(req.Context())
		req.URL = &u
	}
	req.Header.Set("User-Agent", clientUserAgent)
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		t.client.record(resp)
	}
	return resp, err
}

func (c *benchClient) imageReference(repository string) (name.Reference, remote.Option, error) {
	base, err := url.Parse(c.spec.BaseURL)
	if err != nil {
		return nil, nil, err
	}
	ref, err := name.NewTag(base.Host + "/" + repository + ":" + imageTag)
	if err != nil {
		return nil, nil, err
	}
	transport := &registryTransport{scheme: base.Scheme, next: c.transport, client: c}
	return ref, remote.WithTransport(transport), nil
}

func (c *benchClient) prepareImagePush() (func() clientResult, error) {
	image, err := benchImage(c.spec.Layers, c.spec.LayerSize)
	if err != nil {
		return nil, err
	}
	ref, transport, err := c.imageReference(c.spec.PushRepo)
	if err != nil {
		return nil, err
	}
	if err := c.warmUp(1); err != nil {
		return nil, err
	}
	size := int64(c.spec.Layers) * c.spec.LayerSize
	return func() clientResult {
		start := time.Now()
		err := remote.Write(ref, image, transport, remote.WithContext(context.Background()))
		result := clientResult{Bytes: size, Seconds: time.Since(start).Seconds(), Requests: 1}
		if err != nil {
			result.Errors = 1
			result.Bytes = 0
			result.FirstError = err.Error()
		}
		return result
	}, nil
}

func (c *benchClient) imagePull() clientResult {
	start := time.Now()
	moved, err := c.pullImage()
	result := clientResult{Bytes: moved, Seconds: time.Since(start).Seconds(), Requests: 1}
	if err != nil {
		result.Errors = 1
		result.FirstError = err.Error()
	}
	return result
}

// pullImage fetches the manifest, the config and every layer, as
// "crane pull" does, and checks each layer's digest while reading it.
func (c *benchClient) pullImage() (int64, error) {
	ref, transport, err := c.imageReference(imageRepository)
	if err != nil {
		return 0, err
	}
	image, err := remote.Image(ref, transport)
	if err != nil {
		return 0, err
	}
	if _, err := image.RawConfigFile(); err != nil {
		return 0, err
	}
	layers, err := image.Layers()
	if err != nil {
		return 0, err
	}
	var total int64
	for i, layer := range layers {
		rc, err := layer.Compressed()
		if err != nil {
			return total, err
		}
		n, err := io.CopyBuffer(io.Discard, rc, make([]byte, clientCopyBufferBytes))
		total += n
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return total, fmt.Errorf("reading layer %d: %w", i, err)
		}
	}
	if want := int64(c.spec.Layers) * c.spec.LayerSize; total != want {
		return total, fmt.Errorf("pulled %d layer bytes, want %d", total, want)
	}
	return total, nil
}
