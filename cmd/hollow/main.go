// Command hollow runs N hollow providers (internal/hollow) against a hub,
// for scale benchmarks: it issues each one's join credential with the
// administrator's kubeconfig, as `flotillactl hub issue-join --mode Pull`
// would, then runs the real pull-mode agent of each over an in-memory
// cluster until interrupted. Some of them can misbehave from the start.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/hollow"
	"github.com/flotilla-dev/flotilla/internal/join"
	"github.com/flotilla-dev/flotilla/internal/remote"
)

type options struct {
	kubeconfig, hubID, prefix, region, cpu, memory, price string
	count, silent, refuse                                 int
	reportDelay, heartbeat, pull, refresh                 time.Duration
	verbose                                               bool
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("hollow", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "The hub administrator's kubeconfig: it issues the join credentials.")
	fs.StringVar(&o.hubID, "hub-id", "", "The hub's id (the manager's --hub-id).")
	fs.StringVar(&o.prefix, "prefix", "hollow", "Provider names are <prefix>-<n>; the owner of each is <prefix>-owner-<n>.")
	fs.StringVar(&o.region, "region", "hollow", "Region of every provider.")
	fs.IntVar(&o.count, "count", 10, "How many providers to run.")
	fs.StringVar(&o.cpu, "cpu", "32", "Cores of each provider's one node.")
	fs.StringVar(&o.memory, "memory", "128Gi", "Memory of each provider's one node.")
	fs.StringVar(&o.price, "price", "0.010", "Price of a core-hour in every Offer.")
	fs.IntVar(&o.silent, "silent", 0, "How many of them (the first ones) never heartbeat.")
	fs.IntVar(&o.refuse, "refuse", 0, "How many of them (after the silent ones) refuse every assignment.")
	fs.DurationVar(&o.reportDelay, "report-delay", 0, "How long every provider holds a replica back before it runs.")
	fs.DurationVar(&o.heartbeat, "heartbeat", 10*time.Second, "Heartbeat interval.")
	fs.DurationVar(&o.pull, "pull-interval", 2*time.Second, "Pull interval.")
	fs.DurationVar(&o.refresh, "refresh", 30*time.Second, "Offer and usage report refresh interval.")
	fs.BoolVar(&o.verbose, "v", false, "Log every agent's errors.")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case o.hubID == "":
		return nil, errors.New("--hub-id is required")
	case o.count < 1 || o.count > 10000:
		return nil, fmt.Errorf("--count %d: between 1 and 10000", o.count)
	case o.silent < 0 || o.refuse < 0 || o.silent+o.refuse > o.count:
		return nil, fmt.Errorf("--silent %d and --refuse %d: at most --count %d together", o.silent, o.refuse, o.count)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "hollow:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options) error {
	admin, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("hub kubeconfig: %w", err)
	}
	admin.QPS, admin.Burst = 100, 200
	c, err := client.New(admin, client.Options{Scheme: remote.NewScheme()})
	if err != nil {
		return err
	}
	ca, err := join.CAData(admin)
	if err != nil {
		return err
	}
	log := logr.Discard()
	if o.verbose {
		log = zap.New()
	}
	var running []*hollow.Provider
	defer func() {
		for _, p := range running {
			p.Stop()
		}
	}()
	for i := range o.count {
		name := fmt.Sprintf("%s-%d", o.prefix, i)
		kc, err := join.Issue(ctx, c, join.Options{Name: name, Owner: fmt.Sprintf("%s-owner-%d", o.prefix, i), Region: o.region,
			Mode: flotillav1.ModePull, Server: admin.Host, CAData: ca})
		if err != nil {
			return fmt.Errorf("issuing the join credential of %s: %w", name, err)
		}
		cfg, err := joinConfig(kc)
		if err != nil {
			return err
		}
		b := hollow.Behaviour{ReportDelay: o.reportDelay, Silent: i < o.silent, Refuse: i >= o.silent && i < o.silent+o.refuse}
		p, err := hollow.Start(ctx, cfg, hollow.Options{HubID: o.hubID, Name: name, Owner: fmt.Sprintf("%s-owner-%d", o.prefix, i),
			Region: o.region, CPU: o.cpu, Memory: o.memory, CPUPrice: o.price, Heartbeat: o.heartbeat, Pull: o.pull, Refresh: o.refresh,
			Behaviour: b}, log)
		if err != nil {
			return fmt.Errorf("starting %s: %w", name, err)
		}
		running = append(running, p)
	}
	fmt.Printf("%d hollow providers running (%d silent, %d refusing); interrupt to stop\n", o.count, o.silent, o.refuse)
	<-ctx.Done()
	return nil
}

func joinConfig(kubeconfig []byte) (*rest.Config, error) {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("join kubeconfig: %w", err)
	}
	return cfg, nil
}
