package standin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"

	"github.com/distribution/distribution/v3"
	registrymiddleware "github.com/distribution/distribution/v3/registry/middleware/registry"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// repositoryBlobsMiddleware is the name under which the repository-wide
// blob behaviour is registered with Distribution.
const repositoryBlobsMiddleware = "standin-repository-wide-blobs"

var (
	registerBlobsOnce sync.Once
	registerBlobsErr  error
)

// registerRepositoryBlobs registers the registry middleware once per
// process and returns its name for the configuration.
func registerRepositoryBlobs() (string, error) {
	registerBlobsOnce.Do(func() {
		registerBlobsErr = registrymiddleware.Register(repositoryBlobsMiddleware, newRepositoryBlobs)
	})
	if registerBlobsErr != nil {
		return "", fmt.Errorf("standin: register registry middleware: %w", registerBlobsErr)
	}
	return repositoryBlobsMiddleware, nil
}

// repositoryBlobs makes one Distribution registry behave like one Nexus
// Docker repository, which stores each blob once per repository and not
// per image name:
//
//   - GET and HEAD /v2/<name>/blobs/<digest> succeed when any image name in
//     the registry has the blob, which is how a Nexus group returns 200 for
//     a base layer that only its Docker Hub member holds under
//     library/alpine.
//   - A manifest PUT accepts blobs that were pushed under another image
//     name of the same registry. Distribution itself checks only the
//     manifest's own image name, so the blobs are mounted first.
//
// NOTE: this models Nexus 3 as the proxy module relies on it. It was not
// checked against a particular Nexus release.
//
// Image names are learned from requests, so a name counts once any request
// has touched it since Start. That covers everything pushed through HTTP,
// which is the only way into the in-memory storage.
type repositoryBlobs struct {
	distribution.Namespace

	mu    sync.Mutex
	names map[string]reference.Named
}

func newRepositoryBlobs(_ context.Context, namespace distribution.Namespace, _ storagedriver.StorageDriver, _ map[string]any) (distribution.Namespace, error) {
	return &repositoryBlobs{Namespace: namespace, names: map[string]reference.Named{}}, nil
}

// Repository returns the named repository with repository-wide blob reads
// and manifest writes.
func (ns *repositoryBlobs) Repository(ctx context.Context, name reference.Named) (distribution.Repository, error) {
	repository, err := ns.Namespace.Repository(ctx, name)
	if err != nil {
		return nil, err
	}
	ns.mu.Lock()
	ns.names[name.Name()] = name
	ns.mu.Unlock()
	return &sharedBlobRepository{Repository: repository, namespace: ns}, nil
}

// findBlob returns another image name that has the blob, and that name's
// blob store. It returns ok false when no other name has it.
func (ns *repositoryBlobs) findBlob(ctx context.Context, dgst digest.Digest, except string) (name reference.Named, blobs distribution.BlobStore, ok bool) {
	ns.mu.Lock()
	candidates := make([]reference.Named, 0, len(ns.names))
	for key, named := range ns.names {
		if key != except {
			candidates = append(candidates, named)
		}
	}
	ns.mu.Unlock()
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].Name() < candidates[j].Name() })

	for _, candidate := range candidates {
		repository, err := ns.Namespace.Repository(ctx, candidate)
		if err != nil {
			continue
		}
		store := repository.Blobs(ctx)
		if _, err := store.Stat(ctx, dgst); err == nil {
			return candidate, store, true
		}
	}
	return nil, nil, false
}

type sharedBlobRepository struct {
	distribution.Repository
	namespace *repositoryBlobs
}

// Blobs returns the repository's blob store with reads that fall back to
// the other image names.
func (r *sharedBlobRepository) Blobs(ctx context.Context) distribution.BlobStore {
	return &sharedBlobStore{BlobStore: r.Repository.Blobs(ctx), repository: r}
}

// Manifests returns the repository's manifest service with a Put that
// first mounts blobs held under other image names.
func (r *sharedBlobRepository) Manifests(ctx context.Context, options ...distribution.ManifestServiceOption) (distribution.ManifestService, error) {
	manifests, err := r.Repository.Manifests(ctx, options...)
	if err != nil {
		return nil, err
	}
	return &mountingManifestService{ManifestService: manifests, repository: r}, nil
}

