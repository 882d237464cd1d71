// Package localfed runs a federation on one machine, for people trying
// Flotilla (`flotillactl local up`) and for the end-to-end tests: one hub
// and N provider clusters, each a real control plane (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler) started by
// kwokctl's binary runtime, with kwok standing in for kubelets on fake
// nodes of declared capacity. Such a federation needs no root and no
// container engine: every component is an unprivileged local process. A
// cluster may also have real nodes (realnode.go), which need root.
//
// Every Federation owns a working folder of its own (so runs can be
// parallel), records the PID of the process that created it, and tears
// everything down on Close. Federations whose creator died without closing
// them (a killed test) are reaped by the next New or by
// `flotillactl local gc`.
package localfed

import (
	"context"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/remote"
)

// NodeSet declares Count identical fake nodes.
type NodeSet struct {
	// Count of nodes; 0 means 1.
	Count int
	// CPU and Memory allocatable per node, as quantities ("8", "32Gi").
	CPU, Memory string
	// GPU is the nvidia.com/gpu allocatable per node.
	GPU int
	// Labels added to each node.
	Labels map[string]string
}

// ProviderSpec declares one provider cluster.
type ProviderSpec struct {
	Name   string
	Owner  string
	Region string
	Nodes  []NodeSet
	// WrongDigest, when set, is the result every completed Job pod on this
	// provider reports instead of the one its template asks for (the
	// annotation testbed.example/result): a lying provider.
	WrongDigest string
	// RealNodes is how many real nodes (kubelet, containerd, CNI,
	// kube-proxy; see realnode.go) the provider has beside its kwok nodes.
	// They need root and `make tools images`.
	RealNodes int
	// TamperedImages loads the tampered batch image on this provider's real
	// nodes under the honest image's name: a provider that cheats.
	TamperedImages bool
	// Audit makes the provider's API server log every request's metadata
	// (user, user agent, verb, resource) to AuditLog().
	Audit bool
}

// ResultAnnotation on a pod template is the termination message a completed
// Job pod's first container reports on the testbed.
const ResultAnnotation = "testbed.example/result"

//go:embed stages.yaml.tmpl
var stagesTemplate string

// Options configure a Federation.
type Options struct {
	// Providers to start besides the hub.
	Providers []ProviderSpec
	// Root holds charts/ and config/samples; defaults to FindRoot().
	Root string
	// BinDir holds the tool binaries; defaults to Root's bin/.
	BinDir string
	// BaseDir is where working folders are made; defaults to
	// $TMPDIR/flotilla-testbed.
	BaseDir string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// HubRealNodes is how many real nodes the hub cluster has.
	HubRealNodes int
	// HubPriorityAndFairness runs the hub's API server with priority and
	// fairness and the upstream limits on requests in flight, as a
	// production API server runs; kwokctl turns both off, so every
	// request is served at once.
	HubPriorityAndFairness bool
	// ImagesDir holds the image tarballs real nodes load; defaults to
	// BinDir/images (`make images`).
	ImagesDir string
}

// Federation is a running hub and its providers.
type Federation struct {
	Dir       string
	Hub       *Cluster
	Providers []*Cluster

	bin    string
	root   string
	images string
	// anyReal: some cluster has real nodes, so every API server also
	// answers at the machine's address.
	anyReal bool
	logf    func(string, ...any)
	closed  sync.Once
}

// Cluster is one control plane of the federation.
type Cluster struct {
	Name string
	// Spec is the provider's declaration; zero for the hub.
	Spec ProviderSpec
	// Kubeconfig is the path of an admin kubeconfig for the cluster.
	Kubeconfig string

	fed       *Federation
	realNodes int
	fairness  bool
	// RealNodes are the names of the cluster's real nodes, once started.
	RealNodes []string
}

// OwnerFile in a federation's folder holds the PID of the process that made it.
const OwnerFile = "owner.pid"

// RepoRoot returns the repository's top directory.
func RepoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			if b, _ := os.ReadFile(filepath.Join(d, "go.mod")); strings.HasPrefix(string(b), "module github.com/flotilla-dev/flotilla\n") {
				return d
			}
		}
	}
	return dir
}

// FindRoot returns the first folder holding charts/flotilla-hub, looking up
// from the working directory and then from the running executable's (a
// checkout's bin/flotillactl, or an unpacked release); RepoRoot when
// there is none.
func FindRoot() string {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, s := range starts {
		for d := s; d != "/" && d != "."; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "charts", "flotilla-hub", "Chart.yaml")); err == nil {
				return d
			}
		}
	}
	return RepoRoot()
}

