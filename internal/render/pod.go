package render

import (
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

// MaxGracePeriodSeconds caps a template's terminationGracePeriodSeconds: a
// pod that may take hours to stop would hold the owner's node that long
// after its Lease ended.
const MaxGracePeriodSeconds = 120

// sold are the resources a container's requests and limits may name.
var sold = []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage, flotillav1.ResourceGPU}

// podTemplate builds the pod that runs on the provider from the tenant's
// template by copying only what is on the allow-list below. Whatever a
// tenant writes beyond it (node selection, tolerations, host settings,
// service accounts, finalizers, unknown volume types, fields added to the
// API later) never reaches a provider. Fields an owner may opt into in an
// Offer (priority and runtime classes, storage classes) are copied only
// when this Lease's Offer lists the value. The hub's labels win over the
// tenant's.
func podTemplate(in corev1.PodTemplateSpec, labels map[string]string, offer *flotillav1.OfferSpec) corev1.PodTemplateSpec {
	src := &in.Spec
	out := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{
		Labels:      tenantMeta(in.Labels),
		Annotations: tenantMeta(in.Annotations),
	}}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	maps.Copy(out.Labels, labels)
	s := &out.Spec
	s.AutomountServiceAccountToken = ptr.To(false)
	s.EnableServiceLinks = ptr.To(false)
	s.DNSPolicy = corev1.DNSClusterFirst
	s.RestartPolicy = src.RestartPolicy
	s.ActiveDeadlineSeconds = src.ActiveDeadlineSeconds
	if g := src.TerminationGracePeriodSeconds; g != nil {
		s.TerminationGracePeriodSeconds = ptr.To(min(max(*g, 0), MaxGracePeriodSeconds))
	}
	if offer != nil && src.PriorityClassName != "" && slices.Contains(offer.PriorityClasses, src.PriorityClassName) {
		s.PriorityClassName = src.PriorityClassName
	}
	if offer != nil && src.RuntimeClassName != nil && slices.Contains(offer.RuntimeClasses, *src.RuntimeClassName) {
		s.RuntimeClassName = ptr.To(*src.RuntimeClassName)
	}
	for _, ps := range src.ImagePullSecrets {
		s.ImagePullSecrets = append(s.ImagePullSecrets, corev1.LocalObjectReference{Name: ps.Name})
	}
	s.SecurityContext = podSecurity(src.SecurityContext)
	for i := range src.Volumes {
		if v, ok := volume(&src.Volumes[i], offer); ok {
			s.Volumes = append(s.Volumes, v)
		}
	}
	for i := range src.InitContainers {
		c := container(&src.InitContainers[i])
		if r := src.InitContainers[i].RestartPolicy; r != nil && *r == corev1.ContainerRestartPolicyAlways {
			c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		}
		s.InitContainers = append(s.InitContainers, c)
	}
	for i := range src.Containers {
		s.Containers = append(s.Containers, container(&src.Containers[i]))
	}
	return out
}

