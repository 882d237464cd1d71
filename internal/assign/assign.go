// Package assign is pull mode's contract, pure on both sides: the hub
// turns a Lease's rendered objects into an Assignment (Build) and reads
// the agent's report back as an observation it bounds (Observe); the agent
// checks an Assignment before it applies anything (Check) and decides
// whether it fits what its cluster has free (Admit). Both parties are strangers to each other, so each reads the
// other's half as hostile input.
package assign

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/lease"
	"github.com/flotilla-dev/flotilla/internal/market"
	"github.com/flotilla-dev/flotilla/internal/render"
)

// Name of a Lease's Assignment in its provider's namespace on the hub: the
// name of the Lease's namespace on the provider.
func Name(hubID string, leaseUID types.UID) string { return render.Namespace(hubID, leaseUID) }

// MaxObjects is the most objects one Assignment carries (the CRD says the
// same): a namespace, quota, limits, two network policies, 16 copied
// ConfigMaps and Secrets, and the Deployment or Job.
const MaxObjects = 32

// Build is the Assignment spec of a Lease from the objects render.Lease
// returned. Its hash covers the objects themselves, so a changed ConfigMap
// of the tenant reaches the provider like any other change.
func Build(l *flotillav1.Lease, hubID string, objs []client.Object) (flotillav1.AssignmentSpec, error) {
	spec := flotillav1.AssignmentSpec{
		LeaseRef: flotillav1.AssignmentLeaseReference{Namespace: l.Namespace, Name: l.Name, UID: string(l.UID)},
		Class:    l.Spec.Class, Replicas: l.Spec.Replicas, ResourcesPerReplica: l.Spec.ResourcesPerReplica.DeepCopy(),
		PricePerReplicaHour: l.Spec.PricePerReplicaHour, Epoch: l.Spec.Epoch, Namespace: render.Namespace(hubID, l.UID),
	}
	if spec.Class == "" {
		spec.Class = flotillav1.ClassService
	}
	if len(objs) > MaxObjects {
		return spec, fmt.Errorf("%d objects, more than the %d an Assignment carries", len(objs), MaxObjects)
	}
	h := sha256.New()
	for _, o := range objs {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return spec, err
		}
		delete(u, "status")
		unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
		raw, err := json.Marshal(u)
		if err != nil {
			return spec, err
		}
		h.Write(raw)
		spec.Objects = append(spec.Objects, runtime.RawExtension{Raw: raw})
	}
	spec.Hash = hex.EncodeToString(h.Sum(nil))
	return spec, nil
}

// allowedKinds are what the hub renders; an Assignment holding anything
// else is refused by the agent before it applies a byte.
var allowedKinds = map[string]string{
	"Namespace": "v1", "ResourceQuota": "v1", "LimitRange": "v1", "ConfigMap": "v1", "Secret": "v1",
	"NetworkPolicy": "networking.k8s.io/v1", "Deployment": "apps/v1", "Job": "batch/v1",
	"Service": "v1", "Ingress": "networking.k8s.io/v1",
}

