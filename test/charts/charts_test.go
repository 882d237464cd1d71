// Package charts checks the Helm charts with the real helm binary: lint,
// and that the rendered objects are the ones the rest of Flotilla relies on.
package charts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/flotilla-dev/flotilla/internal/agent"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(hubenv.RepoRoot(), "bin", "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("helm is not built (make tools): %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = hubenv.RepoRoot()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// render runs helm template and indexes the objects by kind/name.
func render(t *testing.T, args ...string) map[string]*unstructured.Unstructured {
	t.Helper()
	out, err := helm(t, append([]string{"template", "r", "-n", "flotilla-system"}, args...)...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, out)
	}
	objs := map[string]*unstructured.Unstructured{}
	dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			break
		}
		if len(u.Object) > 0 {
			objs[u.GetKind()+"/"+u.GetName()] = u
		}
	}
	return objs
}

func TestLint(t *testing.T) {
	for _, args := range [][]string{
		{"charts/flotilla-hub", "--strict"},
		{"charts/flotilla-provider", "--strict", "-f", "charts/flotilla-provider/ci/lint-values.yaml"},
	} {
		if out, err := helm(t, append([]string{"lint"}, args...)...); err != nil {
			t.Errorf("helm lint %v: %v\n%s", args, err, out)
		}
	}
}

