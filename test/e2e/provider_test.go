package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/agent"
	"github.com/flotilla-dev/flotilla/internal/join"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/internal/render"
	"github.com/flotilla-dev/flotilla/internal/usage"
	"github.com/flotilla-dev/flotilla/test/hubenv"
	"github.com/flotilla-dev/flotilla/test/testbed"
)

const joinHubID = "fed"

// buildCommand compiles one of cmd/ into a temporary folder.
func buildCommand(name string) (string, error) {
	dir, err := os.MkdirTemp("", "flotilla-"+name+"-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/"+name)
	cmd.Dir = hubenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %v\n%s", name, err, out)
	}
	return bin, nil
}

// The agent, flotillactl and the manager, built once per test binary.
var (
	buildAgent       = sync.OnceValues(func() (string, error) { return buildCommand("agent") })
	buildFlotillactl = sync.OnceValues(func() (string, error) { return buildCommand("flotillactl") })
	buildManager     = sync.OnceValues(func() (string, error) { return buildCommand("manager") })
)

// helmInstallProvider installs the provider chart on c with the real helm.
func helmInstallProvider(t *testing.T, c *localfed.Cluster, region string, extra ...string) {
	t.Helper()
	if err := c.InstallProviderChart(joinHubID, region, append([]string{"--set", "offer.reserve.cpu=2", "--set", "offer.reserve.memory=4Gi"}, extra...)...); err != nil {
		t.Fatal(err)
	}
}

