// Command plugins lists and builds the example plugins, for Makefiles and the
// development stack.
//
//	go run ./internal/testplugins/cmd/plugins list             # names, one a line
//	go run ./internal/testplugins/cmd/plugins build [-o DIR] [NAME...]
//
// build compiles the named plugins (all when none are named) into DIR
// (default bin/plugins of the checkout), skipping those already up to date,
// and prints each module's path.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "plugins:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: plugins list | plugins build [-o DIR] [NAME...]")
	}
	switch args[0] {
	case "list":
		names, err := testplugins.Names()
		if err != nil {
			return err
		}
		for _, n := range names {
			fmt.Println(n)
		}
		return nil
	case "build":
		fs := flag.NewFlagSet("build", flag.ContinueOnError)
		out := fs.String("o", "", "output folder (default <checkout>/bin/plugins)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		dir := *out
		if dir == "" {
			root, err := testplugins.RepoRoot()
			if err != nil {
				return err
			}
			dir = filepath.Join(root, testplugins.CacheDir)
		}
		names := fs.Args()
		if len(names) == 0 {
			var err error
			if names, err = testplugins.Names(); err != nil {
				return err
			}
		}
		for _, n := range names {
			path, err := testplugins.BuildTo(dir, n)
			if err != nil {
				return err
			}
			fmt.Println(path)
		}
		return nil
	default:
		return fmt.Errorf("unknown command %q; want list or build", args[0])
	}
}
