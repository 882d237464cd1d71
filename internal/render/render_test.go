package render

import (
	"bytes"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func lease(class flotillav1.WorkloadClass) *flotillav1.Lease {
	return &flotillav1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "web-abc12", Namespace: "team-a", UID: "3f1c0a8e-6a55-4e0e-9a0e-0f6c2b8d9e11"},
		Spec: flotillav1.LeaseSpec{
			WorkloadRef: flotillav1.LocalObjectReference{Name: "web"},
			ProviderRef: flotillav1.ProviderReference{Name: "bob-1"},
			OfferRef:    flotillav1.ObjectReference{Namespace: "provider-bob-1", Name: "std"},
			Class:       class,
			Replicas:    2,
			ResourcesPerReplica: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("512Mi"),
				flotillav1.ResourceGPU: resource.MustParse("1"), corev1.ResourcePods: resource.MustParse("1"),
			},
			Prices:              flotillav1.PriceList{corev1.ResourceCPU: "0.012"},
			PricePerReplicaHour: "0.006",
			Epoch:               3,
		},
	}
}

func workload(class flotillav1.WorkloadClass) *flotillav1.Workload {
	w := &flotillav1.Workload{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"},
		Spec: flotillav1.WorkloadSpec{
			Class:    class,
			Replicas: 2,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{
					ServiceAccountName: "provider-admin", // must not survive: tenants get no account on providers
					Containers: []corev1.Container{{
						Name: "web", Image: "registry.example/web:1",
						EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}},
						Env: []corev1.EnvVar{{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
							LocalObjectReference: corev1.LocalObjectReference{Name: "api-token"}, Key: "token"}}}},
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("512Mi")},
							Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")}}, // bursting past the lease: capped
						SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{
							Add: []corev1.Capability{"NET_BIND_SERVICE"}, Drop: []corev1.Capability{"ALL"}}},
					}},
				},
			},
		},
	}
	if class == flotillav1.ClassBatch {
		w.Spec.Batch = &flotillav1.BatchSpec{BackoffLimit: ptr.To[int32](1), ActiveDeadlineSeconds: ptr.To[int64](600)}
	}
	return w
}

// exposed is a web Workload that exposes an HTTP port and a TCP one.
func exposed() *flotillav1.Workload {
	w := workload(flotillav1.ClassService)
	w.Spec.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}}
	w.Spec.Expose = &flotillav1.ExposeSpec{Ports: []flotillav1.ExposedPort{
		{Name: "http", Port: 8080, Protocol: flotillav1.ExposeHTTP, HealthPath: "/healthz"},
		{Name: "metrics", Port: 9090, Protocol: flotillav1.ExposeTCP},
	}}
	return w
}

// Exposure needs both sides: a Workload that asks, on an Offer that can.
func TestExposeNeedsBothSides(t *testing.T) {
	offer := &flotillav1.OfferSpec{Exposure: &flotillav1.ExposureSpec{Type: flotillav1.ExposeNodePort, Address: "203.0.113.7"}}
	batch := exposed()
	batch.Spec.Class = flotillav1.ClassBatch
	for name, in := range map[string]Input{
		"workload does not ask": {HubID: "hub1", Lease: lease(flotillav1.ClassService), Workload: workload(flotillav1.ClassService), Offer: offer},
		"offer cannot":          {HubID: "hub1", Lease: lease(flotillav1.ClassService), Workload: exposed(), Offer: &flotillav1.OfferSpec{}},
		"offer gone":            {HubID: "hub1", Lease: lease(flotillav1.ClassService), Workload: exposed()},
		"batch":                 {HubID: "hub1", Lease: lease(flotillav1.ClassBatch), Workload: batch, Offer: offer},
	} {
		objs, err := Lease(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if k := o.GetObjectKind().GroupVersionKind().Kind; k == "Service" || k == "Ingress" || o.GetName() == "expose" {
				t.Errorf("%s: rendered %s %s", name, k, o.GetName())
			}
		}
	}
	plain := Input{HubID: "hub1", Lease: lease(flotillav1.ClassService), Workload: exposed()}
	withOffer := plain
	withOffer.Offer = offer
	if InputHash(plain) == InputHash(withOffer) {
		t.Error("the input hash ignores the Offer's exposure")
	}
}

