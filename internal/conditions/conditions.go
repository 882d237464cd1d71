// Package conditions sets an object's Ready, Reconciling and Stalled
// conditions in one place, the way kstatus (sigs.k8s.io/cli-utils), and so
// Flux and Argo CD, read them: Reconciling=True while a controller works
// towards the spec (InProgress), Stalled=True when progress needs a person
// (Failed), neither once the object is where its spec asks (Current). Every
// message is bounded (internal/bound): conditions carry text from other
// parties. Pure: no client.
package conditions

import (
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
)

// State is where an object stands, as kstatus computes it.
type State int

const (
	// Current: the object is where its spec asks, or at a terminal point it
	// reached normally (a completed job, a closed Lease).
	Current State = iota
	// InProgress: a controller is working towards the spec.
	InProgress
	// Stalled: no progress without a person (kstatus Failed).
	Stalled
)

func (s State) String() string {
	return [...]string{"Current", "InProgress", "Stalled"}[s]
}

// Summary is what an object's Ready, Reconciling and Stalled say. Ready is
// True exactly when State is Current: kstatus reads Ready=False, with
// neither of the others set, as InProgress. Reason and Message explain
// Ready, and the Reconciling or Stalled condition State sets unless
// StateReason and StateMessage say more precisely why.
type Summary struct {
	State                     State
	Reason, Message           string
	StateReason, StateMessage string
}

// Fact is one condition other than the three Summary sets, such as a
// Workload's Scheduled.
type Fact struct {
	True            bool
	Reason, Message string
}

// SetFact sets the condition typ to f.
func SetFact(conds *[]metav1.Condition, generation int64, typ string, f Fact) {
	Set(conds, generation, typ, f.True, f.Reason, f.Message)
}

// Set sets one condition, with its message bounded and observedGeneration.
func Set(conds *[]metav1.Condition, generation int64, typ string, status bool, reason, message string) {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	apimeta.SetStatusCondition(conds, metav1.Condition{Type: typ, Status: s, Reason: reason,
		Message: bound.Message(message), ObservedGeneration: generation})
}

// Apply writes s into conds: Ready always; Reconciling only while
// InProgress and Stalled only while Stalled, each removed otherwise, so
// that neither is ever left True beside the other.
func Apply(conds *[]metav1.Condition, generation int64, s Summary) {
	Set(conds, generation, flotillav1.ConditionReady, s.State == Current, s.Reason, s.Message)
	reason, message := s.Reason, s.Message
	if s.StateReason != "" {
		reason, message = s.StateReason, s.StateMessage
	}
	switch s.State {
	case InProgress:
		apimeta.RemoveStatusCondition(conds, flotillav1.ConditionStalled)
		Set(conds, generation, flotillav1.ConditionReconciling, true, reason, message)
	case Stalled:
		apimeta.RemoveStatusCondition(conds, flotillav1.ConditionReconciling)
		Set(conds, generation, flotillav1.ConditionStalled, true, reason, message)
	default:
		apimeta.RemoveStatusCondition(conds, flotillav1.ConditionReconciling)
		apimeta.RemoveStatusCondition(conds, flotillav1.ConditionStalled)
	}
	if len(*conds) == 0 {
		*conds = nil
	}
}
