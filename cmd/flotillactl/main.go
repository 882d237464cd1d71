// Command flotillactl is Flotilla's command-line tool. It also works as a
// kubectl plugin when installed as kubectl-flotilla.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/flotilla-dev/flotilla/internal/version"
)

const usage = `flotillactl: work with a Flotilla federation.

Commands:
  status [-n NAMESPACE] [--kubeconfig F]
             providers (phase, free capacity, reputation), workloads
             (placements, price, cost) and where each replica runs
  hub issue-join NAME --owner O [--region R] [--zone Z] [--server URL] [--endpoint-range CIDR]... [-o FILE]
             [--provider-api-server URL | --mode Pull]
             create provider NAME on the hub and print a join credential that
             reaches only that provider's own objects; in Pull mode the hub
             never connects to the provider and holds no credential for it
  hub revoke-join NAME
             delete that credential (the Provider stays)
  provider join NAME --hub-kubeconfig F --provider-kubeconfig F
             register a provider whose owner runs no agent (the chart is
             installed with agent.enabled=false) and publish its Offer once
  provider leave NAME --hub-kubeconfig F [--timeout 5m]
             withdraw the Offers, let the hub drain the Leases, deregister
  ledger export [--kubeconfig F] [-o FILE]
             write the hub's ledger as JSON lines, with its head and key
  ledger verify --file F --public-key KEY [--head HASH] [--accounts FILE]
             check an exported ledger offline: sequence, links, every
             signature, the published head; names the first bad entry;
             prints balances and, with --accounts, checks the live ones
  ledger verify --hub [--kubeconfig F]
             the same against the hub's stored ledger and Accounts
  local up [--no-failover] [--fake-nodes] [--dir DIR]
             run a hub and four provider clusters of fake nodes on this
             machine (no root, no container engine), apply the samples,
             show where everything runs and what it costs, and fail a
             provider over; it keeps running
  local down [--dir DIR]
             stop and remove everything local up made
  local gc   remove federations left by killed test runs
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
	case "status":
		return sub(args[0], stderr, func(ctx context.Context) error { return statusCommand(ctx, args[1:], stdout, stderr) })
	case "ledger":
		return sub(args[0], stderr, func(ctx context.Context) error { return ledgerCommand(ctx, args[1:], stdout, stderr) })
	case "hub":
		return sub(args[0], stderr, func(ctx context.Context) error { return hubCommand(ctx, args[1:], stdout, stderr) })
	case "provider":
		return sub(args[0], stderr, func(ctx context.Context) error { return providerCommand(ctx, args[1:], stdout, stderr) })
	case "local":
		return sub(args[0], stderr, func(ctx context.Context) error { return localCommand(ctx, args[1:], stdout, stderr) })
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// sub runs a command until it ends or is interrupted; exit code 2 for
// usage errors, 1 for failures.
func sub(name string, stderr io.Writer, f func(context.Context) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := f(ctx); err != nil {
		fmt.Fprintf(stderr, "flotillactl %s: %v\n", name, err)
		if isUsage(err) {
			return 2
		}
		return 1
	}
	return 0
}

func main() {
	// The command prints its progress and errors itself; the libraries'
	// own logging (controller-runtime warns, with a stack trace, when no
	// logger is set) is not for the person reading it.
	ctrllog.SetLogger(logr.Discard())
	klog.SetLogger(logr.Discard())
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