// DefaultBaseDir is where federations are made unless Options.BaseDir says otherwise.
func DefaultBaseDir() string { return filepath.Join(os.TempDir(), "flotilla-testbed") }

// New starts a hub and the providers of opts. On error, whatever was started
// is torn down.
func New(ctx context.Context, opts Options) (*Federation, error) {
	if opts.Root == "" {
		opts.Root = FindRoot()
	}
	if opts.BinDir == "" {
		opts.BinDir = filepath.Join(opts.Root, "bin")
	}
	if opts.BaseDir == "" {
		opts.BaseDir = DefaultBaseDir()
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	for _, b := range []string{"kwokctl", "kwok", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run 'make tools' first", b, opts.BinDir)
		}
	}
	seen := map[string]bool{"hub": true}
	for _, p := range opts.Providers {
		if p.Name == "" || seen[p.Name] {
			return nil, fmt.Errorf("provider names must be unique, non-empty and not \"hub\": %q", p.Name)
		}
		seen[p.Name] = true
	}
	if err := os.MkdirAll(opts.BaseDir, 0o755); err != nil {
		return nil, err
	}
	// Reap federations whose creator is gone before taking ports and disk.
	_, _ = gc(opts.BaseDir, opts.BinDir, opts.Logf)

	dir, err := os.MkdirTemp(opts.BaseDir, "fed-")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, OwnerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	f := &Federation{Dir: dir, bin: opts.BinDir, root: opts.Root, logf: opts.Logf, images: opts.ImagesDir}
	if f.images == "" {
		f.images = filepath.Join(opts.BinDir, "images")
	}
	f.Hub = &Cluster{Name: "hub", fed: f, realNodes: opts.HubRealNodes, fairness: opts.HubPriorityAndFairness}
	for _, p := range opts.Providers {
		f.Providers = append(f.Providers, &Cluster{Name: p.Name, Spec: p, fed: f, realNodes: p.RealNodes})
	}
	f.anyReal = opts.HubRealNodes > 0 || slices.ContainsFunc(opts.Providers, func(p ProviderSpec) bool { return p.RealNodes > 0 })
	if err := f.checkRealNodes(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}

	all := append([]*Cluster{f.Hub}, f.Providers...)
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	// A control plane's start is CPU-bound; starting all at once on a small
	// machine makes each take so long that controller managers give up
	// waiting for their API server and exit.
	slots := make(chan struct{}, max(2, 2*runtime.NumCPU()))
	for i, c := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			errs[i] = c.createUsable(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		_ = f.Close()
		return nil, err
	}
	for _, c := range f.Providers {
		if err := c.createNodes(ctx); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	for _, c := range all {
		if err := c.startRealNodes(ctx); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	return f, nil
}

// Provider returns the provider cluster called name, or nil.
func (f *Federation) Provider(name string) *Cluster {
	for _, c := range f.Providers {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Close deletes every cluster, kills any process left and removes the
// working folder. It is safe to call more than once.
func (f *Federation) Close() error {
	var err error
	f.closed.Do(func() { err = teardown(f.Dir, f.bin, f.logf) })
	return err
}

func (c *Cluster) workdir() string { return filepath.Join(c.fed.Dir, "clusters", c.Name) }

// AuditLog is where the API server of a cluster with Spec.Audit writes
// its audit events, one JSON object per line.
func (c *Cluster) AuditLog() string { return filepath.Join(c.fed.Dir, c.Name+"-audit.log") }

// SetLogf replaces where progress lines go; nil discards them.
func (f *Federation) SetLogf(logf func(string, ...any)) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	f.logf = logf
}

// PIDs are the cluster's component processes.
func (c *Cluster) PIDs() []int { return componentPIDs(c.workdir()) }

func (c *Cluster) kwokctl(ctx context.Context, args ...string) error {
	return runKwokctl(ctx, c.fed.Dir, c.fed.bin, append(args, "--name", c.Name)...)
}

func runKwokctl(ctx context.Context, dir, bin string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "kwokctl"), args...)
	cmd.Env = append(os.Environ(), "KWOK_WORKDIR="+dir)
	// Its own process group, so that a Ctrl-C meant for the test does not
	// kill the cluster before teardown runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kwokctl %s: %w\n%s", strings.Join(args, " "), err, tail(out, 2000))
	}
	return nil
}

