package render

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
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
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}},
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

func TestGolden(t *testing.T) {
	cases := map[string]Input{
		"service": {HubID: "hub1", Lease: lease(flotillav1.ClassService), Workload: workload(flotillav1.ClassService),
			ConfigMaps: []corev1.ConfigMap{{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: "team-a", ResourceVersion: "9"}, Data: map[string]string{"MODE": "prod"}}},
			Secrets:    []corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Name: "api-token", Namespace: "team-a"}, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"token": []byte("s3cret")}}},
		},
		"batch": {HubID: "hub1", Lease: lease(flotillav1.ClassBatch), Workload: workload(flotillav1.ClassBatch)},
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
