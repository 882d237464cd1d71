// Package render turns a Lease into the objects that run it on a provider:
// a namespace of its own, a ResourceQuota equal to what was leased, a
// LimitRange, a default-deny NetworkPolicy that lets DNS queries to the
// cluster's DNS service out (and one for public addresses when the Offer
// allows it and the Workload asks), copies of the ConfigMaps and Secrets
// the pod template references, a Deployment (class Service) or Job
// (class Batch) whose pod is built from an allow-list of the template,
// and, for exposed ports on an Offer that exposes, a Service, an Ingress
// when that is how, and a NetworkPolicy admitting exactly those ports. It
// is pure: the caller fetches the inputs and applies the output.
package render

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

// NamespacePrefix starts every namespace a hub creates on a provider; the
// provider's admission policy refuses the hub's identity anywhere else.
const NamespacePrefix = "flotilla-"

// WorkloadName is the name of the Deployment or Job in a lease namespace.
const WorkloadName = "workload"

// MaxReferences and MaxReferencedBytes bound the ConfigMaps and Secrets one
// Lease copies to its provider.
const (
	MaxReferences      = 16
	MaxReferencedBytes = 1 << 20
)

// secretType keeps the types of Secret that are only data; any other
// (a service account token, say) is copied as Opaque, so that nothing on
// the provider acts on it.
func secretType(t corev1.SecretType) corev1.SecretType {
	switch t {
	case corev1.SecretTypeDockerConfigJson, corev1.SecretTypeDockercfg, corev1.SecretTypeTLS,
		corev1.SecretTypeBasicAuth, corev1.SecretTypeSSHAuth:
		return t
	}
	return corev1.SecretTypeOpaque
}

// Input is everything needed to render one Lease.
type Input struct {
	// HubID identifies the hub; it is part of namespace names and labels so
	// that several hubs can share a provider.
	HubID    string
	Lease    *flotillav1.Lease
	Workload *flotillav1.Workload
	// Offer the Lease was placed on; nil when it is gone, which opts into
	// nothing.
	Offer *flotillav1.OfferSpec
	// ConfigMaps and Secrets are the tenant's objects the template refers to.
	ConfigMaps []corev1.ConfigMap
	Secrets    []corev1.Secret
}

// renderVersion changes whenever Lease renders differently from the same
// input, so that every Lease is applied again after an upgrade.
const renderVersion = "2"