// flotillactl runs the built flotillactl and returns its output.
func flotillactl(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := buildFlotillactl()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("flotillactl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tokenKubeconfig is the testbed's kubeconfig for a ServiceAccount token
// Secret on c, and a client config from it.
func tokenKubeconfig(t *testing.T, c *localfed.Cluster, namespace, secret string) ([]byte, *rest.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := c.ServiceAccountKubeconfig(ctx, namespace, secret)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	rc.Timeout = 10 * time.Second
	return b, rc
}

// joinedProvider is a provider cluster with the chart installed and its
// agent running as a local process.
type joinedProvider struct {
	name       string
	cluster    *localfed.Cluster
	admin      kubernetes.Interface
	joinConfig *rest.Config // the hub join credential
	federation *rest.Config // the federation identity, as the hub uses it
	// stopAgent ends the agent; restartAgent starts it again.
	stopAgent, restartAgent func()
	exited                  chan struct{} // closed when the agent process ends
}

// joinProvider issues a join credential on the hub, installs the provider
// chart with the real helm binary, and starts the agent with the
// credentials the chart created.
func joinProvider(t *testing.T, h *hub, c *localfed.Cluster, region string) *joinedProvider {
	t.Helper()
	server, err := c.APIServerURL()
	if err != nil {
		t.Fatal(err)
	}
	return joinProviderVia(t, h, c, region, server)
}

// joinProviderVia is joinProvider with the hub reaching the provider's API
// server at server (a proxy in front of it, say), as recorded at join.
func joinProviderVia(t *testing.T, h *hub, c *localfed.Cluster, region, server string) *joinedProvider {
	t.Helper()
	return joinProviderIn(t, h, c, region, server, flotillav1.ModePush)
}

// joinPullProvider joins c in Pull mode: the hub records no API server
// for it and holds no credential of it; the agent connects to the hub.
func joinPullProvider(t *testing.T, h *hub, c *localfed.Cluster, region string, chartArgs ...string) *joinedProvider {
	t.Helper()
	return joinProviderIn(t, h, c, region, "", flotillav1.ModePull, chartArgs...)
}

func joinProviderIn(t *testing.T, h *hub, c *localfed.Cluster, region, server string, mode flotillav1.ProviderMode, chartArgs ...string) *joinedProvider {
	t.Helper()
	ctx := context.Background()
	hubCfg, err := h.fed.Hub.RESTConfig(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := join.CAData(hubCfg)
	if err != nil {
		t.Fatal(err)
	}
	joinKC, err := join.Issue(ctx, h.client, join.Options{Name: c.Name, Owner: c.Spec.Owner, Region: region, APIServerURL: server,
		Mode: mode, Server: hubCfg.Host, CAData: ca})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	joinFile := filepath.Join(dir, "join.kubeconfig")
	if err := os.WriteFile(joinFile, joinKC, 0o600); err != nil {
		t.Fatal(err)
	}
	helmInstallProvider(t, c, region, append([]string{"--set", "offer.refreshInterval=2s", "--set", "agent.heartbeatInterval=2s",
		"--set", "provider.apiServerURL=" + server, "--set", "provider.mode=" + string(mode), "--set", "agent.pullInterval=1s"}, chartArgs...)...)
	admin := h.providers[c.Name]
	agentKC, _ := tokenKubeconfig(t, c, flotillav1.SystemNamespace, "flotilla-agent-token")
	agentFile := filepath.Join(dir, "agent.kubeconfig")
	if err := os.WriteFile(agentFile, agentKC, 0o600); err != nil {
		t.Fatal(err)
	}
	_, fedCfg := tokenKubeconfig(t, c, flotillav1.SystemNamespace, "flotilla-federation-token")
	joinCfg, err := clientcmd.RESTConfigFromKubeConfig(joinKC)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := buildAgent()
	if err != nil {
		t.Fatal(err)
	}
	jp := &joinedProvider{name: c.Name, cluster: c, admin: admin, joinConfig: joinCfg, federation: fedCfg}
	var logs lockedBuffer
	var mu sync.Mutex
	var cancel context.CancelFunc
	start := func() {
		mu.Lock()
		defer mu.Unlock()
		actx, stop := context.WithCancel(context.Background())
		cmd := exec.CommandContext(actx, bin, "--kubeconfig", agentFile, "--hub-kubeconfig", joinFile, "--namespace", flotillav1.SystemNamespace)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			stop()
			t.Errorf("starting the agent of %s: %v", c.Name, err)
			return
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		cancel, jp.exited = func() { stop(); <-exited }, exited
	}
	jp.stopAgent = func() {
		mu.Lock()
		defer mu.Unlock()
		if cancel != nil {
			cancel()
			cancel = nil
		}
	}
	jp.restartAgent = start
	start()
	t.Cleanup(func() {
		jp.stopAgent()
		if t.Failed() {
			out := logs.String()
			t.Logf("agent of %s (last lines):\n%s", c.Name, out[max(0, len(out)-4000):])
		}
	})
	return jp
}

// TestProviderJoin installs the provider chart on two clusters, joins them
// with their agents and per-provider join credentials, runs a Workload
// through the confined federation identity, and then tries the escapes the
// federation identity, a join credential and a tenant must not have.
func TestProviderJoin(t *testing.T) {
	ctx := context.Background()
	fed := testbed.NewForTest(t, localfed.Options{Providers: []localfed.ProviderSpec{
		{Name: "alice-1", Owner: "alice", Nodes: []localfed.NodeSet{{Count: 2, CPU: "8", Memory: "16Gi"}}},
		{Name: "bob-1", Owner: "bob", Nodes: []localfed.NodeSet{{Count: 1, CPU: "16", Memory: "64Gi"}}},
		{Name: "carol-1", Owner: "carol", Nodes: []localfed.NodeSet{{Count: 1, CPU: "4", Memory: "8Gi"}}},
	}})
	h := installHub(t, fed)
	for _, p := range fed.Providers {
		cs, err := p.Clientset(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		h.providers[p.Name] = cs
	}
	h.opts = controllers.Options{HubID: joinHubID, SettlementInterval: 2 * time.Second}
	h.start(t)

	alice := joinProvider(t, h, fed.Provider("alice-1"), "eu-west")
	bob := joinProvider(t, h, fed.Provider("bob-1"), "us-east")

	want := map[string][2]string{"alice-1": {"14", "28Gi"}, "bob-1": {"14", "60Gi"}} // nodes minus the 2 cpu, 4Gi reserve
	for _, jp := range []*joinedProvider{alice, bob} {
		name, w := jp.name, want[jp.name]
		hubenv.Await(t, 90*time.Second, name+" Ready with its Offer, key and heartbeat", func() (bool, string) {
			select {
			case <-jp.exited:
				t.Fatalf("the agent of %s exited", name)
			default:
			}
			p := &flotillav1.Provider{}
			o := &flotillav1.Offer{}
			if err := h.client.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
				return false, err.Error()
			}
			if err := h.client.Get(ctx, client.ObjectKey{Namespace: flotillav1.ProviderNamespace(name), Name: "standard"}, o); err != nil {
				return false, fmt.Sprintf("phase %s; offer: %v", p.Status.Phase, err)
			}
			cpu, mem := o.Spec.Resources[corev1.ResourceCPU], o.Spec.Resources[corev1.ResourceMemory]
			ok := p.Status.Phase == flotillav1.ProviderReady && p.Spec.PublicKey != "" && p.Status.LastHeartbeatTime != nil &&
				cpu.Cmp(resource.MustParse(w[0])) == 0 && mem.Cmp(resource.MustParse(w[1])) == 0
			return ok, fmt.Sprintf("phase %s key %q heartbeat %v offer cpu %s memory %s", p.Status.Phase, p.Spec.PublicKey,
				p.Status.LastHeartbeatTime, cpu.String(), mem.String())
		})
	}
	if _, err := alice.admin.CoreV1().Secrets(flotillav1.SystemNamespace).Get(ctx, agent.KeySecretName, metav1.GetOptions{}); err != nil {
		t.Errorf("the agent's key pair is not kept on the provider: %v", err)
	}

	// carol runs no agent: the CLI issues her credential and joins her.
	carol := fed.Provider("carol-1")
	joinFile := filepath.Join(t.TempDir(), "carol.join")
	carolServer, err := carol.APIServerURL()
	if err != nil {
		t.Fatal(err)
	}
	flotillactl(t, "hub", "issue-join", "carol-1", "--owner", "carol", "--region", "eu-west", "--provider-api-server", carolServer,
		"--kubeconfig", fed.Hub.Kubeconfig, "-o", joinFile)
	helmInstallProvider(t, carol, "eu-west")
	if out := flotillactl(t, "provider", "join", "carol-1", "--hub-kubeconfig", joinFile, "--provider-kubeconfig", carol.Kubeconfig); !strings.Contains(out, "joined") {
		t.Errorf("provider join said %q", out)
	}
	hubenv.Await(t, 60*time.Second, "carol-1 Ready with its Offer", func() (bool, string) {
		p := &flotillav1.Provider{}
		o := &flotillav1.Offer{}
		_ = h.client.Get(ctx, client.ObjectKey{Name: "carol-1"}, p)
		err := h.client.Get(ctx, client.ObjectKey{Namespace: "provider-carol-1", Name: "standard"}, o)
		cpu := o.Spec.Resources[corev1.ResourceCPU]
		return p.Status.Phase == flotillav1.ProviderReady && err == nil && cpu.Cmp(resource.MustParse("2")) == 0 && p.Spec.PublicKey != "",
			fmt.Sprintf("phase %s, offer %v cpu %s", p.Status.Phase, err, cpu.String())
	})

	// A Workload runs across both providers through the confined identity:
	// namespace, quota, limits, network policy, a copied ConfigMap and the
	// Deployment all pass its RBAC and admission policy.
	h.tenant(t, "tenant-a", "10")
	mustCreate(t, h.client, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web-config", Namespace: "tenant-a"}, Data: map[string]string{"k": "v"}})
	w := newWorkload("tenant-a", "web", flotillav1.ClassService, 2)
	w.Spec.Placement.MaxReplicasPerProvider = ptr.To[int32](1)
	w.Spec.Placement.AttributeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "owner", Operator: metav1.LabelSelectorOpIn, Values: []string{"alice", "bob"}}}}
	w.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}}}}}
	mustCreate(t, h.client, w)
	hubenv.Await(t, 60*time.Second, "web Ready on both providers", func() (bool, string) {
		got := h.workload(t, "tenant-a", "web")
		a, _ := h.runningPods("alice-1")
		b, _ := h.runningPods("bob-1")
		var ls flotillav1.LeaseList
		_ = h.client.List(ctx, &ls, client.InNamespace("tenant-a"))
		var errs []string
		for _, l := range ls.Items {
			errs = append(errs, l.Spec.ProviderRef.Name+": "+l.Status.LastError)
		}
		return got.Status.ReadyReplicas == 2 && a == 1 && b == 1, fmt.Sprintf("ready %d, running alice %d bob %d, lease errors %q",
			got.Status.ReadyReplicas, a, b, errs)
	})

	// Both agents sign what they observed; the hub's payments carry their
	// reports, which agree with the hub's own count.
	hubenv.Await(t, 90*time.Second, "payments to alice and bob with their agents' signed reports", func() (bool, string) {
		store := &ledgerstore.Store{Client: h.client, Reader: h.client, Namespace: flotillav1.SystemNamespace}
		entries, err := store.Load(ctx)
		if err != nil {
			return false, err.Error()
		}
		signed := map[string]bool{}
		var notes []string
		for _, e := range entries {
			if e.Kind != ledger.UsageSettled || len(e.ProviderSig) == 0 {
				continue
			}
			name := strings.TrimPrefix(e.To, "provider:")
			p := &flotillav1.Provider{}
			if err := h.client.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
				return false, err.Error()
			}
			pub, _ := base64.StdEncoding.DecodeString(p.Spec.PublicKey)
			ok := len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, e.ProviderReport, e.ProviderSig)
			notes = append(notes, fmt.Sprintf("%s signed=%v disputed=%v %q", name, ok, e.Disputed, e.ProviderReport))
			if ok && !e.Disputed {
				signed[name] = true
			}
		}
		return signed["alice-1"] && signed["bob-1"], strings.Join(notes, "; ")
	})

	t.Run("federation identity is confined", func(t *testing.T) {
		testFederationConfinement(t, h, alice)
	})
	t.Run("join credentials reach only their own provider", func(t *testing.T) {
		testJoinIsolation(t, h, alice, bob)
	})
	t.Run("tenants reach only their own namespace", func(t *testing.T) {
		testTenantIsolation(t, h)
	})

	// Deleting the Workload removes its namespaces through the same identity.
	if err := h.client.Delete(ctx, w); err != nil {
		t.Fatal(err)
	}
	hubenv.Await(t, 60*time.Second, "web's namespaces gone from both providers", func() (bool, string) {
		a, _ := h.managedNamespaces("alice-1")
		b, _ := h.managedNamespaces("bob-1")
		return len(a) == 0 && len(b) == 0, fmt.Sprint(a, b)
	})

	// bob leaves with nothing but his join credential.
	bob.stopAgent()
	bobHub, err := client.New(bob.joinConfig, client.Options{Scheme: hubenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := agent.Leave(lctx, bobHub, "bob-1"); err != nil {
		t.Fatalf("bob-1 leaving: %v", err)
	}
	for _, o := range []client.Object{&flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: "bob-1"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bob-1-kubeconfig", Namespace: flotillav1.SystemNamespace}}} {
		if err := h.client.Get(ctx, client.ObjectKeyFromObject(o), o); !apierrors.IsNotFound(err) {
			t.Errorf("%s still on the hub after leaving: %v", o.GetName(), err)
		}
	}
}

// refused asserts that err is a refusal (403, or 422 from an admission
// policy) whose message contains hint.
func refused(t *testing.T, what string, err error, hint string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: allowed, want refused", what)
		return
	}
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Errorf("%s: %v, want Forbidden", what, err)
		return
	}
	if !strings.Contains(err.Error(), hint) {
		t.Errorf("%s: refused with %q, want a message containing %q", what, err.Error(), hint)
	}
}

