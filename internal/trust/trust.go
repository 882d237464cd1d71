// Package trust is the hub's trust flow: a provider's reputation from the
// evidence its Leases leave (internal/reputation), and the verification of
// a Batch Workload's result by redundant copies (internal/quorum). Pure:
// the Provider and Workload controllers gather the objects and write what
// it decides.
package trust

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/quorum"
	"github.com/flotilla-dev/flotilla/internal/reputation"
)

const (
	// MaxEventsPerUpdate bounds the Lease events counted in one status
	// write, so that the recorded list always covers the last write's.
	MaxEventsPerUpdate = 32
	maxRecorded        = 64
)

// Lease events a provider's reputation counts.
const (
	EventOutcome     = "outcome"
	EventVerdict     = "verdict"
	EventUnreachable = "unreachable"
)

// Outcome is the reputation evidence of a Lease's end, if it has one: a
// Batch completion, or a Lease that failed, failed over or never got its
// replicas ready. Service Leases that are scaled down or deleted end
// without an outcome; their providers' uptime speaks for them.
func Outcome(l *flotillav1.Lease) (reputation.Outcome, bool) {
	switch l.Status.Outcome {
	case flotillav1.OutcomeCompleted:
		return reputation.LeaseCompleted, true
	case flotillav1.OutcomeFailed, flotillav1.OutcomeFailedOver, flotillav1.OutcomeProgressDeadlineExceeded:
		return reputation.LeaseFailed, true
	}
	return 0, false
}

