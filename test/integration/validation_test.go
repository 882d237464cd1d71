package integration

import (
	"cmp"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

const testNS = "validation"

// ensureNamespace makes a tenant namespace with its Account, which every
// Workload's namespace needs.
func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Client.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	a := &flotillav1.Account{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.AccountName, Namespace: name}}
	if err := env.Client.Create(context.Background(), a); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating the account of %s: %v", name, err)
	}
}

func validWorkload() *flotillav1.Workload {
	return fixture.Workload(testNS, "w", fixture.Class(flotillav1.ClassService), fixture.Replicas(2), fixture.Requests("100m", "64Mi"))
}

func validBatch() *flotillav1.Workload {
	w := validWorkload()
	w.Spec.Class = flotillav1.ClassBatch
	w.Spec.Replicas = 1
	w.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever
	return w
}

func validOffer() *flotillav1.Offer {
	return &flotillav1.Offer{
		ObjectMeta: metav1.ObjectMeta{Name: "o", Namespace: testNS},
		Spec: flotillav1.OfferSpec{
			ProviderRef: flotillav1.ProviderReference{Name: "p"},
			Resources: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("8"),
				corev1.ResourceMemory: resource.MustParse("16Gi"),
			},
			Prices: flotillav1.PriceList{corev1.ResourceCPU: "0.01", corev1.ResourceMemory: "0.001"},
		},
	}
}

func validProvider() *flotillav1.Provider {
	return &flotillav1.Provider{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: flotillav1.ProviderSpec{
			Owner:               "alice",
			Region:              "eu-west",
			KubeconfigSecretRef: &flotillav1.SecretKeyReference{Name: "p-kubeconfig"},
		},
	}
}

func validLease() *flotillav1.Lease {
	return &flotillav1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "l", Namespace: testNS},
		Spec: flotillav1.LeaseSpec{
			WorkloadRef:         flotillav1.LocalObjectReference{Name: "w"},
			ProviderRef:         flotillav1.ProviderReference{Name: "p"},
			OfferRef:            flotillav1.ObjectReference{Namespace: "provider-p", Name: "o"},
			Replicas:            1,
			ResourcesPerReplica: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
			Prices:              flotillav1.PriceList{corev1.ResourceCPU: "0.01"},
			PricePerReplicaHour: "0.01",
			Epoch:               1,
		},
	}
}

func workload(mutate func(*flotillav1.Workload)) client.Object {
	w := validWorkload()
	mutate(w)
	return w
}

func container(w *flotillav1.Workload) *corev1.Container { return &w.Spec.Template.Spec.Containers[0] }

// waitForPolicies blocks until the admission policy is enforced: policies
// reach the apiserver's admission chain a moment after they are created.
func waitForPolicies(t *testing.T) {
	t.Helper()
	ensureNamespace(t, testNS)
	bad := workload(func(w *flotillav1.Workload) { w.Spec.Template.Spec.HostNetwork = true })
	ok := hubenv.Eventually(context.Background(), 30*time.Second, func(ctx context.Context) bool {
		err := env.Client.Create(ctx, bad.DeepCopyObject().(client.Object), client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), "hostNetwork")
	})
	if !ok {
		t.Fatal("admission policy flotilla-workload-template-safety was not enforced within 30s")
	}
}

