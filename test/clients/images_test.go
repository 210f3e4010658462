package clients

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/caddyreg/caddy-docker-registry/test/standin"
)

// layerSize is the size in bytes of each random layer. Random bytes do not
// compress, so every layer blob is about this large.
const layerSize = 64 << 10

// refNameAnnotation names an entry of an OCI layout, as in oci:<dir>:<name>.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// mediaTypes selects the manifest, config and layer media types of a built
// image.
type mediaTypes int

const (
	dockerMediaTypes mediaTypes = iota
	ociMediaTypes
)

// buildImage returns an image of three layers with random content for
// linux/<arch>. Each call returns different content.
func buildImage(t *testing.T, arch string, kind mediaTypes) v1.Image {
	t.Helper()
	base, layerType := empty.Image, types.DockerLayer
	if kind == ociMediaTypes {
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		layerType = types.OCILayer
	}
	var additions []mutate.Addendum
	for i := range 3 {
		layer, err := random.Layer(layerSize, layerType)
		if err != nil {
			t.Fatalf("building random layer %d: %v", i, err)
		}
		additions = append(additions, mutate.Addendum{
			Layer:   layer,
			History: v1.History{CreatedBy: fmt.Sprintf("random layer %d", i+1)},
		})
	}
	image, err := mutate.Append(base, additions...)
	if err != nil {
		t.Fatalf("building image: %v", err)
	}
	return withPlatform(t, image, arch)
}

// withPlatform sets the OS and architecture in the image config, which
// docker load and the platform selection of every client read.
func withPlatform(t *testing.T, image v1.Image, arch string) v1.Image {
	t.Helper()
	config, err := image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	config = config.DeepCopy()
	config.OS, config.Architecture = "linux", arch
	image, err = mutate.ConfigFile(image, config)
	if err != nil {
		t.Fatalf("setting the platform: %v", err)
	}
	return image
}

// buildIndex returns an OCI image index of two new images, linux/amd64 and
// linux/arm64, and the images by architecture.
func buildIndex(t *testing.T) (v1.ImageIndex, map[string]v1.Image) {
	t.Helper()
	images := map[string]v1.Image{}
	index := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64"} {
		images[arch] = buildImage(t, arch, ociMediaTypes)
		index = mutate.AppendManifests(index, mutate.IndexAddendum{
			Add:        images[arch],
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	return index, images
}

// seedBase pushes a new two-layer base image for one client to the group's
// Docker Hub member as library/base-<client>:1.0 and returns it with its
// repository name. A base of its own keeps the layers of one client's
// pushes from making another client's base layers known to the hosted
// repository.
func seedBase(t *testing.T, client string) (v1.Image, string) {
	t.Helper()
	repository := baseRepository + "-" + client
	base, err := env.bearer.SeedBaseImage(t.Context(), repository, baseTag, 2, standin.WithLayerSize(layerSize))
	if err != nil {
		t.Fatal(err)
	}
	return base, repository
}

// imageOnBase returns base with one more random layer.
func imageOnBase(t *testing.T, base v1.Image) v1.Image {
	t.Helper()
	image, err := standin.ImageOnBase(base, 1, standin.WithLayerSize(layerSize))
	if err != nil {
		t.Fatal(err)
	}
	return image
}

// checkOnlyInHub fails the test unless the group has every layer of base
// and the hosted stand-in has none of them. That is the situation in which
// a client that asks the group whether a layer exists skips its upload, and
// the hosted repository then rejects the manifest with
// MANIFEST_BLOB_UNKNOWN.
func checkOnlyInHub(t *testing.T, n *standin.Nexus, base v1.Image) {
	t.Helper()
	for _, digest := range layerDigests(t, base) {
		if !hasBlob(t, n.Group, digest) {
			t.Fatalf("the group stand-in does not have base layer %s", digest)
		}
		if hasBlob(t, n.Hosted, digest) {
			t.Fatalf("the hosted stand-in already has base layer %s, so the push would not depend on the module's routing", digest)
		}
	}
}

// noteBaseLayerChecks records whether the client asked, with HEAD through
// the module, whether the base layers exist in the target repository,
// using the requests that the hosted stand-in received from index first
// on. Only such a client depends on the module sending those requests to
// the push target. The others mount or upload the layers without asking.
func noteBaseLayerChecks(t *testing.T, client *ClientResult, first int, base v1.Image, repository string) {
	t.Helper()
	headRequests := 0
	for _, r := range env.bearer.Hosted.Requests()[first:] {
		if r.Method != http.MethodHead || !strings.HasPrefix(r.Path, "/v2/"+repository+"/blobs/") {
			continue
		}
		if slices.ContainsFunc(layerDigests(t, base), func(d v1.Hash) bool { return strings.HasSuffix(r.Path, "/"+d.String()) }) {
			headRequests++
		}
	}
	if headRequests == 0 {
		matrix.note(client, "To push an image on base layers pulled from another repository, the client asks about them in that "+
			"repository, tries to mount them from there and uploads them when the mount fails. It never asks the target "+
			"repository, so its push does not depend on `blob_head push`.")
	}
	t.Logf("%s sent %d HEAD requests for base layers in %s", client.Name, headRequests, repository)
}

// hasBlob sends HEAD for a blob to a stand-in directly and reports whether
// the blob exists. The stand-ins find a blob under any repository name, as
// Nexus does, so the name in the request does not matter.
func hasBlob(t *testing.T, r *standin.Registry, digest v1.Hash) bool {
	t.Helper()
	repository, err := name.NewRepository(r.Addr+"/probe", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}

	base := http.DefaultTransport.(*http.Transport).Clone()
	base.Proxy = nil
	defer base.CloseIdleConnections()
	roundTripper, err := transport.NewWithContext(t.Context(), repository.Registry,
		&authn.Basic{Username: testUser, Password: testPassword}, base, []string{repository.Scope(transport.PullScope)})
	if err != nil {
		t.Fatalf("authenticating to the %s stand-in: %v", r.Name, err)
	}

	request, err := http.NewRequestWithContext(t.Context(), http.MethodHead, r.URL+"/v2/probe/blobs/"+digest.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	response, err := (&http.Client{Transport: roundTripper}).Do(request)
	if err != nil {
		t.Fatalf("HEAD blob %s on the %s stand-in: %v", digest, r.Name, err)
	}
	response.Body.Close()

	switch response.StatusCode {
	case http.StatusOK:
		return true
	case http.StatusNotFound:
		return false
	}
	t.Fatalf("HEAD blob %s on the %s stand-in: got status %d, want 200 or 404", digest, r.Name, response.StatusCode)
	return false
}

// writeDockerArchive writes the image as a docker save tarball tagged ref,
// for docker load, podman load and the docker-archive: transport.
func writeDockerArchive(t *testing.T, image v1.Image, ref string) string {
	t.Helper()
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		t.Fatalf("invalid tag %q: %v", ref, err)
	}
	path := filepath.Join(t.TempDir(), "image.tar")
	if err := tarball.WriteToFile(path, tag, image); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	return path
}

// writeLayout writes an image or an index as the only entry of a new OCI
// image layout, under the reference name refName, and returns the layout
// directory.
func writeLayout(t *testing.T, content any, refName string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	path, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatalf("creating the OCI layout: %v", err)
	}
	annotations := layout.WithAnnotations(map[string]string{refNameAnnotation: refName})
	switch c := content.(type) {
	case v1.Image:
		err = path.AppendImage(c, annotations)
	case v1.ImageIndex:
		err = path.AppendIndex(c, annotations)
	default:
		t.Fatalf("writeLayout: got %T, want an image or an index", content)
	}
	if err != nil {
		t.Fatalf("writing the OCI layout: %v", err)
	}
	return dir
}

// writeDirImage writes an image in the layout of containers/image's dir:
// transport: manifest.json, a version file, and each blob in a file named
// after its sha256 hex digest. Unlike docker-archive:, which skopeo
// decompresses and compresses again, dir: keeps the compressed blobs and
// so their digests.
func writeDirImage(t *testing.T, image v1.Image) string {
	t.Helper()
	dir := mkdir(t, filepath.Join(t.TempDir(), "dir"))
	writeFile(t, filepath.Join(dir, "version"), "Directory Transport Version: 1.1\n")
	manifest, err := image.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "manifest.json"), string(manifest))

	config, err := image.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, configDigest(t, image).Hex), string(config))

	layers, err := image.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, layer := range layers {
		digest, err := layer.Digest()
		if err != nil {
			t.Fatal(err)
		}
		reader, err := layer.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		content, err := io.ReadAll(reader)
		reader.Close()
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, digest.Hex), string(content))
	}
	return dir
}