// mountFromSibling links dgst into this image name when only another name
// has it. A blob that no name has is left for Distribution's manifest
// validation to reject with MANIFEST_BLOB_UNKNOWN.
func (r *sharedBlobRepository) mountFromSibling(ctx context.Context, dgst digest.Digest) error {
	own := r.Repository.Blobs(ctx)
	if _, err := own.Stat(ctx, dgst); err == nil {
		return nil
	}
	source, _, ok := r.namespace.findBlob(ctx, dgst, r.Named().Name())
	if !ok {
		return nil
	}
	canonical, err := reference.WithDigest(source, dgst)
	if err != nil {
		return err
	}

	writer, err := own.Create(ctx, storage.WithMountFrom(canonical))
	var mounted distribution.ErrBlobMounted
	if errors.As(err, &mounted) {
		return nil
	}
	if writer != nil {
		// Distribution starts a normal upload when the mount fails.
		_ = writer.Cancel(ctx)
	}
	if err == nil {
		err = fmt.Errorf("mount of %s from %s did not happen", dgst, source.Name())
	}
	return fmt.Errorf("standin: link blob %s into %s: %w", dgst, r.Named().Name(), err)
}

type mountingManifestService struct {
	distribution.ManifestService
	repository *sharedBlobRepository
}

// Put mounts the manifest's blobs that other image names hold, then stores
// the manifest with Distribution's validation.
func (m *mountingManifestService) Put(ctx context.Context, manifest distribution.Manifest, options ...distribution.ManifestServiceOption) (digest.Digest, error) {
	for _, descriptor := range manifest.References() {
		if err := m.repository.mountFromSibling(ctx, descriptor.Digest); err != nil {
			return "", err
		}
	}
	return m.ManifestService.Put(ctx, manifest, options...)
}

// sharedBlobStore serves reads of blobs that this image name lacks from
// another image name of the same registry.
type sharedBlobStore struct {
	distribution.BlobStore
	repository *sharedBlobRepository
}

func (s *sharedBlobStore) fallback(ctx context.Context, err error, dgst digest.Digest) (distribution.BlobStore, bool) {
	if !errors.Is(err, distribution.ErrBlobUnknown) {
		return nil, false
	}
	_, store, ok := s.repository.namespace.findBlob(ctx, dgst, s.repository.Named().Name())
	return store, ok
}

// Stat describes the blob, looking in other image names when this one
// lacks it.
func (s *sharedBlobStore) Stat(ctx context.Context, dgst digest.Digest) (distribution.Descriptor, error) {
	descriptor, err := s.BlobStore.Stat(ctx, dgst)
	if other, ok := s.fallback(ctx, err, dgst); ok {
		return other.Stat(ctx, dgst)
	}
	return descriptor, err
}

// Get returns the blob content, looking in other image names when this one
// lacks it.
func (s *sharedBlobStore) Get(ctx context.Context, dgst digest.Digest) ([]byte, error) {
	content, err := s.BlobStore.Get(ctx, dgst)
	if other, ok := s.fallback(ctx, err, dgst); ok {
		return other.Get(ctx, dgst)
	}
	return content, err
}

// Open opens the blob, looking in other image names when this one lacks
// it.
func (s *sharedBlobStore) Open(ctx context.Context, dgst digest.Digest) (io.ReadSeekCloser, error) {
	reader, err := s.BlobStore.Open(ctx, dgst)
	if other, ok := s.fallback(ctx, err, dgst); ok {
		return other.Open(ctx, dgst)
	}
	return reader, err
}

// ServeBlob writes the blob to w, looking in other image names when this
// one lacks it.
func (s *sharedBlobStore) ServeBlob(ctx context.Context, w http.ResponseWriter, r *http.Request, dgst digest.Digest) error {
	// Stat first, because ServeBlob may have written an error response
	// by the time it returns ErrBlobUnknown.
	if _, err := s.BlobStore.Stat(ctx, dgst); err != nil {
		if other, ok := s.fallback(ctx, err, dgst); ok {
			return other.ServeBlob(ctx, w, r, dgst)
		}
	}
	return s.BlobStore.ServeBlob(ctx, w, r, dgst)
}
