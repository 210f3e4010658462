#!/usr/bin/env bash
# Runs the benchmark of BENCHMARKS.md: builds Caddy with the module and
# the benchmark command, then runs every contender and workload.
#
#   bench/run.sh            full run (about 30 minutes); writes
#                           results/bench/<time>/, docs/bench/ratios.png
#                           and the generated section of BENCHMARKS.md
#   bench/run.sh -quick     a check of the setup in under 5 minutes; writes
#                           only results/bench/<time>/
#
# Further flags go to "bench run"; see "bench/run.sh -h".
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(mktemp -d "${TMPDIR:-/tmp}/caddy-registry-bench-bin.XXXXXX")
trap 'rm -rf "$bin"' EXIT

cd "$root"
# Built with the flags that xcaddy uses for the binaries users run, so
# without the symbol table and DWARF data (82 MB becomes 58 MB). Profiles
# still name every function.
go build -trimpath -ldflags "-w -s" -o "$bin/caddy" ./cmd/caddy
(cd test && go build -o "$bin/bench" ./cmd/bench)

publish=(-chart docs/bench/ratios.png -doc BENCHMARKS.md)
for arg in "$@"; do
	case "$arg" in
	-quick | --quick | -quick=true | -workloads* | -contenders* | -protos*)
		# partial runs never overwrite the published figures
		publish=()
		;;
	esac
done

"$bin/bench" run -caddy "$bin/caddy" -out results/bench "${publish[@]}" "$@"