// createUsable creates the cluster and waits until it is usable; a start
// that failed (a port taken between picking and binding it, say) is retried
// once from scratch.
func (c *Cluster) createUsable(ctx context.Context) error {
	err := c.create(ctx)
	created := err == nil
	if created {
		err = c.waitUsable(ctx)
	}
	if err == nil {
		return nil
	}
	c.fed.logf("testbed: cluster %s failed to start, retrying: %v", c.Name, err)
	if created {
		// A component gave up on a slow API server: restart the cluster on
		// its ports and certificates. (Deleting and creating it again under
		// the same name left a kubeconfig whose CA the new API server's
		// certificate did not match.)
		pids := componentPIDs(c.workdir())
		if err := c.kwokctl(ctx, "stop", "cluster"); err != nil {
			return err
		}
		waitGone(pids, 10*time.Second)
		if err := c.kwokctl(ctx, "start", "cluster", "--wait", "90s"); err != nil {
			return err
		}
		return c.waitUsable(ctx)
	}
	pids := componentPIDs(c.workdir())
	_ = runKwokctl(ctx, c.fed.Dir, c.fed.bin, "delete", "cluster", "--name", c.Name)
	// Nothing of the failed attempt may linger while the next one starts.
	if !waitGone(pids, 10*time.Second) {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		waitGone(pids, 5*time.Second)
	}
	if err := os.RemoveAll(c.workdir()); err != nil {
		return err
	}
	if err := c.create(ctx); err != nil {
		return err
	}
	return c.waitUsable(ctx)
}

func (c *Cluster) create(ctx context.Context) error {
	start := time.Now()
	b := c.fed.bin
	// kwokctl scans down from port 32767 for free ports, so two testbeds
	// created at once would pick the same ones; the kernel's random
	// ephemeral ports do not collide that way.
	config, err := c.writePortConfig()
	if err != nil {
		return err
	}
	args := []string{"create", "cluster", "--runtime", "binary", "--config", config,
		"--kube-apiserver-binary", filepath.Join(b, "kube-apiserver"),
		"--kube-controller-manager-binary", filepath.Join(b, "kube-controller-manager"),
		"--kube-scheduler-binary", filepath.Join(b, "kube-scheduler"),
		"--etcd-binary", filepath.Join(b, "etcd"),
		"--kwok-controller-binary", filepath.Join(b, "kwok"),
		"--kubeconfig", filepath.Join(c.fed.Dir, "kwokctl-kubeconfig"),
		"--disable-qps-limits",
		// With node leases, a restarted kwok waits on the leases its previous
		// instance held and leaves new pods Pending; status heartbeats do not.
		"--node-lease-duration-seconds", "0",
		"--wait", "90s"}
	err = c.kwokctl(ctx, args...)
	if err != nil {
		return fmt.Errorf("creating cluster %s: %w", c.Name, err)
	}
	c.Kubeconfig = filepath.Join(c.workdir(), "kubeconfig.yaml")
	c.fed.logf("testbed: cluster %s up in %s", c.Name, time.Since(start).Round(time.Millisecond))
	return nil
}

