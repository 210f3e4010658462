#!/usr/bin/env bash
# Runs every test of the project: the module's own tests at the root, the
# end-to-end tests and stand-ins of the nested test module, and a check
# that xcaddy builds a Caddy binary containing the module.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== module tests"
go vet ./...
go test -count=1 ./...

echo "== end-to-end tests (nested module test/)"
(cd test && go vet ./... && go test -count=1 -timeout 30m ./...)

echo "== xcaddy build"
scripts/xcaddy-check.sh