func TestSamplesAreAccepted(t *testing.T) {
	waitForPolicies(t)
	ctx := context.Background()
	objs, err := filepath.Glob(filepath.Join(hubenv.RepoRoot(), "config", "samples", "flotilla_*.yaml"))
	if err != nil || len(objs) < 4 {
		t.Fatalf("expected at least 4 samples, found %d (%v)", len(objs), err)
	}
	kinds := map[string]bool{}
	var all []*unstructured.Unstructured
	for _, f := range objs {
		us, err := hubenv.ReadObjects(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range us {
			u.SetAnnotations(map[string]string{"sample": filepath.Base(f)})
			all = append(all, u)
		}
	}
	// The samples' Accounts first: every other namespace gets an empty one.
	rank := func(u *unstructured.Unstructured) int {
		if u.GetKind() == "Account" {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(all, func(a, b *unstructured.Unstructured) int { return cmp.Compare(rank(a), rank(b)) })
	for _, u := range all {
		if ns := u.GetNamespace(); ns != "" {
			if u.GetKind() == "Account" {
				_ = env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			} else {
				ensureNamespace(t, ns)
			}
		}
		if err := env.Client.Create(ctx, u); err != nil {
			t.Errorf("sample %s (%s %s) rejected: %v", u.GetAnnotations()["sample"], u.GetKind(), u.GetName(), err)
		}
		kinds[u.GetKind()] = true
	}
	for _, k := range []string{"Provider", "Offer", "Workload", "Lease", "Account"} {
		if !kinds[k] {
			t.Errorf("config/samples has no %s", k)
		}
	}
}

func TestInvalidObjectsAreRejected(t *testing.T) {
	ensureNamespace(t, testNS)
	waitForPolicies(t)

	cases := map[string]struct {
		obj  client.Object
		want string // the message must name this field
	}{
		"privileged container": {workload(func(w *flotillav1.Workload) {
			container(w).SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
		}), "spec.template.spec.containers[app].securityContext.privileged"},
		"privileged init container": {workload(func(w *flotillav1.Workload) {
			w.Spec.Template.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox",
				SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}
		}), "spec.template.spec.initContainers[init].securityContext.privileged"},
		"hostPath volume": {workload(func(w *flotillav1.Workload) {
			w.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}), "spec.template.spec.volumes[root]"},
		"hostNetwork": {workload(func(w *flotillav1.Workload) { w.Spec.Template.Spec.HostNetwork = true }),
			"spec.template.spec.hostNetwork"},
		"hostPID": {workload(func(w *flotillav1.Workload) { w.Spec.Template.Spec.HostPID = true }),
			"spec.template.spec.hostPID"},
		"hostIPC": {workload(func(w *flotillav1.Workload) { w.Spec.Template.Spec.HostIPC = true }),
			"spec.template.spec.hostIPC"},
		"hostPort": {workload(func(w *flotillav1.Workload) {
			container(w).Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}}
		}), "spec.template.spec.containers[app].ports.hostPort"},
		"added SYS_ADMIN": {workload(func(w *flotillav1.Workload) {
			container(w).SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{
				Add: []corev1.Capability{"NET_BIND_SERVICE", "SYS_ADMIN"}}}
		}), "spec.template.spec.containers[app].securityContext.capabilities.add"},
		"allowPrivilegeEscalation": {workload(func(w *flotillav1.Workload) {
			container(w).SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(true)}
		}), "spec.template.spec.containers[app].securityContext.allowPrivilegeEscalation"},
		"negative replicas": {workload(func(w *flotillav1.Workload) { w.Spec.Replicas = -1 }), "spec.replicas"},
		"empty template": {workload(func(w *flotillav1.Workload) { w.Spec.Template.Spec.Containers = nil }),
			"spec.template.spec.containers"},
		"unknown class": {workload(func(w *flotillav1.Workload) { w.Spec.Class = "Cron" }), "spec.class"},
		"quorum above redundancy": {func() client.Object {
			w := validBatch()
			w.Spec.Verification = &flotillav1.VerificationSpec{Redundancy: 2, Quorum: 3}
			return w
		}(), "spec.verification.quorum"},
		"account not named default": {&flotillav1.Account{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: testNS}},
			"an Account must be named default"},
		"negative credit": {&flotillav1.Account{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.AccountName, Namespace: testNS},
			Spec: flotillav1.AccountSpec{Credited: "-5"}}, "spec.credited"},
		"verification of several replicas": {func() client.Object {
			w := validBatch()
			w.Spec.Replicas = 2
			w.Spec.Verification = &flotillav1.VerificationSpec{Redundancy: 1, Quorum: 1}
			return w
		}(), "spec.replicas must be 1 with spec.verification"},
		"verification on a Service": {workload(func(w *flotillav1.Workload) {
			w.Spec.Verification = &flotillav1.VerificationSpec{Redundancy: 3, Quorum: 2}
		}), "spec.verification"},
		"malformed price ceiling": {workload(func(w *flotillav1.Workload) {
			w.Spec.Placement.MaxPricePerReplicaHour = ptr.To(flotillav1.Amount("1.2.3"))
		}), "spec.placement.maxPricePerReplicaHour"},
		"reputation above 1": {workload(func(w *flotillav1.Workload) {
			w.Spec.Placement.MinReputation = ptr.To(flotillav1.Score("1.5"))
		}), "spec.placement.minReputation"},
		"negative budget": {workload(func(w *flotillav1.Workload) {
			w.Spec.Budget = ptr.To(flotillav1.Amount("-3"))
		}), "spec.budget"},
		"spread per provider above per owner": {workload(func(w *flotillav1.Workload) {
			w.Spec.Placement.MaxReplicasPerProvider = ptr.To[int32](3)
			w.Spec.Placement.MaxReplicasPerOwner = ptr.To[int32](2)
		}), "maxReplicasPerProvider"},
		"negative offer price": {func() client.Object {
			o := validOffer()
			o.Spec.Prices[corev1.ResourceCPU] = "-0.5"
			return o
		}(), "spec.prices.cpu"},
		"price for a resource not offered": {func() client.Object {
			o := validOffer()
			o.Spec.Prices[corev1.ResourceEphemeralStorage] = "0.1"
			return o
		}(), "spec.prices"},
		"unknown offered resource": {func() client.Object {
			o := validOffer()
			o.Spec.Resources["example.com/fpga"] = resource.MustParse("1")
			return o
		}(), "spec.resources"},
		"offer window reversed": {func() client.Object {
			o := validOffer()
			now := time.Now()
			o.Spec.ValidFrom = &metav1.Time{Time: now}
			o.Spec.ValidUntil = &metav1.Time{Time: now.Add(-time.Hour)}
			return o
		}(), "spec.validUntil"},
		"provider owner not a DNS label": {func() client.Object {
			p := validProvider()
			p.Spec.Owner = "Bob_1"
			return p
		}(), "spec.owner"},
		"provider zone without region": {func() client.Object {
			p := validProvider()
			p.Spec.Region = ""
			p.Spec.Zone = "a"
			return p
		}(), "spec.zone"},
		"lease epoch zero": {func() client.Object {
			l := validLease()
			l.Spec.Epoch = 0
			return l
		}(), "spec.epoch"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := env.Client.Create(context.Background(), tc.obj, client.DryRunAll)
			if err == nil {
				t.Fatalf("accepted; want rejection naming %q", tc.want)
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
				t.Fatalf("want Invalid or Forbidden, got %v", err)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("message does not name %q: %v", tc.want, err)
			}
		})
	}
}

