package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/reputation"
)

const (
	// maxReputationGap caps the time credited as up or down between two
	// updates: after a manager outage nobody watched the provider.
	maxReputationGap = time.Minute
	// maxEventsPerUpdate bounds the Lease events counted in one status write,
	// so that the recorded list always covers the last write's events.
	maxEventsPerUpdate = 32
	maxRecorded        = 64
)

// Lease events a provider's reputation counts.
const (
	eventOutcome = "outcome"
	eventVerdict = "verdict"
)

// leaseMark is a Lease event counted in the status just written, to mark on
// the Lease once that write succeeded.
type leaseMark struct {
	lease *flotillav1.Lease
	event string
}

// leaseOutcome is the reputation evidence of a Lease's end, if it has one:
// Batch completion, or a Lease that failed, failed over or never got its
// replicas ready. Service Leases that are scaled down or deleted end
// without an outcome; their providers' uptime speaks for them.
func leaseOutcome(l *flotillav1.Lease) (reputation.Outcome, bool) {
	switch l.Status.Outcome {
	case flotillav1.OutcomeCompleted:
		return reputation.LeaseCompleted, true
	case flotillav1.OutcomeFailed, flotillav1.OutcomeFailedOver, flotillav1.OutcomeProgressDeadlineExceeded:
		return reputation.LeaseFailed, true
	}
	return 0, false
}

// unrecorded lists the Lease's events that carry evidence and are not
// marked as counted yet.
func unrecorded(l *flotillav1.Lease) []string {
	done := recordedEvents(l)
	var out []string
	if _, ok := leaseOutcome(l); ok && !slices.Contains(done, eventOutcome) {
		out = append(out, eventOutcome)
	}
	if l.Status.Verdict != "" && !slices.Contains(done, eventVerdict) {
		out = append(out, eventVerdict)
	}
	return out
}

func recordedEvents(l *flotillav1.Lease) []string {
	v := l.Annotations[flotillav1.AnnotationReputationRecorded]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// updateReputation folds into st the provider's time up or down since the
// last update (in the phase it had, was) and the Lease events not counted
// yet. An event is counted exactly once: it goes into status.recorded in
// the same write as its evidence, and is marked on its Lease afterwards; a
// restart between the two finds it recorded and only marks it.
func (r *ProviderReconciler) updateReputation(ctx context.Context, p *flotillav1.Provider, st *flotillav1.ProviderStatus,
	was flotillav1.ProviderPhase, now time.Time) ([]leaseMark, error) {
	// Status keeps whole seconds; so do the observed intervals.
	now = now.Truncate(time.Second)
	rep := &st.Reputation
	s, err := reputationState(rep)
	if err != nil {
		// Unreadable evidence (edited by hand): start again from neutral
		// rather than fail every probe.
		r.Recorder.Eventf(p, "Warning", "ReputationReset", "Resetting unreadable reputation evidence: %v", err)
		*rep = flotillav1.Reputation{}
		s = reputation.State{}
	}
	half := r.halfLife()
	if rep.UpdatedTime != nil {
		dt := min(now.Sub(rep.UpdatedTime.Time), maxReputationGap)
		switch was {
		case flotillav1.ProviderReady, flotillav1.ProviderCordoned:
			s = s.Observe(true, dt, now, half)
		case flotillav1.ProviderLost:
			s = s.Observe(false, dt, now, half)
		}
	}
	s = s.Decay(now, half)

	// Only Leases with something left to count: closed Leases are kept, and
	// a provider's would otherwise be walked at every probe.
	var leases flotillav1.LeaseList
	if err := r.Client.List(ctx, &leases, client.MatchingFields{indexLeaseReputationPending: p.Name}); err != nil {
		return nil, fmt.Errorf("listing leases of provider %s: %w", p.Name, err)
	}
	var marks []leaseMark
	for i := range leases.Items {
		l := &leases.Items[i]
		for _, ev := range unrecorded(l) {
			marks = append(marks, leaseMark{l, ev})
			key := string(l.UID) + "/" + ev
			if slices.Contains(rep.Recorded, key) {
				continue // counted before a restart; only the mark was missing
			}
			rep.Recorded = append(rep.Recorded, key)
			switch o, _ := leaseOutcome(l); {
			case ev == eventOutcome && o == reputation.LeaseCompleted:
				s = s.Add(o, now, half)
				rep.LeasesCompleted++
			case ev == eventOutcome:
				s = s.Add(o, now, half)
				rep.LeasesFailed++
			case l.Status.Verdict == flotillav1.VerdictAgreed:
				s = s.Add(reputation.VerificationPassed, now, half)
				rep.VerificationsPassed++
			default:
				s = s.Add(reputation.VerificationFailed, now, half)
				rep.VerificationsFailed++
			}
		}
		if len(marks) >= maxEventsPerUpdate {
			break // the rest next time
		}
	}
	if n := len(rep.Recorded); n > maxRecorded {
		rep.Recorded = slices.Clone(rep.Recorded[n-maxRecorded:])
	}
	writeReputation(rep, s)
	metrics.Reputation(p.Name, s.Score())
	return marks, nil
}

func (r *ProviderReconciler) halfLife() time.Duration {
	if r.ReputationHalfLife > 0 {
		return r.ReputationHalfLife
	}
	return reputation.DefaultHalfLife
}

// markRecorded notes on each Lease that its provider's reputation counted
// the event.
func (r *ProviderReconciler) markRecorded(ctx context.Context, marks []leaseMark) error {
	for _, m := range marks {
		done := recordedEvents(m.lease)
		if slices.Contains(done, m.event) {
			continue
		}
		patch := client.MergeFrom(m.lease.DeepCopy())
		if m.lease.Annotations == nil {
			m.lease.Annotations = map[string]string{}
		}
		m.lease.Annotations[flotillav1.AnnotationReputationRecorded] = strings.Join(append(done, m.event), ",")
		if err := r.Client.Patch(ctx, m.lease, patch); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("marking lease %s/%s: %w", m.lease.Namespace, m.lease.Name, err)
		}
	}
	return nil
}

// reputationState reads the evidence kept in status.
func reputationState(rep *flotillav1.Reputation) (reputation.State, error) {
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
			return s, err
		}
		*f.out = float64(m) / 1000
	}
	s.UpSeconds, s.DownSeconds = float64(rep.UpSeconds), float64(rep.DownSeconds)
	if rep.UpdatedTime != nil {
		s.At = rep.UpdatedTime.Time
	}
	return s, nil
}

// writeReputation stores the evidence and the score, rounded to what
// status keeps; rounding loses at most a thousandth of an event per write,
// far less than the decay between two.
func writeReputation(rep *flotillav1.Reputation, s reputation.State) {
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

// leaseEvidenceChanged passes Lease updates that give its provider's
// reputation something to count: the Lease closing, or a verdict on its
// result.
var leaseEvidenceChanged = predicate.Funcs{
	CreateFunc: func(event.CreateEvent) bool { return false },
	DeleteFunc: func(event.DeleteEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*flotillav1.Lease)
		n, ok2 := e.ObjectNew.(*flotillav1.Lease)
		return ok1 && ok2 && (o.Status.Phase != n.Status.Phase && n.Status.Phase == flotillav1.LeaseClosed ||
			o.Status.Verdict != n.Status.Verdict)
	},
}