func deploymentWith(ns, name string, mutate func(*corev1.PodSpec)) *appsv1.Deployment {
	spec := corev1.PodSpec{AutomountServiceAccountToken: ptr.To(false), Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}
	mutate(&spec)
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}}}
}

// testFederationConfinement plays a hub (or a tenant's template) that
// tries to use the federation identity beyond what rendering needs; every
// case is refused by the provider's RBAC or its admission policy.
func testFederationConfinement(t *testing.T, h *hub, p *joinedProvider) {
	ctx := context.Background()
	quiet := rest.CopyConfig(p.federation)
	quiet.WarningHandler = rest.NoWarnings{} // Pod Security warns about every escape tried
	fed, err := kubernetes.NewForConfig(quiet)
	if err != nil {
		t.Fatal(err)
	}
	// A managed namespace it may use, made by the identity itself. It
	// carries a live Lease of this provider, or the hub would fence it.
	var live *flotillav1.Lease
	var ls flotillav1.LeaseList
	if err := h.client.List(ctx, &ls, client.MatchingLabels{flotillav1.LabelProvider: p.name}); err != nil {
		t.Fatal(err)
	}
	for i := range ls.Items {
		if ls.Items[i].Status.Phase == flotillav1.LeaseActive {
			live = &ls.Items[i]
		}
	}
	if live == nil {
		t.Fatalf("no live Lease on %s to borrow", p.name)
	}
	managed := "flotilla-" + joinHubID + "-securitytest"
	managedLabels := map[string]string{flotillav1.LabelManaged: "true", flotillav1.LabelHub: joinHubID,
		flotillav1.LabelLease: string(live.UID), flotillav1.LabelEpoch: strconv.FormatInt(live.Spec.Epoch, 10),
		"pod-security.kubernetes.io/enforce": "restricted"}
	if _, err := fed.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: managed, Labels: managedLabels}},
		metav1.CreateOptions{}); err != nil {
		t.Fatalf("the federation identity cannot create a proper managed namespace: %v", err)
	}
	// The owner's namespaces it must leave alone: one plain, one whose name
	// happens to match the hub's prefix, one of another hub.
	owned := "flotilla-" + joinHubID + "-owners-own"
	otherHub := "flotilla-" + joinHubID + "-otherhub"
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "owner-stuff"}},
		{ObjectMeta: metav1.ObjectMeta{Name: owned}},
		{ObjectMeta: metav1.ObjectMeta{Name: otherHub, Labels: map[string]string{flotillav1.LabelManaged: "true", flotillav1.LabelHub: "other",
			"pod-security.kubernetes.io/enforce": "restricted"}}},
	} {
		if _, err := p.admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	relabel := func(ns, key, value string) error {
		cur, err := fed.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.Labels == nil {
			cur.Labels = map[string]string{}
		}
		if value == "" {
			delete(cur.Labels, key)
		} else {
			cur.Labels[key] = value
		}
		_, err = fed.CoreV1().Namespaces().Update(ctx, cur, metav1.UpdateOptions{})
		return err
	}
	netpol := func(spec networkingv1.NetworkPolicySpec) error {
		_, err := fed.NetworkingV1().NetworkPolicies(managed).Create(ctx, &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "escape"}, Spec: spec}, metav1.CreateOptions{})
		return err
	}
	deploy := func(mutate func(*corev1.PodSpec)) error {
		_, err := fed.AppsV1().Deployments(managed).Create(ctx, deploymentWith(managed, "escape", mutate), metav1.CreateOptions{})
		return err
	}
	tcp := corev1.ProtocolTCP
	anyPort := intstr.FromInt32(53)
	cases := []struct {
		id, what, hint string
		try            func() error
	}{
		{"P7.read-secret", "read a Secret in kube-system", "forbidden", func() error {
			_, err := fed.CoreV1().Secrets("kube-system").Get(ctx, "anything", metav1.GetOptions{})
			return err
		}},
		{"P7.list-secrets", "list Secrets in kube-system", "forbidden", func() error {
			_, err := fed.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"P7.write-secret", "write a Secret in kube-system", "is not a Flotilla namespace", func() error {
			_, err := fed.CoreV1().Secrets("kube-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "planted"}}, metav1.CreateOptions{})
			return err
		}},
		{"P7.pod-in-default", "create a pod in default", "forbidden", func() error {
			_, err := fed.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}, metav1.CreateOptions{})
			return err
		}},
		{"P7.deployment-in-default", "create a Deployment in default", "is not a Flotilla namespace", func() error {
			_, err := fed.AppsV1().Deployments("default").Create(ctx, deploymentWith("default", "d", func(*corev1.PodSpec) {}), metav1.CreateOptions{})
			return err
		}},
		{"P7.unlabelled-namespace", "create a namespace without the managed label", "labelled flotilla.dev/managed=true", func() error {
			_, err := fed.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "flotilla-" + joinHubID + "-unlabelled"}}, metav1.CreateOptions{})
			return err
		}},
		{"P7.namespace-outside-prefix", "create a managed namespace outside the hub's prefix", "must be named flotilla-" + joinHubID + "-", func() error {
			_, err := fed.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere", Labels: managedLabels}}, metav1.CreateOptions{})
			return err
		}},
		{"P7.delete-owner-namespace", "delete an unmanaged namespace", "may not change or delete namespace owner-stuff", func() error {
			return fed.CoreV1().Namespaces().Delete(ctx, "owner-stuff", metav1.DeleteOptions{})
		}},
		{"P7.adopt-owner-namespace", "label an owner's namespace that matches the prefix as managed", "may not change or delete namespace " + owned, func() error {
			if err := relabel(owned, flotillav1.LabelHub, joinHubID); err != nil {
				return err
			}
			return relabel(owned, flotillav1.LabelManaged, "true")
		}},
		{"P7.other-hub-namespace", "write in another hub's namespace", "is not a Flotilla namespace of hub " + joinHubID, func() error {
			_, err := fed.CoreV1().ConfigMaps(otherHub).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		}},
		{"P7.pod-security-level", "relabel a managed namespace's Pod Security level", "must keep pod-security.kubernetes.io/enforce=restricted", func() error {
			return relabel(managed, "pod-security.kubernetes.io/enforce", "privileged")
		}},
		{"P7.pod-security-version", "pin a managed namespace to an old Pod Security version", "must keep pod-security.kubernetes.io/enforce=restricted", func() error {
			return relabel(managed, "pod-security.kubernetes.io/enforce-version", "v1.0")
		}},
		{"P7.drop-managed-label", "remove a managed namespace's managed label", "labelled flotilla.dev/managed=true", func() error {
			return relabel(managed, flotillav1.LabelManaged, "")
		}},
		{"P7.service", "create a NodePort Service", "forbidden", func() error {
			_, err := fed.CoreV1().Services(managed).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "open"},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
			return err
		}},
		{"P7.netpol-ingress", "admit ingress from everywhere", "may admit no ingress", func() error {
			return netpol(networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{}}})
		}},
		{"P7.netpol-egress-all", "let everything out", "network policies may let out only DNS queries", func() error {
			return netpol(networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{}}})
		}},
		{"P7.netpol-dns-anywhere", "let port 53 out to any address", "network policies may let out only DNS queries", func() error {
			return netpol(networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &anyPort}}}}})
		}},
		{"P7.netpol-internet", "let public addresses out where the owner did not allow egress", "does not allow internet egress", func() error {
			return netpol(render.InternetEgress())
		}},
		{"P7.privileged", "create a privileged pod", "privileged containers are not allowed", func() error {
			return deploy(func(s *corev1.PodSpec) {
				s.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
			})
		}},
		{"P7.host-path", "create a hostPath pod", "hostPath volumes are not allowed", func() error {
			return deploy(func(s *corev1.PodSpec) {
				s.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
			})
		}},
		{"P7.host-network", "create a hostNetwork pod", "host network, PID and IPC namespaces", func() error {
			return deploy(func(s *corev1.PodSpec) { s.HostNetwork = true })
		}},
		{"P7.host-pid", "create a hostPID pod", "host network, PID and IPC namespaces", func() error {
			return deploy(func(s *corev1.PodSpec) { s.HostPID = true })
		}},
		{"P7.host-port", "create a hostPort pod", "hostPort and hostIP are not allowed", func() error {
			return deploy(func(s *corev1.PodSpec) {
				s.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}}
			})
		}},
		{"P7.capabilities", "create a pod adding SYS_ADMIN", "only the NET_BIND_SERVICE capability may be added", func() error {
			return deploy(func(s *corev1.PodSpec) {
				s.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}}
			})
		}},
		{"P7.privileged-init", "create a privileged init container", "privileged containers are not allowed", func() error {
			return deploy(func(s *corev1.PodSpec) {
				s.InitContainers = []corev1.Container{{Name: "init", Image: "i", SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}
			})
		}},
		{"P7.tolerations", "create a pod that tolerates every taint", "may not choose their node, tolerate taints", func() error {
			return deploy(func(s *corev1.PodSpec) { s.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}} })
		}},
		{"P7.node-selector", "pin a pod to the control plane", "may not choose their node", func() error {
			return deploy(func(s *corev1.PodSpec) {
				s.NodeSelector = map[string]string{"node-role.kubernetes.io/control-plane": ""}
			})
		}},
		{"P7.priority-class", "run a pod at system-node-critical", "priority class system-node-critical is not offered", func() error {
			return deploy(func(s *corev1.PodSpec) { s.PriorityClassName = "system-node-critical" })
		}},
		{"P7.service-account-token", "mount a service account token", "no service account token", func() error {
			return deploy(func(s *corev1.PodSpec) { s.AutomountServiceAccountToken = ptr.To(true) })
		}},
		{"P7.csi-volume", "mount an inline CSI volume", "only emptyDir, configMap, secret", func() error {
			return deploy(func(s *corev1.PodSpec) {
				s.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "secrets-store.csi.k8s.io"}}}}
			})
		}},
		{"P7.cluster-role-binding", "create a ClusterRoleBinding", "forbidden", func() error {
			_, err := fed.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "grab"},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects: []rbacv1.Subject{{Kind: "User", Name: "me"}}}, metav1.CreateOptions{})
			return err
		}},
		{"P7.role-binding", "create a RoleBinding in a managed namespace", "forbidden", func() error {
			_, err := fed.RbacV1().RoleBindings(managed).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "grab"},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects: []rbacv1.Subject{{Kind: "User", Name: "me"}}}, metav1.CreateOptions{})
			return err
		}},
		{"P7.impersonate", "impersonate another user", "cannot impersonate", func() error {
			imp := rest.CopyConfig(p.federation)
			imp.Impersonate = rest.ImpersonationConfig{UserName: "system:admin", Groups: []string{"system:masters"}}
			impCS, err := kubernetes.NewForConfig(imp)
			if err != nil {
				return err
			}
			_, err = impCS.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
	}
	for _, c := range cases {
		refused(t, c.id+": "+c.what, c.try(), c.hint)
	}

	// What rendering produces passes: the default-deny policy and a safe
	// Deployment.
	if err := netpol(render.DefaultDeny()); err != nil {
		t.Errorf("the rendered default-deny policy was refused: %v", err)
	}
	if err := deploy(func(s *corev1.PodSpec) {
		s.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}}}
	}); err != nil {
		t.Errorf("a safe Deployment in a managed namespace was refused: %v", err)
	}
	if err := fed.CoreV1().Namespaces().Delete(ctx, managed, metav1.DeleteOptions{}); err != nil {
		t.Errorf("the federation identity cannot delete its own managed namespace: %v", err)
	}
	for _, ns := range []string{"owner-stuff", owned, otherHub} {
		if err := p.admin.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Errorf("the owner deleting %s: %v", ns, err)
		}
	}
}