func TestValidObjectsAreAccepted(t *testing.T) {
	ensureNamespace(t, testNS)
	waitForPolicies(t)
	for name, obj := range map[string]client.Object{
		"workload": validWorkload(),
		"batch":    validBatch(),
		"offer":    validOffer(),
		"provider": validProvider(),
		"lease":    validLease(),
		"NET_BIND_SERVICE is fine": workload(func(w *flotillav1.Workload) {
			container(w).SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}}}
		}),
		"containerPort without host": workload(func(w *flotillav1.Workload) { container(w).Ports = []corev1.ContainerPort{{ContainerPort: 8080}} }),
	} {
		t.Run(name, func(t *testing.T) {
			if err := env.Client.Create(context.Background(), obj, client.DryRunAll); err != nil {
				t.Fatalf("rejected: %v", err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	ensureNamespace(t, testNS)
	w := validWorkload()
	w.Name = "defaults"
	w.Spec.Class = ""
	if err := env.Client.Create(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	if w.Spec.Class != flotillav1.ClassService {
		t.Errorf("class defaulted to %q, want Service", w.Spec.Class)
	}
	if w.Spec.Failover.GracePeriodSeconds == nil || *w.Spec.Failover.GracePeriodSeconds != 5 {
		t.Errorf("failover.gracePeriodSeconds defaulted to %v, want 5", w.Spec.Failover.GracePeriodSeconds)
	}
	o := validOffer()
	o.Name = "defaults"
	if err := env.Client.Create(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if len(o.Spec.Classes) != 2 {
		t.Errorf("offer classes defaulted to %v, want [Service Batch]", o.Spec.Classes)
	}
	p := validProvider()
	p.Name = "defaults"
	if err := env.Client.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if p.Spec.KubeconfigSecretRef.Key != "kubeconfig" {
		t.Errorf("kubeconfig key defaulted to %q, want kubeconfig", p.Spec.KubeconfigSecretRef.Key)
	}
}

func TestLeaseContractIsLocked(t *testing.T) {
	ensureNamespace(t, testNS)
	ctx := context.Background()
	l := validLease()
	l.Name = "locked"
	if err := env.Client.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*flotillav1.Lease){
		"spec.prices":      func(l *flotillav1.Lease) { l.Spec.Prices[corev1.ResourceCPU] = "0.001" },
		"spec.epoch":       func(l *flotillav1.Lease) { l.Spec.Epoch = 2 },
		"spec.providerRef": func(l *flotillav1.Lease) { l.Spec.ProviderRef.Name = "other" },
	} {
		t.Run(name, func(t *testing.T) {
			c := l.DeepCopy()
			mutate(c)
			err := env.Client.Update(ctx, c, client.DryRunAll)
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("update of %s: want rejection naming it, got %v", name, err)
			}
		})
	}
	c := l.DeepCopy()
	c.Spec.Replicas = 2
	if err := env.Client.Update(ctx, c, client.DryRunAll); err != nil {
		t.Fatalf("changing replicas must be allowed: %v", err)
	}
}
