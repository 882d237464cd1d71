package hostile

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

func scheduled(t *testing.T, ns, name string) *metav1.Condition {
	t.Helper()
	w := get(t, &flotillav1.Workload{}, ns, name)
	return apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadScheduled)
}

// TestFailingCreateDoesNotStarveOthers plays a tenant whose Workload, at
// the highest priority it may have, can never get its Lease created: it
// must not spend the provider's rate of new Leases, nor hold the capacity
// cycle after cycle, while another tenant's Workload waits.
func TestFailingCreateDoesNotStarveOthers(t *testing.T) {
	ctx := context.Background()
	// The API server refuses the hog's Leases, as it would any Lease whose
	// derived fields went wrong.
	policy := &admissionv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: "test-refuse-hog-leases"},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{RuleWithOperations: admissionv1.RuleWithOperations{
				Operations: []admissionv1.OperationType{admissionv1.Create},
				Rule:       admissionv1.Rule{APIGroups: []string{"flotilla.dev"}, APIVersions: []string{"*"}, Resources: []string{"leases"}}}}}},
			Validations: []admissionv1.Validation{{Expression: "!has(object.metadata.labels) || !('flotilla.dev/workload' in object.metadata.labels) || object.metadata.labels['flotilla.dev/workload'] != 'hog'",
				Message: "no Leases for the hog"}},
		}}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: "test-refuse-hog-leases"},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name, ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}}}
	create(t, policy)
	create(t, binding)
	t.Cleanup(func() { _ = env.Client.Delete(ctx, binding); _ = env.Client.Delete(ctx, policy) })

	tenant(t, "hogs", "100")
	a := get(t, &flotillav1.Account{}, "hogs", flotillav1.AccountName)
	a.Spec.MaxPriority = ptr.To[int32](100)
	if err := env.Client.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	tenant(t, "fair", "100")
	provider(t, "scarce-1", "scarce", nil)
	awaitAdmission(t, "hogs")
	hog := workload("hogs", "hog", "scarce")
	hog.Spec.Priority = 100
	hubenv.Await(t, 10*time.Second, "the hog admitted at priority 100", func() (bool, string) {
		err := env.Client.Create(ctx, hog.DeepCopy())
		return err == nil, fmt.Sprint(err)
	})
	create(t, workload("fair", "fair", "scarce"))
	// One new Lease per provider now, and the next only minutes later.
	startHub(t, "scarce", func(o *controllers.Options) { o.LeaseBurst, o.LeaseRate = 1, 0.001 })

	hubenv.Await(t, 20*time.Second, "T6.create-failure: the fair Workload placed despite the hog", func() (bool, string) {
		n := len(leasesOf(t, "fair", "fair"))
		return n == 1, fmt.Sprintf("%d leases; hog: %+v", n, scheduled(t, "hogs", "hog"))
	})
	hubenv.Await(t, 10*time.Second, "the hog saying why it waits", func() (bool, string) {
		c := scheduled(t, "hogs", "hog")
		return c != nil && c.Reason == flotillav1.WorkloadReasonLeaseCreateFailed && strings.Contains(c.Message, "no Leases for the hog"), fmt.Sprintf("%+v", c)
	})
}

