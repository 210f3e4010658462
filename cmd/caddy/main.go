// Command caddy is Caddy's standard command with the docker_registry module
// linked in, for development and the quickstart. Production images are
// built with xcaddy instead (see xcaddy.Dockerfile).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// plug in Caddy's standard modules and this one
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddyreg/caddy-docker-registry"
)

func main() {
	caddycmd.Main()
}
