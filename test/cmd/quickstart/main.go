// Command quickstart starts Caddy with the docker_registry module at
// https://localhost:8443 in front of stand-ins for a Nexus group and
// hosted repository, prints how a client trusts it and logs in, and runs
// until interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/caddyreg/caddy-docker-registry/test/quickstart"
)

func main() {
	cfg := quickstart.DefaultConfig()
	flag.IntVar(&cfg.Port, "port", cfg.Port, "HTTPS `port` of the endpoint that pulls from the group and pushes to the hosted repository")
	flag.IntVar(&cfg.ReadOnlyPort, "readonly-port", cfg.ReadOnlyPort, "HTTPS `port` of the read-only group endpoint")
	flag.StringVar(&cfg.AdminAddr, "admin", cfg.AdminAddr, "`address` of Caddy's admin API")
	flag.StringVar(&cfg.DataDir, "data", cfg.DataDir, "`directory` for Caddy's internal CA and certificates")
	flag.IntVar(&cfg.Ports.Group, "group-port", cfg.Ports.Group, "loopback `port` of the group stand-in")
	flag.IntVar(&cfg.Ports.Hosted, "hosted-port", cfg.Ports.Hosted, "loopback `port` of the hosted stand-in")
	flag.IntVar(&cfg.Ports.Hub, "hub-port", cfg.Ports.Hub, "loopback `port` of the Docker Hub member stand-in")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	env, err := quickstart.Start(ctx, cfg)
	if err != nil {
		log.Fatalf("quickstart: %v", err)
	}
	printGuide(env)

	<-ctx.Done()
	if err := env.Stop(); err != nil {
		log.Fatalf("quickstart: stopping: %v", err)
	}
}

func printGuide(env *quickstart.Env) {
	cfg := env.Config
	fmt.Printf(`
The quickstart is running. Press Ctrl+C to stop it.

  https://localhost:%d   pulls from the group, pushes to the hosted repository
  https://localhost:%d   the group alone, read-only
  user %q, password %q

Stand-ins (plain HTTP, loopback only):
  group   http://%s   (hosted + Docker Hub member, read-only)
  hosted  http://%s
  hub     http://%s   (holds %s:%s)

Caddy's internal CA root certificate:
  %s

Trust it and log in with crane:
  export SSL_CERT_FILE=%s
  crane auth login localhost:%d -u %s -p %s
`, cfg.Port, cfg.ReadOnlyPort, cfg.User, cfg.Password,
		env.Nexus.Group.Addr, env.Nexus.Hosted.Addr, env.Nexus.Hub.Addr,
		quickstart.BaseRepository, quickstart.BaseTag,
		env.RootCert, env.RootCert, cfg.Port, cfg.User, cfg.Password)
}
