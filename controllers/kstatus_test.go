package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/conditions"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/render"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// awaitKStatus waits until kstatus (sigs.k8s.io/cli-utils), as Flux and
// Argo CD run it, computes want for the object.
func awaitKStatus(t *testing.T, obj client.Object, want string) {
	t.Helper()
	hubenv.Await(t, 30*time.Second, fmt.Sprintf("%T %s to be %s", obj, obj.GetName(), want), func() (bool, string) {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return false, err.Error()
		}
		got, err := conditions.KStatus(obj)
		if err != nil {
			return false, err.Error()
		}
		return got == want, got + fmt.Sprintf(" %+v", statusOf(obj))
	})
}

func statusOf(obj client.Object) any {
	switch o := obj.(type) {
	case *flotillav1.Provider:
		return o.Status.Conditions
	case *flotillav1.Workload:
		return o.Status.Conditions
	case *flotillav1.Lease:
		return o.Status.Conditions
	case *flotillav1.Offer:
		return o.Status.Conditions
	case *flotillav1.Account:
		return o.Status.Conditions
	}
	return nil
}

// node registers a schedulable node on the test API server, which serves
// as a provider here.
func node(t *testing.T, name string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Client.Create(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	n.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("16"), corev1.ResourceMemory: resource.MustParse("64Gi"),
		corev1.ResourcePods: resource.MustParse("110")}
	n.Status.Capacity = n.Status.Allocatable
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if err := env.Client.Status().Update(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), n) })
}

// runReadyPods plays the provider's kubelet: it runs the Lease's replicas,
// ready, in its namespace on the provider.
func runReadyPods(t *testing.T, hubID string, l *flotillav1.Lease, nodeName string) {
	t.Helper()
	ctx := context.Background()
	ns := render.Namespace(hubID, l.UID)
	for i := range l.Spec.Replicas {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d", i), Namespace: ns,
			Labels: map[string]string{flotillav1.LabelLease: string(l.UID)}},
			Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "app", Image: fixture.Image,
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), RunAsNonRoot: ptr.To(true),
					Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}}}}}
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		if err := env.Client.Status().Update(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKStatusOfEveryKind walks each kind through its states with every
// hub controller running, and checks what kstatus makes of each: what
// Flux, Argo CD and `kubectl wait` users see.
func TestKStatusOfEveryKind(t *testing.T) {
	ctx := context.Background()
	const prov, ns, hubID = "ks-1", "tenant-ks", "ks"
	node(t, "ks-node")
	reachableProvider(t, prov)
	namespace(t, ns)
	namespace(t, flotillav1.ProviderNamespace(prov))
	mgr := newTestManager(t)
	mctx, cancel := context.WithCancel(ctx)
	if _, err := Setup(mctx, mgr, Options{HubID: hubID, ProviderGracePeriod: 2 * time.Second, ProbeInterval: 300 * time.Millisecond,
		SchedulerInterval: 50 * time.Millisecond, SettlementInterval: 500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	defer run(t, mgr, mctx, cancel)()

	p := &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: prov}}
	hubenv.Stage(t, "provider probed: Current", func(t *testing.T) {
		// A Provider not yet probed has no status, which kstatus also
		// reads as Current: wait for the probe first.
		hubenv.Await(t, 30*time.Second, "the provider Ready", func() (bool, string) {
			p = get(t, p, "", prov)
			return p.Status.Phase == flotillav1.ProviderReady, string(p.Status.Phase)
		})
		awaitKStatus(t, p, "Current")
	})

	hubenv.Stage(t, "offers: valid Current, in another provider's namespace Failed", func(t *testing.T) {
		good := fixture.Offer(prov, "std", fixture.Attribute("suite", "ks"))
		misplaced := fixture.Offer("someone-else", "std")
		misplaced.Namespace = flotillav1.ProviderNamespace(prov)
		misplaced.Name = "misplaced"
		for _, o := range []*flotillav1.Offer{good, misplaced} {
			if err := env.Client.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		awaitKStatus(t, good, "Current")
		awaitKStatus(t, misplaced, "Failed")
	})

	acct := &flotillav1.Account{}
	hubenv.Stage(t, "account credited: Current", func(t *testing.T) {
		// The bank writes the Account's status all along: retry on conflict.
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			acct = get(t, &flotillav1.Account{}, ns, flotillav1.AccountName)
			acct.Spec.Credited = "100"
			return env.Client.Update(ctx, acct)
		}); err != nil {
			t.Fatal(err)
		}
		awaitKStatus(t, acct, "Current")
	})

	w := fixture.Workload(ns, "web", fixture.Replicas(2), fixture.Selecting("suite", "ks"))
	lease := &flotillav1.Lease{}
	hubenv.Stage(t, "workload placed, replicas not running: InProgress, its lease too", func(t *testing.T) {
		if err := env.Client.Create(ctx, w); err != nil {
			t.Fatal(err)
		}
		*lease = awaitOneLease(t, ns, w.Name)
		awaitKStatus(t, w, "InProgress")
		awaitKStatus(t, lease, "InProgress")
	})

	hubenv.Stage(t, "replicas ready: workload and lease Current, kubectl wait returns", func(t *testing.T) {
		runReadyPods(t, hubID, lease, "ks-node")
		awaitKStatus(t, lease, "Current")
		awaitKStatus(t, w, "Current")
		if out, err := env.Kubectl(t, "wait", "--for=condition=Ready", "workload/web", "-n", ns, "--timeout=30s"); err != nil {
			t.Fatalf("kubectl wait: %v\n%s", err, out)
		}
	})

	hubenv.Stage(t, "provider lost: Failed; its lease Lost: InProgress, then closed: Current; the workload placing again: InProgress", func(t *testing.T) {
		sec := get(t, &corev1.Secret{}, flotillav1.SystemNamespace, prov+"-kubeconfig")
		sec.Data["kubeconfig"] = kubeconfigFor(t, "https://127.0.0.1:1")
		if err := env.Client.Update(ctx, sec); err != nil {
			t.Fatal(err)
		}
		awaitKStatus(t, p, "Failed")
		awaitPhase := func(phase flotillav1.LeasePhase, want string) {
			hubenv.Await(t, 30*time.Second, fmt.Sprintf("the lease %s and %s", phase, want), func() (bool, string) {
				l := get(t, &flotillav1.Lease{}, ns, lease.Name)
				ks, err := conditions.KStatus(l)
				return err == nil && l.Status.Phase == phase && ks == want, fmt.Sprintf("%s %s %v", l.Status.Phase, ks, err)
			})
		}
		awaitPhase(flotillav1.LeaseLost, "InProgress")
		awaitPhase(flotillav1.LeaseClosed, "Current")
		awaitKStatus(t, w, "InProgress")
	})

	hubenv.Stage(t, "account whose credit went down: Failed", func(t *testing.T) {
		// The bank writes the Account's status all along: retry on conflict.
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			acct = get(t, &flotillav1.Account{}, ns, flotillav1.AccountName)
			acct.Spec.Credited = "50"
			return env.Client.Update(ctx, acct)
		}); err != nil {
			t.Fatal(err)
		}
		awaitKStatus(t, acct, "Failed")
	})
}

func get[T client.Object](t *testing.T, o T, ns, name string) T {
	t.Helper()
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, o); err != nil {
		t.Fatal(err)
	}
	return o
}