// InputHash identifies what in is rendered from, but for the referenced
// ConfigMaps and Secrets (read only when applying): when it is unchanged,
// so are the objects.
func InputHash(in Input) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", renderVersion, in.HubID)
	if in.Lease != nil {
		fmt.Fprintf(h, "%s\x00", in.Lease.UID)
		b, _ := json.Marshal(&in.Lease.Spec)
		h.Write(b)
	}
	if in.Workload != nil {
		fmt.Fprintf(h, "\x00%s\x00%d", in.Workload.UID, in.Workload.Generation)
	}
	fmt.Fprintf(h, "\x00egress=%t", in.Offer != nil && in.Offer.AllowEgress)
	if in.Offer != nil && in.Offer.Exposure != nil {
		b, _ := json.Marshal(in.Offer.Exposure)
		fmt.Fprintf(h, "\x00expose=%s", b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Namespace returns the provider-side namespace of a lease: deterministic in
// the hub and the lease's UID, and at most 63 characters.
func Namespace(hubID string, leaseUID types.UID) string {
	sum := sha256.Sum256([]byte(leaseUID))
	return NamespacePrefix + hubID + "-" + hex.EncodeToString(sum[:8])
}

// Labels are carried by every object rendered for a lease.
func Labels(hubID string, l *flotillav1.Lease) map[string]string {
	return map[string]string{
		flotillav1.LabelManaged: "true",
		flotillav1.LabelHub:     hubID,
		flotillav1.LabelLease:   string(l.UID),
		flotillav1.LabelEpoch:   strconv.FormatInt(l.Spec.Epoch, 10),
	}
}

// ServiceName is the name of the Service of an exposed Workload, and of
// its Ingress.
const ServiceName = "workload"

// Optional are the objects rendered only under conditions that may change
// during a Lease (the Workload's spec, what its Offer allows), as kind and
// name: when one is no longer rendered it must be deleted on the provider,
// or a port would stay open or egress allowed after the tenant or owner
// closed it.
var Optional = [][2]string{
	{"NetworkPolicy", "internet-egress"}, {"NetworkPolicy", "expose"}, {"Service", ServiceName}, {"Ingress", ServiceName},
}

// Exposes reports whether a Lease of w on an Offer with spec o exposes
// ports: only a Service Workload that asks, on an Offer that can.
func Exposes(w *flotillav1.Workload, o *flotillav1.OfferSpec) bool {
	return w != nil && w.Spec.Expose != nil && w.Spec.Class != flotillav1.ClassBatch && o != nil && o.Exposure != nil
}

// IngressHost is the host name of one exposed port of a Lease namespace
// under an Offer's domain: one DNS label of at most 63 characters.
func IngressHost(port, namespace, domain string) string {
	return port + "-" + namespace + "." + domain
}

// exposeObjects are a Service for the exposed ports (of the Offer's type,
// never with externalIPs), an Ingress when the Offer exposes through one,
// and a NetworkPolicy that admits ingress to exactly those ports.
func exposeObjects(w *flotillav1.Workload, o *flotillav1.OfferSpec, ns string, labels, selector map[string]string) []client.Object {
	if !Exposes(w, o) {
		return nil
	}
	meta := metav1.ObjectMeta{Name: ServiceName, Namespace: ns, Labels: maps.Clone(labels)}
	svc := &corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"}, ObjectMeta: meta,
		Spec: corev1.ServiceSpec{Selector: maps.Clone(selector), Type: corev1.ServiceTypeClusterIP}}
	switch o.Exposure.Type {
	case flotillav1.ExposeNodePort:
		svc.Spec.Type = corev1.ServiceTypeNodePort
	case flotillav1.ExposeLoadBalancer:
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	}
	tcp := corev1.ProtocolTCP
	var ports []networkingv1.NetworkPolicyPort
	var rules []networkingv1.IngressRule
	pathType := networkingv1.PathTypePrefix
	for _, p := range w.Spec.Expose.Ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p.Name, Protocol: tcp, Port: p.Port, TargetPort: intstr.FromInt32(p.Port)})
		port := intstr.FromInt32(p.Port)
		ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &port})
		if p.Protocol == flotillav1.ExposeHTTP {
			rules = append(rules, networkingv1.IngressRule{Host: IngressHost(p.Name, ns, o.Exposure.Domain),
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
					Path: "/", PathType: &pathType,
					Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
						Name: ServiceName, Port: networkingv1.ServiceBackendPort{Name: p.Name}}},
				}}}}})
		}
	}
	objs := []client.Object{svc}
	if o.Exposure.Type == flotillav1.ExposeIngress {
		objs = append(objs, &networkingv1.Ingress{TypeMeta: metav1.TypeMeta{Kind: "Ingress", APIVersion: "networking.k8s.io/v1"},
			ObjectMeta: *meta.DeepCopy(),
			Spec:       networkingv1.IngressSpec{IngressClassName: ptr.To(o.Exposure.IngressClassName), Rules: rules}})
	}
	pm := *meta.DeepCopy()
	pm.Name = "expose"
	objs = append(objs, &networkingv1.NetworkPolicy{TypeMeta: metav1.TypeMeta{Kind: "NetworkPolicy", APIVersion: "networking.k8s.io/v1"},
		ObjectMeta: pm, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{Ports: ports}},
		}})
	return objs
}