func testJoinIsolation(t *testing.T, h *hub, alice, bob *joinedProvider) {
	ctx := context.Background()
	a, err := client.New(alice.joinConfig, client.Options{Scheme: hubenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	sys := flotillav1.SystemNamespace
	bobNS := flotillav1.ProviderNamespace(bob.name)

	// Providers are the market's (flotilla-market-viewer shows them to
	// tenants): a join credential reads them through its group's shared
	// rules, and flotilla-join-scope keeps its writes to its own.
	bobP := &flotillav1.Provider{}
	if err := a.Get(ctx, client.ObjectKey{Name: bob.name}, bobP); err != nil {
		t.Fatalf("alice reads bob's Provider as the market shows it: %v", err)
	}
	bobP.Spec.Unschedulable = true
	// Two policies refuse this one (bob's Secret is not alice's either);
	// which one the API server names first varies.
	refused(t, "P2.join-other-provider: alice cordons bob's Provider", a.Update(ctx, bobP), "denied request: provider "+alice.name)
	refused(t, "P2.join-other-provider: alice deletes bob's Provider", a.Delete(ctx, bobP), "may change only its own Provider")
	var providers flotillav1.ProviderList
	refused(t, "alice lists Providers", a.List(ctx, &providers), "forbidden")
	var offers flotillav1.OfferList
	refused(t, "alice lists bob's Offers", a.List(ctx, &offers, client.InNamespace(bobNS)), "forbidden")
	report := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: usage.ConfigMapName, Namespace: bobNS},
		Data: map[string]string{usage.DataKey: `{"provider":"bob-1","lines":[]}`}}
	refused(t, "alice rewrites bob's usage report", a.Update(ctx, report), "forbidden")
	refused(t, "alice reads bob's usage report", a.Get(ctx, client.ObjectKeyFromObject(report), &corev1.ConfigMap{}), "forbidden")
	own := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: flotillav1.ProviderNamespace(alice.name)}}
	refused(t, "alice creates another ConfigMap in her own namespace", a.Create(ctx, own), "forbidden")
	refused(t, "alice publishes an Offer in bob's namespace", a.Create(ctx, &flotillav1.Offer{
		ObjectMeta: metav1.ObjectMeta{Name: "cheap", Namespace: bobNS},
		Spec: flotillav1.OfferSpec{ProviderRef: flotillav1.ProviderReference{Name: bob.name},
			Resources: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}, Prices: flotillav1.PriceList{corev1.ResourceCPU: "0.001"}}}), "forbidden")
	refused(t, "alice publishes an Offer for bob in her own namespace", a.Create(ctx, &flotillav1.Offer{
		ObjectMeta: metav1.ObjectMeta{Name: "for-bob", Namespace: flotillav1.ProviderNamespace(alice.name)},
		Spec: flotillav1.OfferSpec{ProviderRef: flotillav1.ProviderReference{Name: bob.name},
			Resources: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}, Prices: flotillav1.PriceList{corev1.ResourceCPU: "0.001"}}}), "may only publish Offers for itself")
	s := &corev1.Secret{}
	refused(t, "alice reads bob's kubeconfig Secret", a.Get(ctx, client.ObjectKey{Namespace: sys, Name: bob.name + "-kubeconfig"}, s), "forbidden")
	var secrets corev1.SecretList
	refused(t, "alice lists Secrets in flotilla-system", a.List(ctx, &secrets, client.InNamespace(sys)), "forbidden")
	hb := &coordinationv1.Lease{}
	if err := h.client.Get(ctx, client.ObjectKey{Namespace: sys, Name: "provider-" + bob.name}, hb); err != nil {
		t.Fatal(err)
	}
	hb.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	refused(t, "P2.join-other-heartbeat: alice renews bob's heartbeat", a.Update(ctx, hb), "may renew only its heartbeat Lease")
	refused(t, "P2.join-other-heartbeat: alice deletes bob's heartbeat", a.Delete(ctx, hb), "may renew only its heartbeat Lease")

	if err := a.Get(ctx, client.ObjectKey{Name: alice.name}, &flotillav1.Provider{}); err != nil {
		t.Fatalf("alice cannot read her own Provider: %v", err)
	}
	// The hub writes the Provider's status meanwhile, so each attempt starts
	// from a fresh read; a conflict would hide what admission says.
	edit := func(mutate func(*flotillav1.Provider)) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			p := &flotillav1.Provider{}
			if err := a.Get(ctx, client.ObjectKey{Name: alice.name}, p); err != nil {
				return err
			}
			mutate(p)
			return a.Update(ctx, p)
		})
	}
	refused(t, "alice claims another owner", edit(func(p *flotillav1.Provider) { p.Spec.Owner = "bob" }), "cannot change spec.owner")
	refused(t, "alice points her Provider at bob's kubeconfig", edit(func(p *flotillav1.Provider) {
		p.Spec.KubeconfigSecretRef.Name = bob.name + "-kubeconfig"
	}), "must be "+alice.name+"-kubeconfig")
	refused(t, "P2.join-changes-region: alice moves her Provider to another region",
		edit(func(p *flotillav1.Provider) { p.Spec.Region = "us-east" }), "cannot change spec.region")
	refused(t, "P2.join-changes-zone: alice sets her own zone",
		edit(func(p *flotillav1.Provider) { p.Spec.Zone = "us-east-1a" }), "cannot change spec.zone")
	refused(t, "P1.join-changes-server: alice points the hub at another address",
		edit(func(p *flotillav1.Provider) { p.Spec.APIServerURL = "https://169.254.169.254" }), "cannot change spec.apiServerURL")
	refused(t, "P2.provider-attributes-claim-owner: alice claims an owner in her attributes",
		edit(func(p *flotillav1.Provider) { p.Spec.Attributes = map[string]string{"owner": "bob"} }), "spec.attributes")
	var ws flotillav1.WorkloadList
	refused(t, "alice lists tenants' Workloads", a.List(ctx, &ws), "forbidden")
}