func TestGolden(t *testing.T) {
	cases := map[string]Input{
		"service": {HubID: "hub1", Lease: lease(flotillav1.ClassService), Workload: workload(flotillav1.ClassService),
			ConfigMaps: []corev1.ConfigMap{{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: "team-a", ResourceVersion: "9"}, Data: map[string]string{"MODE": "prod"}}},
			Secrets:    []corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Name: "api-token", Namespace: "team-a"}, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"token": []byte("s3cret")}}},
		},
		"batch": {HubID: "hub1", Lease: lease(flotillav1.ClassBatch), Workload: workload(flotillav1.ClassBatch)},
		"expose-nodeport": {HubID: "hub1", Lease: lease(flotillav1.ClassService), Workload: exposed(),
			Offer: &flotillav1.OfferSpec{Exposure: &flotillav1.ExposureSpec{Type: flotillav1.ExposeNodePort, Address: "203.0.113.7"}}},
		"expose-loadbalancer": {HubID: "hub1", Lease: lease(flotillav1.ClassService), Workload: exposed(),
			Offer: &flotillav1.OfferSpec{Exposure: &flotillav1.ExposureSpec{Type: flotillav1.ExposeLoadBalancer}}},
		"expose-ingress": {HubID: "hub1", Lease: lease(flotillav1.ClassService), Workload: exposed(),
			Offer: &flotillav1.OfferSpec{Exposure: &flotillav1.ExposureSpec{Type: flotillav1.ExposeIngress, IngressClassName: "nginx", Domain: "apps.bob.example"}}},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			objs, err := Lease(in)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			for _, o := range objs {
				b, err := yaml.Marshal(o)
				if err != nil {
					t.Fatal(err)
				}
				buf.WriteString("---\n")
				buf.Write(b)
			}
			path := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/render -update to create it)", err)
			}
			if !bytes.Equal(want, buf.Bytes()) {
				t.Fatalf("rendered objects differ from %s (run with -update after checking):\n%s", path, buf.String())
			}
		})
	}
}

func TestNamespaceName(t *testing.T) {
	a := Namespace("hub1", "uid-a")
	if a != Namespace("hub1", "uid-a") {
		t.Fatal("namespace name is not deterministic")
	}
	if a == Namespace("hub1", "uid-b") || a == Namespace("hub2", "uid-a") {
		t.Fatal("different leases or hubs share a namespace name")
	}
	if long := Namespace(strings.Repeat("h", 20), "u"); len(long) > 63 || !strings.HasPrefix(long, NamespacePrefix) {
		t.Fatalf("namespace %q is too long or lacks the prefix", long)
	}
}

func TestRejectsBadInput(t *testing.T) {
	for name, in := range map[string]Input{
		"no lease":        {HubID: "h", Workload: workload(flotillav1.ClassService)},
		"no workload":     {HubID: "h", Lease: lease(flotillav1.ClassService)},
		"no hub id":       {Lease: lease(flotillav1.ClassService), Workload: workload(flotillav1.ClassService)},
		"hub id too long": {HubID: strings.Repeat("h", 21), Lease: lease(flotillav1.ClassService), Workload: workload(flotillav1.ClassService)},
	} {
		if _, err := Lease(in); err == nil {
			t.Errorf("%s: rendered without error", name)
		}
	}
}

func TestReferences(t *testing.T) {
	spec := workload(flotillav1.ClassService).Spec.Template.Spec
	spec.Volumes = []corev1.Volume{
		{Name: "a", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "files"}}}},
		{Name: "b", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tls"}}},
		{Name: "c", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "projected"}}}}}}},
	}
	spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "pull"}}
	cms, secs := References(&spec)
	if strings.Join(cms, ",") != "files,projected,settings" || strings.Join(secs, ",") != "api-token,pull,tls" {
		t.Fatalf("configmaps %v, secrets %v", cms, secs)
	}
}

