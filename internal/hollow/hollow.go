// Package hollow runs providers with no cluster behind them, for scale
// benchmarks, as kubemark's hollow nodes do for the kube-scheduler. Each
// is the real pull-mode agent of internal/agent, with its own join
// credential and signing key, speaking the real protocol to a real hub
// (heartbeats, Offers, Assignments, signed usage reports), over an
// in-memory cluster where a hollow kubelet runs whatever the agent applies.
// It is a benchmark tool: the correctness tests use real agents on real
// clusters.
package hollow

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	clienttesting "k8s.io/client-go/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crfake "sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/agent"
	"github.com/flotilla-dev/flotilla/internal/keys"
	"github.com/flotilla-dev/flotilla/internal/remote"
)

// Behaviour is how a hollow provider misbehaves; the zero value is an
// honest, prompt provider. It can change while the provider runs.
type Behaviour struct {
	// Silent stops the heartbeat, as when the provider's cluster is down:
	// the hub marks it Lost after its grace period.
	Silent bool
	// Refuse fills the cluster with the owner's own pods, so the agent
	// refuses every new Assignment while its Offer, refreshed only every
	// refresh interval, still advertises the capacity.
	Refuse bool
	// ReportDelay holds each replica back this long before it runs, so
	// the agent reports late.
	ReportDelay time.Duration
}

// Options describe one hollow provider.
type Options struct {
	HubID, Name, Owner, Region string
	// CPU and Memory are the capacity of its one node.
	CPU, Memory string
	// CPUPrice is the price of a core-hour in its Offer.
	CPUPrice string
	// Heartbeat, Pull, Refresh and Witness are the agent's intervals
	// (defaults 10 s, 2 s, 30 s and 2 minutes).
	Heartbeat, Pull, Refresh, Witness time.Duration
	Behaviour
}

const namespace = flotillav1.SystemNamespace

// nodeName is the hollow node every replica runs on.
const nodeName = "hollow-node"

// Provider is one running hollow provider.
type Provider struct {
	Name string
	// Local is its in-memory cluster as the agent sees it; Federation the
	// same objects as the federation identity applies them.
	Local      kubernetes.Interface
	Federation client.Client

	// changed is set when the agent applies or deletes something: the
	// hollow kubelet looks only then (and every few seconds).
	changed   *atomic.Bool
	mu        sync.Mutex
	behaviour Behaviour
	firstSeen map[string]time.Time // workload object (ns/name) -> when the kubelet first saw it
	cancel    context.CancelFunc
	done      chan struct{}
}

// Start runs a hollow provider against the hub that hub (a join
// credential's config) reaches, until Stop or ctx's end.
func Start(ctx context.Context, hub *rest.Config, o Options, log logr.Logger) (*Provider, error) {
	cfgJSON, err := config(o)
	if err != nil {
		return nil, err
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}
	node.Status.Allocatable = corev1.ResourceList{}
	for name, v := range map[corev1.ResourceName]string{corev1.ResourceCPU: o.CPU, corev1.ResourceMemory: o.Memory, corev1.ResourcePods: "110"} {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("hollow provider %s: %s %q: %w", o.Name, name, v, err)
		}
		node.Status.Allocatable[name] = q
	}
	node.Status.Capacity = node.Status.Allocatable.DeepCopy()
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	// The simple clientset: NewClientset's tracker builds a REST mapper of
	// the whole scheme at every create to keep managed fields, which was
	// most of the CPU of a thousand hollow kubelets creating pods.
	local := kubefake.NewSimpleClientset(node,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: agent.ConfigMapName, Namespace: namespace},
			Data: map[string]string{"config.json": string(cfgJSON)}})
	// The simple clientset keeps no resource versions, and the agent tells
	// the update of its witness ConfigMap from its creation by one: every
	// look after the first failed to save, and read the ledger's index
	// from the start again.
	var version atomic.Int64
	local.PrependReactor("*", "configmaps", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if w, ok := a.(interface{ GetObject() runtime.Object }); ok && (a.GetVerb() == "create" || a.GetVerb() == "update") {
			if m, ok := w.GetObject().(metav1.Object); ok {
				m.SetResourceVersion(strconv.FormatInt(version.Add(1), 10))
			}
		}
		return false, nil, nil
	})
	scheme := remote.NewScheme()
	// A plain tracker: the default one builds a REST mapper of the whole
	// scheme at every create to keep managed fields, which was a third of
	// a bench's CPU with 50 hollow providers, and Apply is replaced anyway.
	changed := &atomic.Bool{}
	fed := interceptor.NewClient(crfake.NewClientBuilder().WithScheme(scheme).
		WithObjectTracker(clienttesting.NewObjectTracker(scheme, serializer.NewCodecFactory(scheme).UniversalDecoder())).Build(),
		interceptor.Funcs{
			Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, o ...client.ApplyOption) error {
				changed.Store(true)
				return replace(ctx, c, obj, o...)
			},
			Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, o ...client.DeleteOption) error {
				changed.Store(true)
				return c.Delete(ctx, obj, o...)
			},
		})

	cfg, err := agent.ParseConfig(cfgJSON)
	if err != nil {
		return nil, err
	}
	key, err := keys.Ensure(ctx, local, namespace, agent.KeySecretName)
	if err != nil {
		return nil, err
	}
	hub = rest.CopyConfig(hub)
	hub.UserAgent = "flotilla-hollow-agent"
	hub.QPS, hub.Burst = 50, 100
	hubc, err := client.NewWithWatch(hub, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	p := &Provider{Name: o.Name, Local: local, Federation: fed, changed: changed, behaviour: o.Behaviour, firstSeen: map[string]time.Time{}}
	a := &agent.Agent{Log: log.WithValues("provider", o.Name), Namespace: namespace, Local: local, Hub: hubc, HubWatch: hubc,
		Federation: fed, Config: cfg,
		PublicKey: base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)), Key: key, Identity: o.Name + "/hollow",
		ClusterReady: func(context.Context) error {
			if p.Behaviour().Silent {
				return fmt.Errorf("hollow provider %s is silent", o.Name)
			}
			return nil
		}}
	ctx, p.cancel = context.WithCancel(ctx)
	p.done = make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { _ = a.Run(ctx) })
	wg.Go(func() { p.kubelet(ctx) })
	go func() { wg.Wait(); close(p.done) }()
	return p, nil
}

