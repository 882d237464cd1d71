// Command flotillactl is Flotilla's command-line tool. It also works as a
// kubectl plugin when installed as kubectl-flotilla.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/flotilla-dev/flotilla/internal/version"
)

const usage = `flotillactl: work with a Flotilla federation.

Commands:
  version    print the version

`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version", "--version":
		fmt.Fprintln(stdout, version.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }
