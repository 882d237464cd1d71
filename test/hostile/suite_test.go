// Package hostile plays the parties Flotilla must not trust, against a real
// hub API server (envtest) with the hub's admission policies and its
// controllers running: providers that hand the hub hostile kubeconfigs,
// heartbeats, pods and errors, and tenants that submit templates, names,
// priorities and references meant to escape their Lease or stop the
// market. The hub's API server also stands in for a provider's, so that
// what the hub applies on a provider can be watched and tampered with.
//
// Each case carries an id (P1.exec-plugin, T4.no-requests) listed in
// docs/security.md with the test that proves it; TestSecurityDocListsEveryCase
// keeps the two in step.
package hostile

import (
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

var env *hubenv.Env

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	var err error
	env, err = hubenv.Start(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// startHub runs the hub's controllers (controllers.Setup, as the manager
// does) against the test API server until the test ends.
func startHub(t *testing.T, hubID string, mutate func(*controllers.Options)) *controllers.Scheduler {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: env.Scheme, Cache: controllers.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		t.Fatal(err)
	}
	opts := controllers.Options{HubID: hubID, ProbeInterval: 200 * time.Millisecond, ProviderGracePeriod: 3 * time.Second,
		SettlementInterval: time.Second, SchedulerInterval: 50 * time.Millisecond}
	if mutate != nil {
		mutate(&opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := controllers.Setup(ctx, mgr, opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return s
}

func create(t *testing.T, o client.Object) {
	t.Helper()
	if err := env.Client.Create(context.Background(), o); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
	}
}

// tenant makes a namespace with an Account credited with credits.
func tenant(t *testing.T, ns, credits string) {
	t.Helper()
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	create(t, &flotillav1.Account{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.AccountName, Namespace: ns},
		Spec: flotillav1.AccountSpec{Credited: flotillav1.Amount(credits)}})
}

// kubeconfig reaches server with the test API server's credentials.
func kubeconfig(t *testing.T, server string, mutate func(*clientcmdapi.Config)) []byte {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: env.Config.CAData}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{ClientCertificateData: env.Config.CertData, ClientKeyData: env.Config.KeyData}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "c"
	if mutate != nil {
		mutate(cfg)
	}
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// provider registers a provider whose cluster is the test API server (so
// its probes succeed and what the hub applies lands here), with an Offer
// tagged suite=suite and a node to measure.
func provider(t *testing.T, name, suite string, mutateOffer func(*flotillav1.OfferSpec)) {
	t.Helper()
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.SystemNamespace}})
	create(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-" + name}})
	node := &corev1.Node{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: "node-" + name}, node); err != nil {
		t.Fatal(err)
	}
	node.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods: resource.MustParse("110")}
	node.Status.Capacity = node.Status.Allocatable.DeepCopy()
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if err := env.Client.Status().Update(context.Background(), node); err != nil {
		t.Fatal(err)
	}
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-kubeconfig", Namespace: flotillav1.SystemNamespace},
		Data: map[string][]byte{"kubeconfig": kubeconfig(t, env.Config.Host, nil)}})
	create(t, &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: flotillav1.ProviderSpec{
		Owner: name, Region: "eu-west", APIServerURL: env.Config.Host,
		KubeconfigSecretRef: &flotillav1.SecretKeyReference{Name: name + "-kubeconfig"}}})
	forgetProvider(t, name)
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.ProviderNamespace(name)}})
	spec := flotillav1.OfferSpec{
		ProviderRef: flotillav1.ProviderReference{Name: name},
		Resources:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("16"), corev1.ResourceMemory: resource.MustParse("64Gi")},
		Prices:      flotillav1.PriceList{corev1.ResourceCPU: "0.01"},
		Attributes:  map[string]string{"suite": suite},
	}
	if mutateOffer != nil {
		mutateOffer(&spec)
	}
	create(t, &flotillav1.Offer{ObjectMeta: metav1.ObjectMeta{Name: "std", Namespace: flotillav1.ProviderNamespace(name)}, Spec: spec})
}

// forgetProvider removes the Provider when the test ends. Every provider
// here is the same API server, so a later test's hub probing an earlier
// test's provider would fence this test's namespaces as bound elsewhere.
func forgetProvider(t *testing.T, name string) {
	t.Cleanup(func() {
		ctx := context.Background()
		p := &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: name}}
		_ = env.Client.Delete(ctx, p)
		if env.Client.Get(ctx, client.ObjectKeyFromObject(p), p) == nil {
			p.Finalizers = nil
			_ = env.Client.Update(ctx, p)
		}
	})
}

// workload is a valid Service Workload of one replica selecting suite.
func workload(ns, name, suite string) *flotillav1.Workload {
	return fixture.Workload(ns, name, fixture.Requests("1", "1Gi"), fixture.Selecting("suite", suite))
}

func get[T client.Object](t *testing.T, o T, ns, name string) T {
	t.Helper()
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, o); err != nil {
		t.Fatal(err)
	}
	return o
}

// leasesOf lists a Workload's Leases.
func leasesOf(t *testing.T, ns, workload string) []flotillav1.Lease {
	t.Helper()
	var ls flotillav1.LeaseList
	if err := env.Client.List(context.Background(), &ls, client.InNamespace(ns), client.MatchingLabels{flotillav1.LabelWorkload: workload}); err != nil {
		t.Fatal(err)
	}
	return ls.Items
}

func pemOf(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}) }

// refusedWith asserts err is a refusal whose message contains each hint.
func refusedWith(t *testing.T, id string, err error, hints ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: accepted, want refused", id)
		return
	}
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Errorf("%s: %v, want Forbidden or Invalid", id, err)
		return
	}
	for _, h := range hints {
		if !strings.Contains(err.Error(), h) {
			t.Errorf("%s: refused with %q, want the message to contain %q", id, err.Error(), h)
		}
	}
}

func resourceOf(s string) *resource.Quantity { q := resource.MustParse(s); return &q }
