package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// The CRDs apply with a plain client-side `kubectl apply`, as many GitOps
// setups run it: its last-applied annotation holds the whole object, and
// annotations may not pass 256 KiB.
func TestCRDsApplyClientSide(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(hubenv.RepoRoot(), "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) != 6 {
		t.Fatalf("CRDs: %v %v", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		// The annotation is the compact JSON; leave room for the rest.
		if len(j) > 200<<10 {
			t.Errorf("%s is %d KiB as JSON: too close to the 256 KiB annotation limit", filepath.Base(f), len(j)>>10)
		}
		if out, err := env.Kubectl(t, "apply", "--server-side=false", "-f", f); err != nil {
			t.Errorf("kubectl apply -f %s: %v\n%s", filepath.Base(f), err, out)
		}
	}
}

// Trimming the embedded pod template's descriptions keeps its validation:
// a field of the wrong type is still refused.
func TestTrimmedTemplateStillValidates(t *testing.T) {
	ensureNamespace(t, testNS)
	w := validWorkload()
	w.Name = "trimmed"
	w.APIVersion, w.Kind = flotillav1.GroupVersion.String(), "Workload"
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(w)
	if err != nil {
		t.Fatal(err)
	}
	containers := u["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)
	containers[0].(map[string]any)["ports"] = []any{map[string]any{"containerPort": "eighty"}}
	b, _ := json.Marshal(u)
	out, err := env.Kubectl(t, "create", "--dry-run=server", "-f", writeTemp(t, b))
	if err == nil || !strings.Contains(out, "containerPort") {
		t.Errorf("a string containerPort was accepted: %v\n%s", err, out)
	}
	// And the descriptions of Flotilla's own fields are still there.
	out, err = env.Kubectl(t, "explain", "workload.spec.placement.maxPricePerReplicaHour")
	if err != nil || !strings.Contains(strings.ToLower(out), "price") {
		t.Errorf("kubectl explain lost Flotilla's descriptions: %v\n%s", err, out)
	}
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "obj.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
