package charts

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/agent"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// A cluster serving two hubs gives each its own identity, named by its
// id and confined to its own namespaces on a real API server; the agent
// is configured for both; the chart refuses two hubs in Push mode.
func TestProviderChartServesSeveralHubs(t *testing.T) {
	hubs := []string{"--set", "provider.mode=Pull", "--set", "provider.apiServerURL=",
		"--set", "hubs[0].id=eu1", "--set", "hubs[1].id=us1", "--set", "hubs[1].providerName=alice-us"}
	objs := render(t, append([]string{"charts/flotilla-provider", "-f", "charts/flotilla-provider/ci/lint-values.yaml"}, hubs...)...)
	for _, id := range []string{"eu1", "us1"} {
		for _, k := range []string{"ServiceAccount/flotilla-federation-", "Secret/flotilla-federation-" + id + "-token#",
			"ClusterRole/flotilla-federation-", "ClusterRoleBinding/flotilla-federation-",
			"ValidatingAdmissionPolicy/flotilla-federation-confinement-", "ValidatingAdmissionPolicyBinding/flotilla-federation-confinement-"} {
			name := k + id
			if strings.HasSuffix(k, "#") {
				name = strings.TrimSuffix(k, "#")
			}
			if objs[name] == nil {
				t.Errorf("%s is not rendered", name)
			}
		}
	}
	for _, k := range []string{"ServiceAccount/flotilla-federation", "ClusterRole/flotilla-federation", "ValidatingAdmissionPolicy/flotilla-federation-confinement"} {
		if objs[k] != nil {
			t.Errorf("%s is rendered beside the per-hub identities", k)
		}
	}
	raw, _, _ := unstructured.NestedString(objs["ConfigMap/flotilla-agent-config"].Object, "data", "config.json")
	cfg, err := agent.ParseConfig([]byte(raw))
	if err != nil {
		t.Fatalf("the agent refuses the chart's settings: %v", err)
	}
	us, err := cfg.ForHub("us1")
	if err != nil || us.Provider.Name != "alice-us" || us.HubJoinSecret != "flotilla-hub-join-us1" ||
		us.FederationTokenSecret != "flotilla-federation-us1-token" || us.WitnessConfigMap != "flotilla-ledger-witness-us1" {
		t.Errorf("hub us1's settings: %+v %v", us, err)
	}
	role, _ := json.Marshal(objs["Role/flotilla-agent"].Object)
	for _, name := range []string{"flotilla-federation-eu1-token", "flotilla-hub-join-us1", "flotilla-ledger-witness-eu1"} {
		if !strings.Contains(string(role), name) {
			t.Errorf("the agent's Role does not name %s", name)
		}
	}

	for _, bad := range [][]string{
		{"--set", "hubs[0].id=eu1", "--set", "hubs[1].id=us1"}, // Push
		{"--set", "provider.mode=Pull", "--set", "provider.apiServerURL=", "--set", "hubs[0].id=eu1", "--set", "hubs[1].id=eu1"},
		{"--set", "provider.mode=Pull", "--set", "provider.apiServerURL=", "--set", "hubs[0].id=EU_1"},
	} {
		out, err := helm(t, append([]string{"template", "x", "charts/flotilla-provider", "-f", "charts/flotilla-provider/ci/lint-values.yaml"}, bad...)...)
		if err == nil {
			t.Errorf("%v rendered", bad)
		} else if !strings.Contains(out, "hubs") {
			t.Errorf("%v: refused without naming hubs: %s", bad, out)
		}
	}

	// On a real API server, hub eu1's identity cannot touch hub us1's
	// namespaces, nor create one of them.
	ctx := context.Background()
	env, err := hubenv.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "flotilla-system"}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"eu1", "us1"} {
		for _, k := range []string{"ServiceAccount/flotilla-federation-", "ClusterRole/flotilla-federation-", "ClusterRoleBinding/flotilla-federation-",
			"ValidatingAdmissionPolicy/flotilla-federation-confinement-", "ValidatingAdmissionPolicyBinding/flotilla-federation-confinement-"} {
			o := objs[k+id]
			if o.GetKind() == "ServiceAccount" {
				o.SetNamespace("flotilla-system")
			}
			if err := env.Client.Create(ctx, o); err != nil {
				t.Fatalf("%s%s: %v", k, id, err)
			}
		}
	}
	as := func(id string) kubernetes.Interface {
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:flotilla-system:flotilla-federation-" + id,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:flotilla-system", "system:authenticated"}}
		cfg.WarningHandler = rest.NoWarnings{}
		return kubernetes.NewForConfigOrDie(cfg)
	}
	eu, usc := as("eu1"), as("us1")
	nsOf := func(id string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "flotilla-" + id + "-0123456789abcdef",
			Labels: map[string]string{flotillav1.LabelManaged: "true", flotillav1.LabelHub: id, "pod-security.kubernetes.io/enforce": "restricted"}}}
	}
	if !hubenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) bool {
		_, err := eu.CoreV1().Namespaces().Create(ctx, nsOf("us1"), metav1.CreateOptions{DryRun: []string{"All"}})
		return err != nil && strings.Contains(err.Error(), "must be named")
	}) {
		t.Fatal("P7.hub-cannot-touch-other-hubs: hub eu1's identity creates hub us1's namespaces")
	}
	if _, err := usc.CoreV1().Namespaces().Create(ctx, nsOf("us1"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("hub us1's identity cannot create its own namespace: %v", err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}
	if _, err := eu.CoreV1().ConfigMaps(nsOf("us1").Name).Create(ctx, cm, metav1.CreateOptions{}); err == nil {
		t.Error("P7.hub-cannot-touch-other-hubs: hub eu1's identity writes in hub us1's namespace")
	}
	if err := eu.CoreV1().Namespaces().Delete(ctx, nsOf("us1").Name, metav1.DeleteOptions{}); err == nil {
		t.Error("P7.hub-cannot-touch-other-hubs: hub eu1's identity deletes hub us1's namespace")
	}
	if _, err := usc.CoreV1().ConfigMaps(nsOf("us1").Name).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Errorf("hub us1's identity cannot write in its own namespace: %v", err)
	}
}

