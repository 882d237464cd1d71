package market

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// maxQuantity caps every converted quantity, so that sums over many offers
// and replicas stay far from overflowing int64; a provider reporting more
// is read as having this much.
const maxQuantity int64 = 1 << 60

// Bounds of one container's requests: cpu and memory are required (a
// replica that asks for nothing would be priced at nothing), and nothing
// may be zero, negative or beyond what a node can have.
var (
	containerMin = map[corev1.ResourceName]resource.Quantity{
		corev1.ResourceCPU: resource.MustParse("1m"), corev1.ResourceMemory: resource.MustParse("1Mi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Mi"), "nvidia.com/gpu": resource.MustParse("1"),
	}
	containerMax = map[corev1.ResourceName]resource.Quantity{
		corev1.ResourceCPU: resource.MustParse("1024"), corev1.ResourceMemory: resource.MustParse("16Ti"),
		corev1.ResourceEphemeralStorage: resource.MustParse("64Ti"), "nvidia.com/gpu": resource.MustParse("64"),
	}
	// offerMax bounds what one Offer may sell.
	offerMax = map[corev1.ResourceName]resource.Quantity{
		corev1.ResourceCPU: resource.MustParse("1Mi"), corev1.ResourceMemory: resource.MustParse("1Ei"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Ei"), "nvidia.com/gpu": resource.MustParse("1Mi"),
		corev1.ResourcePods: resource.MustParse("1Mi"),
	}
	required = []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory}
)

// FieldError names the field of a pod template or Offer that is refused.
type FieldError struct {
	Field string
	Why   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Why }

// CheckRequest validates what each container of a pod template asks for:
// cpu and memory requests on every container, init containers included,
// only resources the market sells, each within its bounds; no pod-level
// resources or overhead, which would escape the per-container limits the
// provider sets. It names the first offending field.
func CheckRequest(spec *corev1.PodSpec) error {
	if spec.Resources != nil {
		return &FieldError{"spec.resources", "pod-level resources are not supported; set requests on each container"}
	}
	if len(spec.Overhead) > 0 {
		return &FieldError{"spec.overhead", "is set by the provider's runtime class, not by a template"}
	}
	check := func(kind string, cs []corev1.Container) error {
		for i := range cs {
			c := &cs[i]
			path := fmt.Sprintf("spec.%s[%s].resources", kind, c.Name)
			for _, name := range required {
				if _, ok := c.Resources.Requests[name]; !ok {
					return &FieldError{path + ".requests." + string(name), "is required: every container declares its cpu and memory requests, which are what a Lease reserves and is priced on"}
				}
			}
			for _, part := range []struct {
				name string
				list corev1.ResourceList
			}{{"requests", c.Resources.Requests}, {"limits", c.Resources.Limits}} {
				for _, name := range sortedNames(part.list) {
					if err := checkQuantity(path+"."+part.name+"."+string(name), name, part.list[name], containerMin, containerMax); err != nil {
						return err
					}
				}
			}
			if len(c.Resources.Claims) > 0 {
				return &FieldError{path + ".claims", "dynamic resource claims are not supported"}
			}
		}
		return nil
	}
	if err := check("initContainers", spec.InitContainers); err != nil {
		return err
	}
	return check("containers", spec.Containers)
}

// CheckOffer validates what an Offer sells: only the market's resources,
// none negative or beyond offerMax.
func CheckOffer(l corev1.ResourceList) error {
	for _, name := range sortedNames(l) {
		if err := checkQuantity("spec.resources."+string(name), name, l[name], nil, offerMax); err != nil {
			return err
		}
	}
	return nil
}

func checkQuantity(field string, name corev1.ResourceName, q resource.Quantity, lo, hi map[corev1.ResourceName]resource.Quantity) error {
	top, known := hi[name]
	if !known {
		return &FieldError{field, "only cpu, memory, ephemeral-storage and nvidia.com/gpu are sold"}
	}
	floor, hasFloor := lo[name]
	switch {
	case q.Sign() < 0:
		return &FieldError{field, fmt.Sprintf("%s is negative", q.String())}
	case hasFloor && q.Cmp(floor) < 0:
		return &FieldError{field, fmt.Sprintf("%s is less than %s", q.String(), floor.String())}
	case q.Cmp(top) > 0:
		return &FieldError{field, fmt.Sprintf("%s is more than %s", q.String(), top.String())}
	case name == "nvidia.com/gpu" && q.MilliValue()%1000 != 0:
		return &FieldError{field, "GPUs are whole devices"}
	}
	return nil
}

func sortedNames(l corev1.ResourceList) []corev1.ResourceName {
	out := make([]corev1.ResourceName, 0, len(l))
	for n := range l {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
