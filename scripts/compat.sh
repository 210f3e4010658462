#!/usr/bin/env bash
# Runs the registry client tests (test/clients) and the OCI
# distribution-spec conformance test (test/conformance), then regenerates
# docs/COMPATIBILITY.md and docs/conformance.md from the results they
# write under results/. The docs are written also when tests fail, so
# that they show the failures; the exit status is the tests'.
#
# Usage: scripts/compat.sh   (as root, because the Docker test starts its
# own dockerd; needs Go and the Debian packages docker.io, podman and
# skopeo, which .ci/run installs)
set -euo pipefail
cd "$(dirname "$0")/.."

# results of an earlier run must not end up in the docs
rm -rf results/clients results/conformance

status=0
(cd test && go test -count=1 -timeout 15m ./clients ./conformance) || status=$?

(cd test && go run ./clients/cmd/compatdoc -root ..)
echo "compat: wrote docs/COMPATIBILITY.md and docs/conformance.md"

if [ "$status" -ne 0 ]; then
	echo "compat: the tests failed (exit status $status); the docs show which operations failed" >&2
fi
exit "$status"