// Lease renders the objects of in.Lease, namespace first.
func Lease(in Input) ([]client.Object, error) {
	if in.Lease == nil || in.Workload == nil {
		return nil, fmt.Errorf("render: lease and workload are required")
	}
	if in.HubID == "" || len(in.HubID) > 20 {
		return nil, fmt.Errorf("render: hub id %q must have 1 to 20 characters", in.HubID)
	}
	l, w := in.Lease, in.Workload
	ns := Namespace(in.HubID, l.UID)
	labels := Labels(in.HubID, l)
	meta := func(kind, apiVersion, name string) (metav1.TypeMeta, metav1.ObjectMeta) {
		return metav1.TypeMeta{Kind: kind, APIVersion: apiVersion},
			metav1.ObjectMeta{Name: name, Namespace: ns, Labels: maps.Clone(labels)}
	}

	nsLabels := maps.Clone(labels)
	nsLabels["pod-security.kubernetes.io/enforce"] = "restricted"
	nsLabels["pod-security.kubernetes.io/enforce-version"] = "latest"
	objs := []client.Object{&corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: nsLabels},
	}}

	tm, om := meta("ResourceQuota", "v1", "lease")
	objs = append(objs, &corev1.ResourceQuota{TypeMeta: tm, ObjectMeta: om, Spec: corev1.ResourceQuotaSpec{Hard: quota(l)}})

	tm, om = meta("LimitRange", "v1", "defaults")
	objs = append(objs, &corev1.LimitRange{TypeMeta: tm, ObjectMeta: om, Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{
		Type: corev1.LimitTypeContainer,
		DefaultRequest: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi"),
		},
		Default: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi"),
		},
	}}}})

	tm, om = meta("NetworkPolicy", "networking.k8s.io/v1", "default-deny")
	objs = append(objs, &networkingv1.NetworkPolicy{TypeMeta: tm, ObjectMeta: om, Spec: DefaultDeny()})
	if w.Spec.Network.Egress == flotillav1.EgressInternet && in.Offer != nil && in.Offer.AllowEgress {
		tm, om = meta("NetworkPolicy", "networking.k8s.io/v1", "internet-egress")
		objs = append(objs, &networkingv1.NetworkPolicy{TypeMeta: tm, ObjectMeta: om, Spec: InternetEgress()})
	}

	size := 0
	for _, cm := range sortedConfigMaps(in.ConfigMaps) {
		tm, om := meta("ConfigMap", "v1", cm.Name)
		objs = append(objs, &corev1.ConfigMap{TypeMeta: tm, ObjectMeta: om, Data: cm.Data, BinaryData: cm.BinaryData})
		for k, v := range cm.Data {
			size += len(k) + len(v)
		}
		for k, v := range cm.BinaryData {
			size += len(k) + len(v)
		}
	}
	for _, s := range sortedSecrets(in.Secrets) {
		tm, om := meta("Secret", "v1", s.Name)
		objs = append(objs, &corev1.Secret{TypeMeta: tm, ObjectMeta: om, Type: secretType(s.Type), Data: s.Data})
		for k, v := range s.Data {
			size += len(k) + len(v)
		}
	}
	if size > MaxReferencedBytes {
		return nil, fmt.Errorf("render: the ConfigMaps and Secrets the template refers to hold %d bytes, more than the %d a Lease may copy to a provider", size, MaxReferencedBytes)
	}

	tmpl := podTemplate(w.Spec.Template, labels, in.Offer)
	selector := &metav1.LabelSelector{MatchLabels: map[string]string{flotillav1.LabelLease: string(l.UID)}}
	if l.Spec.Class == flotillav1.ClassBatch {
		tm, om := meta("Job", "batch/v1", WorkloadName)
		job := &batchv1.Job{TypeMeta: tm, ObjectMeta: om, Spec: batchv1.JobSpec{
			Parallelism:  ptr.To(l.Spec.Replicas),
			Completions:  ptr.To(l.Spec.Replicas),
			BackoffLimit: ptr.To[int32](3),
			Template:     tmpl,
		}}
		if b := w.Spec.Batch; b != nil {
			if b.BackoffLimit != nil {
				job.Spec.BackoffLimit = b.BackoffLimit
			}
			job.Spec.ActiveDeadlineSeconds = b.ActiveDeadlineSeconds
		}
		if job.Spec.Template.Spec.RestartPolicy == "" || job.Spec.Template.Spec.RestartPolicy == corev1.RestartPolicyAlways {
			job.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever
		}
		objs = append(objs, job)
	} else {
		tm, om := meta("Deployment", "apps/v1", WorkloadName)
		zero, one := intstr.FromInt32(0), intstr.FromInt32(1)
		tmpl.Spec.RestartPolicy = corev1.RestartPolicyAlways
		objs = append(objs, &appsv1.Deployment{TypeMeta: tm, ObjectMeta: om, Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(l.Spec.Replicas),
			Selector: selector,
			// No surge: the quota holds exactly the leased replicas.
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &zero, MaxUnavailable: &one}},
			Template: tmpl,
		}})
		objs = append(objs, exposeObjects(w, in.Offer, ns, labels, selector.MatchLabels)...)
	}
	return objs, nil
}