// waitUsable waits for the default ServiceAccount: until the controller
// manager has made it, pod creation fails and controllers back off for long.
func (c *Cluster) waitUsable(ctx context.Context) error {
	cs, err := c.Clientset(10 * time.Second)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if dead := c.deadComponent(); dead != "" {
			log, _ := os.ReadFile(filepath.Join(c.workdir(), "logs", dead+".log"))
			return fmt.Errorf("cluster %s: %s exited:\n%s", c.Name, dead, tail(log, 1500))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s: default ServiceAccount never appeared: %w", c.Name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// deadComponent names a component of the cluster whose process is gone.
func (c *Cluster) deadComponent() string {
	files, _ := filepath.Glob(filepath.Join(c.workdir(), "pids", "*.pid"))
	for _, f := range files {
		if pid, err := readPID(f); err == nil && pid > 1 && !Alive(pid) {
			return strings.TrimSuffix(filepath.Base(f), ".pid")
		}
	}
	return ""
}

func (c *Cluster) writePortConfig() (string, error) {
	ports, err := freePorts(6)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.fed.Dir, c.Name+"-kwokctl.yaml")
	conf := fmt.Sprintf(`apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  etcdPeerPort: %d
  etcdPort: %d
  kubeApiserverPort: %d
  kwokControllerPort: %d
  kubeControllerManagerPort: %d
  kubeSchedulerPort: %d
`, ports[0], ports[1], ports[2], ports[3], ports[4], ports[5])
	// Extra arguments go here rather than in kwokctl's --extra-args, which
	// mishandles a component named twice.
	conf += `componentsPatches:
# One instance of each per cluster: waiting for the previous instance's
# leader lease after Start only delays the returning provider.
- name: kube-controller-manager
  extraArgs: [{key: leader-elect, value: "false"}]
- name: kube-scheduler
  extraArgs: [{key: leader-elect, value: "false"}]
# kwok fakes only the fake nodes (they carry this annotation); a real
# node's pods are its kubelet's.
- name: kwok-controller
  extraArgs:
  - {key: manage-all-nodes, value: "false"}
  - {key: manage-nodes-with-annotation-selector, value: "kwok.x-k8s.io/node=fake"}
`
	if c.fed.anyReal {
		host, err := MachineAddress()
		if err != nil {
			return "", err
		}
		// Pods of every cluster (a charted manager or agent) dial the other
		// clusters at the machine's address, and their own through the
		// kubernetes Service (10.0.0.1 in kube-apiserver's default range).
		conf = strings.Replace(conf, "  kubeSchedulerPort:", fmt.Sprintf("  kubeApiserverCertSANs: [%q, %q]\n  kubeSchedulerPort:", host, "10.0.0.1"), 1)
	}
	// One patch for kube-apiserver: kwokctl takes a component's first.
	var apiserverArgs string
	if c.realNodes > 0 {
		host, err := MachineAddress()
		if err != nil {
			return "", err
		}
		// Pods reach their API server through the kubernetes Service, whose
		// endpoint is the advertised address (a node's loopback is its
		// own); node names are not in DNS, the kubelet's certificate names
		// its address. Real nodes and pods dial the machine's address and
		// the Service's first address (kwokctl's default service range).
		apiserverArgs += fmt.Sprintf(`  - {key: advertise-address, value: %q}
  - {key: kubelet-preferred-address-types, value: "InternalIP,Hostname"}
  - {key: kubelet-client-certificate, value: %q}
  - {key: kubelet-client-key, value: %q}
`, host, filepath.Join(c.workdir(), "pki", "admin.crt"), filepath.Join(c.workdir(), "pki", "admin.key"))
	}
	if c.Spec.Audit {
		policy := filepath.Join(c.fed.Dir, c.Name+"-audit-policy.yaml")
		if err := os.WriteFile(policy, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"), 0o644); err != nil {
			return "", err
		}
		if err := os.MkdirAll(filepath.Dir(c.AuditLog()), 0o755); err != nil {
			return "", err
		}
		apiserverArgs += fmt.Sprintf(`  - {key: audit-policy-file, value: %q}
  - {key: audit-log-path, value: %q}
`, policy, c.AuditLog())
	}
	if c.fairness {
		// kube-apiserver's own defaults; the last of a flag given twice wins.
		apiserverArgs += `  - {key: enable-priority-and-fairness, value: "true"}
  - {key: max-requests-inflight, value: "400"}
  - {key: max-mutating-requests-inflight, value: "200"}
`
	}
	if apiserverArgs != "" {
		conf += "- name: kube-apiserver\n  extraArgs:\n" + apiserverArgs
	}
	if c.Spec.WrongDigest != "" && !validDigest(c.Spec.WrongDigest) {
		return "", fmt.Errorf("provider %s: WrongDigest %q is not sha256:<64 hex digits>", c.Name, c.Spec.WrongDigest)
	}
	conf += "---\n" + strings.ReplaceAll(stagesTemplate, "@WRONG_DIGEST@", c.Spec.WrongDigest)
	return path, os.WriteFile(path, []byte(conf), 0o644)
}

// Ports are picked at random below the kernel's ephemeral range (32768 and
// up on Linux): a port the kernel handed out for a moment can be reused as
// the source port of an outgoing connection before etcd binds it.
const portLow, portHigh = 20000, 30000

// taken remembers every port handed out by this process: clusters of one
// federation start concurrently, and none has bound its ports yet when the
// next one picks.
var taken = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freePorts returns n distinct ports that are free on all interfaces now and
// were not handed out before by this process.
func freePorts(n int) ([]int, error) {
	taken.Lock()
	defer taken.Unlock()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("no free port found in %d-%d", portLow, portHigh)
		}
		p := portLow + rand.IntN(portHigh-portLow)
		if taken.ports[p] || !portFree(p) {
			continue
		}
		taken.ports[p] = true
		ports = append(ports, p)
	}
	return ports, nil
}