// The hub chart lets every authenticated user, any tenant, read what the
// hub publishes in flotilla-ledger, and nothing of the ledger's store.
func TestHubChartPublishesTheLedgerToEveryone(t *testing.T) {
	ctx := context.Background()
	objs := render(t, "charts/flotilla-hub")
	env, err := hubenv.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	for _, k := range []string{"Namespace/flotilla-ledger", "Role/flotilla-ledger-reader", "RoleBinding/flotilla-ledger-public"} {
		if err := env.Client.Create(ctx, objs[k]); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	for _, cm := range []*corev1.ConfigMap{
		{ObjectMeta: metav1.ObjectMeta{Name: "flotilla-ledger-head", Namespace: flotillav1.LedgerNamespace}},
		{ObjectMeta: metav1.ObjectMeta{Name: "flotilla-system"}},
	} {
		if cm.Namespace == "" {
			if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cm.Name}}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := env.Client.Create(ctx, cm); err != nil {
			t.Fatal(err)
		}
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "carol", Groups: []string{"tenants", "system:authenticated"}}
	carol := kubernetes.NewForConfigOrDie(cfg)
	if !hubenv.Eventually(ctx, 10*time.Second, func(ctx context.Context) bool {
		_, err := carol.CoreV1().ConfigMaps(flotillav1.LedgerNamespace).Get(ctx, "flotilla-ledger-head", metav1.GetOptions{})
		return err == nil
	}) {
		t.Fatal("T4.tenant-reads-published-ledger: a tenant cannot read the published head")
	}
	if _, err := carol.CoreV1().ConfigMaps(flotillav1.LedgerNamespace).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("T4.tenant-reads-published-ledger: a tenant cannot list the index: %v", err)
	}
	if _, err := carol.CoreV1().ConfigMaps(flotillav1.SystemNamespace).List(ctx, metav1.ListOptions{}); err == nil {
		t.Error("T4.tenant-reads-published-ledger: a tenant lists the ledger's store in flotilla-system")
	}
	if err := carol.CoreV1().ConfigMaps(flotillav1.LedgerNamespace).Delete(ctx, "flotilla-ledger-head", metav1.DeleteOptions{}); err == nil {
		t.Error("T4.tenant-reads-published-ledger: a tenant deletes the published head")
	}
}
