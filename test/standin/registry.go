package standin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/sirupsen/logrus"

	// Registered by import: the htpasswd access controller and the
	// in-memory storage driver that every stand-in uses.
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

// shutdownTimeout bounds how long Close waits for requests in progress
// before it drops their connections.
const shutdownTimeout = 5 * time.Second

// Registry is one running stand-in server.
type Registry struct {
	// Name is "hosted", "hub" or "group".
	Name string
	// Addr is the listen address, "127.0.0.1:<port>".
	Addr string
	// URL is "http://" + Addr. It never contains PathPrefix.
	URL string
	// PathPrefix is the path under which the registry API is served, such
	// as "/repository/docker-hosted", or "" for the root.
	PathPrefix string

	// backend serves the registry API: a Distribution app or the group.
	backend http.Handler
	// app is the Distribution app behind Hosted and Hub, nil for Group.
	app   *handlers.App
	front frontConfig
	log   requestLog

	listener  net.Listener
	server    *http.Server
	served    chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// frontConfig is the Nexus behaviour a Registry applies before its
// backend receives a request.
type frontConfig struct {
	// authorize writes an error response and returns false when the request
	// must not reach the backend. Nil lets every request through.
	authorize func(w http.ResponseWriter, r *http.Request) bool
	// tokens serves GET /v2/token when it is not nil.
	tokens           *tokenService
	internalLocation bool
}

// BaseURL returns URL followed by PathPrefix: the base that the registry
// API paths /v2/... are appended to.
func (r *Registry) BaseURL() string {
	return r.URL + r.PathPrefix
}

// Requests returns a copy of every request the stand-in received, in
// arrival order. Requests that Group forwards to its members in-process are
// not recorded by the members.
func (r *Registry) Requests() []RecordedRequest {
	return r.log.snapshot()
}

// ResetRequests deletes the recorded requests.
func (r *Registry) ResetRequests() {
	r.log.reset()
}

// ServeHTTP records the request, then applies the Nexus behaviour in front
// of the backend: location rewriting, the token endpoint, the path prefix
// and authentication, in that order.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.log.add(req)

	if r.front.internalLocation {
		w = &locationWriter{ResponseWriter: w, origin: "http://" + r.Addr, request: req}
	}
	if r.front.tokens != nil && req.URL.Path == tokenPath {
		r.front.tokens.serveToken(w, req)
		return
	}
	if !r.servesPath(req.URL.Path) {
		http.NotFound(w, req)
		return
	}
	if r.front.authorize != nil && !r.front.authorize(w, req) {
		return
	}
	r.backend.ServeHTTP(w, req)
}

// servesPath reports whether path is inside the registry API under
// PathPrefix.
func (r *Registry) servesPath(path string) bool {
	rest, ok := strings.CutPrefix(path, r.PathPrefix)
	return ok && (rest == "/v2" || strings.HasPrefix(rest, "/v2/"))
}

// newRegistry listens on a free loopback port. It does not serve until
// serve is called, so the caller can finish the configuration first.
func newRegistry(name string, port int, prefix string, backend http.Handler) (*Registry, error) {
	listener, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("standin: listen for %s registry: %w", name, err)
	}
	addr := listener.Addr().String()
	return &Registry{
		Name:       name,
		Addr:       addr,
		URL:        "http://" + addr,
		PathPrefix: prefix,
		backend:    backend,
		listener:   listener,
	}, nil
}

func (r *Registry) serve() {
	r.server = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	r.served = make(chan struct{})
	go func() {
		defer close(r.served)
		// Serve returns http.ErrServerClosed after Shutdown, which is the
		// normal way out.
		_ = r.server.Serve(r.listener)
	}()
}

// close stops the server and the Distribution app.
//
// NOTE: Distribution v3.1.2 starts one notification broadcaster goroutine
// per app (go-events Broadcaster.run) and App.Shutdown does not stop it, so
// each Hosted and Hub leaves that idle goroutine behind.
func (r *Registry) close() error {
	r.closeOnce.Do(func() {
		r.closeErr = r.stopServer()
		if r.app != nil {
			r.closeErr = errors.Join(r.closeErr, r.app.Shutdown())
		}
	})
	return r.closeErr
}

func (r *Registry) stopServer() error {
	if r.server == nil {
		return r.listener.Close()
	}

	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := r.server.Shutdown(ctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("standin: shut down %s registry: %w", r.Name, err), r.server.Close())
	}
	<-r.served
	return err
}

// distributionConfig is the part of a Distribution configuration that
// differs between the stand-ins.
type distributionConfig struct {
	port   int // 0 picks a free port
	prefix string
	// htpasswdPath turns on Distribution's htpasswd access controller.
	htpasswdPath string
	// perNameBlobs leaves out the repository-wide blob middleware, so the
	// registry keeps Distribution's own rule that a blob belongs to the
	// image names it was pushed or mounted to.
	perNameBlobs bool
}

// newDistributionRegistry creates a Distribution registry with in-memory
// storage behind a Registry front.
func newDistributionRegistry(name string, c distributionConfig) (*Registry, error) {
	config, err := c.build()
	if err != nil {
		return nil, err
	}
	app := handlers.NewApp(context.Background(), config)

	r, err := newRegistry(name, c.port, c.prefix, app)
	if err != nil {
		return nil, errors.Join(err, app.Shutdown())
	}
	r.app = app
	return r, nil
}

// maxCatalogEntries is the largest catalog page a stand-in returns.
const maxCatalogEntries = 1000

// basicRealm is the realm Nexus names in its Basic challenges.
const basicRealm = "Sonatype Nexus Repository Manager"

func (c distributionConfig) build() (*configuration.Configuration, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("standin: generate upload secret: %w", err)
	}

	config := &configuration.Configuration{}
	config.Storage = configuration.Storage{
		"inmemory": configuration.Parameters{},
		"delete":   configuration.Parameters{"enabled": true},
		// The purger would start a goroutine that sleeps for hours, and
		// in-memory uploads vanish with the registry anyway.
		"maintenance": configuration.Parameters{
			"uploadpurging": map[any]any{"enabled": false},
		},
	}
	// A fixed secret keeps Distribution from logging a warning about a
	// generated one.
	config.HTTP.Secret = hex.EncodeToString(secret)
	// Without a maximum, Distribution returns an empty list for every
	// catalog request.
	config.Catalog.MaxEntries = maxCatalogEntries
	if c.prefix != "" {
		config.HTTP.Prefix = c.prefix + "/"
	}
	if c.htpasswdPath != "" {
		config.Auth = configuration.Auth{
			"htpasswd": configuration.Parameters{"realm": basicRealm, "path": c.htpasswdPath},
		}
	}
	if c.perNameBlobs {
		return config, nil
	}
	middleware, err := registerRepositoryBlobs()
	if err != nil {
		return nil, err
	}
	config.Middleware = map[string][]configuration.Middleware{
		"registry": {{Name: middleware}},
	}
	return config, nil
}

var silenceOnce sync.Once

// silenceRegistryLogs discards the output of logrus's standard logger,
// which Distribution logs every request and error to. This affects the
// whole process, which is acceptable in tests and the quickstart.
func silenceRegistryLogs() {
	silenceOnce.Do(func() {
		logrus.SetLevel(logrus.ErrorLevel)
		logrus.SetOutput(io.Discard)
	})
}
