// Command manager is the one binary of wasm-operator. Its subcommands are
//
//	manager controller   the cluster-wide WasmPlugin reconciler (leader-elected)
//	manager host         the node-local host that runs pooled plugin instances and serves calls
//	manager call         run one plugin function locally, without a cluster, like `extism call`
//
// Each subcommand lives in its own file and registers itself in commands from an init function, so
// subcommands stay independent of each other.
package main

import (
	"fmt"
	"os"
	"sort"
)

// command is one subcommand: a one-line summary for the usage text and its entry point, which receives
// the arguments after the subcommand name and returns the process exit code.
type command struct {
	summary string
	run     func(args []string) int
	hidden  bool // left out of the usage text
}

var commands = map[string]command{}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "manager: unknown subcommand %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	os.Exit(cmd.run(os.Args[2:]))
}

func usage() {
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	fmt.Fprintln(os.Stderr, "usage: manager <subcommand> [flags]\n\nsubcommands:")
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(os.Stderr, "\nRun 'manager <subcommand> -h' for its flags.")
}
