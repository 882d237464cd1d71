package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/assign"
	"github.com/flotilla-dev/flotilla/internal/market"
)

// Shared is what the agents of one cluster, one per hub it serves, share:
// the capacity each hub's Assignments hold. Admission takes its lock, so
// two hubs' rounds decide one after the other and each counts what the
// other accepted: no two hubs can be sold the same capacity.
type Shared struct {
	hubs []string
	mu   sync.Mutex
	// accepted by each hub as of its agent's last round; a hub is absent
	// until its agent has read its Assignments since the start.
	accepted map[string][]*flotillav1.AssignmentSpec
}

// NewShared returns an empty registry for the hubs a cluster serves.
func NewShared(hubs ...string) *Shared {
	return &Shared{hubs: hubs, accepted: map[string][]*flotillav1.AssignmentSpec{}}
}

// admit runs decide with what hubs other than hub hold, and records what
// hub holds after it. A hub not read yet since the start holds what its
// ResourceQuotas on the cluster say (fallback, made by the caller).
func (s *Shared) admit(hub string, fallback map[string][]*flotillav1.AssignmentSpec,
	decide func(others []*flotillav1.AssignmentSpec) []*flotillav1.AssignmentSpec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	others := s.heldLocked(hub)
	for h, specs := range fallback {
		if _, read := s.accepted[h]; !read && h != hub {
			others = append(others, specs...)
		}
	}
	s.accepted[hub] = decide(others)
}

// held is what hubs other than hub hold, as far as this process knows.
func (s *Shared) held(hub string) []*flotillav1.AssignmentSpec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.heldLocked(hub)
}

func (s *Shared) heldLocked(hub string) []*flotillav1.AssignmentSpec {
	var out []*flotillav1.AssignmentSpec
	for h, specs := range s.accepted {
		if h != hub {
			out = append(out, specs...)
		}
	}
	return out
}

// unread are the hubs not read since the start.
func (s *Shared) unread() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, h := range s.hubs {
		if _, ok := s.accepted[h]; !ok {
			out = append(out, h)
		}
	}
	return out
}

// quotaHeld reads what each of hubs holds on the cluster from the
// ResourceQuotas of its Lease namespaces: what it was accepted for, for a
// hub whose agent has not read its Assignments since the start (the hub
// may be down).
func (a *Agent) quotaHeld(ctx context.Context, hubs []string) (map[string][]*flotillav1.AssignmentSpec, error) {
	if len(hubs) == 0 {
		return nil, nil
	}
	out := map[string][]*flotillav1.AssignmentSpec{}
	for _, h := range hubs {
		list, err := a.Local.CoreV1().ResourceQuotas("").List(ctx, metav1.ListOptions{
			LabelSelector: flotillav1.LabelHub + "=" + h})
		if err != nil {
			return nil, fmt.Errorf("reading hub %s's quotas: %w", h, err)
		}
		for _, q := range list.Items {
			per := corev1.ResourceList{}
			for name, v := range q.Spec.Hard {
				if r, ok := strings.CutPrefix(string(name), "requests."); ok {
					per[corev1.ResourceName(r)] = v
				} else if name == corev1.ResourcePods {
					per[name] = v
				}
			}
			out[h] = append(out[h], &flotillav1.AssignmentSpec{Replicas: 1, ResourcesPerReplica: per})
		}
	}
	return out, nil
}

// lessHeld is the Offer's capacity less what other hubs hold.
func lessHeld(res corev1.ResourceList, held []*flotillav1.AssignmentSpec) corev1.ResourceList {
	if len(held) == 0 {
		return res
	}
	room := market.FromList(res)
	for _, spec := range held {
		t := assign.Total(spec)
		room.Sub(&t, 1)
	}
	for r := range room {
		room[r] = max(room[r], 0)
	}
	left := room.List()
	out := corev1.ResourceList{}
	for name := range res {
		if q, ok := left[name]; ok {
			out[name] = q
		} else {
			out[name] = resource.MustParse("0")
		}
	}
	return out
}
