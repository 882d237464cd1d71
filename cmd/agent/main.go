// Command agent runs on a provider cluster: it registers the provider with
// the hub, publishes an Offer from idle capacity minus the owner's reserve,
// and heartbeats. It reads its settings from the ConfigMap the
// flotilla-provider chart writes.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/agent"
	"github.com/flotilla-dev/flotilla/internal/keys"
	"github.com/flotilla-dev/flotilla/internal/remote"
	"github.com/flotilla-dev/flotilla/internal/version"
)

// options are the agent's command line.
type options struct {
	kubeconfig, hubKubeconfig, namespace string
	metricsAddr                          string
	version                              bool
	zap                                  zap.Options
}

// parseFlags reads the command line on a FlagSet of its own:
// controller-runtime registers its own --kubeconfig on the global one.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.version, "version", false, "Print the version and exit.")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Kubeconfig of the provider cluster; empty means the in-cluster service account.")
	fs.StringVar(&o.hubKubeconfig, "hub-kubeconfig", "", "Kubeconfig of the hub (the join credential); empty means the Secret named by the chart's hub.joinSecret.")
	fs.StringVar(&o.namespace, "namespace", flotillav1.SystemNamespace, "Namespace the chart is installed in.")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", "0", "Address the Prometheus metrics endpoint binds to; 0 disables it.")
	o.zap.BindFlags(fs)
	return o, fs.Parse(args)
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	if o.version {
		fmt.Println(version.Version)
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	log := ctrl.Log.WithName("agent")
	if o.metricsAddr != "0" && o.metricsAddr != "" {
		go serveMetrics(o.metricsAddr, log)
	}
	if err := run(ctrl.SetupSignalHandler(), o.kubeconfig, o.hubKubeconfig, o.namespace); err != nil {
		log.Error(err, "Agent stopped")
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig, hubKubeconfig, namespace string) error {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("provider cluster credentials: %w", err)
	}
	cfg.UserAgent = agent.UserAgent
	cfg.QPS, cfg.Burst = 50, 100
	local, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	settings, err := agent.LoadConfig(ctx, local, namespace)
	if err != nil {
		return err
	}
	key, err := keys.Ensure(ctx, local, namespace, agent.KeySecretName)
	if err != nil {
		return err
	}
	hubs := settings.HubIDs()
	if len(hubs) > 1 && hubKubeconfig != "" {
		return fmt.Errorf("--hub-kubeconfig serves one hub; this cluster serves %d", len(hubs))
	}
	var shared *agent.Shared
	if len(hubs) > 1 {
		shared = agent.NewShared(hubs...)
	}
	// One agent per hub, each with its own hub credential and federation
	// identity, sharing the cluster's capacity.
	errs := make(chan error, len(hubs))
	for _, id := range hubs {
		hcfg, err := settings.ForHub(id)
		if err != nil {
			return err
		}
		a, err := hubAgent(ctx, local, cfg, hcfg, hubKubeconfig, namespace, key)
		if err != nil {
			return fmt.Errorf("hub %s: %w", id, err)
		}
		a.Shared = shared
		go func() { errs <- a.Run(ctx) }()
	}
	var first error
	for range hubs {
		if err := <-errs; err != nil && first == nil && ctx.Err() == nil {
			first = err
		}
	}
	return first
}

// hubAgent is the agent of one hub: its credential from --hub-kubeconfig
// or the Secret the chart names.
func hubAgent(ctx context.Context, local kubernetes.Interface, cfg *rest.Config, settings *agent.Config,
	hubKubeconfig, namespace string, key ed25519.PrivateKey) (*agent.Agent, error) {
	var hubCfg []byte
	var err error
	if hubKubeconfig != "" {
		hubCfg, err = os.ReadFile(hubKubeconfig)
	} else {
		s, gerr := local.CoreV1().Secrets(namespace).Get(ctx, settings.HubJoinSecret, metav1.GetOptions{})
		if gerr != nil {
			return nil, fmt.Errorf("reading the hub credential from Secret %s/%s: %w", namespace, settings.HubJoinSecret, gerr)
		}
		hubCfg = s.Data["kubeconfig"]
	}
	if err != nil {
		return nil, fmt.Errorf("reading the hub kubeconfig: %w", err)
	}
	hubRest, err := clientcmd.RESTConfigFromKubeConfig(hubCfg)
	if err != nil {
		return nil, fmt.Errorf("hub kubeconfig: %w", err)
	}
	hubRest.UserAgent = agent.UserAgent
	// client-go's default of 5 requests a second throttles a pull-mode
	// agent with a few dozen Assignments; the hub's API priority and
	// fairness, not the client, protects the hub.
	hubRest.QPS, hubRest.Burst = 50, 100
	hub, err := client.NewWithWatch(hubRest, client.Options{Scheme: remote.NewScheme()})
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	a := &agent.Agent{Log: ctrl.Log.WithName("agent").WithValues("hub", settings.HubID), Namespace: namespace, Local: local, Hub: hub, Config: settings,
		PublicKey: base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)), Key: key,
		Identity: settings.Provider.Name + "/" + host}
	if settings.Pull() {
		fc, err := agent.FederationConfig(ctx, local, namespace, settings, cfg)
		if err != nil {
			return nil, err
		}
		if a.Federation, err = client.New(fc, client.Options{Scheme: remote.NewScheme()}); err != nil {
			return nil, err
		}
		a.HubWatch = hub
	}
	return a, nil
}

// serveMetrics exposes the agent's metrics, for the owner's Prometheus.
func serveMetrics(addr string, log logr.Logger) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(agent.Metrics()...)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Error(err, "Serving metrics")
	}
}
