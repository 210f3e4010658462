package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/caddyreg/caddy-docker-registry/test/standin"
)

// The image that the registry holds for the pull and manifest workloads.
const (
	imageRepository = "bench/image"
	imageTag        = "latest"
)

// The registry subprocess runs the same Distribution stand-in as the
// conformance tests (in-memory storage, anonymous access), seeded with
// the benchmark image.
func runRegistry(args []string) error {
	flags := flag.NewFlagSet("registry", flag.ContinueOnError)
	certPath := flags.String("cert", "", "PEM `file` of the TLS certificate")
	keyPath := flags.String("key", "", "PEM `file` of the TLS key")
	layers := flags.Int("layers", 4, "`number` of layers of the seeded image")
	layerSize := flags.Int64("layer-size", 16<<20, "size in `bytes` of each layer of the seeded image")
	if err := flags.Parse(args); err != nil {
		return err
	}
	tlsConfig, err := serverTLSConfig(*certPath, *keyPath)
	if err != nil {
		return err
	}

	registry, err := standin.StartPlain(nil)
	if err != nil {
		return err
	}
	defer registry.Close()

	image, err := benchImage(*layers, *layerSize)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := standin.PushImage(ctx, registry.BaseURL(), imageRepository, imageTag, image); err != nil {
		return fmt.Errorf("seeding the registry: %v", err)
	}

	// the stand-in keeps a copy of every request for tests to inspect;
	// here that list would only grow, so empty it now and then
	go func() {
		for range time.Tick(time.Second) {
			registry.ResetRequests()
		}
	}()

	// the stand-in's own listener served the seeding; the benchmark uses
	// three more listeners in front of the same registry
	return serveOnLoopback(registry, tlsConfig)
}

// benchImage builds the same image on every call: layers of random bytes
// from a fixed seed, so that every push in a run uploads the same blobs and
// the registry's in-memory storage keeps one copy of them.
func benchImage(layers int, layerSize int64) (v1.Image, error) {
	added := make([]v1.Layer, 0, layers)
	for i := range layers {
		data := make([]byte, layerSize)
		source := rand.NewChaCha8([32]byte{byte(i), 'b', 'e', 'n', 'c', 'h'})
		if _, err := source.Read(data); err != nil {
			return nil, err
		}
		added = append(added, static.NewLayer(data, types.DockerLayer))
	}
	return mutate.AppendLayers(empty.Image, added...)
}
