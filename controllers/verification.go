package controllers

import (
	"cmp"
	"slices"

	apimeta "k8s.io/apimachinery/pkg/api/meta"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/quorum"
)

// Reasons of the Verified condition.
const (
	ReasonQuorumReached   = "QuorumReached"
	ReasonAwaitingResults = "AwaitingResults"
)

// Copy states shown in a Workload's verification status.
const (
	copyRunning  = "Running"
	copyReported = "Reported"
	copyFailed   = "Failed"
	copyReplaced = "Replaced"
)

// verified reports a Workload run as redundant copies with a quorum.
func verified(w *flotillav1.Workload) bool {
	return w.Spec.Class == flotillav1.ClassBatch && w.Spec.Verification != nil
}

func verificationPolicy(w *flotillav1.Workload) quorum.Policy {
	v := w.Spec.Verification
	p := quorum.Policy{Redundancy: int(v.Redundancy), Quorum: int(v.Quorum), MaxExtra: 2}
	if v.MaxExtraCopies != nil {
		p.MaxExtra = int(*v.MaxExtraCopies)
	}
	return p
}

// leaseOwner is the owner a Lease was placed with; Leases made before the
// label existed fall back to their provider, which is at least as strict.
func leaseOwner(l *flotillav1.Lease) string {
	if o := l.Labels[flotillav1.LabelOwner]; o != "" {
		return o
	}
	return "provider:" + l.Spec.ProviderRef.Name
}

// copyState classifies a Lease of a verified Workload. A copy lost with its
// provider is Replaced: the scheduler runs another in its place, and it
// takes no part in the vote.
func copyState(l *flotillav1.Lease) string {
	if leaseLive(l) {
		return copyRunning
	}
	switch o := l.Status.Outcome; {
	case o == flotillav1.OutcomeCompleted:
		return copyReported
	case o.Replaced():
		return copyReplaced
	default:
		return copyFailed
	}
}

// decideVerification runs the quorum rules over a verified Workload's
// Leases, in the order they were placed.
func decideVerification(w *flotillav1.Workload, leases []*flotillav1.Lease) (quorum.Decision, []flotillav1.CopyResult) {
	sorted := slices.Clone(leases)
	slices.SortFunc(sorted, func(a, b *flotillav1.Lease) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	copies := make([]quorum.Copy, 0, len(sorted))
	results := make([]flotillav1.CopyResult, 0, len(sorted))
	for _, l := range sorted {
		state := copyState(l)
		results = append(results, flotillav1.CopyResult{
			Lease: l.Name, Provider: l.Spec.ProviderRef.Name, Owner: l.Labels[flotillav1.LabelOwner],
			State: state, Digest: l.Status.Digest,
		})
		c := quorum.Copy{Lease: l.Name, Owner: leaseOwner(l), Digest: l.Status.Digest}
		switch state {
		case copyReplaced:
			continue
		case copyRunning:
			c.State = quorum.Running
		case copyReported:
			c.State = quorum.Reported
			if rc := apimeta.FindStatusCondition(l.Status.Conditions, flotillav1.ConditionReady); rc != nil {
				c.ReportedAt = rc.LastTransitionTime.Time
			}
		default:
			c.State = quorum.Failed
		}
		copies = append(copies, c)
	}
	d := quorum.Decide(verificationPolicy(w), copies, w.Status.VerifiedDigest)
	for i := range results {
		results[i].Verdict = flotillav1.Verdict(d.Verdicts[results[i].Lease])
	}
	if len(results) > 18 {
		results = results[len(results)-18:]
	}
	return d, results
}