// hostileTemplate sets every pod field a tenant could use to reach beyond
// its Lease on a provider.
func hostileTemplate() corev1.PodTemplateSpec {
	w := workload(flotillav1.ClassService)
	t := w.Spec.Template
	t.Finalizers = []string{"tenant.example/hold"}
	t.Labels["pod-security.kubernetes.io/enforce"] = "privileged"
	t.Labels[flotillav1.LabelLease] = "someone-elses-lease"
	t.Annotations = map[string]string{"cluster-autoscaler.kubernetes.io/safe-to-evict": "false", "team": "a"}
	s := &t.Spec
	s.NodeName = "control-plane"
	s.NodeSelector = map[string]string{"node-role.kubernetes.io/control-plane": ""}
	s.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	s.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{}}
	s.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 1}}
	s.SchedulerName = "my-scheduler"
	s.PriorityClassName = "system-node-critical"
	s.RuntimeClassName = ptr.To("runc-unconfined")
	s.HostNetwork, s.HostPID, s.HostIPC = true, true, true
	s.HostUsers = ptr.To(true)
	s.HostAliases = []corev1.HostAlias{{IP: "10.0.0.1", Hostnames: []string{"kubernetes.default"}}}
	s.DNSPolicy = corev1.DNSNone
	s.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"10.0.0.53"}}
	s.TerminationGracePeriodSeconds = ptr.To[int64](86400 * 365)
	s.ServiceAccountName, s.AutomountServiceAccountToken = "default", ptr.To(true)
	s.EnableServiceLinks = ptr.To(true)
	s.ShareProcessNamespace = ptr.To(true)
	s.Overhead = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("-10")}
	s.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64")}}
	s.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(false), RunAsUser: ptr.To[int64](0),
		Sysctls:        []corev1.Sysctl{{Name: "net.ipv4.ip_forward", Value: "1"}},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}
	s.Volumes = []corev1.Volume{
		{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}},
		{Name: "csi", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "secrets-store.csi.k8s.io"}}},
		{Name: "claim", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "owner-data"}}},
		{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", Audience: "vault"}}}}}},
		{Name: "bind", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
			Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: ptr.To("fast"), VolumeName: "owner-pv",
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Pi")}}}}}}},
	}
	c := &s.Containers[0]
	c.Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80, HostIP: "0.0.0.0"}}
	c.SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true), AllowPrivilegeEscalation: ptr.To(true),
		Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN", "NET_BIND_SERVICE"}}, ProcMount: ptr.To(corev1.UnmaskedProcMount)}
	c.VolumeMounts = []corev1.VolumeMount{{Name: "host", MountPath: "/host", MountPropagation: ptr.To(corev1.MountPropagationBidirectional)}}
	c.VolumeDevices = []corev1.VolumeDevice{{Name: "claim", DevicePath: "/dev/sda"}}
	c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "169.254.169.254", Path: "/latest/meta-data"}}}
	c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{TCPSocket: &corev1.TCPSocketAction{Host: "10.0.0.1"}}}
	c.Stdin, c.TTY = true, true
	return t
}

// TestTemplateAllowList plays a tenant whose template sets every field that
// would reach beyond its Lease: none of them reaches the provider.
func TestTemplateAllowList(t *testing.T) {
	w := workload(flotillav1.ClassService)
	w.Spec.Template = hostileTemplate()
	objs, err := Lease(Input{HubID: "hub1", Lease: lease(flotillav1.ClassService), Workload: w,
		Offer: &flotillav1.OfferSpec{PriorityClasses: []string{"batch-low"}, Storage: []flotillav1.StorageOffer{{ClassName: "fast", MaxSize: resource.MustParse("10Gi")}}}})
	if err != nil {
		t.Fatal(err)
	}
	var d *appsv1.Deployment
	for _, o := range objs {
		if dep, ok := o.(*appsv1.Deployment); ok {
			d = dep
		}
	}
	tmpl := d.Spec.Template
	s := tmpl.Spec
	c := s.Containers[0]
	checks := map[string]bool{
		"T5.finalizers":           len(tmpl.Finalizers) == 0,
		"T5.reserved-labels":      tmpl.Labels["pod-security.kubernetes.io/enforce"] == "" && tmpl.Labels[flotillav1.LabelLease] == string(lease("").UID),
		"T5.reserved-annotations": tmpl.Annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "" && tmpl.Annotations["team"] == "a",
		"T5.node-name":            s.NodeName == "",
		"T5.node-selector":        s.NodeSelector == nil && s.Affinity == nil && s.TopologySpreadConstraints == nil,
		"T5.tolerations":          s.Tolerations == nil,
		"T5.scheduler-name":       s.SchedulerName == "",
		"T5.priority-class":       s.PriorityClassName == "",
		"T5.runtime-class":        s.RuntimeClassName == nil,
		"T5.host-namespaces":      !s.HostNetwork && !s.HostPID && !s.HostIPC && s.HostUsers == nil,
		"T5.host-aliases":         s.HostAliases == nil,
		"T5.dns-config":           s.DNSConfig == nil && s.DNSPolicy == corev1.DNSClusterFirst,
		"T5.grace-period":         *s.TerminationGracePeriodSeconds == MaxGracePeriodSeconds,
		"T5.service-account":      s.ServiceAccountName == "" && !*s.AutomountServiceAccountToken && !*s.EnableServiceLinks,
		"T5.share-pid":            s.ShareProcessNamespace == nil,
		"T5.overhead":             s.Overhead == nil && s.Resources == nil,
		"T5.pod-security-context": *s.SecurityContext.RunAsNonRoot == false && s.SecurityContext.Sysctls == nil && s.SecurityContext.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault,
		"T5.volumes":              len(s.Volumes) == 1 && s.Volumes[0].Name == "token" && len(s.Volumes[0].Projected.Sources) == 0,
		"T5.host-port":            c.Ports[0].HostPort == 0 && c.Ports[0].HostIP == "",
		"T5.privileged":           c.SecurityContext.Privileged == nil && !*c.SecurityContext.AllowPrivilegeEscalation && c.SecurityContext.ProcMount == nil,
		"T5.capabilities":         len(c.SecurityContext.Capabilities.Add) == 1 && c.SecurityContext.Capabilities.Add[0] == "NET_BIND_SERVICE",
		"T5.mount-propagation":    c.VolumeMounts[0].MountPropagation == nil && c.VolumeDevices == nil,
		"T5.probe-host":           c.LivenessProbe.HTTPGet.Host == "" && c.Lifecycle.PreStop.TCPSocket.Host == "",
		"T5.stdin":                !c.Stdin && !c.TTY,
		"T4.limits-set":           c.Resources.Limits.Cpu().Cmp(*c.Resources.Requests.Cpu()) == 0 && c.Resources.Limits.Memory().Cmp(*c.Resources.Requests.Memory()) == 0,
	}
	for id, ok := range checks {
		if !ok {
			t.Errorf("%s: reached the provider:\n%+v", id, s)
		}
	}
	// RunAsNonRoot false is the tenant's own choice; Pod Security
	// "restricted" on the provider refuses the pod, which the progress
	// deadline then ends.
}

