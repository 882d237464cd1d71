package hostile

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// awaitAdmission waits until the hub's admission policies are enforced in
// ns; they reach the API server's admission chain a moment after creation.
func awaitAdmission(t *testing.T, ns string) {
	t.Helper()
	bad := workload(ns, "probe", "none")
	bad.Spec.Template.Spec.HostNetwork = true
	hubenv.Await(t, 30*time.Second, "admission policies enforced", func() (bool, string) {
		err := env.Client.Create(context.Background(), bad.DeepCopy(), client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), "hostNetwork"), fmt.Sprint(err)
	})
}

// expose exposes ports of a template whose container declares 8080.
func expose(ports ...flotillav1.ExposedPort) func(*flotillav1.Workload) {
	return func(w *flotillav1.Workload) {
		w.Spec.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
		w.Spec.Expose = &flotillav1.ExposeSpec{Ports: ports}
	}
}

// TestTenantTemplatesAreRefused plays a tenant whose Workload would be
// priced at nothing, burst past what it paid, or reach beyond its Lease on
// a provider. Each is refused at admission, naming the field.
func TestTenantTemplatesAreRefused(t *testing.T) {
	tenant(t, "mallory", "10")
	awaitAdmission(t, "mallory")
	pod := func(mutate func(*corev1.PodSpec)) func(*flotillav1.Workload) {
		return func(w *flotillav1.Workload) { mutate(&w.Spec.Template.Spec) }
	}
	app := func(mutate func(*corev1.Container)) func(*flotillav1.Workload) {
		return func(w *flotillav1.Workload) { mutate(&w.Spec.Template.Spec.Containers[0]) }
	}
	requests := func(kv ...string) func(*corev1.Container) {
		return func(c *corev1.Container) {
			for i := 0; i < len(kv); i += 2 {
				c.Resources.Requests[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
			}
		}
	}
	const c = "spec.template.spec.containers[app]"
	cases := []struct {
		id     string
		mutate func(*flotillav1.Workload)
		field  string
	}{
		{"T4.no-requests", app(func(c *corev1.Container) { c.Resources = corev1.ResourceRequirements{} }), c + ".resources.requests"},
		{"T4.no-memory", app(func(c *corev1.Container) { delete(c.Resources.Requests, corev1.ResourceMemory) }), c + ".resources.requests"},
		{"T4.init-without-requests", pod(func(s *corev1.PodSpec) {
			s.InitContainers = []corev1.Container{{Name: "side", Image: "i", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}}
		}), "spec.template.spec.initContainers[side].resources.requests"},
		{"T4.pod-level-resources", pod(func(s *corev1.PodSpec) {
			s.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64")}}
		}), "spec.template.spec.resources"},
		{"T4.overhead", pod(func(s *corev1.PodSpec) { s.Overhead = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")} }), "spec.template.spec.overhead"},
		{"T4.negative-cpu", app(requests("cpu", "-1")), c + ".resources"},
		{"T4.zero-memory", app(requests("memory", "0")), c + ".resources"},
		{"T4.huge-cpu", app(requests("cpu", "1e18")), c + ".resources"},
		{"T4.huge-limit", app(func(c *corev1.Container) {
			c.Resources.Limits = corev1.ResourceList{"memory": resource.MustParse("1Ei")}
		}), c + ".resources"},
		{"T4.unsold-resource", app(requests("hugepages-2Mi", "1Gi")), c + ".resources"},
		{"T4.fractional-gpu", app(requests("nvidia.com/gpu", "500m")), c + ".resources"},
		{"T5.node-name", pod(func(s *corev1.PodSpec) { s.NodeName = "control-plane" }), "spec.template.spec.nodeName"},
		{"T5.node-selector", pod(func(s *corev1.PodSpec) { s.NodeSelector = map[string]string{"kubernetes.io/hostname": "n1"} }), "spec.template.spec.nodeSelector"},
		{"T5.affinity", pod(func(s *corev1.PodSpec) { s.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{}} }), "spec.template.spec.affinity"},
		{"T5.tolerations", pod(func(s *corev1.PodSpec) { s.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}} }), "spec.template.spec.tolerations"},
		{"T5.topology-spread", pod(func(s *corev1.PodSpec) {
			s.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "zone", WhenUnsatisfiable: corev1.DoNotSchedule}}
		}), "spec.template.spec.topologySpreadConstraints"},
		{"T5.scheduler-name", pod(func(s *corev1.PodSpec) { s.SchedulerName = "mine" }), "spec.template.spec.schedulerName"},
		{"T5.host-network", pod(func(s *corev1.PodSpec) { s.HostNetwork = true }), "spec.template.spec.hostNetwork"},
		{"T5.host-pid", pod(func(s *corev1.PodSpec) { s.HostPID = true }), "spec.template.spec.hostPID"},
		{"T5.host-ipc", pod(func(s *corev1.PodSpec) { s.HostIPC = true }), "spec.template.spec.hostIPC"},
		{"T5.host-users", pod(func(s *corev1.PodSpec) { s.HostUsers = ptr.To(true) }), "spec.template.spec.hostUsers"},
		{"T5.host-aliases", pod(func(s *corev1.PodSpec) {
			s.HostAliases = []corev1.HostAlias{{IP: "10.0.0.1", Hostnames: []string{"x"}}}
		}), "spec.template.spec.hostAliases"},
		{"T5.dns-config", pod(func(s *corev1.PodSpec) { s.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"10.0.0.53"}} }), "spec.template.spec.dnsConfig"},
		{"T5.dns-policy", pod(func(s *corev1.PodSpec) { s.DNSPolicy = corev1.DNSDefault }), "spec.template.spec.dnsPolicy"},
		{"T5.service-account", pod(func(s *corev1.PodSpec) { s.ServiceAccountName = "provider-admin" }), "spec.template.spec.serviceAccountName"},
		{"T5.automount-token", pod(func(s *corev1.PodSpec) { s.AutomountServiceAccountToken = ptr.To(true) }), "spec.template.spec.automountServiceAccountToken"},
		{"T5.scheduling-gates", pod(func(s *corev1.PodSpec) { s.SchedulingGates = []corev1.PodSchedulingGate{{Name: "hold"}} }), "spec.template.spec.schedulingGates"},
		{"T5.preemption-policy", pod(func(s *corev1.PodSpec) { s.PreemptionPolicy = ptr.To(corev1.PreemptLowerPriority) }), "spec.template.spec.preemptionPolicy"},
		{"T5.sysctls", pod(func(s *corev1.PodSpec) {
			s.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "net.ipv4.ip_forward", Value: "1"}}}
		}), "spec.template.spec.securityContext"},
		{"T5.seccomp-unconfined", pod(func(s *corev1.PodSpec) {
			s.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}
		}), "spec.template.spec.securityContext"},
		{"T5.privileged", app(func(c *corev1.Container) { c.SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)} }), c + ".securityContext.privileged"},
		{"T5.escalation", app(func(c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(true)}
		}), c + ".securityContext.allowPrivilegeEscalation"},
		{"T5.capabilities", app(func(c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}
		}), c + ".securityContext.capabilities.add"},
		{"T5.proc-mount", app(func(c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{ProcMount: ptr.To(corev1.UnmaskedProcMount)}
		}), c + ".securityContext"},
		{"T5.host-port", app(func(c *corev1.Container) { c.Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}} }), c + ".ports.hostPort"},
		{"T5.host-ip", app(func(c *corev1.Container) { c.Ports = []corev1.ContainerPort{{ContainerPort: 80, HostIP: "10.0.0.1"}} }), c + ".ports.hostPort"},
		{"T5.mount-propagation", func(w *flotillav1.Workload) {
			w.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			w.Spec.Template.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/v", MountPropagation: ptr.To(corev1.MountPropagationHostToContainer)}}
		}, c + ".volumeMounts"},
		{"T5.probe-host", app(func(c *corev1.Container) {
			c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "169.254.169.254", Port: intstr.FromInt32(80)}}}
		}), c + ".probes"},
		{"T5.lifecycle-host", app(func(c *corev1.Container) {
			c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{TCPSocket: &corev1.TCPSocketAction{Host: "10.0.0.1", Port: intstr.FromInt32(22)}}}
		}), c + ".probes"},
		{"T5.host-path", pod(func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}), "spec.template.spec.volumes[root]"},
		{"T5.csi-volume", pod(func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "csi", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "secrets-store.csi.k8s.io"}}}}
		}), "spec.template.spec.volumes[csi]"},
		{"T5.claim-volume", pod(func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "owner-db"}}}}
		}), "spec.template.spec.volumes[data]"},
		{"T5.projected-token", pod(func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "tok", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "t"}}}}}}}
		}), "spec.template.spec.volumes[tok]"},
		{"T5.ephemeral-binds-volume", pod(func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "eph", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{
				VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{Spec: corev1.PersistentVolumeClaimSpec{
					StorageClassName: ptr.To("fast"), VolumeName: "owner-pv",
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}}}}}
		}), "spec.template.spec.volumes[eph]"},
		{"T5.ephemeral-without-class", pod(func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "eph", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{
				VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{Spec: corev1.PersistentVolumeClaimSpec{
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}}}}}
		}), "spec.template.spec.volumes[eph]"},
		{"T5.finalizers", func(w *flotillav1.Workload) { w.Spec.Template.Finalizers = []string{"tenant.example/hold"} }, "spec.template.metadata.finalizers"},
		{"T5.reserved-labels", func(w *flotillav1.Workload) {
			w.Spec.Template.Labels = map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}
		}, "spec.template.metadata.labels[pod-security.kubernetes.io/enforce]"},
		{"T5.reserved-annotations", func(w *flotillav1.Workload) {
			w.Spec.Template.Annotations = map[string]string{"flotilla.dev/lease": "someone-elses"}
		}, "spec.template.metadata.annotations[flotilla.dev/lease]"},
		{"T9.expose-undeclared-port", expose(flotillav1.ExposedPort{Name: "ssh", Port: 22}), "spec.expose.ports[ssh]: only ports a container declares"},
		{"T9.expose-udp-port", func(w *flotillav1.Workload) {
			expose(flotillav1.ExposedPort{Name: "dns", Port: 53})(w)
			w.Spec.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 53, Protocol: corev1.ProtocolUDP}}
		}, "spec.expose.ports[dns]: only ports a container declares"},
		{"T9.expose-port-zero", expose(flotillav1.ExposedPort{Name: "web", Port: 0}), "spec.expose.ports[0].port"},
		{"T9.expose-port-too-high", expose(flotillav1.ExposedPort{Name: "web", Port: 70000}), "spec.expose.ports[0].port"},
		{"T9.expose-on-batch", func(w *flotillav1.Workload) {
			expose(flotillav1.ExposedPort{Name: "web", Port: 8080})(w)
			w.Spec.Class = flotillav1.ClassBatch
		}, "spec.expose is only allowed for class Service"},
		{"T9.health-path-on-tcp", expose(flotillav1.ExposedPort{Name: "web", Port: 8080, HealthPath: "/healthz"}), "healthPath is only for protocol HTTP"},
		{"T9.health-path-not-a-path", expose(flotillav1.ExposedPort{Name: "web", Port: 8080, Protocol: flotillav1.ExposeHTTP,
			HealthPath: "http://169.254.169.254/latest"}), "spec.expose.ports[0].healthPath"},
		{"T9.port-name-not-a-label", expose(flotillav1.ExposedPort{Name: "Web.Admin", Port: 8080}), "spec.expose.ports[0].name"},
		{"T9.same-port-twice", expose(flotillav1.ExposedPort{Name: "a", Port: 8080}, flotillav1.ExposedPort{Name: "b", Port: 8080}),
			"each port may be listed once"},
		{"T9.stable-address-without-http", func(w *flotillav1.Workload) {
			expose(flotillav1.ExposedPort{Name: "web", Port: 8080})(w)
			w.Spec.Expose.StableAddress = true
		}, "stableAddress needs an HTTP port"},
		{"T6.long-name", func(w *flotillav1.Workload) { w.Name = strings.Repeat("w", 53) }, "metadata.name"},
		{"T6.priority-above-account", func(w *flotillav1.Workload) { w.Spec.Priority = 1000 }, "spec.priority: 1000 is above 0"},
	}
	for _, tc := range cases {
		t.Run(tc.id, func(t *testing.T) {
			w := workload("mallory", "w", "none")
			tc.mutate(w)
			refusedWith(t, tc.id, env.Client.Create(context.Background(), w, client.DryRunAll), tc.field)
		})
	}

	// T6.no-account: a namespace the administrator gave no Account.
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "no-account"}})
	refusedWith(t, "T6.no-account", env.Client.Create(context.Background(), workload("no-account", "w", "none"), client.DryRunAll),
		"workloads-need-an-account-named-default-in-their-namespace")

	// What a tenant may write passes: opt-in classes, sidecars, an
	// ephemeral claim, its own labels, probes on its own pod.
	ok := workload("mallory", "fine", "none")
	s := &ok.Spec.Template.Spec
	ok.Spec.Template.Labels = map[string]string{"app": "fine", "example.com/team": "a"}
	s.PriorityClassName, s.RuntimeClassName = "batch-low", ptr.To("gvisor")
	s.InitContainers = []corev1.Container{{Name: "side", Image: "i", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{"cpu": resource.MustParse("10m"), "memory": resource.MustParse("16Mi")}}}}
	s.Volumes = []corev1.Volume{{Name: "eph", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{
		VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: ptr.To("fast"),
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}}}}}
	s.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}}
	expose(flotillav1.ExposedPort{Name: "http", Port: 8080, Protocol: flotillav1.ExposeHTTP, HealthPath: "/healthz?full=1"})(ok)
	ok.Spec.Expose.StableAddress = true
	if err := env.Client.Create(context.Background(), ok, client.DryRunAll); err != nil {
		t.Errorf("a Workload within the rules was refused: %v", err)
	}
}

