package controllers

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/reputation"
	"github.com/flotilla-dev/flotilla/internal/trust"
)

// DefaultReputationRefresh is how often a provider's reputation is
// brought up to date when nothing happened but time passing. Any change
// of phase is written when it is seen, so the interval loses no uptime;
// it only sets how fresh the score is. At 30 s a thousand providers cost
// 33 status writes a second.
const DefaultReputationRefresh = 5 * time.Minute

// updateReputation folds into st the provider's time up or down and the
// evidence of its Leases not counted yet (internal/trust), and returns the
// marks to set on those Leases once st is written.
func (r *ProviderReconciler) updateReputation(ctx context.Context, p *flotillav1.Provider, st *flotillav1.ProviderStatus) ([]trust.Mark, error) {
	// Only Leases with something left to count: closed Leases are kept, and
	// a provider's would otherwise be walked at every probe.
	var list flotillav1.LeaseList
	if err := r.Client.List(ctx, &list, client.MatchingFields{indexLeaseReputationPending: p.Name}); err != nil {
		return nil, fmt.Errorf("listing leases of provider %s: %w", p.Name, err)
	}
	// Uptime accrues by the interval since the last update, so an update
	// with no event and no change of phase can wait: writing it at every
	// probe cost a status write per provider every few seconds.
	if len(list.Items) == 0 && st.Phase == p.Status.Phase && p.Status.Reputation.UpdatedTime != nil &&
		r.Now().Sub(p.Status.Reputation.UpdatedTime.Time) < cmp.Or(r.ReputationRefresh, DefaultReputationRefresh) {
		st.Reputation = p.Status.Reputation
		return nil, nil
	}
	leases := make([]*flotillav1.Lease, len(list.Items))
	for i := range list.Items {
		leases[i] = &list.Items[i]
	}
	half := r.ReputationHalfLife
	if half <= 0 {
		half = reputation.DefaultHalfLife
	}
	rep, marks, score, reset := trust.Update(st.Reputation, p.Status.Phase, leases, r.Now(), r.watchedSince(), half)
	if reset != nil {
		r.Recorder.Eventf(p, "Warning", "ReputationReset", "Resetting unreadable reputation evidence: %v", reset)
	}
	st.Reputation = rep
	metrics.Reputation(p.Name, score)
	return marks, nil
}

// markRecorded notes on each Lease that its provider's reputation counted
// the event, under the reputation's own field manager.
func (r *ProviderReconciler) markRecorded(ctx context.Context, marks []trust.Mark) error {
	for _, m := range marks {
		done := trust.Recorded(m.Lease)
		if slices.Contains(done, m.Event) {
			continue
		}
		ann := map[string]string{flotillav1.AnnotationReputationRecorded: strings.Join(append(done, m.Event), ",")}
		if err := applyMetadata(ctx, r.Client, m.Lease, nil, ann, ManagerReputation, m.Lease.ResourceVersion); client.IgnoreNotFound(err) != nil {
			if apierrors.IsConflict(err) {
				continue // the Lease changed: marked at the next probe
			}
			return fmt.Errorf("marking lease %s/%s: %w", m.Lease.Namespace, m.Lease.Name, err)
		}
	}
	return nil
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

// watchedSince is when this controller first looked at a provider, which
// it does as soon as it leads: uptime before then was not watched.
func (r *ProviderReconciler) watchedSince() time.Time {
	r.watchOnce.Do(func() { r.watching = r.Now() })
	return r.watching
}