// TestOptInsFollowTheOffer: fields an owner opts into reach the provider
// only when this Lease's Offer lists the value asked for.
func TestOptInsFollowTheOffer(t *testing.T) {
	w := workload(flotillav1.ClassService)
	s := &w.Spec.Template.Spec
	s.PriorityClassName, s.RuntimeClassName = "batch-low", ptr.To("gvisor")
	s.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{
		VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: ptr.To("fast"),
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("5Gi")}}}}}}}}
	w.Spec.Network.Egress = flotillav1.EgressInternet
	render := func(o *flotillav1.OfferSpec) (corev1.PodSpec, int) {
		objs, err := Lease(Input{HubID: "h", Lease: lease(flotillav1.ClassService), Workload: w, Offer: o})
		if err != nil {
			t.Fatal(err)
		}
		policies := 0
		var spec corev1.PodSpec
		for _, obj := range objs {
			switch v := obj.(type) {
			case *appsv1.Deployment:
				spec = v.Spec.Template.Spec
			case *networkingv1.NetworkPolicy:
				policies++
			}
		}
		return spec, policies
	}
	all := &flotillav1.OfferSpec{AllowEgress: true, PriorityClasses: []string{"batch-low"}, RuntimeClasses: []string{"gvisor"},
		Storage: []flotillav1.StorageOffer{{ClassName: "fast", MaxSize: resource.MustParse("10Gi")}}}
	got, policies := render(all)
	if got.PriorityClassName != "batch-low" || *got.RuntimeClassName != "gvisor" || len(got.Volumes) != 1 || policies != 2 {
		t.Errorf("offered: priority %q runtime %v volumes %d policies %d", got.PriorityClassName, got.RuntimeClassName, len(got.Volumes), policies)
	}
	small := all.DeepCopy()
	small.Storage[0].MaxSize = resource.MustParse("1Gi")
	small.AllowEgress = false
	if got, policies := render(small); len(got.Volumes) != 0 || policies != 1 {
		t.Errorf("T7.egress-opt-in: a claim larger than offered or egress not allowed reached the provider: volumes %d policies %d", len(got.Volumes), policies)
	}
	if got, policies := render(nil); got.PriorityClassName != "" || got.RuntimeClassName != nil || policies != 1 {
		t.Errorf("no offer opts into nothing: %+v", got)
	}
}

