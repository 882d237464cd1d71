// The demo: a hub and four provider clusters owned by different people
// (one a home lab behind NAT that joins in pull mode),
// with the hub and provider charts installed by helm, the manager and the
// agents running as local processes, and the samples applied. It shows
// where every replica runs and what it costs, demonstrates failover and
// fencing, and leaves everything running until Down.

package localfed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/batchdigest"
	"github.com/flotilla-dev/flotilla/internal/join"
	"github.com/flotilla-dev/flotilla/internal/remote"
	"github.com/flotilla-dev/flotilla/internal/status"
)

const hubID = "demo"

// renderDigest is the result the sample render job's copies compute (the
// batch image over the sample's INPUT); copies on kwok nodes report it too.
var renderDigest = batchdigest.Compute("render-frames 1-240", batchdigest.DefaultRounds)

// state is what `demo down` needs, kept in DIR/state.json.
type state struct {
	Federation string `json:"federation"`
	Kubeconfig string `json:"kubeconfig"`
	PIDs       []int  `json:"pids"`
}

// owner describes one provider cluster of the demo.
type owner struct {
	provider, owner, region string
	nodes                   NodeSet
	prices                  map[string]string
	attributes              map[string]string
	// pull: the hub cannot reach this cluster (a home lab behind NAT);
	// it joins in pull mode, with fake nodes and its agent as a process.
	pull bool
}

var owners = []owner{
	{"alice-1", "alice", "eu-west", NodeSet{Count: 2, CPU: "8", Memory: "16Gi"},
		map[string]string{"cpu": "0.010", "memory": "0.002"}, nil, false},
	{"bob-1", "bob", "us-east", NodeSet{Count: 2, CPU: "8", Memory: "16Gi"},
		map[string]string{"cpu": "0.008", "memory": "0.002"}, nil, false},
	{"carol-1", "carol", "eu-west", NodeSet{Count: 1, CPU: "16", Memory: "64Gi", GPU: 2},
		map[string]string{"cpu": "0.020", "memory": "0.004", "nvidia.com/gpu": "1.5"}, map[string]string{"gpu-model": "a100"}, false},
	{"dave-1", "dave", "home", NodeSet{Count: 1, CPU: "8", Memory: "16Gi"},
		map[string]string{"cpu": "0.012", "memory": "0.002"}, nil, true},
}

// DemoOptions configure Up.
type DemoOptions struct {
	// Dir holds the demo's clusters, logs and state; DefaultDemoDir when
	// empty.
	Dir string
	// Failover stops a provider to show failover and fencing.
	Failover bool
	// Root holds bin/, charts/ and config/samples; FindRoot() when empty.
	Root string
	// Out receives what a person reads: progress and results.
	Out io.Writer
	// FakeNodesOnly keeps to kwok nodes even where real nodes can run.
	FakeNodesOnly bool
}

// DefaultDemoDir is where the demo keeps its state unless told otherwise.
func DefaultDemoDir() string { return filepath.Join(os.TempDir(), "flotilla-demo") }

// demo is one run of Up or Down.
type demo struct {
	DemoOptions
	bin string
	// real: every cluster but the home lab has a real node; the manager
	// and agents run as pods from the charts and the samples' containers
	// really run.
	real bool
}

