package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/conditions"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

func init() { ctrl.SetLogger(logr.Discard()) }

// hub is a federation with Flotilla installed on its hub.
type hub struct {
	stopRegistered bool
	fed            *localfed.Federation
	// cluster is the hub's control plane: the federation's hub, unless a
	// test runs a second one.
	cluster   *localfed.Cluster
	client    client.Client
	providers map[string]kubernetes.Interface
	manager   context.CancelFunc
	done      chan error
	opts      controllers.Options
}

// installHub installs the CRDs, admission policies and RBAC on the hub,
// and creates flotilla-system; the manager is not started.
func installHub(t *testing.T, fed *localfed.Federation) *hub {
	t.Helper()
	return installHubOn(t, fed, fed.Hub)
}

// installHubOn does what installHub does, on cluster.
func installHubOn(t *testing.T, fed *localfed.Federation, cluster *localfed.Cluster) *hub {
	t.Helper()
	ctx := context.Background()
	cfg, err := cluster.RESTConfig(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	scheme := hubenv.Scheme()
	if err := apiextv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	h := &hub{fed: fed, cluster: cluster, client: c, providers: map[string]kubernetes.Interface{}}
	root := hubenv.RepoRoot()
	crdFiles, _ := filepath.Glob(filepath.Join(root, "config/crd/bases/*.yaml"))
	for _, glob := range []string{"config/crd/bases/*.yaml", "config/admission/*.yaml", "config/rbac/tenant_role.yaml"} {
		files, _ := filepath.Glob(filepath.Join(root, glob))
		for _, f := range files {
			if filepath.Base(f) == "kustomization.yaml" {
				continue
			}
			objs, err := hubenv.ReadObjects(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if err := c.Create(ctx, o); err != nil {
					t.Fatalf("installing %s: %v", o.GetName(), err)
				}
			}
		}
	}
	hubenv.Await(t, 60*time.Second, "CRDs established", func() (bool, string) {
		var crds apiextv1.CustomResourceDefinitionList
		if err := c.List(ctx, &crds); err != nil {
			return false, err.Error()
		}
		n := 0
		for _, crd := range crds.Items {
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
					n++
				}
			}
		}
		return n == len(crdFiles), fmt.Sprintf("%d of %d established", n, len(crdFiles))
	})
	mustCreate(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.SystemNamespace}})
	return h
}

// setupHub installs Flotilla on the hub, registers every provider with the
// testbed's admin kubeconfig and an Offer, and starts the manager in this
// process.
func setupHub(t *testing.T, fed *localfed.Federation, prices map[string]string, opts controllers.Options) *hub {
	t.Helper()
	h := installHub(t, fed)
	c := h.client
	for _, p := range fed.Providers {
		if _, priced := prices[p.Name]; !priced {
			// Joined by the test itself (a pull-mode provider, say).
			cs, err := p.Clientset(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			h.providers[p.Name] = cs
			continue
		}
		kc, err := p.InlineKubeconfig()
		if err != nil {
			t.Fatal(err)
		}
		server, err := p.APIServerURL()
		if err != nil {
			t.Fatal(err)
		}
		cs, err := p.Clientset(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		h.providers[p.Name] = cs
		mustCreate(t, c, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: p.Name + "-kubeconfig", Namespace: flotillav1.SystemNamespace},
			Data: map[string][]byte{"kubeconfig": kc}})
		mustCreate(t, c, &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: p.Name}, Spec: flotillav1.ProviderSpec{
			Owner: p.Spec.Owner, Region: p.Spec.Region, APIServerURL: server,
			KubeconfigSecretRef: &flotillav1.SecretKeyReference{Name: p.Name + "-kubeconfig"}}})
		mustCreate(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.ProviderNamespace(p.Name)}})
		mustCreate(t, c, &flotillav1.Offer{
			ObjectMeta: metav1.ObjectMeta{Name: "standard", Namespace: flotillav1.ProviderNamespace(p.Name)},
			Spec: flotillav1.OfferSpec{
				ProviderRef: flotillav1.ProviderReference{Name: p.Name},
				Resources:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("16Gi")},
				Prices:      flotillav1.PriceList{corev1.ResourceCPU: flotillav1.Amount(prices[p.Name])},
			},
		})
	}
	h.opts = opts
	h.start(t)
	return h
}