// FuzzRender renders arbitrary templates (as JSON) and checks that what
// reaches the provider stays within the allow-list.
func FuzzRender(f *testing.F) {
	for _, tmpl := range []corev1.PodTemplateSpec{hostileTemplate(), workload(flotillav1.ClassService).Spec.Template} {
		b, _ := json.Marshal(tmpl)
		f.Add(b, false)
	}
	f.Add([]byte(`{"spec":{"containers":[{"name":"a","resources":{"requests":{"cpu":"-1e30"}}}],"volumes":[{"name":"x","ephemeral":{}}]}}`), true)
	f.Fuzz(func(t *testing.T, data []byte, batch bool) {
		var tmpl corev1.PodTemplateSpec
		if json.Unmarshal(data, &tmpl) != nil {
			return
		}
		class := flotillav1.ClassService
		if batch {
			class = flotillav1.ClassBatch
		}
		w := workload(class)
		w.Spec.Template = tmpl
		objs, err := Lease(Input{HubID: "h", Lease: lease(class), Workload: w, Offer: &flotillav1.OfferSpec{}})
		if err != nil {
			return
		}
		for _, o := range objs {
			var spec *corev1.PodSpec
			switch v := o.(type) {
			case *appsv1.Deployment:
				spec = &v.Spec.Template.Spec
			case *batchv1.Job:
				spec = &v.Spec.Template.Spec
			default:
				continue
			}
			if spec.HostNetwork || spec.HostPID || spec.HostIPC || spec.NodeName != "" || spec.Tolerations != nil || spec.NodeSelector != nil ||
				spec.ServiceAccountName != "" || *spec.AutomountServiceAccountToken || spec.PriorityClassName != "" {
				t.Fatalf("host or scheduling settings reached the provider: %+v", spec)
			}
			for _, v := range spec.Volumes {
				if v.HostPath != nil || v.CSI != nil || v.PersistentVolumeClaim != nil || v.NFS != nil || v.Ephemeral != nil {
					t.Fatalf("volume %s reached the provider: %+v", v.Name, v)
				}
			}
			for _, c := range append(spec.InitContainers, spec.Containers...) {
				sc := c.SecurityContext
				if sc == nil || sc.Privileged != nil || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Add) > 1 {
					t.Fatalf("container %s escalates: %+v", c.Name, sc)
				}
				for _, p := range c.Ports {
					if p.HostPort != 0 {
						t.Fatalf("container %s binds host port %d", c.Name, p.HostPort)
					}
				}
				for name, q := range c.Resources.Limits {
					if r := c.Resources.Requests[name]; r.Cmp(q) != 0 {
						t.Fatalf("container %s: limit %s of %s differs from its request %s", c.Name, q.String(), name, r.String())
					}
				}
			}
		}
	})
}

// Whatever the template says, the
// Service selects only the Lease's pods and the policy opens only the
// exposed ports.
func TestExposeReachesOnlyItsLease(t *testing.T) {
	w := exposed()
	w.Spec.Template.Labels = map[string]string{flotillav1.LabelLease: "someone-elses", "app": "web"}
	in := Input{HubID: "hub1", Lease: lease(flotillav1.ClassService), Workload: w,
		Offer: &flotillav1.OfferSpec{Exposure: &flotillav1.ExposureSpec{Type: flotillav1.ExposeNodePort, Address: "203.0.113.7"}}}
	objs, err := Lease(in)
	if err != nil {
		t.Fatal(err)
	}
	var svc *corev1.Service
	var pol *networkingv1.NetworkPolicy
	for _, o := range objs {
		switch x := o.(type) {
		case *corev1.Service:
			svc = x
		case *networkingv1.NetworkPolicy:
			if x.Name == "expose" {
				pol = x
			}
		}
	}
	if svc == nil || pol == nil {
		t.Fatalf("no Service or expose policy in %d objects", len(objs))
	}
	if want := map[string]string{flotillav1.LabelLease: string(in.Lease.UID)}; !maps.Equal(svc.Spec.Selector, want) {
		t.Errorf("T9.expose-reaches-only-its-lease: selector %v, want %v", svc.Spec.Selector, want)
	}
	if len(svc.Spec.ExternalIPs) != 0 || svc.Spec.Type != corev1.ServiceTypeNodePort {
		t.Errorf("service %+v", svc.Spec)
	}
	var ports []int32
	for _, r := range pol.Spec.Ingress {
		if len(r.From) != 0 {
			t.Errorf("ingress rule with peers %v", r.From)
		}
		for _, p := range r.Ports {
			ports = append(ports, p.Port.IntVal)
		}
	}
	if !slices.Equal(ports, []int32{8080, 9090}) {
		t.Errorf("ingress admitted to %v, want exactly the exposed 8080 and 9090", ports)
	}
}
