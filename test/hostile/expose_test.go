package hostile

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

// TestExposureReportsAreBounded plays a provider that describes its
// exposure, or reports its endpoints, beyond what the API admits: each is
// refused at admission, naming the field, before the hub reads it.
func TestExposureReportsAreBounded(t *testing.T) {
	ctx := context.Background()
	const prov = "expose-1"
	ns := flotillav1.ProviderNamespace(prov)
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	offer := func(e flotillav1.ExposureSpec) *flotillav1.Offer {
		return &flotillav1.Offer{ObjectMeta: metav1.ObjectMeta{Name: "o", Namespace: ns},
			Spec: flotillav1.OfferSpec{ProviderRef: flotillav1.ProviderReference{Name: prov},
				Resources: corev1.ResourceList{corev1.ResourceCPU: *resourceOf("1")}, Prices: flotillav1.PriceList{}, Exposure: &e}}
	}
	nodePort := func(addr string, r *flotillav1.PortRange) flotillav1.ExposureSpec {
		return flotillav1.ExposureSpec{Type: flotillav1.ExposeNodePort, Address: addr, NodePorts: r}
	}
	ingress := func(domain string) flotillav1.ExposureSpec {
		return flotillav1.ExposureSpec{Type: flotillav1.ExposeIngress, IngressClassName: "nginx", Domain: domain}
	}
	for _, c := range []struct {
		id, hint string
		e        flotillav1.ExposureSpec
	}{
		{"P9.offer-exposure-address-not-ip", "spec.exposure.address must be an IP address", nodePort("api.internal", nil)},
		{"P9.offer-exposure-without-address", "spec.exposure.address is required for type NodePort", nodePort("", nil)},
		{"P9.offer-node-ports-inverted", "spec.exposure.nodePorts.min must not exceed max", nodePort("203.0.113.7", &flotillav1.PortRange{Min: 40000, Max: 30000})},
		{"P9.offer-node-ports-out-of-range", "spec.exposure.nodePorts.max", nodePort("203.0.113.7", &flotillav1.PortRange{Min: 1, Max: 70000})},
		{"P9.offer-ingress-wildcard-domain", "spec.exposure.domain", ingress("*.example.org")},
		{"P9.offer-ingress-domain-too-long", "spec.exposure.domain", ingress(strings.Repeat("a.", 100) + "org")},
		{"P9.offer-ingress-without-domain", "spec.exposure.ingressClassName and spec.exposure.domain are required", ingress("")},
		{"P9.offer-unknown-exposure", "spec.exposure.type", flotillav1.ExposureSpec{Type: "HostNetwork"}},
	} {
		refusedWith(t, c.id, env.Client.Create(ctx, offer(c.e), client.DryRunAll), c.hint)
	}

	a := &flotillav1.Assignment{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: ns},
		Spec: flotillav1.AssignmentSpec{LeaseRef: flotillav1.AssignmentLeaseReference{Namespace: "t", Name: "l", UID: "u"},
			Class: flotillav1.ClassService, Replicas: 1, PricePerReplicaHour: "0.01", Epoch: 1, Namespace: "flotilla-x", Hash: "h",
			ResourcesPerReplica: corev1.ResourceList{}, Objects: []runtime.RawExtension{{Raw: []byte(`{}`)}}}}
	create(t, a)
	many := make([]flotillav1.ReportedEndpoint, 9)
	for i := range many {
		many[i] = flotillav1.ReportedEndpoint{Port: "web", NodePort: 30000}
	}
	for _, c := range []struct {
		id, hint  string
		endpoints []flotillav1.ReportedEndpoint
	}{
		{"P9.report-negative-node-port", "status.endpoints[0].nodePort", []flotillav1.ReportedEndpoint{{Port: "web", NodePort: -1}}},
		{"P9.report-huge-node-port", "status.endpoints[0].nodePort", []flotillav1.ReportedEndpoint{{Port: "web", NodePort: 1 << 20}}},
		{"P9.report-long-ip", "status.endpoints[0].ip", []flotillav1.ReportedEndpoint{{Port: "web", IP: strings.Repeat("1", 100)}}},
		{"P9.report-long-port-name", "status.endpoints[0].port", []flotillav1.ReportedEndpoint{{Port: strings.Repeat("p", 40), NodePort: 30000}}},
		{"P9.report-too-many-endpoints", "status.endpoints", many},
	} {
		got := get(t, &flotillav1.Assignment{}, ns, "a")
		got.Status.State = flotillav1.AssignmentAccepted
		got.Status.Endpoints = c.endpoints
		refusedWith(t, c.id, env.Client.Status().Update(ctx, got, client.DryRunAll), c.hint)
	}
}
