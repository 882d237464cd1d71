package charts

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// TestFederationPolicyOfExposure installs the provider chart's federation
// identity and admission policy, for an owner who exposes node ports, on
// a real API server, and plays the hub through that identity: what
// rendering needs for an exposed Workload is admitted, and each widening
// beyond it refused, naming why.
func TestFederationPolicyOfExposure(t *testing.T) {
	ctx := context.Background()
	env, err := hubenv.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	const hubID = "exp"
	objs := render(t, "charts/flotilla-provider", "-f", "charts/flotilla-provider/ci/lint-values.yaml", "--set", "hub.id="+hubID,
		"--set", "offer.exposure.type=NodePort,offer.exposure.address=203.0.113.7")
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "flotilla-system"}}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ServiceAccount/flotilla-federation", "ClusterRole/flotilla-federation", "ClusterRoleBinding/flotilla-federation",
		"ValidatingAdmissionPolicy/flotilla-federation-confinement", "ValidatingAdmissionPolicyBinding/flotilla-federation-confinement"} {
		o := objs[k]
		if o.GetNamespace() == "" && o.GetKind() == "ServiceAccount" {
			o.SetNamespace("flotilla-system")
		}
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:flotilla-system:flotilla-federation",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:flotilla-system", "system:authenticated"}}
	cfg.WarningHandler = rest.NoWarnings{}
	fed := kubernetes.NewForConfigOrDie(cfg)
	ns := "flotilla-" + hubID + "-0123456789abcdef"
	labels := map[string]string{flotillav1.LabelManaged: "true", flotillav1.LabelHub: hubID, "pod-security.kubernetes.io/enforce": "restricted"}
	// The policy reaches the admission chain a moment after it is created.
	if !hubenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) bool {
		_, err := fed.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "not-flotillas"}}, metav1.CreateOptions{DryRun: []string{"All"}})
		return err != nil && strings.Contains(err.Error(), "must be named")
	}) {
		t.Fatal("the federation policy is not enforced")
	}
	if _, err := fed.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tcp := corev1.ProtocolTCP
	svc := func(mutate func(*corev1.ServiceSpec)) error {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{GenerateName: "workload-", Namespace: ns}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort, Selector: map[string]string{flotillav1.LabelLease: "l"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080), Protocol: tcp}}}}
		mutate(&s.Spec)
		_, err := fed.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{})
		return err
	}
	netpol := func(rules []networkingv1.NetworkPolicyIngressRule) error {
		_, err := fed.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{GenerateName: "expose-"},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, Ingress: rules}}, metav1.CreateOptions{})
		return err
	}
	port := intstr.FromInt32(8080)
	if err := svc(func(*corev1.ServiceSpec) {}); err != nil {
		t.Errorf("the rendered NodePort Service is refused: %v", err)
	}
	if err := netpol([]networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}}); err != nil {
		t.Errorf("the rendered expose policy is refused: %v", err)
	}
	for _, c := range []struct {
		id, hint string
		try      func() error
	}{
		{"P9.service-external-ips", "set no externalIPs", func() error {
			return svc(func(s *corev1.ServiceSpec) { s.ExternalIPs = []string{"10.0.0.1"} })
		}},
		{"P9.service-other-type", "must be of type NodePort", func() error {
			return svc(func(s *corev1.ServiceSpec) { s.Type = corev1.ServiceTypeLoadBalancer })
		}},
		{"P9.service-without-selector", "select pods", func() error {
			return svc(func(s *corev1.ServiceSpec) { s.Selector = nil })
		}},
		{"P9.service-udp", "serve TCP only", func() error {
			return svc(func(s *corev1.ServiceSpec) { s.Ports[0].Protocol = corev1.ProtocolUDP })
		}},
		{"P9.service-in-owner-namespace", "not a Flotilla namespace", func() error {
			_, err := fed.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "x"},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"a": "b"}, Ports: []corev1.ServicePort{{Port: 80}}}},
				metav1.CreateOptions{})
			return err
		}},
		{"P9.ingress-without-ingress-exposure", `cannot create resource "ingresses"`, func() error {
			_, err := fed.NetworkingV1().Ingresses(ns).Create(ctx, &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "x"},
				Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("nginx"), DefaultBackend: &networkingv1.IngressBackend{
					Service: &networkingv1.IngressServiceBackend{Name: "workload", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}, metav1.CreateOptions{})
			return err
		}},
		{"P9.netpol-ingress-from-peer", "only to listed TCP ports", func() error {
			return netpol([]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}})
		}},
		{"P9.netpol-ingress-all-ports", "only to listed TCP ports", func() error {
			return netpol([]networkingv1.NetworkPolicyIngressRule{{}})
		}},
		{"P9.netpol-ingress-port-range", "only to listed TCP ports", func() error {
			return netpol([]networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port, EndPort: ptr.To[int32](9000)}}}})
		}},
	} {
		err := c.try()
		if err == nil || !strings.Contains(err.Error(), c.hint) {
			t.Errorf("%s: %v, want a refusal containing %q", c.id, err, c.hint)
		}
	}
	var list corev1.ServiceList
	if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil || len(list.Items) != 1 {
		t.Errorf("%d Services in the lease namespace, want the one rendered: %v", len(list.Items), err)
	}

	// The owner switches to an Ingress.
	objs = render(t, "charts/flotilla-provider", "-f", "charts/flotilla-provider/ci/lint-values.yaml", "--set", "hub.id="+hubID,
		"--set", "offer.exposure.type=Ingress,offer.exposure.ingressClassName=nginx,offer.exposure.domain=apps.example.org")
	for _, k := range []string{"ClusterRole/flotilla-federation", "ValidatingAdmissionPolicy/flotilla-federation-confinement"} {
		o := objs[k]
		cur := o.DeepCopy()
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), cur); err != nil {
			t.Fatal(err)
		}
		o.SetResourceVersion(cur.GetResourceVersion())
		if err := env.Client.Update(ctx, o); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	ingress := func(mutate func(*networkingv1.IngressSpec)) error {
		pt := networkingv1.PathTypePrefix
		spec := networkingv1.IngressSpec{IngressClassName: ptr.To("nginx"), Rules: []networkingv1.IngressRule{{Host: "http-" + ns + ".apps.example.org",
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
				Path: "/", PathType: &pt, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
					Name: "workload", Port: networkingv1.ServiceBackendPort{Name: "http"}}}}}}}}}}
		mutate(&spec)
		_, err := fed.NetworkingV1().Ingresses(ns).Create(ctx, &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{GenerateName: "workload-"}, Spec: spec},
			metav1.CreateOptions{})
		return err
	}
	if !hubenv.Eventually(ctx, 30*time.Second, func(context.Context) bool { return ingress(func(*networkingv1.IngressSpec) {}) == nil }) {
		t.Fatalf("the rendered Ingress is refused: %v", ingress(func(*networkingv1.IngressSpec) {}))
	}
	if err := svc(func(s *corev1.ServiceSpec) { s.Type = corev1.ServiceTypeClusterIP }); err != nil {
		t.Errorf("the ClusterIP Service behind the Ingress is refused: %v", err)
	}
	for _, c := range []struct {
		id, hint string
		try      func() error
	}{
		{"P9.ingress-host-of-another-lease", "with hosts <port>-" + ns, func() error {
			return ingress(func(s *networkingv1.IngressSpec) {
				s.Rules[0].Host = "http-flotilla-exp-ffffffffffffffff.apps.example.org"
			})
		}},
		{"P9.ingress-host-under-another-domain", "with hosts <port>-" + ns, func() error {
			return ingress(func(s *networkingv1.IngressSpec) { s.Rules[0].Host = "http-" + ns + ".owner.example.org" })
		}},
		{"P9.ingress-nested-host", "with hosts <port>-" + ns, func() error {
			return ingress(func(s *networkingv1.IngressSpec) { s.Rules[0].Host = "api.owner-" + ns + ".apps.example.org" })
		}},
		{"P9.ingress-other-class", "must be of class nginx", func() error {
			return ingress(func(s *networkingv1.IngressSpec) { s.IngressClassName = ptr.To("internal") })
		}},
		{"P9.ingress-default-backend", "no default backend", func() error {
			return ingress(func(s *networkingv1.IngressSpec) {
				s.DefaultBackend = &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "workload",
					Port: networkingv1.ServiceBackendPort{Number: 8080}}}
			})
		}},
		{"P9.ingress-tls", "no default backend or TLS", func() error {
			return ingress(func(s *networkingv1.IngressSpec) { s.TLS = []networkingv1.IngressTLS{{SecretName: "owner-cert"}} })
		}},
		{"P9.service-node-port-behind-ingress", "must be of type ClusterIP", func() error {
			return svc(func(*corev1.ServiceSpec) {})
		}},
	} {
		err := c.try()
		if err == nil || !strings.Contains(err.Error(), c.hint) {
			t.Errorf("%s: %v, want a refusal containing %q", c.id, err, c.hint)
		}
	}
}
