package standin

import (
	"errors"
	"fmt"
	"os"
)

// Plain is a single Distribution registry without any Nexus behaviour: no
// group, no token endpoint, no rewritten Location headers and no
// repository-wide blobs. It is the reference registry for tests that
// compare the proxy with the server behind it, such as the OCI
// distribution-spec conformance suite.
type Plain struct {
	*Registry

	tempDir string
}

// StartPlain starts a Distribution registry with in-memory storage on a
// free port of 127.0.0.1. With users, it requires Basic authentication
// through Distribution's htpasswd access controller, and without users it
// accepts anonymous requests. The caller must call Close.
func StartPlain(users map[string]string) (*Plain, error) {
	silenceRegistryLogs()

	p := &Plain{}
	config := distributionConfig{perNameBlobs: true}
	if len(users) > 0 {
		var err error
		p.tempDir, err = os.MkdirTemp("", "standin-htpasswd-")
		if err != nil {
			return nil, fmt.Errorf("standin: create htpasswd directory: %w", err)
		}
		config.htpasswdPath, err = writeHtpasswd(p.tempDir, users)
		if err != nil {
			return nil, errors.Join(err, p.Close())
		}
	}

	registry, err := newDistributionRegistry("plain", config)
	if err != nil {
		return nil, errors.Join(err, p.Close())
	}
	p.Registry = registry
	p.serve()
	return p, nil
}

// Close stops the server, waits for requests in progress and removes the
// temporary htpasswd file. It may be called more than once.
func (p *Plain) Close() error {
	var errs []error
	if p.Registry != nil {
		errs = append(errs, p.Registry.close())
	}
	if p.tempDir != "" {
		errs = append(errs, os.RemoveAll(p.tempDir))
		p.tempDir = ""
	}
	return errors.Join(errs...)
}