// quota is the leased resources: replicas times the per-replica requests,
// as requests and as limits (every container's limits equal its requests,
// and a quota on limits makes the provider refuse a pod without them).
func quota(l *flotillav1.Lease) corev1.ResourceList {
	hard := corev1.ResourceList{corev1.ResourcePods: *resource.NewQuantity(int64(l.Spec.Replicas), resource.DecimalSI)}
	for _, name := range slices.Sorted(maps.Keys(l.Spec.ResourcesPerReplica)) {
		q := l.Spec.ResourcesPerReplica[name]
		if name == corev1.ResourcePods {
			continue
		}
		total := q.DeepCopy()
		total.Mul(int64(l.Spec.Replicas))
		hard[corev1.ResourceName("requests."+string(name))] = total
		if name == corev1.ResourceCPU || name == corev1.ResourceMemory || name == corev1.ResourceEphemeralStorage {
			hard[corev1.ResourceName("limits."+string(name))] = total.DeepCopy()
		}
	}
	return hard
}

// The cluster DNS service every provider runs, by the labels kubeadm,
// k3s, kind and the managed offerings give it; the provider's admission
// policy admits DNS egress to it and nowhere else.
var (
	dnsNamespace = map[string]string{"kubernetes.io/metadata.name": "kube-system"}
	dnsPods      = map[string]string{"k8s-app": "kube-dns"}
)

// PrivateRanges are never reachable from a Lease's pods, even with
// internet egress: the provider's nodes, pods, services, metadata
// endpoints and LAN live there.
var PrivateRanges = map[string][]string{
	"0.0.0.0/0": {"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16"},
	"::/0":      {"::1/128", "fc00::/7", "fe80::/10"},
}

// DefaultDeny closes a lease namespace's pods to all ingress and to all
// egress but DNS queries to the cluster's DNS service.
func DefaultDeny() networkingv1.NetworkPolicySpec {
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	dns := intstr.FromInt32(53)
	return networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		Egress: []networkingv1.NetworkPolicyEgressRule{{
			To: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: maps.Clone(dnsNamespace)},
				PodSelector:       &metav1.LabelSelector{MatchLabels: maps.Clone(dnsPods)},
			}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}, {Protocol: &tcp, Port: &dns}},
		}},
	}
}

// InternetEgress lets a lease namespace's pods reach public addresses.
func InternetEgress() networkingv1.NetworkPolicySpec {
	var to []networkingv1.NetworkPolicyPeer
	for _, cidr := range slices.Sorted(maps.Keys(PrivateRanges)) {
		to = append(to, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: slices.Clone(PrivateRanges[cidr])}})
	}
	return networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		Egress:      []networkingv1.NetworkPolicyEgressRule{{To: to}},
	}
}

// References lists the ConfigMaps and Secrets a pod spec uses, sorted.
func References(spec *corev1.PodSpec) (configMaps, secrets []string) {
	cm, sec := map[string]bool{}, map[string]bool{}
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			cm[v.ConfigMap.Name] = true
		}
		if v.Secret != nil {
			sec[v.Secret.SecretName] = true
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.ConfigMap != nil {
					cm[src.ConfigMap.Name] = true
				}
				if src.Secret != nil {
					sec[src.Secret.Name] = true
				}
			}
		}
	}
	containers := slices.Concat(spec.InitContainers, spec.Containers)
	for _, c := range containers {
		for _, e := range c.EnvFrom {
			if e.ConfigMapRef != nil {
				cm[e.ConfigMapRef.Name] = true
			}
			if e.SecretRef != nil {
				sec[e.SecretRef.Name] = true
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if e.ValueFrom.ConfigMapKeyRef != nil {
				cm[e.ValueFrom.ConfigMapKeyRef.Name] = true
			}
			if e.ValueFrom.SecretKeyRef != nil {
				sec[e.ValueFrom.SecretKeyRef.Name] = true
			}
		}
	}
	for _, ps := range spec.ImagePullSecrets {
		sec[ps.Name] = true
	}
	delete(cm, "")
	delete(sec, "")
	return slices.Sorted(maps.Keys(cm)), slices.Sorted(maps.Keys(sec))
}

func sortedConfigMaps(in []corev1.ConfigMap) []corev1.ConfigMap {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b corev1.ConfigMap) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func sortedSecrets(in []corev1.Secret) []corev1.Secret {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b corev1.Secret) int { return cmp.Compare(a.Name, b.Name) })
	return out
}
