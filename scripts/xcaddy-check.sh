#!/bin/sh
# Builds Caddy with this module through xcaddy, the way users and
# xcaddy.Dockerfile build it, and checks that the binary lists the
# http.handlers.docker_registry module. Exits non-zero on any failure.
#
# Usage: scripts/xcaddy-check.sh   (from anywhere; needs Go and network
# access to the Go module proxy)
set -eu

XCADDY_VERSION=v0.4.5
CADDY_VERSION=v2.11.9
MODULE=github.com/caddyreg/caddy-docker-registry
MODULE_ID=http.handlers.docker_registry

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

GOBIN="$work/bin" go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$XCADDY_VERSION"

# @v0.0.0 makes go get use the local replacement instead of asking the
# module proxy for a module that is not published
cd "$work"
"$work/bin/xcaddy" build "$CADDY_VERSION" \
	--output "$work/caddy" \
	--with "$MODULE@v0.0.0=$repo"

if ! "$work/caddy" list-modules | grep -qx "$MODULE_ID"; then
	echo "xcaddy-check: $MODULE_ID is missing from the list-modules output of the built binary" >&2
	exit 1
fi
echo "xcaddy-check: $MODULE_ID is present in Caddy $CADDY_VERSION built with xcaddy $XCADDY_VERSION"