// start runs the manager in this process until stop or the test's end.
func (h *hub) start(t *testing.T) {
	t.Helper()
	rc, err := h.cluster.RESTConfig(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(rc, ctrl.Options{
		Scheme:                 hubenv.Scheme(),
		Cache:                  controllers.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := controllers.Setup(ctx, mgr, h.opts); err != nil {
		t.Fatal(err)
	}
	h.manager, h.done = cancel, make(chan error, 1)
	go func() { h.done <- mgr.Start(ctx) }()
	// Only the first start registers the stop: a restart inside a stage
	// (a subtest) would otherwise stop the manager when that stage ends,
	// leaving the later stages without one.
	if !h.stopRegistered {
		t.Cleanup(h.stop)
		h.stopRegistered = true
	}
}

// awaitProvidersReady waits until n Providers are Ready.
func (h *hub) awaitProvidersReady(t *testing.T, n int, within time.Duration) {
	t.Helper()
	hubenv.Await(t, within, "every provider Ready", func() (bool, string) {
		var ps flotillav1.ProviderList
		_ = h.client.List(context.Background(), &ps)
		ready := 0
		for _, p := range ps.Items {
			if p.Status.Phase == flotillav1.ProviderReady {
				ready++
			}
		}
		return ready == n, fmt.Sprint(ready, " ready")
	})
}

// leaseNames lists the names of every Lease on the hub.
func (h *hub) leaseNames(t *testing.T) []string {
	t.Helper()
	var ls flotillav1.LeaseList
	if err := h.client.List(context.Background(), &ls); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls.Items {
		out = append(out, l.Namespace+"/"+l.Name)
	}
	slices.Sort(out)
	return out
}

func (h *hub) stop() {
	if h.manager == nil {
		return
	}
	h.manager()
	<-h.done
	h.manager = nil
}

// tenant makes a tenant namespace with an Account credited with credits:
// the hub places Workloads only in namespaces with an Account.
func (h *hub) tenant(t *testing.T, ns, credits string) {
	t.Helper()
	mustCreate(t, h.client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	mustCreate(t, h.client, &flotillav1.Account{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.AccountName, Namespace: ns},
		Spec: flotillav1.AccountSpec{Credited: flotillav1.Amount(credits)}})
}

func mustCreate(t *testing.T, c client.Client, o client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), o); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
	}
}

// runningPods counts the Running pods of managed namespaces on a provider
// that belong to the given Leases (all managed pods when leases is nil).
func (h *hub) runningPods(provider string) (int, error) {
	cs := h.providers[provider]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: flotillav1.LabelManaged + "=true"})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			n++
		}
	}
	return n, nil
}

func (h *hub) managedNamespaces(provider string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nss, err := h.providers[provider].CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: flotillav1.LabelManaged + "=true"})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ns := range nss.Items {
		if ns.DeletionTimestamp == nil {
			out = append(out, ns.Name)
		}
	}
	return out, nil
}

// awaitFenced waits until a provider that returned is Ready again with no
// managed namespace left on it: its stale work is gone.
func (h *hub) awaitFenced(t *testing.T, provider string, within time.Duration) {
	t.Helper()
	hubenv.Await(t, within, provider+" Ready with its stale namespaces gone", func() (bool, string) {
		p := &flotillav1.Provider{}
		_ = h.client.Get(context.Background(), client.ObjectKey{Name: provider}, p)
		nss, err := h.managedNamespaces(provider)
		return err == nil && len(nss) == 0 && p.Status.Phase == flotillav1.ProviderReady,
			fmt.Sprintf("phase %s, namespaces %v, %v", p.Status.Phase, nss, err)
	})
}

func (h *hub) workload(t *testing.T, ns, name string) *flotillav1.Workload {
	t.Helper()
	w := &flotillav1.Workload{}
	if err := h.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, w); err != nil {
		t.Fatal(err)
	}
	return w
}

// awaitKStatus waits until kstatus (sigs.k8s.io/cli-utils), as Flux and
// Argo CD run it, computes want for obj.
func (h *hub) awaitKStatus(t *testing.T, obj client.Object, want string) {
	t.Helper()
	hubenv.Await(t, 90*time.Second, fmt.Sprintf("%T %s to be %s", obj, obj.GetName(), want), func() (bool, string) {
		if err := h.client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return false, err.Error()
		}
		got, err := conditions.KStatus(obj)
		return err == nil && got == want, fmt.Sprint(got, err)
	})
}

// kubectl runs bin/kubectl against the hub.
func (h *hub) kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(filepath.Join(hubenv.RepoRoot(), "bin", "kubectl"), append([]string{"--kubeconfig", h.fed.Hub.Kubeconfig}, args...)...).CombinedOutput()
	return string(out), err
}

func newWorkload(ns, name string, class flotillav1.WorkloadClass, replicas int32) *flotillav1.Workload {
	return fixture.Workload(ns, name, fixture.Class(class), fixture.Replicas(replicas), fixture.PodLabel("app", name), fixture.RunAsUser(65532))
}