func testTenantIsolation(t *testing.T, h *hub) {
	ctx := context.Background()
	h.tenant(t, "tenant-b", "10")
	mustCreate(t, h.client, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "carol-tenant", Namespace: "tenant-b"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "flotilla-tenant"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "carol", APIGroup: rbacv1.GroupName}}})
	cfg, err := h.fed.Hub.RESTConfig(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "carol"}
	carol, err := client.New(cfg, client.Options{Scheme: hubenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	// RBAC bindings reach the authorizer's cache a moment after creation.
	hubenv.Await(t, 10*time.Second, "carol may create a Workload in tenant-b", func() (bool, string) {
		err := carol.Create(ctx, newWorkload("tenant-b", "job", flotillav1.ClassService, 1))
		return err == nil || apierrors.IsAlreadyExists(err), fmt.Sprint(err)
	})
	var leases flotillav1.LeaseList
	if err := carol.List(ctx, &leases, client.InNamespace("tenant-b")); err != nil {
		t.Errorf("carol cannot read her Leases: %v", err)
	}
	var ws flotillav1.WorkloadList
	refused(t, "carol lists tenant-a's Workloads", carol.List(ctx, &ws, client.InNamespace("tenant-a")), "forbidden")
	w := &flotillav1.Workload{}
	refused(t, "carol reads tenant-a's Workload", carol.Get(ctx, client.ObjectKey{Namespace: "tenant-a", Name: "web"}, w), "forbidden")
	refused(t, "carol lists tenant-a's Leases", carol.List(ctx, &leases, client.InNamespace("tenant-a")), "forbidden")
	s := &corev1.Secret{}
	refused(t, "carol reads a provider kubeconfig", carol.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: "alice-1-kubeconfig"}, s), "forbidden")
	var secrets corev1.SecretList
	refused(t, "carol lists Secrets in flotilla-system", carol.List(ctx, &secrets, client.InNamespace(flotillav1.SystemNamespace)), "forbidden")
	if err := carol.Delete(ctx, &flotillav1.Workload{ObjectMeta: metav1.ObjectMeta{Name: "job", Namespace: "tenant-b"}}); err != nil {
		t.Errorf("carol cannot delete her Workload: %v", err)
	}
	refused(t, "carol forges a Lease", carol.Create(ctx, &flotillav1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "free", Namespace: "tenant-b"},
		Spec: flotillav1.LeaseSpec{WorkloadRef: flotillav1.LocalObjectReference{Name: "job"}, ProviderRef: flotillav1.ProviderReference{Name: "alice-1"},
			OfferRef: flotillav1.ObjectReference{Namespace: "provider-alice-1", Name: "standard"}, Replicas: 1,
			ResourcesPerReplica: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}, Prices: flotillav1.PriceList{},
			PricePerReplicaHour: "0", Epoch: 1}}), "forbidden")
}
