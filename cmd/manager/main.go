// Command manager runs Flotilla's hub controllers.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/endpoint"
	"github.com/flotilla-dev/flotilla/internal/flap"
	"github.com/flotilla-dev/flotilla/internal/remote"
	"github.com/flotilla-dev/flotilla/internal/reputation"
	"github.com/flotilla-dev/flotilla/internal/version"
)

func main() {
	var (
		metricsAddr    string
		probeAddr      string
		pprofAddr      string
		leaderElection bool
		showVersion    bool
		ctrlOpts       controllers.Options
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address the Prometheus metrics endpoint binds to; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0", "Address Go's pprof endpoints bind to, for profiling; 0 (the default) disables them.")
	flag.BoolVar(&leaderElection, "leader-elect", false, "Elect a leader so that only one replica reconciles at a time.")
	flag.BoolVar(&showVersion, "version", false, "Print the version and exit.")
	flag.DurationVar(&ctrlOpts.SchedulerInterval, "scheduler-interval", 100*time.Millisecond, "Least time between two scheduling cycles.")
	flag.DurationVar(&ctrlOpts.SchedulerResync, "scheduler-resync", 30*time.Second, "Run a scheduling cycle at least this often.")
	flag.StringVar(&ctrlOpts.HubID, "hub-id", "hub", "Name of this hub on providers: part of lease namespace names and labels (1-20 lowercase letters and digits).")
	flag.DurationVar(&ctrlOpts.ProviderGracePeriod, "provider-grace-period", 20*time.Second, "Time without a successful probe of its API server before a provider is Lost.")
	flag.DurationVar(&ctrlOpts.ProbeInterval, "probe-interval", 3*time.Second, "Time between two probes of a provider.")
	flag.DurationVar(&ctrlOpts.EndpointInterval, "endpoint-check-interval", endpoint.DefaultInterval,
		"Time between two checks, from the hub, of an exposed Lease's endpoints.")
	flag.DurationVar(&ctrlOpts.EndpointTimeout, "endpoint-check-timeout", endpoint.DefaultTimeout, "Timeout of one endpoint check.")
	flag.StringVar(&ctrlOpts.EntryBindAddress, "entry-bind-address", "0",
		"Address the stable addresses of Workloads (spec.expose.stableAddress) are served at; 0 serves none.")
	flag.StringVar(&ctrlOpts.EntryURL, "entry-url", "",
		"URL at which tenants reach --entry-bind-address, for the Workloads' status.address; http://<bind address> when empty.")
	flag.DurationVar(&ctrlOpts.Remote.RequestTimeout, "remote-timeout", 5*time.Second, "Timeout of one request to a provider's API server.")
	flag.DurationVar(&ctrlOpts.Remote.ConnectTimeout, "remote-connect-timeout", 5*time.Second, "Timeout of connecting to a provider's API server.")
	flag.Float64Var(&ctrlOpts.LeaseRate, "provider-lease-rate", float64(controllers.DefaultLeaseRate), "New Leases per second one provider may take once its burst is used up.")
	flag.IntVar(&ctrlOpts.LeaseBurst, "provider-lease-burst", controllers.DefaultLeaseBurst, "New Leases one provider may take at once; 0 turns the per-provider rate limit off.")
	flag.DurationVar(&ctrlOpts.Flap.Window, "flap-window", flap.Default.Window, "A provider Lost again within this time of its last loss counts as flapping.")
	flag.DurationVar(&ctrlOpts.Flap.Base, "flap-hold-down", flap.Default.Base, "Hold-down of a provider back after its second loss in a row; doubles with each further loss.")
	flag.DurationVar(&ctrlOpts.Flap.Max, "flap-max-hold-down", flap.Default.Max, "Longest hold-down of a flapping provider.")
	flag.DurationVar(&ctrlOpts.ReputationHalfLife, "reputation-half-life", reputation.DefaultHalfLife, "How long reputation evidence keeps half its weight.")
	flag.DurationVar(&ctrlOpts.SettlementInterval, "settlement-interval", controllers.DefaultSettlementInterval, "How often usage is settled; a Workload whose budget or credits would not last this long is stopped when they run out.")
	flag.DurationVar(&ctrlOpts.EscrowPeriod, "escrow-period", controllers.DefaultEscrowPeriod, "A Lease's price is held in escrow for this long, topped up at every settlement.")
	flag.DurationVar(&ctrlOpts.FundsGrace, "funds-grace-period", controllers.DefaultFundsGrace, "How long a Workload short of credits keeps running, while its escrow lasts, before its Leases close.")
	flag.BoolVar(&ctrlOpts.AllowUnaccounted, "allow-unaccounted-namespaces", false, "Place Workloads of namespaces without an Account, free of charge (a private federation); the hub chart's accounts.required=false also lets them past admission.")
	flag.Int64Var(&ctrlOpts.FeeBPS, "fee-bps", 0, "The hub's fee on every payment to a provider, in basis points (100 = 1%).")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	if ctrlOpts.EntryURL == "" && ctrlOpts.EntryBindAddress != "0" && ctrlOpts.EntryBindAddress != "" {
		ctrlOpts.EntryURL = "http://" + ctrlOpts.EntryBindAddress
	}
	if ctrlOpts.LeaseBurst == 0 {
		ctrlOpts.LeaseBurst = -1 // Options read 0 as "the default"
	}
	if ctrlOpts.FeeBPS < 0 || ctrlOpts.FeeBPS > 10000 {
		fmt.Fprintln(os.Stderr, "--fee-bps must be between 0 and 10000")
		os.Exit(2)
	}
	if showVersion {
		fmt.Println(version.Version)
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	scheme := remote.NewScheme()

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controllers.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		PprofBindAddress:       pprofAddr,
		LeaderElection:         leaderElection,
		LeaderElectionID:       "flotilla-manager.flotilla.dev",
	})
	if err != nil {
		log.Error(err, "Unable to create manager")
		os.Exit(1)
	}
	ctx := ctrl.SetupSignalHandler()
	if _, err := controllers.Setup(ctx, mgr, ctrlOpts); err != nil {
		log.Error(err, "Unable to set up controllers")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "Unable to add health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "Unable to add readiness check")
		os.Exit(1)
	}
	log.Info("Starting manager", "version", version.Version)
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "Manager exited with an error")
		os.Exit(1)
	}
}