// tenantMeta keeps the tenant's labels or annotations but those of the
// domains Kubernetes, its distributions and Flotilla read meaning into.
func tenantMeta(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if ReservedKey(k) {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

// ReservedKey reports a label or annotation key in a domain a tenant may
// not write on a provider: kubernetes.io, k8s.io and flotilla.dev, with
// their subdomains.
func ReservedKey(k string) bool {
	prefix, _, ok := strings.Cut(k, "/")
	if !ok {
		return false
	}
	for _, d := range []string{"kubernetes.io", "k8s.io", "flotilla.dev"} {
		if prefix == d || strings.HasSuffix(prefix, "."+d) {
			return true
		}
	}
	return false
}

func podSecurity(in *corev1.PodSecurityContext) *corev1.PodSecurityContext {
	out := &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if in == nil {
		return out
	}
	out.RunAsUser, out.RunAsGroup = in.RunAsUser, in.RunAsGroup
	if in.RunAsNonRoot != nil {
		out.RunAsNonRoot = in.RunAsNonRoot
	}
	out.FSGroup, out.FSGroupChangePolicy = in.FSGroup, in.FSGroupChangePolicy
	out.SupplementalGroups = slices.Clone(in.SupplementalGroups)
	return out
}

func container(in *corev1.Container) corev1.Container {
	c := corev1.Container{
		Name: in.Name, Image: in.Image, ImagePullPolicy: in.ImagePullPolicy,
		Command: slices.Clone(in.Command), Args: slices.Clone(in.Args), WorkingDir: in.WorkingDir,
		TerminationMessagePath: in.TerminationMessagePath, TerminationMessagePolicy: in.TerminationMessagePolicy,
		LivenessProbe: probe(in.LivenessProbe), ReadinessProbe: probe(in.ReadinessProbe), StartupProbe: probe(in.StartupProbe),
		Lifecycle: lifecycle(in.Lifecycle),
		Resources: resources(in.Resources),
	}
	for _, p := range in.Ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: p.Name, ContainerPort: p.ContainerPort, Protocol: p.Protocol})
	}
	for _, e := range in.EnvFrom {
		c.EnvFrom = append(c.EnvFrom, corev1.EnvFromSource{Prefix: e.Prefix, ConfigMapRef: e.ConfigMapRef.DeepCopy(), SecretRef: e.SecretRef.DeepCopy()})
	}
	for _, e := range in.Env {
		c.Env = append(c.Env, envVar(e))
	}
	for _, m := range in.VolumeMounts {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: m.Name, ReadOnly: m.ReadOnly, MountPath: m.MountPath,
			SubPath: m.SubPath, SubPathExpr: m.SubPathExpr})
	}
	c.SecurityContext = containerSecurity(in.SecurityContext)
	return c
}

func envVar(e corev1.EnvVar) corev1.EnvVar {
	out := corev1.EnvVar{Name: e.Name, Value: e.Value}
	if f := e.ValueFrom; f != nil {
		out.ValueFrom = &corev1.EnvVarSource{
			FieldRef: f.FieldRef.DeepCopy(), ResourceFieldRef: f.ResourceFieldRef.DeepCopy(),
			ConfigMapKeyRef: f.ConfigMapKeyRef.DeepCopy(), SecretKeyRef: f.SecretKeyRef.DeepCopy(),
		}
	}
	return out
}

// resources keeps the sold resources and sets every limit to its request,
// so that no container bursts beyond what its Lease paid for.
func resources(in corev1.ResourceRequirements) corev1.ResourceRequirements {
	out := corev1.ResourceRequirements{}
	for _, name := range sold {
		q, ok := in.Requests[name]
		if !ok {
			q, ok = in.Limits[name]
		}
		if !ok {
			continue
		}
		if out.Requests == nil {
			out.Requests, out.Limits = corev1.ResourceList{}, corev1.ResourceList{}
		}
		out.Requests[name], out.Limits[name] = q.DeepCopy(), q.DeepCopy()
	}
	return out
}

func containerSecurity(in *corev1.SecurityContext) *corev1.SecurityContext {
	out := &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	if in == nil {
		return out
	}
	out.RunAsUser, out.RunAsGroup, out.RunAsNonRoot = in.RunAsUser, in.RunAsGroup, in.RunAsNonRoot
	out.ReadOnlyRootFilesystem = in.ReadOnlyRootFilesystem
	if in.Capabilities != nil && slices.Contains(in.Capabilities.Add, "NET_BIND_SERVICE") {
		out.Capabilities.Add = []corev1.Capability{"NET_BIND_SERVICE"}
	}
	return out
}

// probe keeps a probe but for a host to send it to: the kubelet would probe
// any address a tenant names, from the owner's node.
func probe(in *corev1.Probe) *corev1.Probe {
	if in == nil {
		return nil
	}
	out := &corev1.Probe{ProbeHandler: handler(in.ProbeHandler),
		InitialDelaySeconds: in.InitialDelaySeconds, TimeoutSeconds: in.TimeoutSeconds, PeriodSeconds: in.PeriodSeconds,
		SuccessThreshold: in.SuccessThreshold, FailureThreshold: in.FailureThreshold}
	if g := in.TerminationGracePeriodSeconds; g != nil {
		out.TerminationGracePeriodSeconds = ptr.To(min(max(*g, 1), MaxGracePeriodSeconds))
	}
	return out
}

