package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"k8s.io/client-go/rest"

	"github.com/flotilla-dev/flotilla/internal/localfed"
)

// localCommand runs a federation on this machine: a hub and four
// provider clusters of fake nodes, as unprivileged processes (no root, no
// container engine), with the manager, the agents and the samples.
func localCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("flotillactl local up|down|gc [flags]")
	}
	fs := flag.NewFlagSet("local "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", localfed.DefaultDemoDir(), "Folder for the federation's clusters, logs and state.")
	root := fs.String("root", "", "Folder holding bin/ (make tools build), charts/ and config/samples (default: found from here or from flotillactl's own folder).")
	switch args[0] {
	case "up":
		noFailover := fs.Bool("no-failover", false, "Skip stopping a provider to show failover and fencing.")
		fakeNodes := fs.Bool("fake-nodes", false, "Use kwok nodes only, even where real nodes can run (they need root).")
		if err := fs.Parse(args[1:]); err != nil {
			return errUsage{err.Error()}
		}
		// The demo's own clients would print the API servers' warnings
		// (PodSecurity on what kwok runs) between its lines.
		rest.SetDefaultWarningHandler(rest.NoWarnings{})
		return localfed.Up(ctx, localfed.DemoOptions{Dir: *dir, Root: *root, Failover: !*noFailover, FakeNodesOnly: *fakeNodes, Out: stdout})
	case "down":
		if err := fs.Parse(args[1:]); err != nil {
			return errUsage{err.Error()}
		}
		return localfed.Down(localfed.DemoOptions{Dir: *dir, Root: *root, Out: stdout})
	case "gc":
		base := fs.String("base", localfed.DefaultBaseDir(), "Folder holding the test federations.")
		if err := fs.Parse(args[1:]); err != nil {
			return errUsage{err.Error()}
		}
		removed, err := localfed.GC(*base, func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) })
		fmt.Fprintf(stdout, "removed %d abandoned federation(s)\n", len(removed))
		return err
	}
	return usageError(fmt.Sprintf("unknown local command %q", args[0]))
}
