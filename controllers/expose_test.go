package controllers

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/render"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// TestExposedWorkload plays a push-mode provider whose node ports are on
// this machine (127.0.0.1, the range the administrator recorded): the
// envtest API server allocates the Service's node port, and the test
// decides whether anything answers there. The hub, not the provider's
// report, decides whether the replicas count and are charged, and the
// stable address follows.
func TestExposedWorkload(t *testing.T) {
	ctx := context.Background()
	const prov, bare, ns, hubID = "ex-1", "ex-bare", "tenant-ex", "ex"
	node(t, "ex-node")
	reachableProvider(t, prov)
	reachableProvider(t, bare)
	namespace(t, ns)
	namespace(t, flotillav1.ProviderNamespace(prov))
	namespace(t, flotillav1.ProviderNamespace(bare))
	p := get(t, &flotillav1.Provider{}, "", prov)
	p.Spec.EndpointRanges = []string{"127.0.0.0/8"}
	if err := env.Client.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entryAddr := ln.Addr().String()
	_ = ln.Close()
	mgr := newTestManager(t)
	mctx, cancel := context.WithCancel(ctx)
	if _, err := Setup(mctx, mgr, Options{HubID: hubID, ProviderGracePeriod: 5 * time.Second, ProbeInterval: 300 * time.Millisecond,
		SchedulerInterval: 50 * time.Millisecond, EndpointInterval: 200 * time.Millisecond, EndpointTimeout: 300 * time.Millisecond,
		EntryBindAddress: entryAddr, EntryURL: "http://" + entryAddr, SettlementInterval: 500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	defer run(t, mgr, mctx, cancel)()

	exposing := fixture.Offer(prov, "std", fixture.Attribute("suite", "ex"))
	exposing.Spec.Exposure = &flotillav1.ExposureSpec{Type: flotillav1.ExposeNodePort, Address: "127.0.0.1"}
	plain := fixture.Offer(bare, "std", fixture.Attribute("suite", "ex"), fixture.Priced("0.001", "0.001"))
	// The bare provider exposes too, but has no endpoint range: the hub
	// could check none of its endpoints.
	plain.Spec.Exposure = &flotillav1.ExposureSpec{Type: flotillav1.ExposeNodePort, Address: "127.0.0.1"}
	for _, o := range []*flotillav1.Offer{exposing, plain} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	acct := get(t, &flotillav1.Account{}, ns, flotillav1.AccountName)
	acct.Spec.Credited = "100"
	if err := env.Client.Update(ctx, acct); err != nil {
		t.Fatal(err)
	}
	w := fixture.Workload(ns, "web", fixture.Replicas(1), fixture.Selecting("suite", "ex"))
	w.Spec.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080}}
	w.Spec.Expose = &flotillav1.ExposeSpec{StableAddress: true, Ports: []flotillav1.ExposedPort{
		{Name: "http", Port: 8080, Protocol: flotillav1.ExposeHTTP, HealthPath: "/healthz"}}}
	if err := env.Client.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	l := awaitOneLease(t, ns, "web")
	if l.Spec.ProviderRef.Name != prov {
		t.Fatalf("P9.exposure-without-ranges: placed on %s, which the hub could not check", l.Spec.ProviderRef.Name)
	}
	svc := &corev1.Service{}
	hubenv.Await(t, 30*time.Second, "the Service rendered on the provider, with a node port", func() (bool, string) {
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: render.Namespace(hubID, l.UID), Name: render.ServiceName}, svc)
		return err == nil && len(svc.Spec.Ports) == 1 && svc.Spec.Ports[0].NodePort != 0, fmt.Sprint(err)
	})
	if svc.Spec.Type != corev1.ServiceTypeNodePort || len(svc.Spec.ExternalIPs) != 0 {
		t.Fatalf("service %+v", svc.Spec)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", svc.Spec.Ports[0].NodePort)
	runReadyPods(t, hubID, &l, "ex-node")

	hubenv.Stage(t, "P9.ready-but-unreachable: nothing answers, not counted, not charged", func(t *testing.T) {
		hubenv.Await(t, 30*time.Second, "the Lease unreachable", func() (bool, string) {
			l = *get(t, &flotillav1.Lease{}, ns, l.Name)
			c := apimeta.FindStatusCondition(l.Status.Conditions, flotillav1.ConditionReady)
			return c != nil && c.Reason == flotillav1.LeaseReasonUnreachable && len(l.Status.Endpoints) == 1 &&
				l.Status.Endpoints[0].Message != "not checked yet", fmt.Sprintf("%+v %+v", c, l.Status.Endpoints)
		})
		if l.Status.ReadyReplicas != 0 || l.Status.RunningReplicas != 0 || l.Status.Endpoints[0].Address != addr || l.Status.Endpoints[0].Reachable {
			t.Errorf("status %+v", l.Status)
		}
		time.Sleep(2 * time.Second)
		l = *get(t, &flotillav1.Lease{}, ns, l.Name)
		if l.Status.Usage.ReplicaSeconds != 0 {
			t.Errorf("charged %d replica-seconds while nothing answered", l.Status.Usage.ReplicaSeconds)
		}
		if l.Status.UnreachableCount != 0 {
			t.Errorf("a Lease that never served counted as stopping: %d", l.Status.UnreachableCount)
		}
	})

	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(rw, "served "+r.URL.Path)
	})}
	sl, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("node port %s is taken on this machine: %v", addr, err)
	}
	go func() { _ = srv.Serve(sl) }()
	defer srv.Close()

	hubenv.Stage(t, "the endpoint answers: Ready, listed, reachable through the stable address", func(t *testing.T) {
		wl := &flotillav1.Workload{}
		hubenv.Await(t, 30*time.Second, "the Workload Ready with a reachable endpoint", func() (bool, string) {
			wl = get(t, wl, ns, "web")
			return wl.Status.ReadyReplicas == 1 && len(wl.Status.Endpoints) == 1 && wl.Status.Endpoints[0].Reachable,
				fmt.Sprintf("ready %d endpoints %+v", wl.Status.ReadyReplicas, wl.Status.Endpoints)
		})
		if e := wl.Status.Endpoints[0]; e.Address != addr || e.Provider != prov || e.Port != "http" {
			t.Errorf("endpoint %+v", e)
		}
		if want := "http://" + entryAddr + "/" + ns + "/web/"; wl.Status.Address != want {
			t.Errorf("address %q, want %q", wl.Status.Address, want)
		}
		resp, err := http.Get(wl.Status.Address + "hello")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "served /hello" {
			t.Errorf("through the stable address: %d %q", resp.StatusCode, body)
		}
	})

	hubenv.Stage(t, "P9.stops-answering: not counted, reputation lost, stable address closed", func(t *testing.T) {
		_ = srv.Close()
		hubenv.Await(t, 30*time.Second, "the Lease unreachable again, counted once", func() (bool, string) {
			l = *get(t, &flotillav1.Lease{}, ns, l.Name)
			return l.Status.UnreachableCount == 1 && l.Status.ReadyReplicas == 0, fmt.Sprintf("%+v", l.Status)
		})
		hubenv.Await(t, 30*time.Second, "a warning on the Workload naming the endpoint", func() (bool, string) {
			var evs corev1.EventList
			if err := env.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
				return false, err.Error()
			}
			for _, e := range evs.Items {
				if e.InvolvedObject.Kind == "Workload" && e.InvolvedObject.Name == "web" && e.Reason == flotillav1.LeaseReasonUnreachable &&
					strings.Contains(e.Message, addr) {
					return true, ""
				}
			}
			return false, fmt.Sprint(len(evs.Items), " events")
		})
		hubenv.Await(t, 30*time.Second, "the provider's reputation counts it", func() (bool, string) {
			p = get(t, p, "", prov)
			return p.Status.Reputation.EndpointsUnreachable == 1, fmt.Sprintf("%+v", p.Status.Reputation)
		})
		resp, err := http.Get("http://" + entryAddr + "/" + ns + "/web/")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("stable address with no endpoint answering: %d", resp.StatusCode)
		}
	})

	hubenv.Stage(t, "T9.exposure-not-offered: TCP exposure that no Offer provides waits, naming it", func(t *testing.T) {
		tcp := fixture.Workload(ns, "db", fixture.Selecting("suite", "ex"))
		tcp.Spec.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 5432}}
		tcp.Spec.Expose = &flotillav1.ExposeSpec{Ports: []flotillav1.ExposedPort{{Name: "db", Port: 5432}}}
		o := get(t, &flotillav1.Offer{}, exposing.Namespace, exposing.Name)
		o.Spec.Exposure = nil
		if err := env.Client.Update(ctx, o); err != nil {
			t.Fatal(err)
		}
		if err := env.Client.Create(ctx, tcp); err != nil {
			t.Fatal(err)
		}
		hubenv.Await(t, 30*time.Second, "Scheduled=False naming the exposure", func() (bool, string) {
			got := get(t, &flotillav1.Workload{}, ns, "db")
			c := apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.WorkloadScheduled)
			return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "do not expose TCP ports (spec.expose"), fmt.Sprintf("%+v", c)
		})
	})

	hubenv.Stage(t, "P9.exposure-withdrawn: the owner stopped exposing, so the Service and the open port go from the provider", func(t *testing.T) {
		lns := render.Namespace(hubID, l.UID)
		hubenv.Await(t, 30*time.Second, "the Service and the expose policy deleted on the provider", func() (bool, string) {
			errS := env.Client.Get(ctx, client.ObjectKey{Namespace: lns, Name: render.ServiceName}, &corev1.Service{})
			errP := env.Client.Get(ctx, client.ObjectKey{Namespace: lns, Name: "expose"}, &networkingv1.NetworkPolicy{})
			return apierrors.IsNotFound(errS) && apierrors.IsNotFound(errP), fmt.Sprint(errS, errP)
		})
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: lns, Name: render.WorkloadName}, &appsv1.Deployment{}); err != nil {
			t.Errorf("the Deployment went too: %v", err)
		}
		hubenv.Await(t, 30*time.Second, "web counted Ready again without endpoints", func() (bool, string) {
			got := get(t, &flotillav1.Workload{}, ns, "web")
			return got.Status.ReadyReplicas == 1 && len(got.Status.Endpoints) == 0, fmt.Sprintf("ready %d %+v", got.Status.ReadyReplicas, got.Status.Endpoints)
		})
	})
}