// TestBrokenBankStopsPlacement: a hub whose ledger key is lost cannot
// settle; it says so, retries with a growing wait, and places nothing
// that would go unbilled until the key is back.
func TestBrokenBankStopsPlacement(t *testing.T) {
	ctx := context.Background()
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.SystemNamespace}})
	key := &corev1.Secret{}
	err := env.Client.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: ledgerstore.KeySecret}, key)
	had := err == nil
	saved := key.DeepCopy()
	broken := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: ledgerstore.KeySecret, Namespace: flotillav1.SystemNamespace},
		Data: map[string][]byte{"ed25519.key": []byte("lost")}}
	if had {
		key.Data = broken.Data
		if err := env.Client.Update(ctx, key); err != nil {
			t.Fatal(err)
		}
	} else {
		create(t, broken)
	}
	restore := func() {
		cur := &corev1.Secret{}
		if env.Client.Get(ctx, client.ObjectKeyFromObject(broken), cur) != nil {
			return
		}
		if had {
			cur.Data = saved.Data
			_ = env.Client.Update(ctx, cur)
		} else {
			_ = env.Client.Delete(ctx, cur)
		}
	}
	t.Cleanup(restore)

	tenant(t, "billed", "100")
	provider(t, "bank-1", "bank", nil)
	create(t, workload("billed", "w", "bank"))
	before := metricValue(t, "flotilla_bank_settlement_failures_total")
	startHub(t, "bank", nil)
	hubenv.Await(t, 20*time.Second, "T8.bank-cannot-settle: Scheduled=False SettlementUnavailable", func() (bool, string) {
		c := scheduled(t, "billed", "w")
		return c != nil && c.Reason == flotillav1.WorkloadReasonSettlementUnavailable && strings.Contains(c.Message, "ed25519"), fmt.Sprintf("%+v", c)
	})
	start := time.Now()
	hubenv.Holds(t, 10*time.Second, "no Lease placed while nothing can be billed", func() (bool, string) {
		n := len(leasesOf(t, "billed", "w"))
		return n == 0, fmt.Sprint(n, " Leases")
	})
	// Every second that would be 10 reloads; waiting 1, 2, 4, 8 s, about 4.
	if n := metricValue(t, "flotilla_bank_settlement_failures_total") - before; n > 7 {
		t.Errorf("T8.bank-backoff: %v failed settlements in %s, want the waits to grow", n, time.Since(start).Round(time.Second))
	}
	if v := metricValue(t, "flotilla_bank_settlement_failing"); v != 1 {
		t.Errorf("flotilla_bank_settlement_failing = %v, want 1", v)
	}
	restore()
	hubenv.Await(t, 60*time.Second, "placement once the bank settles again", func() (bool, string) {
		n := len(leasesOf(t, "billed", "w"))
		return n == 1, fmt.Sprintf("%d leases, %+v", n, scheduled(t, "billed", "w"))
	})
}

// TestTenantSecretsAreNotCached plays a tenant filling its namespace with
// large Secrets: the manager's cache holds Secrets and ConfigMaps of
// flotilla-system only, so they never reach the hub's memory.
func TestTenantSecretsAreNotCached(t *testing.T) {
	ctx := context.Background()
	tenant(t, "hoarder", "1")
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "big", Namespace: "hoarder"},
		Data: map[string][]byte{"blob": make([]byte, 512<<10)}})
	c, err := cache.New(env.Config, func() cache.Options { o := controllers.CacheOptions(); o.Scheme = env.Scheme; return o }())
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = c.Start(cctx) }()
	c.WaitForCacheSync(cctx)
	var secrets corev1.SecretList
	if err := c.List(ctx, &secrets, client.InNamespace("hoarder")); err == nil {
		t.Errorf("T6.secret-cache: the manager's cache serves the tenant's Secrets (%d)", len(secrets.Items))
	}
	var cms corev1.ConfigMapList
	if err := c.List(ctx, &cms, client.InNamespace("hoarder")); err == nil {
		t.Errorf("T6.secret-cache: the manager's cache serves the tenant's ConfigMaps (%d)", len(cms.Items))
	}
	if err := c.List(ctx, &secrets, client.InNamespace(flotillav1.SystemNamespace)); err != nil {
		t.Errorf("the manager's cache does not serve flotilla-system's Secrets: %v", err)
	}
}

// TestIdentityIsTheAdministrators plays a provider that claims another
// owner, region or zone through its Offer or its own attributes.
func TestIdentityIsTheAdministrators(t *testing.T) {
	ctx := context.Background()
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.ProviderNamespace("spoof-1")}})
	for id, k := range map[string]string{"P2.offer-claims-owner": "owner", "P2.offer-claims-region": "region", "P2.offer-claims-zone": "zone"} {
		o := &flotillav1.Offer{ObjectMeta: metav1.ObjectMeta{Name: "o-" + k, Namespace: flotillav1.ProviderNamespace("spoof-1")},
			Spec: flotillav1.OfferSpec{ProviderRef: flotillav1.ProviderReference{Name: "spoof-1"},
				Resources: corev1.ResourceList{corev1.ResourceCPU: *resourceOf("1")}, Prices: flotillav1.PriceList{},
				Attributes: map[string]string{k: "trusted"}}}
		refusedWith(t, id, env.Client.Create(ctx, o, client.DryRunAll), "spec.attributes", "owner, region and zone")
	}
	p := &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: "spoof-1"}, Spec: flotillav1.ProviderSpec{Owner: "mallory",
		KubeconfigSecretRef: &flotillav1.SecretKeyReference{Name: "spoof-1-kubeconfig"}, Attributes: map[string]string{"owner": "alice"}}}
	refusedWith(t, "P2.provider-attributes-claim-owner", env.Client.Create(ctx, p, client.DryRunAll), "spec.attributes")
}

func metricValue(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var v float64
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return v
	}
	return 0
}
