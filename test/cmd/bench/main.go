// Command bench measures the docker_registry module against the upstream
// alone, nginx and stock Caddy on one machine, in one run.
//
// The same binary plays every role, each in its own process so that the
// CPU time and resident memory of each can be read from /proc:
//
//	bench run [flags]   the orchestrator: starts everything, runs the
//	                    rounds, writes results/bench/ and the chart
//	bench upstream      the fast blob upstream (internal)
//	bench registry      the Distribution registry stand-in (internal)
//	bench client        the load generator for one measurement (internal)
//	bench chart         draws the ratio chart again from a summary.json
//	bench report        writes the tables again from a summary.json
//
// bench/run.sh at the repository root builds the binaries and calls
// "bench run"; see BENCHMARKS.md for what is measured and why.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench run|upstream|registry|client|chart|report [flags]; see BENCHMARKS.md")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runOrchestrator(os.Args[2:])
	case "upstream":
		err = runUpstream(os.Args[2:])
	case "registry":
		err = runRegistry(os.Args[2:])
	case "client":
		err = runClient(os.Args[2:])
	case "chart":
		err = runChart(os.Args[2:])
	case "report":
		err = runReportCommand(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q; want run, upstream, registry, client, chart or report", os.Args[1])
	}
	if errors.Is(err, flag.ErrHelp) {
		// the flag package has printed the usage already
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