// Check decodes an Assignment's objects as the agent must read them: only
// the kinds the hub renders, every one in the Assignment's own namespace
// (named with this hub's prefix and carrying its Lease's labels), one
// Namespace and one Deployment or Job. The provider's admission policy
// bounds the federation identity anyway; this refuses a hostile or broken
// hub's Assignment with a reason instead of half-applying it.
func Check(a *flotillav1.Assignment, hubID string) ([]*unstructured.Unstructured, error) {
	s := &a.Spec
	if s.Namespace != render.Namespace(hubID, types.UID(s.LeaseRef.UID)) {
		return nil, fmt.Errorf("namespace %q is not the one of lease %s on hub %s", s.Namespace, s.LeaseRef.UID, hubID)
	}
	if len(s.Objects) == 0 || len(s.Objects) > MaxObjects {
		return nil, fmt.Errorf("%d objects; an Assignment carries 1 to %d", len(s.Objects), MaxObjects)
	}
	var out []*unstructured.Unstructured
	namespaces, workloads := 0, 0
	for i, raw := range s.Objects {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw.Raw); err != nil {
			return nil, fmt.Errorf("object %d: %w", i, err)
		}
		kind := u.GetKind()
		if v, ok := allowedKinds[kind]; !ok || u.GetAPIVersion() != v {
			return nil, fmt.Errorf("object %d: %s %s is not a kind the hub renders", i, u.GetAPIVersion(), kind)
		}
		switch kind {
		case "Namespace":
			namespaces++
			if u.GetName() != s.Namespace {
				return nil, fmt.Errorf("object %d: namespace %q is not the Assignment's %q", i, u.GetName(), s.Namespace)
			}
		case "Deployment", "Job":
			workloads++
			if (kind == "Job") != (s.Class == flotillav1.ClassBatch) {
				return nil, fmt.Errorf("object %d: a %s for class %s", i, kind, s.Class)
			}
			fallthrough
		case "Service":
			if kind == "Service" && !slices.Contains([]string{"ClusterIP", "NodePort", "LoadBalancer"}, str(u, "spec", "type")) ||
				has(u, "spec", "externalIPs") || has(u, "spec", "externalName") {
				return nil, fmt.Errorf("object %d: Service %s is not of type ClusterIP, NodePort or LoadBalancer, or sets externalIPs or externalName", i, u.GetName())
			}
			fallthrough
		default:
			if u.GetNamespace() != s.Namespace {
				return nil, fmt.Errorf("object %d: %s %s is outside the Assignment's namespace %q", i, kind, u.GetName(), s.Namespace)
			}
		}
		lbl := u.GetLabels()
		if lbl[flotillav1.LabelLease] != s.LeaseRef.UID || lbl[flotillav1.LabelHub] != hubID ||
			lbl[flotillav1.LabelEpoch] != fmt.Sprint(s.Epoch) {
			return nil, fmt.Errorf("object %d: %s %s does not carry the Assignment's lease, hub and epoch labels", i, kind, u.GetName())
		}
		out = append(out, u)
	}
	if namespaces != 1 || workloads != 1 {
		return nil, fmt.Errorf("%d namespaces and %d Deployments or Jobs; an Assignment has one of each", namespaces, workloads)
	}
	return out, nil
}

func str(u *unstructured.Unstructured, path ...string) string {
	v, _, _ := unstructured.NestedString(u.Object, path...)
	return v
}

func has(u *unstructured.Unstructured, path ...string) bool {
	_, ok, _ := unstructured.NestedFieldNoCopy(u.Object, path...)
	return ok
}

// Total is what an Assignment holds in all: replicas times one replica's
// requests, and a pod each.
func Total(s *flotillav1.AssignmentSpec) market.Vector {
	per := market.FromList(s.ResourcesPerReplica)
	per[market.Pods] = max(per[market.Pods], 1)
	var v market.Vector
	for r := range per {
		v[r] = per[r] * int64(s.Replicas)
	}
	return v
}

// Admit decides whether the agent takes an Assignment: free is what its
// cluster has free now for Flotilla (capacity.Offer: schedulable nodes'
// allocatable minus the owner's reserve and the requests of pods that are
// not Flotilla's), accepted the Assignments it already took, whose pods
// may not exist yet. The provider, not the hub, is the authority over its
// own capacity: the hub's Offer and Lease bookkeeping may be stale or
// lying. "" means it fits; otherwise the reason, for the Workload.
func Admit(free corev1.ResourceList, accepted []*flotillav1.AssignmentSpec, cand *flotillav1.AssignmentSpec) string {
	room := market.FromList(free)
	if _, ok := free[corev1.ResourcePods]; !ok {
		room[market.Pods] = market.Unlimited
	}
	for _, a := range accepted {
		t := Total(a)
		room.Sub(&t, 1)
	}
	need := Total(cand)
	for r := range need {
		if need[r] > room[r] {
			return fmt.Sprintf("not enough %s free: %d replicas need %s, %s left after the %d assignments already accepted",
				market.Resource(r), cand.Replicas, quantity(market.Resource(r), need[r]), quantity(market.Resource(r), max(room[r], 0)), len(accepted))
		}
	}
	return ""
}