// Recorded lists the Lease's events its provider's reputation has counted,
// as marked on the Lease.
func Recorded(l *flotillav1.Lease) []string {
	v := l.Annotations[flotillav1.AnnotationReputationRecorded]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// Unrecorded lists the Lease's events that carry evidence and are not
// marked as counted yet.
func Unrecorded(l *flotillav1.Lease) []string {
	done := Recorded(l)
	var out []string
	if _, ok := Outcome(l); ok && !slices.Contains(done, EventOutcome) {
		out = append(out, EventOutcome)
	}
	if l.Status.Verdict != "" && !slices.Contains(done, EventVerdict) {
		out = append(out, EventVerdict)
	}
	if l.Status.UnreachableCount > 0 && !slices.Contains(done, EventUnreachable) {
		out = append(out, EventUnreachable)
	}
	return out
}

// Mark is a Lease event counted in the reputation just computed, to mark on
// the Lease once the reputation is written.
type Mark struct {
	Lease *flotillav1.Lease
	Event string
}

// Update folds into rep the provider's time up or down since its last
// update (in the phase it had, was) and the events of leases not counted
// yet.
//
// Time is credited from watched on at the earliest: when this hub began
// watching the provider without a break (its provider controller's first
// look as leader). Before that, during a manager outage, nobody watched;
// after it, any change of phase was written when it was seen, so the
// provider stayed in was, however long ago the last update was.
//
// An event is counted exactly once: it goes into rep.Recorded in the same
// write as its evidence, and is marked on its Lease after; one found in
// rep.Recorded (a restart between the two) is only marked. Unreadable
// evidence (edited by hand) starts again from neutral, and reset says so.
func Update(rep flotillav1.Reputation, was flotillav1.ProviderPhase, leases []*flotillav1.Lease, now, watched time.Time,
	halfLife time.Duration) (out flotillav1.Reputation, marks []Mark, score float64, reset error) {
	// Status keeps whole seconds; so do the observed intervals.
	now = now.Truncate(time.Second)
	out = *rep.DeepCopy()
	s, err := state(&out)
	if err != nil {
		out, s, reset = flotillav1.Reputation{}, reputation.State{}, err
	}
	if out.UpdatedTime != nil {
		dt := max(now.Sub(later(out.UpdatedTime.Time, watched)), 0)
		switch was {
		case flotillav1.ProviderReady, flotillav1.ProviderCordoned:
			s = s.Observe(true, dt, now, halfLife)
		case flotillav1.ProviderLost:
			s = s.Observe(false, dt, now, halfLife)
		}
	}
	s = s.Decay(now, halfLife)
	for _, l := range leases {
		for _, ev := range Unrecorded(l) {
			marks = append(marks, Mark{l, ev})
			key := string(l.UID) + "/" + ev
			if slices.Contains(out.Recorded, key) {
				continue // counted before a restart; only the mark was missing
			}
			out.Recorded = append(out.Recorded, key)
			s = count(&out, s, l, ev, now, halfLife)
		}
		if len(marks) >= MaxEventsPerUpdate {
			break // the rest next time
		}
	}
	if n := len(out.Recorded); n > maxRecorded {
		out.Recorded = slices.Clone(out.Recorded[n-maxRecorded:])
	}
	write(&out, s)
	return out, marks, s.Score(), reset
}

func count(rep *flotillav1.Reputation, s reputation.State, l *flotillav1.Lease, ev string, now time.Time, half time.Duration) reputation.State {
	switch o, _ := Outcome(l); {
	case ev == EventUnreachable:
		rep.EndpointsUnreachable++
		return s.Add(reputation.EndpointUnreachable, now, half)
	case ev == EventOutcome && o == reputation.LeaseCompleted:
		rep.LeasesCompleted++
		return s.Add(o, now, half)
	case ev == EventOutcome:
		rep.LeasesFailed++
		return s.Add(o, now, half)
	case l.Status.Verdict == flotillav1.VerdictAgreed:
		rep.VerificationsPassed++
		return s.Add(reputation.VerificationPassed, now, half)
	default:
		rep.VerificationsFailed++
		return s.Add(reputation.VerificationFailed, now, half)
	}
}

// state reads the evidence kept in status.
func state(rep *flotillav1.Reputation) (reputation.State, error) {
	var s reputation.State
	for _, f := range []struct {
		in  flotillav1.Weight
		out *float64
	}{{rep.Positive, &s.Positive}, {rep.Negative, &s.Negative}} {
		if f.in == "" {
			continue
		}
		m, err := reputation.ParseMilli(string(f.in))
		if err != nil {
			return s, fmt.Errorf("reputation evidence %q: %w", f.in, err)
		}
		*f.out = float64(m) / 1000
	}
	s.UpSeconds, s.DownSeconds = float64(rep.UpSeconds), float64(rep.DownSeconds)
	if rep.UpdatedTime != nil {
		s.At = rep.UpdatedTime.Time
	}
	return s, nil
}

// write stores the evidence and the score, rounded to what status keeps;
// rounding loses at most a thousandth of an event per write, far less than
// the decay between two.
func write(rep *flotillav1.Reputation, s reputation.State) {
	rep.Positive = flotillav1.Weight(reputation.FormatMilli(reputation.Milli(s.Positive)))
	rep.Negative = flotillav1.Weight(reputation.FormatMilli(reputation.Milli(s.Negative)))
	rep.UpSeconds, rep.DownSeconds = int64(s.UpSeconds+0.5), int64(s.DownSeconds+0.5)
	rep.Score = flotillav1.Score(reputation.FormatMilli(reputation.Milli(s.Score())))
	rep.Uptime = ""
	if u, ok := s.Uptime(); ok {
		rep.Uptime = flotillav1.Score(reputation.FormatMilli(reputation.Milli(u)))
	}
	rep.UpdatedTime = &metav1.Time{Time: s.At}
}

// Copy states shown in a Workload's verification status.
const (
	CopyRunning  = "Running"
	CopyReported = "Reported"
	CopyFailed   = "Failed"
	CopyReplaced = "Replaced"
)

// Verified reports a Workload run as redundant copies with a quorum.
func Verified(w *flotillav1.Workload) bool {
	return w.Spec.Class == flotillav1.ClassBatch && w.Spec.Verification != nil
}

func policy(w *flotillav1.Workload) quorum.Policy {
	v := w.Spec.Verification
	p := quorum.Policy{Redundancy: int(v.Redundancy), Quorum: int(v.Quorum), MaxExtra: 2}
	if v.MaxExtraCopies != nil {
		p.MaxExtra = int(*v.MaxExtraCopies)
	}
	return p
}

// Owner is the owner a Lease was placed with; Leases made before the
// label existed fall back to their provider, which is at least as strict.
func Owner(l *flotillav1.Lease) string {
	if o := l.Labels[flotillav1.LabelOwner]; o != "" {
		return o
	}
	return "provider:" + l.Spec.ProviderRef.Name
}

// copyState classifies a Lease of a verified Workload. A copy lost with its
// provider is Replaced: the scheduler runs another in its place, and it
// takes no part in the vote.
func copyState(l *flotillav1.Lease) string {
	if l.HoldsCapacity() {
		return CopyRunning
	}
	switch o := l.Status.Outcome; {
	case o == flotillav1.OutcomeCompleted:
		return CopyReported
	case o.Replaced():
		return CopyReplaced
	default:
		return CopyFailed
	}
}

// maxResults bounds status.verification.results.
const maxResults = 18

// Verify runs the quorum rules over a verified Workload's Leases, in the
// order they were placed, and returns the decision and each copy's result.
func Verify(w *flotillav1.Workload, leases []*flotillav1.Lease) (quorum.Decision, []flotillav1.CopyResult) {
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
		c := quorum.Copy{Lease: l.Name, Owner: Owner(l), Digest: l.Status.Digest}
		switch state {
		case CopyReplaced:
			continue
		case CopyRunning:
			c.State = quorum.Running
		case CopyReported:
			c.State = quorum.Reported
			if rc := l.Ended(); rc != nil {
				c.ReportedAt = rc.LastTransitionTime.Time
			}
		default:
			c.State = quorum.Failed
		}
		copies = append(copies, c)
	}
	d := quorum.Decide(policy(w), copies, w.Status.VerifiedDigest)
	for i := range results {
		results[i].Verdict = flotillav1.Verdict(d.Verdicts[results[i].Lease])
	}
	if len(results) > maxResults {
		results = results[len(results)-maxResults:]
	}
	return d, results
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