// TestOptInsWaitForAnOffer: a template naming a priority class no Offer
// lists waits with the reason in Scheduled, and is placed once an Offer
// lists it.
func TestOptInsWaitForAnOffer(t *testing.T) {
	startHub(t, "optin", nil)
	tenant(t, "optin", "100")
	provider(t, "optin-1", "optin", nil)
	w := workload("optin", "urgent", "optin")
	w.Spec.Template.Spec.PriorityClassName = "batch-high"
	create(t, w)
	hubenv.Await(t, 20*time.Second, "T5.opt-in-waits: the Workload waiting for an Offer with its priority class", func() (bool, string) {
		got := get(t, &flotillav1.Workload{}, "optin", "urgent")
		c := apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.WorkloadScheduled)
		return c != nil && c.Reason == "PriorityClassNotOffered" && strings.Contains(c.Message, `"batch-high"`), fmt.Sprintf("%+v", c)
	})
	if n := len(leasesOf(t, "optin", "urgent")); n != 0 {
		t.Fatalf("%d Leases placed on an Offer that does not list the priority class", n)
	}
	o := get(t, &flotillav1.Offer{}, flotillav1.ProviderNamespace("optin-1"), "std")
	o.Spec.PriorityClasses = []string{"batch-high"}
	if err := env.Client.Update(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	hubenv.Await(t, 20*time.Second, "a Lease once the Offer lists the class", func() (bool, string) {
		n := len(leasesOf(t, "optin", "urgent"))
		return n == 1, fmt.Sprint(n, " leases")
	})
}