func portFree(p int) bool {
	for _, host := range []string{"127.0.0.1", "0.0.0.0"} {
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			return false
		}
		_ = l.Close()
	}
	return true
}

func (c *Cluster) createNodes(ctx context.Context) error {
	cs, err := c.Clientset(30 * time.Second)
	if err != nil {
		return err
	}
	n := 0
	for _, set := range c.Spec.Nodes {
		count := max(set.Count, 1)
		for range count {
			n++
			node, err := fakeNode(fmt.Sprintf("%s-node-%d", c.Name, n), c.Spec, set)
			if err != nil {
				return err
			}
			if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("creating node %s on %s: %w", node.Name, c.Name, err)
			}
		}
	}
	return nil
}

func fakeNode(name string, p ProviderSpec, set NodeSet) (*corev1.Node, error) {
	res := corev1.ResourceList{corev1.ResourcePods: resource.MustParse("110")}
	for k, v := range map[corev1.ResourceName]string{corev1.ResourceCPU: set.CPU, corev1.ResourceMemory: set.Memory} {
		if v == "" {
			return nil, fmt.Errorf("node set of %s: %s is required", p.Name, k)
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("node set of %s: %s %q: %w", p.Name, k, v, err)
		}
		res[k] = q
	}
	if set.GPU > 0 {
		res["nvidia.com/gpu"] = *resource.NewQuantity(int64(set.GPU), resource.DecimalSI)
	}
	labels := map[string]string{
		"type":                   "kwok",
		"kubernetes.io/hostname": name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
	}
	if p.Region != "" {
		labels["topology.kubernetes.io/region"] = p.Region
	}
	for k, v := range set.Labels {
		labels[k] = v
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      labels,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
		},
		Status: corev1.NodeStatus{Capacity: res, Allocatable: res.DeepCopy()},
	}, nil
}

// RESTConfig returns a client config for the cluster with the given request
// timeout (0 means none).
func (c *Cluster) RESTConfig(timeout time.Duration) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig of %s: %w", c.Name, err)
	}
	cfg.Timeout = timeout
	cfg.QPS, cfg.Burst = 200, 400
	return cfg, nil
}

// APIServerURL is the address of the cluster's API server.
func (c *Cluster) APIServerURL() (string, error) {
	cfg, err := c.RESTConfig(0)
	if err != nil {
		return "", err
	}
	return cfg.Host, nil
}