func handler(in corev1.ProbeHandler) corev1.ProbeHandler {
	out := corev1.ProbeHandler{Exec: in.Exec.DeepCopy(), GRPC: in.GRPC.DeepCopy()}
	if h := in.HTTPGet; h != nil {
		out.HTTPGet = &corev1.HTTPGetAction{Path: h.Path, Port: h.Port, Scheme: h.Scheme, HTTPHeaders: slices.Clone(h.HTTPHeaders)}
	}
	if s := in.TCPSocket; s != nil {
		out.TCPSocket = &corev1.TCPSocketAction{Port: s.Port}
	}
	return out
}

func lifecycle(in *corev1.Lifecycle) *corev1.Lifecycle {
	if in == nil {
		return nil
	}
	hook := func(h *corev1.LifecycleHandler) *corev1.LifecycleHandler {
		if h == nil {
			return nil
		}
		p := handler(corev1.ProbeHandler{Exec: h.Exec, HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket})
		out := &corev1.LifecycleHandler{Exec: p.Exec, HTTPGet: p.HTTPGet, TCPSocket: p.TCPSocket}
		if h.Sleep != nil {
			out.Sleep = &corev1.SleepAction{Seconds: min(max(h.Sleep.Seconds, 0), MaxGracePeriodSeconds)}
		}
		return out
	}
	return &corev1.Lifecycle{PostStart: hook(in.PostStart), PreStop: hook(in.PreStop)}
}

// volume keeps the volume types a pod needs and that reach nothing of the
// owner's: scratch space, the tenant's own copied config, downward API,
// and ephemeral claims of a storage class the Offer lists, no bigger than
// it allows, bound to no existing volume.
func volume(in *corev1.Volume, offer *flotillav1.OfferSpec) (corev1.Volume, bool) {
	out := corev1.Volume{Name: in.Name}
	src := &in.VolumeSource
	switch {
	case src.EmptyDir != nil:
		out.EmptyDir = src.EmptyDir.DeepCopy()
	case src.ConfigMap != nil:
		out.ConfigMap = src.ConfigMap.DeepCopy()
	case src.Secret != nil:
		out.Secret = src.Secret.DeepCopy()
	case src.DownwardAPI != nil:
		out.DownwardAPI = src.DownwardAPI.DeepCopy()
	case src.Projected != nil:
		p := &corev1.ProjectedVolumeSource{DefaultMode: src.Projected.DefaultMode}
		for _, s := range src.Projected.Sources {
			if s.ConfigMap != nil || s.Secret != nil || s.DownwardAPI != nil {
				p.Sources = append(p.Sources, corev1.VolumeProjection{ConfigMap: s.ConfigMap.DeepCopy(), Secret: s.Secret.DeepCopy(),
					DownwardAPI: s.DownwardAPI.DeepCopy()})
			}
		}
		out.Projected = p
	case src.Ephemeral != nil && src.Ephemeral.VolumeClaimTemplate != nil:
		claim := &src.Ephemeral.VolumeClaimTemplate.Spec
		size, sized := claim.Resources.Requests[corev1.ResourceStorage]
		if claim.StorageClassName == nil || !sized || !StorageOffered(offer, *claim.StorageClassName, size) {
			return out, false
		}
		out.Ephemeral = &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: ptr.To(*claim.StorageClassName),
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size.DeepCopy()}},
			},
		}}
	default:
		return out, false
	}
	return out, true
}

// StorageOffered reports whether an Offer lets a Workload claim size of
// storage class class per volume.
func StorageOffered(offer *flotillav1.OfferSpec, class string, size resource.Quantity) bool {
	if offer == nil {
		return false
	}
	for _, s := range offer.Storage {
		if s.ClassName == class {
			return size.Sign() > 0 && size.Cmp(s.MaxSize) <= 0
		}
	}
	return false
}