// TestUnaccountedNamespacesWait: a Workload whose namespace lost its
// Account gets no replicas (it would run without paying), and says why.
// Admission refuses new ones there; this one predates the deletion.
func TestUnaccountedNamespacesWait(t *testing.T) {
	tenant(t, "lapsed", "100")
	provider(t, "noacct-1", "noacct", nil)
	awaitAdmission(t, "lapsed")
	create(t, workload("lapsed", "w", "noacct"))
	if err := env.Client.Delete(context.Background(), &flotillav1.Account{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.AccountName, Namespace: "lapsed"}}); err != nil {
		t.Fatal(err)
	}
	startHub(t, "noacct", nil)
	hubenv.Await(t, 20*time.Second, "T8.unaccounted: Scheduled=False NoAccount", func() (bool, string) {
		got := get(t, &flotillav1.Workload{}, "lapsed", "w")
		c := apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.WorkloadScheduled)
		return c != nil && c.Reason == flotillav1.WorkloadReasonNoAccount && strings.Contains(c.Message, "namespace lapsed has no Account"), fmt.Sprintf("%+v", c)
	})
	if n := len(leasesOf(t, "lapsed", "w")); n != 0 {
		t.Errorf("%d Leases placed for a namespace without an Account", n)
	}
}

// TestSlowQuantitiesAreRefused plays a tenant and an owner who hand the hub
// quantities whose decoding would keep the hub busy for minutes: the API
// server refuses each, naming the field, before any informer decodes it.
// The objects go in as raw JSON: parsing them into a typed object here
// would stall the test the same way.
func TestSlowQuantitiesAreRefused(t *testing.T) {
	tenant(t, "slowq", "10")
	for _, tc := range []struct {
		id, obj, field string
	}{
		{"T6.slow-exponent", `{"apiVersion":"flotilla.dev/v1alpha1","kind":"Workload","metadata":{"name":"w1","namespace":"slowq"},
			"spec":{"class":"Service","replicas":1,"template":{"spec":{"containers":[{"name":"app","image":"nginx",
			"resources":{"requests":{"cpu":"1e-1000000000","memory":"64Mi"}}}]}}}}`, "spec.template.spec.containers[0].resources.requests.cpu"},
		{"T6.long-mantissa", `{"apiVersion":"flotilla.dev/v1alpha1","kind":"Workload","metadata":{"name":"w2","namespace":"slowq"},
			"spec":{"class":"Service","replicas":1,"template":{"spec":{"containers":[{"name":"app","image":"nginx",
			"resources":{"requests":{"cpu":"100m","memory":"1` + strings.Repeat("0", 100) + `"}}}]}}}}`, "spec.template.spec.containers[0].resources.requests.memory"},
		{"P6.offer-slow-exponent", `{"apiVersion":"flotilla.dev/v1alpha1","kind":"Offer","metadata":{"name":"o1","namespace":"slowq"},
			"spec":{"resources":{"cpu":"1e999999999"},"prices":{"cpu":"1"}}}`, "spec.resources.cpu"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON([]byte(tc.obj)); err != nil {
				t.Fatal(err)
			}
			err := env.Client.Create(context.Background(), u, client.DryRunAll)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("got %v, want Invalid naming %s", err, tc.field)
			}
		})
	}
}