// Stop ends the provider, as if its machine were switched off.
func (p *Provider) Stop() {
	p.cancel()
	<-p.done
}

// Behaviour is how it behaves now.
func (p *Provider) Behaviour() Behaviour {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.behaviour
}

// SetBehaviour changes how it behaves from now on.
func (p *Provider) SetBehaviour(b Behaviour) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.behaviour = b
	p.changed.Store(true)
}

func config(o Options) ([]byte, error) {
	if o.HubID == "" || o.Name == "" || o.Owner == "" {
		return nil, fmt.Errorf("a hollow provider needs a hub id, a name and an owner")
	}
	dur := func(d, def time.Duration) string {
		if d <= 0 {
			d = def
		}
		return d.String()
	}
	c := map[string]any{
		"hubID":    o.HubID,
		"provider": map[string]any{"name": o.Name, "owner": o.Owner, "region": o.Region, "mode": string(flotillav1.ModePull)},
		"offer": map[string]any{"prices": map[string]string{"cpu": o.CPUPrice}, "reserve": map[string]string{"cpu": "0", "memory": "0"},
			"refreshInterval": dur(o.Refresh, 30*time.Second)},
		"heartbeatInterval": dur(o.Heartbeat, 10*time.Second),
		"pullInterval":      dur(o.Pull, 2*time.Second),
		"witnessInterval":   dur(o.Witness, 2*time.Minute),
	}
	return json.Marshal(c)
}

// kubelet runs, every 500 ms, what the agent applied: a Deployment's
// replicas Running and Ready, a Job's pods Succeeded with the digest of
// their template, and removes what lives in namespaces the agent deleted.
// Pods go to both views of the cluster: the agent reads them back through
// the federation identity and meters them through its own.
func (p *Provider) kubelet(ctx context.Context) {
	// Hundreds of these share a benchmark machine with the hub.
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Listing the whole in-memory cluster twice a second for each of
		// hundreds of providers cost the bench more CPU than the hub's API
		// server: look when something changed, while replicas are held
		// back, or every 30 s. (Every 2 s, a thousand idle kubelets still
		// took a fifth of the bench's CPU from the hub beside them.)
		if !p.changed.Swap(false) && p.Behaviour().ReportDelay == 0 && time.Since(last) < 30*time.Second {
			continue
		}
		last = time.Now()
		// An in-memory cluster fails only on conflicts; the next tick
		// retries.
		_ = p.sync(ctx)
	}
}

