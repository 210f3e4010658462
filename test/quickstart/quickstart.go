// Package quickstart runs the module in front of stand-ins for a Nexus
// group and hosted repository, all in one process, so that a registry
// client can push and pull through it on a machine with only Go.
package quickstart

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/caddyreg/caddy-docker-registry/test/caddyrun"
	"github.com/caddyreg/caddy-docker-registry/test/standin"
)

//go:embed Caddyfile
var caddyfile []byte

// Config chooses ports, the data directory and the stand-in user.
type Config struct {
	Port         int    // HTTPS port of the one-hostname endpoint
	ReadOnlyPort int    // HTTPS port of the read-only group endpoint
	AdminAddr    string // Caddy's admin API, host:port on loopback
	DataDir      string // Caddy's storage: the internal CA and certificates
	Ports        standin.Ports
	User         string
	Password     string
}

// DefaultConfig is what the quickstart command uses without flags.
func DefaultConfig() Config {
	return Config{
		Port:         8443,
		ReadOnlyPort: 8444,
		AdminAddr:    "127.0.0.1:2019",
		DataDir:      "quickstart-data",
		Ports:        standin.Ports{Group: 5082, Hosted: 5083, Hub: 5090},
		User:         "admin",
		Password:     "admin123",
	}
}

// BaseImage is the image that the group's Docker Hub member holds from the
// start, so that a pushed image can build on layers the hosted repository
// does not have.
const (
	BaseRepository = "library/base"
	BaseTag        = "1.0"
)

// Env is a running quickstart.
type Env struct {
	Config Config
	Nexus  *standin.Nexus
	// RootCert is the path of the internal CA's root certificate, which
	// clients must trust.
	RootCert string
}

// Start starts the stand-ins, seeds the base image and loads the
// embedded Caddyfile. Stop ends everything.
func Start(ctx context.Context, cfg Config) (*Env, error) {
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = dataDir

	nexus, err := standin.Start(standin.Options{
		Auth:  standin.AuthNexusBearer,
		Users: map[string]string{cfg.User: cfg.Password},
		Ports: cfg.Ports,
	})
	if err != nil {
		return nil, err
	}
	env := &Env{Config: cfg, Nexus: nexus, RootCert: caddyrun.RootCertPath(dataDir)}

	if _, err := nexus.SeedBaseImage(ctx, BaseRepository, BaseTag, 2); err != nil {
		return nil, errors.Join(fmt.Errorf("seeding the base image: %w", err), nexus.Close())
	}
	if err := env.loadCaddy(ctx); err != nil {
		return nil, errors.Join(err, nexus.Close())
	}
	return env, nil
}

func (env *Env) loadCaddy(ctx context.Context) error {
	cfg := env.Config
	for name, value := range map[string]string{
		"QUICKSTART_ADMIN":         cfg.AdminAddr,
		"QUICKSTART_DATA":          cfg.DataDir,
		"QUICKSTART_PORT":          strconv.Itoa(cfg.Port),
		"QUICKSTART_READONLY_PORT": strconv.Itoa(cfg.ReadOnlyPort),
		"QUICKSTART_GROUP":         env.Nexus.Group.Addr,
		"QUICKSTART_HOSTED":        env.Nexus.Hosted.Addr,
	} {
		// the Caddyfile adapter reads {$NAME} from the environment
		if err := os.Setenv(name, value); err != nil {
			return err
		}
	}
	json, err := caddyrun.Adapt(caddyfile)
	if err != nil {
		return err
	}
	if err := caddyrun.Load(json); err != nil {
		return fmt.Errorf("starting Caddy: %w", err)
	}

	roots, err := caddyrun.RootCAs(cfg.DataDir)
	if err != nil {
		return errors.Join(err, caddyrun.Stop())
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, port := range []int{cfg.Port, cfg.ReadOnlyPort} {
		if err := caddyrun.WaitForTLS(waitCtx, "127.0.0.1:"+strconv.Itoa(port), "localhost", roots); err != nil {
			return errors.Join(err, caddyrun.Stop())
		}
	}
	return nil
}

// Stop stops Caddy and the stand-ins.
func (env *Env) Stop() error {
	return errors.Join(caddyrun.Stop(), env.Nexus.Close())
}