func quantity(r market.Resource, v int64) string {
	if r == market.CPU {
		return resource.NewMilliQuantity(v, resource.DecimalSI).String()
	}
	if r == market.Memory || r == market.EphemeralStorage {
		return resource.NewQuantity(v, resource.BinarySI).String()
	}
	return fmt.Sprint(v)
}

// Report is the agent's answer as the hub takes it.
type Report struct {
	// Decided is false until the agent accepted or refused.
	Decided bool
	// Current when the agent applied the Assignment's current spec.
	Current bool
	// Refused, with Reason (CamelCase) and Message (one bounded line).
	Refused         bool
	Reason, Message string
	// Observation, every count bounded by the Lease.
	Observation lease.Observation
	// LastError the agent met applying or reading, bounded.
	LastError string
}

var camel = regexp.MustCompile(`^[A-Z][A-Za-z0-9]{0,63}$`)

// digestPattern is what a result digest must look like to be counted.
var digestPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// Observe reads the agent's report on an Assignment of spec hash. An
// accepted Assignment's counts are taken whichever version the agent last
// applied, as the hub reads a Deployment that may not have rolled yet. Counts
// are capped at what was leased (ready at running), a digest that does not
// look like one is dropped, and every text is cut to one line: a provider
// reporting more than it was given gains nothing, and one sending noise
// cannot grow the hub's objects.
func Observe(replicas int32, hash string, st *flotillav1.AssignmentStatus) Report {
	var r Report
	r.LastError = bound.Message(st.LastError)
	switch st.State {
	case flotillav1.AssignmentRefused:
		r.Decided, r.Refused = true, true
		r.Reason = flotillav1.LeaseReasonRefused
		if camel.MatchString(st.Reason) {
			r.Reason = st.Reason
		}
		r.Message = bound.Message(st.Message)
		if strings.TrimSpace(r.Message) == "" {
			r.Message = "refused without a reason"
		}
		return r
	case flotillav1.AssignmentAccepted:
		r.Decided, r.Current = true, st.AppliedHash == hash
	default:
		return r
	}
	clamp := func(n, most int32) int32 { return min(max(n, 0), most) }
	o := &r.Observation
	o.Running = clamp(st.RunningReplicas, replicas)
	o.Ready = clamp(st.ReadyReplicas, o.Running)
	o.Succeeded = clamp(st.SucceededReplicas, replicas)
	o.Failed = clamp(st.FailedReplicas, 1_000_000)
	o.Complete = st.Complete && o.Succeeded > 0
	o.JobFailed = st.JobFailed && !o.Complete
	if o.JobFailed {
		o.Message = "the job failed on the provider: " + bound.Message(st.Message)
	}
	if digestPattern.MatchString(st.Digest) {
		o.Digest = st.Digest
	}
	// The hub composes and checks addresses itself (internal/endpoint);
	// the agent's numbers are only read, at most eight.
	o.Endpoints = slices.Clone(st.Endpoints[:min(len(st.Endpoints), 8)])
	return r
}

// Stale says why a namespace of this hub on the agent's cluster must go,
// or "" when an Assignment still wants it: the agent fences itself with
// this before it reports Ready after a partition. assignments maps a
// Lease UID to its Assignment's epoch.
func Stale(namespaceLabels map[string]string, assignments map[string]int64) string {
	uid := namespaceLabels[flotillav1.LabelLease]
	epoch, ok := assignments[uid]
	if !ok {
		return "no assignment of the hub wants it"
	}
	if got := namespaceLabels[flotillav1.LabelEpoch]; got != fmt.Sprint(epoch) {
		return fmt.Sprintf("epoch %s is not the assignment's %d", got, epoch)
	}
	return ""
}
