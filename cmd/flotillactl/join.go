package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/agent"
	"github.com/flotilla-dev/flotilla/internal/join"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/internal/remote"
)

// restConfig loads a kubeconfig file, or the default loading rules
// (KUBECONFIG, ~/.kube/config) when path is empty.
func restConfig(path string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
}

func hubClient(path string) (client.Client, *rest.Config, error) {
	cfg, err := restConfig(path)
	if err != nil {
		return nil, nil, fmt.Errorf("hub kubeconfig: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: remote.NewScheme()})
	return c, cfg, err
}

// cidrList is a repeatable flag of CIDRs.
type cidrList []string

func (c *cidrList) String() string { return strings.Join(*c, ",") }

func (c *cidrList) Set(v string) error {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return fmt.Errorf("%q is not a CIDR such as 203.0.113.0/24", v)
	}
	*c = append(*c, p.Masked().String())
	return nil
}

// hubCommand: issue-join, revoke-join.
func hubCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("flotillactl hub issue-join|revoke-join NAME [flags]")
	}
	fs := flag.NewFlagSet("hub "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "Kubeconfig of the hub, as an administrator (default: KUBECONFIG or ~/.kube/config).")
	switch args[0] {
	case "issue-join":
		owner := fs.String("owner", "", "Owner of the provider (required); a join credential cannot change it.")
		region := fs.String("region", "", "Region of the provider.")
		zone := fs.String("zone", "", "Zone of the provider.")
		server := fs.String("server", "", "Hub API server URL as the provider reaches it (default: the one in the kubeconfig).")
		apiServer := fs.String("provider-api-server", "", "The provider's API server URL (https://...), as the hub reaches it (required in Push mode); the hub connects to no other address for this provider.")
		mode := fs.String("mode", string(flotillav1.ModePush), "Push: the hub connects to the provider's API server. Pull: the provider's agent connects to the hub and the hub holds no credential for it (for clusters behind NAT or a firewall); no --provider-api-server.")
		var ranges cidrList
		fs.Var(&ranges, "endpoint-range", "A CIDR where the provider's service endpoints may be (repeatable); the hub checks and forwards to no address outside them, and without any the provider takes no Workload that exposes ports.")
		out := fs.String("o", "", "Write the join kubeconfig to this file instead of standard output.")
		name, err := parseWithName(fs, args[1:])
		if err != nil {
			return err
		}
		c, cfg, err := hubClient(*kubeconfig)
		if err != nil {
			return err
		}
		ca, err := join.CAData(cfg)
		if err != nil {
			return err
		}
		srv := *server
		if srv == "" {
			srv = cfg.Host
		}
		kc, err := join.Issue(ctx, c, join.Options{Name: name, Owner: *owner, Region: *region, Zone: *zone,
			APIServerURL: *apiServer, Mode: flotillav1.ProviderMode(*mode), Server: srv, CAData: ca, EndpointRanges: ranges})
		if err != nil {
			return err
		}
		// The owner pins the hub's ledger key from here, not from what
		// the hub says later.
		if head, err := ledgerstore.ReadHead(ctx, c); err == nil {
			fmt.Fprintf(stderr, "hub ledger key: %s (set the provider chart's hub.ledgerPublicKey to pin it)\n",
				base64.StdEncoding.EncodeToString(head.PublicKey))
		}
		if *out != "" {
			if err := os.WriteFile(*out, kc, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "join credential for provider %s written to %s\n", name, *out)
			return nil
		}
		_, err = stdout.Write(kc)
		return err
	case "revoke-join":
		name, err := parseWithName(fs, args[1:])
		if err != nil {
			return err
		}
		c, _, err := hubClient(*kubeconfig)
		if err != nil {
			return err
		}
		if err := join.Revoke(ctx, c, name); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "join credential of provider %s revoked\n", name)
		return nil
	}
	return usageError(fmt.Sprintf("unknown hub command %q", args[0]))
}

// providerCommand: join, leave — for owners who run no agent.
func providerCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("flotillactl provider join|leave NAME [flags]")
	}
	fs := flag.NewFlagSet("provider "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	hubKC := fs.String("hub-kubeconfig", "", "Kubeconfig of the hub: the join credential from `flotillactl hub issue-join` (required).")
	switch args[0] {
	case "join":
		providerKC := fs.String("provider-kubeconfig", "", "Kubeconfig of the provider cluster, where the flotilla-provider chart is installed (required).")
		namespace := fs.String("namespace", flotillav1.SystemNamespace, "Namespace of the chart on the provider.")
		name, err := parseWithName(fs, args[1:])
		if err != nil {
			return err
		}
		if *hubKC == "" || *providerKC == "" {
			return usageError("--hub-kubeconfig and --provider-kubeconfig are required")
		}
		hub, _, err := hubClient(*hubKC)
		if err != nil {
			return err
		}
		pcfg, err := restConfig(*providerKC)
		if err != nil {
			return fmt.Errorf("provider kubeconfig: %w", err)
		}
		local, err := kubernetes.NewForConfig(pcfg)
		if err != nil {
			return err
		}
		cfg, err := agent.LoadConfig(ctx, local, *namespace)
		if err != nil {
			return err
		}
		if cfg.Provider.Name != name {
			return fmt.Errorf("the chart on this cluster is for provider %q, not %q", cfg.Provider.Name, name)
		}
		pub, err := agent.EnsureKey(ctx, local, *namespace)
		if err != nil {
			return err
		}
		kc, err := agent.FederationKubeconfig(ctx, local, *namespace, cfg)
		if err != nil {
			return err
		}
		a := &agent.Agent{Namespace: *namespace, Local: local, Hub: hub, Config: cfg, PublicKey: pub}
		if err := a.Register(ctx, kc); err != nil {
			return err
		}
		if err := a.PublishOffer(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "provider %s joined; its Offer reflects capacity now: run join again to refresh it\n", name)
		return nil
	case "leave":
		timeout := fs.Duration("timeout", 5*time.Minute, "How long to wait for the hub to drain the provider's Leases.")
		name, err := parseWithName(fs, args[1:])
		if err != nil {
			return err
		}
		if *hubKC == "" {
			return usageError("--hub-kubeconfig is required")
		}
		hub, _, err := hubClient(*hubKC)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		if err := agent.Leave(ctx, hub, name); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "provider %s left the hub\n", name)
		return nil
	}
	return usageError(fmt.Sprintf("unknown provider command %q", args[0]))
}

// parseWithName parses NAME followed by flags (or flags then NAME).
func parseWithName(fs *flag.FlagSet, args []string) (string, error) {
	var name string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", errUsage{err.Error()}
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if name == "" {
		return "", usageError(fs.Name() + ": a provider NAME is required")
	}
	return name, nil
}

type errUsage struct{ msg string }

func (e errUsage) Error() string { return e.msg }

func usageError(msg string) error { return errUsage{msg} }

func isUsage(err error) bool {
	var u errUsage
	return errors.As(err, &u)
}