// MachineURL is the address of the cluster's API server at the machine's
// own address: the one pods on real nodes (of any cluster) can dial. Only
// a federation with real nodes has certificates valid for it.
func (c *Cluster) MachineURL() (string, error) {
	server, err := c.APIServerURL()
	if err != nil {
		return "", err
	}
	_, port, err := net.SplitHostPort(strings.TrimPrefix(server, "https://"))
	if err != nil {
		return "", fmt.Errorf("API server of %s: %q: %w", c.Name, server, err)
	}
	host, err := MachineAddress()
	if err != nil {
		return "", err
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// InlineKubeconfig is the cluster's admin kubeconfig with its CA and
// client certificate inlined: the only form the hub reads (no files).
func (c *Cluster) InlineKubeconfig() ([]byte, error) {
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig of %s: %w", c.Name, err)
	}
	if err := clientcmdapi.FlattenConfig(cfg); err != nil {
		return nil, fmt.Errorf("inlining kubeconfig of %s: %w", c.Name, err)
	}
	if err := clientcmdapi.MinifyConfig(cfg); err != nil {
		return nil, fmt.Errorf("minifying kubeconfig of %s: %w", c.Name, err)
	}
	for _, u := range cfg.AuthInfos {
		u.Extensions = nil
	}
	for _, cl := range cfg.Clusters {
		cl.Extensions = nil
	}
	for _, cx := range cfg.Contexts {
		cx.Extensions = nil
	}
	cfg.Extensions = nil
	return clientcmd.Write(*cfg)
}

// Clientset returns a typed client for the cluster.
func (c *Cluster) Clientset(timeout time.Duration) (*kubernetes.Clientset, error) {
	cfg, err := c.RESTConfig(timeout)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// Stop stops every component of the cluster; its API then refuses
// connections. State in etcd survives for Start.
func (c *Cluster) Stop(ctx context.Context) error {
	_ = c.Thaw()
	if err := c.kwokctl(ctx, "stop", "cluster"); err != nil {
		return fmt.Errorf("stopping %s: %w", c.Name, err)
	}
	c.fed.logf("testbed: cluster %s stopped", c.Name)
	return nil
}

// Start starts a stopped cluster again, on the same ports and with the same
// data, and waits for its API to answer.
func (c *Cluster) Start(ctx context.Context) error {
	if err := c.kwokctl(ctx, "start", "cluster", "--wait", "90s"); err != nil {
		return fmt.Errorf("starting %s: %w", c.Name, err)
	}
	c.fed.logf("testbed: cluster %s started", c.Name)
	return nil
}

// Freeze suspends the cluster's kube-apiserver with SIGSTOP: connections are
// accepted but requests hang, like a provider whose network black-holes.
func (c *Cluster) Freeze() error { return c.signalAPIServer(syscall.SIGSTOP) }

// Thaw resumes an apiserver suspended by Freeze.
func (c *Cluster) Thaw() error { return c.signalAPIServer(syscall.SIGCONT) }

func (c *Cluster) signalAPIServer(sig syscall.Signal) error {
	pid, err := readPID(filepath.Join(c.workdir(), "pids", "kube-apiserver.pid"))
	if err != nil {
		return fmt.Errorf("finding kube-apiserver of %s: %w", c.Name, err)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signalling kube-apiserver of %s (pid %d): %w", c.Name, pid, err)
	}
	if sig != syscall.SIGSTOP {
		return nil
	}
	// A stop is delivered asynchronously: a request sent at once could
	// still be answered. Return once the process is stopped.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if stopped(pid) {
			return nil
		}
	}
	return fmt.Errorf("kube-apiserver of %s (pid %d) did not stop", c.Name, pid)
}

// stopped reports whether every thread of pid is stopped, from /proc.
func stopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			return false
		}
		// The state follows the command name, which is in parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
			return false
		}
	}
	return true
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// ServiceAccountKubeconfig returns a kubeconfig for the token in a
// ServiceAccount token Secret of the cluster, once the token controller has
// filled it (or ctx ends).
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, namespace, secret string) ([]byte, error) {
	cfg, err := c.RESTConfig(10 * time.Second)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	var s *corev1.Secret
	for {
		s, err = cs.CoreV1().Secrets(namespace).Get(ctx, secret, metav1.GetOptions{})
		if err == nil && len(s.Data["token"]) > 0 {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("token Secret %s/%s on %s not filled: %v (last error: %v)", namespace, secret, c.Name, ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	return remote.TokenKubeconfig(c.Name, cfg.Host, s.Data["ca.crt"], secret, string(s.Data["token"]))
}

// InstallProviderChart installs charts/flotilla-provider on the cluster
// with the federation's helm, for the hub hubID, under the cluster's own
// name and owner, with the agent left to run outside the cluster
// (agent.enabled=false). extra are more helm flags, such as --set.
func (c *Cluster) InstallProviderChart(hubID, region string, extra ...string) error {
	cfg, err := c.RESTConfig(10 * time.Second)
	if err != nil {
		return err
	}
	args := append([]string{"install", "flotilla-provider", filepath.Join(c.fed.root, "charts", "flotilla-provider"),
		"--kubeconfig", c.Kubeconfig, "-n", flotillav1.SystemNamespace, "--create-namespace",
		"--set", "hub.id=" + hubID, "--set", "provider.name=" + c.Name, "--set", "provider.owner=" + c.Spec.Owner,
		"--set", "provider.region=" + region, "--set", "provider.apiServerURL=" + cfg.Host, "--set", "agent.enabled=false"}, extra...)
	if out, err := exec.Command(filepath.Join(c.fed.bin, "helm"), args...).CombinedOutput(); err != nil {
		return fmt.Errorf("helm install on %s: %v\n%s", c.Name, err, tail(out, 2000))
	}
	return nil
}

func validDigest(d string) bool {
	hexPart, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexPart) != 64 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil && strings.ToLower(hexPart) == hexPart
}