// layoutEntry returns the descriptor of the only entry of an OCI layout.
func layoutEntry(t *testing.T, dir string) v1.Descriptor {
	t.Helper()
	index, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("reading the OCI layout %s: %v", dir, err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		t.Fatalf("reading index.json of %s: %v", dir, err)
	}
	if len(manifest.Manifests) != 1 {
		t.Fatalf("OCI layout %s: got %d entries, want 1", dir, len(manifest.Manifests))
	}
	return manifest.Manifests[0]
}

// readImage reads every layer so that go-containerregistry verifies each
// blob against its digest.
func readImage(image v1.Image) error {
	if _, err := image.RawConfigFile(); err != nil {
		return err
	}
	layers, err := image.Layers()
	if err != nil {
		return err
	}
	for _, layer := range layers {
		reader, err := layer.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, reader)
		if closeErr := reader.Close(); err == nil {
			err = closeErr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func digestOf(t *testing.T, content interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	digest, err := content.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest
}

func configDigest(t *testing.T, image v1.Image) v1.Hash {
	t.Helper()
	digest, err := image.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return digest
}

// diffIDs returns the digests of the uncompressed layers, which stay the
// same when a client compresses the layers again.
func diffIDs(t *testing.T, image v1.Image) []v1.Hash {
	t.Helper()
	config, err := image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return config.RootFS.DiffIDs
}

// layerDigests returns the digests of the compressed layers.
func layerDigests(t *testing.T, image v1.Image) []v1.Hash {
	t.Helper()
	manifest, err := image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var digests []v1.Hash
	for _, layer := range manifest.Layers {
		digests = append(digests, layer.Digest)
	}
	return digests
}

// checkSameContent checks that a stored image has the config and layer
// content of the local one, whatever compression the client chose.
func checkSameContent(t *testing.T, stored, local v1.Image) {
	t.Helper()
	if got, want := configDigest(t, stored), configDigest(t, local); got != want {
		t.Errorf("config digest: got %s, want %s", got, want)
	}
	if got, want := diffIDs(t, stored), diffIDs(t, local); !slices.Equal(got, want) {
		t.Errorf("layer diff IDs: got %v, want %v", got, want)
	}
}

// indexChildren returns the child manifest digests of an index by
// architecture.
func indexChildren(t *testing.T, index v1.ImageIndex) map[string]v1.Hash {
	t.Helper()
	manifest, err := index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	children := map[string]v1.Hash{}
	for _, child := range manifest.Manifests {
		if child.Platform == nil {
			t.Fatalf("index child %s has no platform", child.Digest)
		}
		children[child.Platform.Architecture] = child.Digest
	}
	return children
}