func newDemo(opts DemoOptions) *demo {
	if opts.Dir == "" {
		opts.Dir = DefaultDemoDir()
	}
	if opts.Root == "" {
		opts.Root = FindRoot()
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	return &demo{DemoOptions: opts, bin: filepath.Join(opts.Root, "bin")}
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.Out, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// waitFor polls cond every second, printing what it waits for when that
// changes, until it holds or the timeout passes.
func (d *demo) waitFor(ctx context.Context, what string, timeout time.Duration, cond func() (bool, string)) error {
	d.say("waiting for %s", what)
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, progress := cond()
		if progress != last && progress != "" {
			d.say("  %s", progress)
			last = progress
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up waiting for %s after %s (last: %s)", what, timeout, progress)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// startProcess starts a long-running binary in its own process group, so
// it outlives this command, logging to a file.
func startProcess(dir, name, bin string, args ...string) (int, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { _ = cmd.Wait() }()
	return cmd.Process.Pid, nil
}

func (d *demo) helm(args ...string) error {
	out, err := exec.Command(filepath.Join(d.bin, "helm"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("helm %s: %v\n%s", args[0], err, out)
	}
	return nil
}

// Up starts the demo and leaves it running.
func Up(ctx context.Context, opts DemoOptions) error { return newDemo(opts).up(ctx) }

func (d *demo) up(ctx context.Context) error {
	dir, root, bin := d.Dir, d.Root, d.bin
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err == nil {
		return fmt.Errorf("a demo is already running from %s: remove it with make demo-down first", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	st := &state{}
	save := func() error {
		b, _ := json.MarshalIndent(st, "", "  ")
		return os.WriteFile(filepath.Join(dir, "state.json"), b, 0o644)
	}

	d.real = !d.FakeNodesOnly && realNodesAvailable(bin) == nil
	if d.real {
		d.say("1/6 starting a hub and four provider clusters (control planes, the owners' servers each with a real node where containers run):")
	} else {
		d.say("1/6 starting a hub and four provider clusters (control planes with fake nodes; %v):", why(d.FakeNodesOnly, bin))
	}
	var specs []ProviderSpec
	for _, o := range owners {
		spec := ProviderSpec{Name: o.provider, Owner: o.owner, Region: o.region, Nodes: []NodeSet{o.nodes}}
		nodes := fmt.Sprintf("%d node(s) of %s cores, %s", o.nodes.Count, o.nodes.CPU, o.nodes.Memory)
		if o.pull {
			nodes += "; a home lab behind NAT: joins in pull mode, the hub never connects to it"
		} else if d.real {
			// Only the GPU node and the home lab stay fake.
			spec.RealNodes = 1
			if o.nodes.GPU == 0 {
				spec.Nodes, nodes = nil, "1 real node"
			} else {
				nodes = "1 real node and " + nodes
			}
		}
		if o.nodes.GPU > 0 {
			nodes += fmt.Sprintf(", %d GPUs (%s)", o.nodes.GPU, o.attributes["gpu-model"])
		}
		d.say("    %s owned by %s in %s: %s", o.provider, o.owner, o.region, nodes)
		specs = append(specs, spec)
	}
	opts := Options{Providers: specs, BaseDir: filepath.Join(dir, "clusters"),
		Logf: func(format string, args ...any) { d.say("    "+strings.TrimPrefix(format, "testbed: "), args...) }}
	if d.real {
		opts.HubRealNodes = 1
	}
	fed, err := New(ctx, opts)
	if err != nil {
		return err
	}
	st.Federation, st.Kubeconfig = fed.Dir, fed.Hub.Kubeconfig
	if err := save(); err != nil {
		return err
	}
	// From here on the federation belongs to the demo, not to this process.
	_ = os.Remove(filepath.Join(fed.Dir, "owner.pid"))

	if err := d.startManager(ctx, fed, st, save); err != nil {
		return err
	}
	hubCfg, err := fed.Hub.RESTConfig(30 * time.Second)
	if err != nil {
		return err
	}
	hub, err := client.New(hubCfg, client.Options{Scheme: remote.NewScheme()})
	if err != nil {
		return err
	}

	d.say("3/6 each owner installs the provider chart and runs the agent")
	for _, o := range owners {
		if d.real && !o.pull {
			err = d.joinOwnerWithPod(ctx, fed, hub, o)
		} else {
			err = d.joinOwnerWithProcess(ctx, fed, hub, hubCfg, o, st, save)
		}
		if err != nil {
			return err
		}
	}
	if err := d.waitFor(ctx, "every provider Ready with its Offer on the hub", 120*time.Second, func() (bool, string) {
		var ps flotillav1.ProviderList
		var os flotillav1.OfferList
		_ = hub.List(ctx, &ps)
		_ = hub.List(ctx, &os)
		var parts []string
		ready := 0
		for _, p := range ps.Items {
			if p.Status.Phase == flotillav1.ProviderReady {
				ready++
			}
			parts = append(parts, fmt.Sprintf("%s %s", p.Name, or(string(p.Status.Phase), "registering")))
		}
		slices.Sort(parts)
		return ready == len(owners) && len(os.Items) == len(owners), fmt.Sprintf("%s; %d offers", strings.Join(parts, ", "), len(os.Items))
	}); err != nil {
		return err
	}

	d.say("4/6 an administrator credits team-a and team-b; tenants apply the samples: a web Service spread across owners, a batch job verified by copies on distinct owners, a GPU job only carol can run")
	for _, ns := range []string{"team-a", "team-b"} {
		if err := hub.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); client.IgnoreAlreadyExists(err) != nil {
			return err
		}
	}
	for _, f := range []string{"flotilla_v1alpha1_account.yaml", "flotilla_v1alpha1_workload_service.yaml", "flotilla_v1alpha1_workload_batch.yaml", "flotilla_v1alpha1_workload_gpu.yaml"} {
		objs, err := ReadObjects(filepath.Join(root, "config", "samples", f))
		if err != nil {
			return err
		}
		for _, o := range objs {
			if _, verify, _ := unstructured.NestedMap(o.Object, "spec", "verification"); verify {
				// Fake nodes run no containers: the testbed has the copies
				// report the digest the render would have written.
				if err := unstructured.SetNestedField(o.Object, renderDigest, "spec", "template", "metadata", "annotations", ResultAnnotation); err != nil {
					return err
				}
			}
			if err := hub.Create(ctx, o); client.IgnoreAlreadyExists(err) != nil {
				return fmt.Errorf("applying %s: %w", f, err)
			}
			d.say("    applied %s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
		}
	}
	if err := d.waitFor(ctx, "web Ready (6 replicas), render-frames and train finished", 120*time.Second, func() (bool, string) {
		web, rf, tr := workload(ctx, hub, "team-a", "web"), workload(ctx, hub, "team-b", "render-frames"), workload(ctx, hub, "team-b", "train")
		return web.Status.ReadyReplicas == 6 && rf.Status.Phase == flotillav1.WorkloadSucceeded && tr.Status.Phase == flotillav1.WorkloadSucceeded,
			fmt.Sprintf("web %d/6 ready; render-frames %s; train %s", web.Status.ReadyReplicas, or(string(rf.Status.Phase), "pending"), or(string(tr.Status.Phase), "pending"))
	}); err != nil {
		return err
	}
	rf := workload(ctx, hub, "team-b", "render-frames")
	if c := apimeta.FindStatusCondition(rf.Status.Conditions, flotillav1.WorkloadVerified); c != nil {
		d.say("    render-frames: %s", c.Message)
	}
	if d.real {
		if err := d.fetchWeb(ctx, fed); err != nil {
			return err
		}
	}
	d.say("5/6 where everything runs:")
	if err := d.printStatus(ctx, hub); err != nil {
		return err
	}

	if d.Failover {
		if err := d.failover(ctx, fed, hub); err != nil {
			return err
		}
	} else {
		d.say("6/6 skipping the failover demonstration (--no-failover)")
	}
	logs := "Logs of the manager and agents are in " + dir
	if d.real {
		logs = "The manager and agents run as pods: kubectl logs -n flotilla-system deploy/flotilla-manager"
	}
	fmt.Fprintf(d.Out, `
The federation keeps running. Explore it (kubectl and flotillactl are in %[1]s):

  export KUBECONFIG=%[2]s PATH=%[1]s:$PATH
  kubectl get workloads,leases.flotilla.dev -A
  kubectl get offers -A; kubectl get providers
  flotillactl status

%[3]s. Remove everything with:

  flotillactl local down     (or: make demo-down)
`, bin, fed.Hub.Kubeconfig, logs)
	return nil
}

func (d *demo) failover(ctx context.Context, fed *Federation, hub client.Client) error {
	const victim = "bob-1"
	before := placements(ctx, hub, "team-a", "web")
	d.say("6/6 failover: stopping %s, which runs web on %v (provider grace 10 s, web's failover grace 5 s)", victim, before)
	start := time.Now()
	if err := fed.Provider(victim).Stop(ctx); err != nil {
		return err
	}
	if err := d.waitFor(ctx, "web's replicas to run elsewhere", 120*time.Second, func() (bool, string) {
		p := &flotillav1.Provider{}
		_ = hub.Get(ctx, client.ObjectKey{Name: victim}, p)
		web := workload(ctx, hub, "team-a", "web")
		now := placements(ctx, hub, "team-a", "web")
		return p.Status.Phase == flotillav1.ProviderLost && web.Status.ReadyReplicas == 6 && !slices.ContainsFunc(now, func(s string) bool { return strings.HasPrefix(s, victim) }),
			fmt.Sprintf("%s %s; web %d/6 ready on %v", victim, p.Status.Phase, web.Status.ReadyReplicas, now)
	}); err != nil {
		return err
	}
	d.say("    web is whole again %s after %s stopped", time.Since(start).Round(time.Second), victim)
	d.say("    starting %s again: its stale namespaces must be deleted before it takes work", victim)
	if err := fed.Provider(victim).Start(ctx); err != nil {
		return err
	}
	cs, err := fed.Provider(victim).Clientset(10 * time.Second)
	if err != nil {
		return err
	}
	if err := d.waitFor(ctx, victim+" fenced and Ready", 120*time.Second, func() (bool, string) {
		p := &flotillav1.Provider{}
		_ = hub.Get(ctx, client.ObjectKey{Name: victim}, p)
		stale := staleNamespaces(ctx, cs, hub)
		return p.Status.Phase == flotillav1.ProviderReady && stale == 0, fmt.Sprintf("%s %s; %d stale namespaces left there", victim, p.Status.Phase, stale)
	}); err != nil {
		return err
	}
	d.say("    after failover and fencing:")
	return d.printStatus(ctx, hub)
}

// staleNamespaces counts the managed namespaces on a provider whose Lease
// is not live on the hub any more.
func staleNamespaces(ctx context.Context, cs kubernetes.Interface, hub client.Client) int {
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: flotillav1.LabelManaged + "=true"})
	if err != nil {
		return -1
	}
	var ls flotillav1.LeaseList
	_ = hub.List(ctx, &ls)
	live := map[string]bool{}
	for i := range ls.Items {
		if ls.Items[i].Live() {
			live[string(ls.Items[i].UID)] = true
		}
	}
	n := 0
	for _, ns := range nss.Items {
		if ns.DeletionTimestamp == nil && !live[ns.Labels[flotillav1.LabelLease]] {
			n++
		}
	}
	return n
}

func workload(ctx context.Context, c client.Client, ns, name string) *flotillav1.Workload {
	w := &flotillav1.Workload{}
	_ = c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, w)
	return w
}

func placements(ctx context.Context, c client.Client, ns, name string) []string {
	var ls flotillav1.LeaseList
	_ = c.List(ctx, &ls, client.InNamespace(ns), client.MatchingLabels{flotillav1.LabelWorkload: name})
	var out []string
	for i := range ls.Items {
		if l := &ls.Items[i]; l.Live() {
			out = append(out, fmt.Sprintf("%s:%d", l.Spec.ProviderRef.Name, l.Spec.Replicas))
		}
	}
	slices.Sort(out)
	return out
}

func (d *demo) printStatus(ctx context.Context, c client.Client) error {
	var ps flotillav1.ProviderList
	var ws flotillav1.WorkloadList
	var ls flotillav1.LeaseList
	var as flotillav1.AccountList
	for _, l := range []client.ObjectList{&ps, &ws, &ls, &as} {
		if err := c.List(ctx, l); err != nil {
			return err
		}
	}
	fmt.Fprintln(d.Out)
	err := status.Render(d.Out, status.Snapshot{Now: time.Now(), Providers: ps.Items, Workloads: ws.Items, Leases: ls.Items, Accounts: as.Items})
	fmt.Fprintln(d.Out)
	return err
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Down stops the demo's manager and agents and tears its federation down.
func Down(opts DemoOptions) error { return newDemo(opts).down() }

func (d *demo) down() error {
	dir := d.Dir
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(d.Out, "no demo is running from %s\n", dir)
		return os.RemoveAll(dir)
	}
	if err != nil {
		return err
	}
	st := &state{}
	if err := json.Unmarshal(b, st); err != nil {
		return fmt.Errorf("%s/state.json: %w", dir, err)
	}
	for _, pid := range st.PIDs {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range st.PIDs {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if st.Federation != "" {
		if err := teardown(st.Federation, d.bin, d.say); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	fmt.Fprintf(d.Out, "demo removed: %d processes stopped, clusters deleted, %s removed\n", len(st.PIDs), dir)
	return nil
}

// realNodesAvailable says why this machine cannot run the demo's real
// nodes, or nil.
func realNodesAvailable(bin string) error {
	if err := RealNodePrereqs(bin); err != nil {
		return err
	}
	for _, img := range []string{"pause", "web", "batch", "manager", "agent"} {
		if _, err := os.Stat(filepath.Join(bin, "images", img+".tar")); err != nil {
			return fmt.Errorf("image %s not built: run 'make images'", img)
		}
	}
	return nil
}

func why(fakeOnly bool, bin string) string {
	if fakeOnly {
		return "as asked"
	}
	return fmt.Sprintf("no real nodes here: %v", realNodesAvailable(bin))
}

// startManager installs the hub chart and runs the manager: as the chart's
// pod on the hub's real node, or as a local process beside fake nodes.
func (d *demo) startManager(ctx context.Context, fed *Federation, st *state, save func() error) error {
	flags := []string{"--provider-grace-period", "10s", "--settlement-interval", "5s", "--fee-bps", "200"}
	chart := []string{"install", "flotilla-hub", filepath.Join(d.Root, "charts", "flotilla-hub"), "--kubeconfig", fed.Hub.Kubeconfig,
		"-n", flotillav1.SystemNamespace, "--create-namespace", "--set", "hubID=" + hubID}
	if !d.real {
		d.say("2/6 installing the hub chart and starting the manager")
		if err := d.helm(append(chart, "--set", "replicas=0")...); err != nil {
			return err
		}
		pid, err := startProcess(d.Dir, "manager", filepath.Join(d.bin, "manager"), append([]string{"--kubeconfig", fed.Hub.Kubeconfig,
			"--hub-id", hubID, "--metrics-bind-address", "0", "--health-probe-bind-address", "0"}, flags...)...)
		if err != nil {
			return err
		}
		st.PIDs = append(st.PIDs, pid)
		return save()
	}
	d.say("2/6 installing the hub chart: the manager runs as its pod, image docker.io/flotilla/manager:dev")
	if err := fed.InstallHubChart(hubID, "--set", "manager.feeBps=200"); err != nil {
		return err
	}
	return d.awaitPod(ctx, fed.Hub, ManagerSelector)
}

// awaitPod waits for a chart's pod on c to be Ready, saying what it waits on.
func (d *demo) awaitPod(ctx context.Context, c *Cluster, selector string) error {
	d.say("waiting for %s Ready on %s", selector, c.Name)
	last := ""
	p, err := c.AwaitPod(ctx, selector, 120*time.Second, func(progress string) {
		if progress != last {
			d.say("  %s", progress)
			last = progress
		}
	})
	if err == nil {
		d.say("  %s Ready on node %s", p.Name, p.Spec.NodeName)
	}
	return err
}

// ownerChartArgs are the provider chart values o sets: prices and
// attributes.
func ownerChartArgs(o owner) []string {
	args := []string{"--set", "offer.refreshInterval=5s", "--set", "agent.witnessInterval=5s"}
	for k, v := range o.prices {
		args = append(args, "--set-string", "offer.prices."+strings.ReplaceAll(k, ".", `\.`)+"="+v)
	}
	for k, v := range o.attributes {
		args = append(args, "--set-string", "provider.attributes."+k+"="+v)
	}
	return args
}

// joinOwnerWithPod issues o's join credential and installs the provider
// chart as o would, with the agent as the chart's pod on o's real node.
func (d *demo) joinOwnerWithPod(ctx context.Context, fed *Federation, hub client.Client, o owner) error {
	c := fed.Provider(o.provider)
	joinKC, err := c.JoinWithAgentPod(ctx, hub, hubID, ownerChartArgs(o)...)
	if err == nil {
		err = os.WriteFile(filepath.Join(d.Dir, o.provider+".join.kubeconfig"), joinKC, 0o600)
	}
	if err == nil {
		err = d.awaitPod(ctx, c, AgentSelector)
	}
	if err == nil {
		d.say("    %s: chart installed, agent running as a pod, prices %v", o.provider, o.prices)
	}
	return err
}

// joinOwnerWithProcess does the same beside fake nodes, where no pod
// runs: the chart installs the agent's identity and the agent runs as a
// local process.
func (d *demo) joinOwnerWithProcess(ctx context.Context, fed *Federation, hub client.Client, hubCfg *rest.Config, o owner, st *state, save func() error) error {
	ca, err := os.ReadFile(hubCfg.CAFile)
	if len(hubCfg.CAData) > 0 {
		ca, err = hubCfg.CAData, nil
	}
	if err != nil {
		return err
	}
	c := fed.Provider(o.provider)
	server, err := c.APIServerURL()
	if err != nil {
		return err
	}
	mode := flotillav1.ModePush
	if o.pull {
		mode, server = flotillav1.ModePull, ""
	}
	joinKC, err := join.Issue(ctx, hub, join.Options{Name: o.provider, Owner: o.owner, Region: o.region, APIServerURL: server,
		Mode: mode, Server: hubCfg.Host, CAData: ca})
	if err != nil {
		return err
	}
	joinFile := filepath.Join(d.Dir, o.provider+".join.kubeconfig")
	if err := os.WriteFile(joinFile, joinKC, 0o600); err != nil {
		return err
	}
	args := append(ownerChartArgs(o), "--set", "provider.apiServerURL="+server, "--set", "provider.mode="+string(mode),
		"--set", "offer.reserve.cpu=1", "--set", "offer.reserve.memory=2Gi")
	if err := c.InstallProviderChart(hubID, o.region, args...); err != nil {
		return err
	}
	agentKC, err := c.ServiceAccountKubeconfig(ctx, flotillav1.SystemNamespace, "flotilla-agent-token")
	if err != nil {
		return err
	}
	agentFile := filepath.Join(d.Dir, o.provider+".agent.kubeconfig")
	if err := os.WriteFile(agentFile, agentKC, 0o600); err != nil {
		return err
	}
	pid, err := startProcess(d.Dir, "agent-"+o.provider, filepath.Join(d.bin, "agent"), "--kubeconfig", agentFile, "--hub-kubeconfig", joinFile)
	if err != nil {
		return err
	}
	st.PIDs = append(st.PIDs, pid)
	if err := save(); err != nil {
		return err
	}
	d.say("    %s: chart installed, agent running (pid %d) in %s mode, prices %v", o.provider, pid, mode, o.prices)
	return nil
}

// fetchWeb asks one of web's replicas on a real node for its answer, as
// a visitor would, and prints it.
func (d *demo) fetchWeb(ctx context.Context, fed *Federation) error {
	for _, c := range fed.Providers {
		cs, err := c.Clientset(10 * time.Second)
		if err != nil {
			return err
		}
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: flotillav1.LabelManaged + "=true,app=web"})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || !slices.Contains(c.RealNodes, p.Spec.NodeName) {
				continue
			}
			body, err := AskWeb(p.Status.PodIP, 3*time.Second)
			if err != nil {
				return fmt.Errorf("fetching web from %s on %s: %w", p.Name, c.Name, err)
			}
			d.say("    web answered from %s's real node (http://%s:8080/): %s", c.Name, p.Status.PodIP, body)
			return nil
		}
	}
	return errors.New("no replica of web runs on a real node")
}

// AskWeb asks the web image's server at addr for its answer ("hello from
// <pod>"), trimmed; an error for no answer or a status other than 200.
func AskWeb(addr string, timeout time.Duration) (string, error) {
	return Fetch(&http.Client{Timeout: timeout}, "http://"+net.JoinHostPort(addr, "8080")+"/")
}

// Fetch GETs url once with c and returns the answer's first KiB, trimmed;
// an error for no answer or a status other than 200.
func Fetch(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %q", resp.StatusCode, body)
	}
	return strings.TrimSpace(string(body)), nil
}
