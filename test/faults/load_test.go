package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caddyreg/caddy-docker-registry/test/standin"
)

// resetProxy is a TCP proxy that resets a share of its connections with
// RST on both sides, as an overloaded load balancer or a flaky network
// does. A connection picked for a reset is reset after a random number of
// bytes in either direction, or at its end if that comes first.
type resetProxy struct {
	listener net.Listener
	target   string
	share    float64
	maxBytes int64

	mu     sync.Mutex
	random *rand.Rand
	conns  []net.Conn
	wg     sync.WaitGroup

	accepted atomic.Int64
	resets   atomic.Int64
}

func startResetProxy(t *testing.T, target string, share float64, maxBytes int64) *resetProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &resetProxy{
		listener: ln, target: target, share: share, maxBytes: maxBytes,
		// a fixed seed makes a failing run repeatable in its choices
		random: rand.New(rand.NewPCG(1, 2)),
	}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *resetProxy) addr() string { return p.listener.Addr().String() }

func (p *resetProxy) serve() {
	defer p.wg.Done()
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}

		// -1 means this connection is never reset
		budget := int64(-1)
		p.mu.Lock()
		if p.random.Float64() < p.share {
			budget = 1 + p.random.Int64N(p.maxBytes)
		}
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()

		var remaining atomic.Int64
		remaining.Store(budget)
		var once sync.Once
		reset := func() {
			once.Do(func() {
				p.resets.Add(1)
				for _, c := range []net.Conn{client, server} {
					_ = c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
			})
		}
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			buf := make([]byte, 4096)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					if budget >= 0 && remaining.Add(-int64(n)) < 0 {
						reset()
						return
					}
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			// a connection picked for a reset that ends before its budget
			// is reset at its end; any other end is passed on as it came
			if budget >= 0 {
				reset()
				return
			}
			if tcp, ok := dst.(*net.TCPConn); ok {
				_ = tcp.CloseWrite()
			}
		}
		p.wg.Add(2)
		go pipe(server, client)
		go pipe(client, server)
	}
}

func TestConcurrentPushesSurviveUpstreamResets(t *testing.T) {
	const (
		pushes    = 50
		layers    = 2
		layerSize = 128 << 10
		attempts  = 6 // remote.Write calls per push, each with its own retries
	)
	nexus, err := standin.Start(standin.Options{InternalLocation: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nexus.Close(); err != nil {
			t.Errorf("closing stand-ins: %v", err)
		}
	})
	proxy := startResetProxy(t, nexus.Hosted.Addr, 0.10, layerSize/2)
	tc := startCaddy(t, caddyOptions{}, map[string]any{"handler": "docker_registry", "pull": proxyTo(proxy.addr())})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	transport := tc.transport(true)
	defer transport.CloseIdleConnections()
	options := []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(transport),
		// ggcr's default retries (1s, 3s, 9s) in fast forward
		remote.WithRetryBackoff(remote.Backoff{Duration: 20 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 4}),
	}

	images := make([]v1.Image, pushes)
	for i := range images {
		if images[i], err = random.Image(layerSize, layers); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	results := make([]error, pushes)
	retried := atomic.Int64{}
	for i := range pushes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref, err := name.ParseReference(fmt.Sprintf("%s/load/app-%d:1.0", tc.registry(), i), name.StrictValidation)
			if err != nil {
				results[i] = err
				return
			}
			// a CI job retries a failed push as a whole
			for attempt := 1; attempt <= attempts; attempt++ {
				if results[i] = remote.Write(ref, images[i], options...); results[i] == nil {
					return
				}
				retried.Add(1)
			}
		}()
	}
	wg.Wait()

	for i, err := range results {
		if err != nil {
			t.Errorf("push %d failed after %d attempts: %v", i, attempts, err)
		}
	}
	t.Logf("%d upstream connections, %d reset, %d whole pushes retried", proxy.accepted.Load(), proxy.resets.Load(), retried.Load())
	if proxy.resets.Load() == 0 {
		t.Fatalf("no upstream connection was reset among %d, want some for the test to mean anything", proxy.accepted.Load())
	}

	// every tag in the hosted stand-in, read directly and not through
	// the proxy, is a complete image whose digests verify
	checkHostedImages(t, ctx, nexus, images)
}

// checkHostedImages reads every tag of every repository in the hosted
// stand-in, layer by layer, and compares the pushed images.
func checkHostedImages(t *testing.T, ctx context.Context, nexus *standin.Nexus, images []v1.Image) {
	t.Helper()
	registry, err := name.NewRegistry(nexus.Hosted.Addr, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	repos, err := remote.Catalog(ctx, registry, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("listing the hosted stand-in: %v", err)
	}
	if len(repos) != len(images) {
		t.Errorf("the hosted stand-in has %d repositories, want %d", len(repos), len(images))
	}
	for _, repo := range repos {
		r, err := name.NewRepository(nexus.Hosted.Addr+"/"+repo, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		tags, err := remote.List(r, remote.WithContext(ctx))
		if err != nil {
			t.Errorf("listing tags of %s: %v", repo, err)
			continue
		}
		for _, tag := range tags {
			img, err := standin.PullImage(ctx, nexus.Hosted.URL, repo, tag)
			if err != nil {
				t.Errorf("%s:%s is no complete image: %v", repo, tag, err)
				continue
			}
			var index int
			if _, err := fmt.Sscanf(repo, "load/app-%d", &index); err != nil || index < 0 || index >= len(images) {
				t.Errorf("unexpected repository %s", repo)
				continue
			}
			got, _ := img.Digest()
			want, _ := images[index].Digest()
			if got != want {
				t.Errorf("%s:%s: digest %s, want the pushed %s", repo, tag, got, want)
			}
		}
	}
}
