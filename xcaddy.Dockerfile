# Caddy with the docker_registry module, built from this checkout:
#
#   docker build -f xcaddy.Dockerfile -t caddy-docker-registry .
#
# The build context is the repository root.

# The builder image sets CADDY_VERSION to its own tag, so xcaddy builds
# Caddy v2.11.9 without a version argument.
FROM caddy:2.11.9-builder AS builder

WORKDIR /src
COPY . .

# The @v0.0.0 version makes "go get" resolve the module through the local
# replacement alone. Without a version, xcaddy first asks the Go module
# proxy for the module's latest version, which fails for a module that the
# proxy does not serve.
RUN xcaddy build \
	--output /usr/bin/caddy \
	--with github.com/caddyreg/caddy-docker-registry@v0.0.0=.

FROM caddy:2.11.9

COPY --from=builder /usr/bin/caddy /usr/bin/caddy