// TestExposedWorkloadInPullMode: the hub never reads a pull-mode
// provider's cluster, so its agent reports the node port the cluster
// allocated, and the hub composes and checks the address itself.
func TestExposedWorkloadInPullMode(t *testing.T) {
	ctx := context.Background()
	const prov, ns = "pullx-a", "tenant-pullx"
	node(t, "px-node")
	// No node lifecycle controller lifts the not-ready taint here; the
	// agent admits against untainted nodes only.
	n := get(t, &corev1.Node{}, "", "px-node")
	n.Spec.Taints = nil
	if err := env.Client.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	join := joinIdentity(t, prov, flotillav1.ModePull)
	namespace(t, ns)
	acct := get(t, &flotillav1.Account{}, ns, flotillav1.AccountName)
	acct.Spec.Credited = "100"
	if err := env.Client.Update(ctx, acct); err != nil {
		t.Fatal(err)
	}
	p := get(t, &flotillav1.Provider{}, "", prov)
	p.Spec.EndpointRanges = []string{"127.0.0.0/8"}
	if err := env.Client.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	o := fixture.Offer(prov, "std", fixture.Attribute("suite", "pullx"))
	o.Spec.Exposure = &flotillav1.ExposureSpec{Type: flotillav1.ExposeNodePort, Address: "127.0.0.1"}
	if err := env.Client.Create(ctx, o); err != nil {
		t.Fatal(err)
	}
	mgr := newTestManager(t)
	mctx, cancel := context.WithCancel(ctx)
	if _, err := Setup(mctx, mgr, Options{HubID: pullHub, ProviderGracePeriod: 5 * time.Second, ProbeInterval: 300 * time.Millisecond,
		SchedulerInterval: 50 * time.Millisecond, SettlementInterval: 500 * time.Millisecond,
		EndpointInterval: 200 * time.Millisecond, EndpointTimeout: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	defer run(t, mgr, mctx, cancel)()
	startPullAgent(t, prov, join)

	w := fixture.Workload(ns, "web", fixture.Replicas(1), fixture.Selecting("suite", "pullx"))
	w.Spec.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080}}
	w.Spec.Expose = &flotillav1.ExposeSpec{Ports: []flotillav1.ExposedPort{{Name: "web", Port: 8080}}}
	if err := env.Client.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	l := awaitOneLease(t, ns, "web")
	svc := &corev1.Service{}
	hubenv.Await(t, 30*time.Second, "the agent applied the Service, with a node port", func() (bool, string) {
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: render.Namespace(pullHub, l.UID), Name: render.ServiceName}, svc)
		l = *get(t, &flotillav1.Lease{}, ns, l.Name)
		return err == nil && len(svc.Spec.Ports) == 1 && svc.Spec.Ports[0].NodePort != 0, fmt.Sprint(err, " lease ", l.Status.Phase, " ", l.Status.LastError, " ", l.Status.Conditions)
	})
	runReadyPods(t, pullHub, &l, "px-node")
	addr := fmt.Sprintf("127.0.0.1:%d", svc.Spec.Ports[0].NodePort)
	hubenv.Await(t, 30*time.Second, "the agent's report composed into an address the hub checks, unreachable", func() (bool, string) {
		l = *get(t, &flotillav1.Lease{}, ns, l.Name)
		return len(l.Status.Endpoints) == 1 && l.Status.Endpoints[0].Address == addr && l.Status.Endpoints[0].Message != "not checked yet" &&
			l.Status.ReadyReplicas == 0, fmt.Sprintf("%+v ready %d", l.Status.Endpoints, l.Status.ReadyReplicas)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("node port %s is taken on this machine: %v", addr, err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	hubenv.Await(t, 30*time.Second, "the Workload Ready once the TCP endpoint answers", func() (bool, string) {
		got := get(t, &flotillav1.Workload{}, ns, "web")
		return got.Status.ReadyReplicas == 1 && len(got.Status.Endpoints) == 1 && got.Status.Endpoints[0].Reachable,
			fmt.Sprintf("ready %d %+v", got.Status.ReadyReplicas, got.Status.Endpoints)
	})
}
