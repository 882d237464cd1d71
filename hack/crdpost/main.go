// Command crdpost finishes the CRDs controller-gen writes, in two ways.
//
// It bounds every quantity (an int-or-string with Kubernetes' quantity
// pattern) to bound.QuantityPattern and bound.MaxQuantityLen: the API
// server then refuses "1e-1000000000" and a million digits, which would
// keep the hub's decoder busy for minutes, before any informer decodes
// them.
//
// It drops the descriptions of the Kubernetes types a CRD embeds (a
// Workload's pod template), keeping every type, format, enum and rule:
// with them the Workload CRD is 645 KB, past the 256 KiB a client-side
// `kubectl apply` can record in its last-applied annotation. Flotilla's
// own fields keep their descriptions for `kubectl explain`.
//
// Usage: crdpost FILE [PATH...] where each PATH names a schema under every
// version's openAPIV3Schema, such as spec.template; the descriptions of
// the fields below it go, its own stays.
package main

import (
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/flotilla-dev/flotilla/internal/bound"
)

// upstreamQuantity is the pattern controller-gen gives a resource.Quantity.
const upstreamQuantity = `^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`

// boundQuantities replaces the pattern of every quantity schema below n.
func boundQuantities(n any) {
	switch x := n.(type) {
	case map[string]any:
		if x["x-kubernetes-int-or-string"] == true && x["pattern"] == upstreamQuantity {
			x["pattern"] = bound.QuantityPattern
			x["maxLength"] = bound.MaxQuantityLen
		}
		for _, v := range x {
			boundQuantities(v)
		}
	case []any:
		for _, v := range x {
			boundQuantities(v)
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crdpost FILE [PATH...]")
		os.Exit(2)
	}
	if err := post(os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "crdpost:", err)
		os.Exit(1)
	}
}

func post(file string, paths []string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var crd map[string]any
	if err := yaml.Unmarshal(b, &crd); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	spec, _ := crd["spec"].(map[string]any)
	versions, _ := spec["versions"].([]any)
	for _, v := range versions {
		schema := dig(v, "schema", "openAPIV3Schema")
		boundQuantities(schema)
		for _, p := range paths {
			s := schema
			for _, name := range strings.Split(p, ".") {
				s = dig(s, "properties", name)
			}
			props, ok := dig(s, "properties").(map[string]any)
			if !ok {
				return fmt.Errorf("%s: no schema with properties at %s", file, p)
			}
			for _, child := range props {
				strip(child)
			}
		}
	}
	out, err := yaml.Marshal(crd)
	if err != nil {
		return err
	}
	return os.WriteFile(file, append([]byte("---\n"), out...), 0o644)
}

func dig(n any, keys ...string) any {
	for _, k := range keys {
		m, ok := n.(map[string]any)
		if !ok {
			return nil
		}
		n = m[k]
	}
	return n
}

// strip removes every description in a schema. A property named
// "description" is a field, not a description: only string values under
// the key go, never a property schema.
func strip(n any) {
	switch x := n.(type) {
	case map[string]any:
		if _, isText := x["description"].(string); isText {
			delete(x, "description")
		}
		for _, v := range x {
			strip(v)
		}
	case []any:
		for _, v := range x {
			strip(v)
		}
	}
}