func TestProviderChart(t *testing.T) {
	objs := render(t, "charts/flotilla-provider", "-f", "charts/flotilla-provider/ci/lint-values.yaml", "--set", "hub.id=hub7",
		"--set", "offer.reserve.cpu=3")
	for _, want := range []string{
		"ServiceAccount/flotilla-federation", "Secret/flotilla-federation-token", "ClusterRole/flotilla-federation",
		"ClusterRoleBinding/flotilla-federation", "ValidatingAdmissionPolicy/flotilla-federation-confinement",
		"ValidatingAdmissionPolicyBinding/flotilla-federation-confinement", "ServiceAccount/flotilla-agent",
		"Secret/flotilla-agent-token", "Role/flotilla-agent", "ConfigMap/flotilla-agent-config", "Deployment/flotilla-agent",
	} {
		if objs[want] == nil {
			t.Errorf("%s is not rendered", want)
		}
	}
	// The federation identity never gets wildcards, Secret reads, pods or RBAC.
	rules, _, _ := unstructured.NestedSlice(objs["ClusterRole/flotilla-federation"].Object, "rules")
	for _, r := range rules {
		rule := r.(map[string]any)
		res, _, _ := unstructured.NestedStringSlice(rule, "resources")
		verbs, _, _ := unstructured.NestedStringSlice(rule, "verbs")
		groups, _, _ := unstructured.NestedStringSlice(rule, "apiGroups")
		if slices.Contains(res, "*") || slices.Contains(verbs, "*") || slices.Contains(groups, "*") {
			t.Errorf("wildcard in federation rule %v", rule)
		}
		if slices.Contains(groups, "rbac.authorization.k8s.io") || slices.Contains(verbs, "impersonate") || slices.Contains(verbs, "escalate") || slices.Contains(verbs, "bind") {
			t.Errorf("federation rule %v reaches RBAC or impersonation", rule)
		}
		if slices.Contains(res, "secrets") && (slices.Contains(verbs, "get") || slices.Contains(verbs, "list") || slices.Contains(verbs, "watch")) {
			t.Errorf("federation rule %v reads Secrets", rule)
		}
		if slices.Contains(res, "pods") && !slices.Equal(verbs, []string{"get", "list", "watch"}) {
			t.Errorf("federation rule %v does more than read pods", rule)
		}
	}
	vap, _ := objs["ValidatingAdmissionPolicy/flotilla-federation-confinement"].Object["spec"].(map[string]any)
	text := vapText(vap)
	for _, want := range []string{"'flotilla-hub7-'", "system:serviceaccount:flotilla-system:flotilla-federation"} {
		if !strings.Contains(text, want) {
			t.Errorf("admission policy does not contain %s", want)
		}
	}
	cm := objs["ConfigMap/flotilla-agent-config"]
	data, _, _ := unstructured.NestedString(cm.Object, "data", "config.json")
	cfg, err := agent.ParseConfig([]byte(data))
	if err != nil {
		t.Fatalf("the agent cannot read the chart's config.json: %v\n%s", err, data)
	}
	if cfg.HubID != "hub7" || cfg.Provider.Name != "alice-1" || cfg.Provider.Owner != "alice" || cfg.Offer.Reserve["cpu"] != float64(3) {
		t.Errorf("config.json does not carry the values: %+v", cfg)
	}

	// Exposure: Services (and Ingresses) only when the owner opts in, and
	// the agent offers what the chart says.
	hasRule := func(objs map[string]*unstructured.Unstructured, resource string) bool {
		rules, _, _ := unstructured.NestedSlice(objs["ClusterRole/flotilla-federation"].Object, "rules")
		for _, r := range rules {
			res, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
			if slices.Contains(res, resource) {
				return true
			}
		}
		return false
	}
	if hasRule(objs, "services") || hasRule(objs, "ingresses") {
		t.Error("the federation identity may write Services or Ingresses without offer.exposure")
	}
	for _, tc := range []struct {
		set                 string
		services, ingresses bool
	}{
		{"offer.exposure.type=NodePort,offer.exposure.address=203.0.113.7", true, false},
		{"offer.exposure.type=Ingress,offer.exposure.ingressClassName=nginx,offer.exposure.domain=apps.example.org", true, true},
	} {
		ex := render(t, "charts/flotilla-provider", "-f", "charts/flotilla-provider/ci/lint-values.yaml", "--set", tc.set)
		if hasRule(ex, "services") != tc.services || hasRule(ex, "ingresses") != tc.ingresses {
			t.Errorf("--set %s: services %v ingresses %v", tc.set, hasRule(ex, "services"), hasRule(ex, "ingresses"))
		}
		data, _, _ := unstructured.NestedString(ex["ConfigMap/flotilla-agent-config"].Object, "data", "config.json")
		if cfg, err := agent.ParseConfig([]byte(data)); err != nil || cfg.Offer.Exposure == nil {
			t.Errorf("--set %s: the agent reads no exposure: %v", tc.set, err)
		}
		pol, _ := ex["ValidatingAdmissionPolicy/flotilla-federation-confinement"].Object["spec"].(map[string]any)
		if !strings.Contains(vapText(pol), "'type':") {
			t.Errorf("--set %s: the admission policy does not carry the exposure", tc.set)
		}
	}

	noAgent := render(t, "charts/flotilla-provider", "-f", "charts/flotilla-provider/ci/lint-values.yaml", "--set", "agent.enabled=false")
	if noAgent["Deployment/flotilla-agent"] != nil {
		t.Error("agent.enabled=false still renders the agent Deployment")
	}
	if noAgent["ClusterRole/flotilla-federation"] == nil {
		t.Error("agent.enabled=false drops the federation identity")
	}

	out, err := helm(t, "template", "r", "charts/flotilla-provider")
	if err == nil || !strings.Contains(out, "provider.name is required") {
		t.Errorf("rendering without provider.name: %v\n%s; want an error naming provider.name", err, out)
	}

	// Pull mode: no API server URL, and the agent reads the mode.
	pull := render(t, "charts/flotilla-provider", "--set", "provider.name=p", "--set", "provider.owner=o", "--set", "provider.mode=Pull")
	pdata, _, _ := unstructured.NestedString(pull["ConfigMap/flotilla-agent-config"].Object, "data", "config.json")
	pcfg, err := agent.ParseConfig([]byte(pdata))
	if err != nil || !pcfg.Pull() || pcfg.Provider.APIServerURL != "" {
		t.Errorf("pull mode config: %+v, %v", pcfg, err)
	}
	for args, want := range map[string]string{
		"provider.mode=Pull,provider.apiServerURL=https://p.example:6443": "must be empty when provider.mode is Pull",
		"provider.mode=Sideways": "provider.mode must be Push or Pull",
		"provider.mode=Push":     "provider.apiServerURL is required in Push mode",
	} {
		out, err := helm(t, "template", "r", "charts/flotilla-provider", "--set", "provider.name=p,provider.owner=o,"+args)
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("--set %s: %v\n%s; want an error containing %q", args, err, out, want)
		}
	}
}

func vapText(spec map[string]any) string {
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		case string:
			b.WriteString(x + "\n")
		}
	}
	walk(spec)
	return b.String()
}

