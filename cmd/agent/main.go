// Command agent runs on a provider cluster: it registers the provider with
// the hub, publishes Offers from idle capacity and heartbeats.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/flotilla-dev/flotilla/internal/version"
)

func main() {
	showVersion := flag.Bool("version", false, "Print the version and exit.")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Version)
		return
	}
	fmt.Fprintln(os.Stderr, "agent: registration, offers and heartbeats are not available in this build; see Status in the README")
	os.Exit(1)
}
