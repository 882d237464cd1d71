package main

import (
	"context"
	"flag"
	"io"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/status"
)

// statusCommand prints providers, workloads and placements from the hub.
func statusCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "Kubeconfig of the hub (default: KUBECONFIG or ~/.kube/config).")
	namespace := fs.String("n", "", "Show only this namespace's Workloads (default: all the caller may list).")
	if err := fs.Parse(args); err != nil {
		return errUsage{err.Error()}
	}
	c, _, err := hubClient(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var ps flotillav1.ProviderList
	var ws flotillav1.WorkloadList
	var ls flotillav1.LeaseList
	if err := c.List(ctx, &ps); err != nil {
		return err
	}
	var opts []client.ListOption
	if *namespace != "" {
		opts = append(opts, client.InNamespace(*namespace))
	}
	if err := c.List(ctx, &ws, opts...); err != nil {
		return err
	}
	if err := c.List(ctx, &ls, opts...); err != nil {
		return err
	}
	// Accounts are shown to whoever may read them.
	var as flotillav1.AccountList
	_ = c.List(ctx, &as, opts...)
	return status.Render(stdout, status.Snapshot{Now: time.Now(), Providers: ps.Items, Workloads: ws.Items, Leases: ls.Items, Accounts: as.Items})
}