func TestHubChart(t *testing.T) {
	objs := render(t, "charts/flotilla-hub", "--include-crds", "--set", "hubID=eu1", "--set", "metrics.serviceMonitor.enabled=true")
	for _, want := range []string{
		"CustomResourceDefinition/workloads.flotilla.dev", "CustomResourceDefinition/leases.flotilla.dev",
		"CustomResourceDefinition/offers.flotilla.dev", "CustomResourceDefinition/providers.flotilla.dev",
		"ServiceAccount/flotilla-manager", "ClusterRole/flotilla-manager", "ClusterRoleBinding/flotilla-manager",
		"Role/flotilla-manager", "RoleBinding/flotilla-manager", "Deployment/flotilla-manager", "Service/flotilla-manager-metrics",
		"ServiceMonitor/flotilla-manager", "ValidatingAdmissionPolicy/flotilla-workload-template-safety",
		"ValidatingAdmissionPolicy/flotilla-join-identity", "ClusterRole/flotilla-tenant", "ClusterRole/flotilla-market-viewer", "ClusterRole/flotilla-ledger-reader",
		"Namespace/flotilla-ledger", "Role/flotilla-ledger-reader", "RoleBinding/flotilla-ledger-public",
	} {
		if objs[want] == nil {
			t.Errorf("%s is not rendered", want)
		}
	}
	d := objs["Deployment/flotilla-manager"]
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	if !slices.Contains(args, "--hub-id=eu1") || !slices.Contains(args, "--leader-elect") {
		t.Errorf("manager args %v lack --hub-id=eu1 or --leader-elect", args)
	}
	if objs["Service/flotilla-entry"] != nil || slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--entry-bind-address") }) {
		t.Error("stable addresses are served without entry.enabled")
	}
	entry := render(t, "charts/flotilla-hub", "--set", "entry.enabled=true,entry.url=https://apps.hub.example")
	containers, _, _ = unstructured.NestedSlice(entry["Deployment/flotilla-manager"].Object, "spec", "template", "spec", "containers")
	args, _, _ = unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	if !slices.Contains(args, "--entry-bind-address=:8090") || !slices.Contains(args, "--entry-url=https://apps.hub.example") || entry["Service/flotilla-entry"] == nil {
		t.Errorf("entry.enabled: args %v, service %v", args, entry["Service/flotilla-entry"] != nil)
	}
	if out, err := helm(t, "template", "r", "charts/flotilla-hub", "--set", "entry.enabled=true"); err == nil || !strings.Contains(out, "entry.url is required") {
		t.Errorf("entry.enabled without a URL: %v\n%s", err, out)
	}
	// The chart's RBAC is the generated one.
	gen, err := os.ReadFile(filepath.Join(hubenv.RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := &unstructured.Unstructured{}
	if err := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(gen), 4096).Decode(&want.Object); err != nil {
		t.Fatal(err)
	}
	wantRules, _, _ := unstructured.NestedSlice(want.Object, "rules")
	gotRules, _, _ := unstructured.NestedSlice(objs["ClusterRole/flotilla-manager"].Object, "rules")
	if len(wantRules) == 0 || len(gotRules) != len(wantRules) {
		t.Errorf("chart ClusterRole has %d rules, config/rbac/role.yaml %d", len(gotRules), len(wantRules))
	}

	plain := render(t, "charts/flotilla-hub")
	if plain["ServiceMonitor/flotilla-manager"] != nil {
		t.Error("a ServiceMonitor is rendered although metrics.serviceMonitor.enabled is false")
	}

	// The manager's requests have a priority level above the agents'.
	fs := objs["FlowSchema/flotilla-manager"]
	if fs == nil {
		t.Fatal("FlowSchema/flotilla-manager is not rendered")
	}
	level, _, _ := unstructured.NestedString(fs.Object, "spec", "priorityLevelConfiguration", "name")
	rules, _, _ := unstructured.NestedSlice(fs.Object, "spec", "rules")
	var subject map[string]any
	if len(rules) == 1 {
		subjects, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "subjects")
		if len(subjects) == 1 {
			subject, _, _ = unstructured.NestedMap(subjects[0].(map[string]any), "serviceAccount")
		}
	}
	if level != "workload-high" || subject["name"] != "flotilla-manager" || subject["namespace"] == "" {
		t.Errorf("FlowSchema/flotilla-manager: priority level %q, subject %v; want workload-high for the manager's ServiceAccount", level, subject)
	}
	if none := render(t, "charts/flotilla-hub", "--set", "manager.priorityLevel="); none["FlowSchema/flotilla-manager"] != nil {
		t.Error("a FlowSchema is rendered although manager.priorityLevel is empty")
	}
}
