// Command testbed-gc tears down local federations whose creating process is
// gone (a killed test run), with every process they left behind.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/flotilla-dev/flotilla/test/testbed"
)

func main() {
	base := flag.String("base", testbed.DefaultBaseDir(), "folder holding the federations")
	flag.Parse()
	removed, err := testbed.GC(*base, func(format string, args ...any) { fmt.Printf(format+"\n", args...) })
	fmt.Printf("removed %d abandoned federation(s)\n", len(removed))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