func (p *Provider) sync(ctx context.Context) error {
	b := p.Behaviour()
	if err := p.owner(ctx, b.Refuse); err != nil {
		return err
	}
	var nss corev1.NamespaceList
	var deps appsv1.DeploymentList
	var jobs batchv1.JobList
	var pods corev1.PodList
	// Namespaces last: an object listed before its namespace was would be
	// taken for an orphan and removed.
	for _, l := range []client.ObjectList{&deps, &jobs, &pods, &nss} {
		if err := p.Federation.List(ctx, l); err != nil {
			return err
		}
	}
	live := map[string]bool{}
	for _, ns := range nss.Items {
		live[ns.Name] = ns.DeletionTimestamp == nil
	}
	byOwner := map[string][]*corev1.Pod{}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !live[pod.Namespace] {
			p.deletePod(ctx, pod)
			continue
		}
		byOwner[pod.Namespace+"/"+pod.Labels["hollow-owner"]] = append(byOwner[pod.Namespace+"/"+pod.Labels["hollow-owner"]], pod)
	}
	for _, ns := range nss.Items {
		if !live[ns.Name] {
			// No namespace controller here: the agent's delete is final.
			_ = p.Federation.Delete(ctx, &ns)
		}
	}
	now := time.Now()
	ready := func(key string) bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		first, ok := p.firstSeen[key]
		if !ok {
			p.firstSeen[key], first = now, now
		}
		return now.Sub(first) >= b.ReportDelay
	}
	for i := range deps.Items {
		d := &deps.Items[i]
		if !live[d.Namespace] {
			_ = p.Federation.Delete(ctx, d)
			continue
		}
		key := d.Namespace + "/" + d.Name
		want := int(ptrOr(d.Spec.Replicas, 1))
		have := byOwner[key]
		for len(have) > want {
			p.deletePod(ctx, have[len(have)-1])
			have = have[:len(have)-1]
		}
		if len(have) < want && ready(key) {
			for n := len(have); n < want; n++ {
				p.createPod(ctx, d.Namespace, d.Name, n, &d.Spec.Template, corev1.PodRunning, "")
			}
		}
	}
	for i := range jobs.Items {
		j := &jobs.Items[i]
		if !live[j.Namespace] {
			_ = p.Federation.Delete(ctx, j)
			continue
		}
		key := j.Namespace + "/" + j.Name
		want := int(ptrOr(j.Spec.Completions, 1))
		if len(byOwner[key]) >= want || !ready(key) {
			continue
		}
		for n := len(byOwner[key]); n < want; n++ {
			p.createPod(ctx, j.Namespace, j.Name, n, &j.Spec.Template, corev1.PodSucceeded, digest(&j.Spec.Template))
		}
		j.Status.Succeeded = int32(want)
		j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
		_ = p.Federation.Update(ctx, j)
	}
	return nil
}

func ptrOr(v *int32, def int32) int32 {
	if v == nil {
		return def
	}
	return *v
}

// digest is what an honest copy of a hollow batch program computes: the
// same for the same template.
func digest(t *corev1.PodTemplateSpec) string {
	var b strings.Builder
	for _, c := range t.Spec.Containers {
		fmt.Fprintf(&b, "%s\x00%q\x00%q\x00", c.Image, c.Command, c.Args)
	}
	return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(b.String())))
}

func (p *Provider) createPod(ctx context.Context, ns, owner string, n int, t *corev1.PodTemplateSpec, phase corev1.PodPhase, result string) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%d", owner, n), Labels: map[string]string{}},
		Spec: *t.Spec.DeepCopy()}
	for k, v := range t.Labels {
		pod.Labels[k] = v
	}
	pod.Labels["hollow-owner"] = owner
	pod.Spec.NodeName = nodeName
	pod.Status.Phase = phase
	if phase == corev1.PodRunning {
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	}
	if result != "" && len(pod.Spec.Containers) > 0 {
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: pod.Spec.Containers[0].Name,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Message: result}}}}
	}
	if err := p.Federation.Create(ctx, pod.DeepCopy()); err != nil {
		return
	}
	_, _ = p.Local.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
}

func (p *Provider) deletePod(ctx context.Context, pod *corev1.Pod) {
	_ = p.Federation.Delete(ctx, pod)
	_ = p.Local.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{})
}

// owner runs, or removes, the owner's own pod that takes the whole node.
func (p *Provider) owner(ctx context.Context, on bool) error {
	pods := p.Local.CoreV1().Pods(namespace)
	_, err := pods.Get(ctx, "owner-work", metav1.GetOptions{})
	switch {
	case on && err != nil:
		node, err := p.Local.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "owner-work", Namespace: namespace},
			Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "work",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU: node.Status.Allocatable[corev1.ResourceCPU], corev1.ResourceMemory: node.Status.Allocatable[corev1.ResourceMemory]}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		_, err = pods.Create(ctx, pod, metav1.CreateOptions{})
		return err
	case !on && err == nil:
		return pods.Delete(ctx, "owner-work", metav1.DeleteOptions{})
	}
	return nil
}

// replace stands in for server-side apply, which the in-memory client
// cannot merge for every kind the agent applies: the applied object
// replaces what is there. A hollow cluster has no other field managers.
func replace(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, _ ...client.ApplyOption) error {
	u, ok := obj.(interface{ UnstructuredContent() map[string]any })
	if !ok {
		return fmt.Errorf("hollow cluster: cannot apply %T", obj)
	}
	want := &unstructured.Unstructured{Object: runtime.DeepCopyJSON(u.UnstructuredContent())}
	have := &unstructured.Unstructured{}
	have.SetGroupVersionKind(want.GroupVersionKind())
	switch err := c.Get(ctx, client.ObjectKeyFromObject(want), have); {
	case apierrors.IsNotFound(err):
		return c.Create(ctx, want)
	case err != nil:
		return err
	}
	want.SetResourceVersion(have.GetResourceVersion())
	return c.Update(ctx, want)
}
