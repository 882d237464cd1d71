package controllers

import (
	"fmt"
	"time"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/market"
)

// Scheduling reasons of Workloads the scheduler keeps off the market.
const (
	ReasonNoAccount             = "NoAccount"
	ReasonSettlementUnavailable = "SettlementUnavailable"
	ReasonLeaseCreateFailed     = "LeaseCreateFailed"
	ReasonNameTooLong           = "NameTooLong"
)

// gate keeps off the market the Workloads that may not be placed now, with
// the reason in their status: those of a namespace without an Account
// (unless the hub runs them free), of an accounted namespace while the bank
// cannot settle, those whose last Lease creation failed (until their
// back-off ends), and those whose names are too long for what is derived
// from them. It caps the priority of the rest at their Account's
// maxPriority.
func (s *Scheduler) gate(snap *market.Snapshot, states map[string]*workloadState, accounts []flotillav1.Account, now time.Time) {
	maxPriority := map[string]int32{}
	for i := range accounts {
		a := &accounts[i]
		if a.Name != flotillav1.AccountName {
			continue
		}
		maxPriority[a.Namespace] = 0
		if a.Spec.MaxPriority != nil {
			maxPriority[a.Namespace] = *a.Spec.MaxPriority
		}
	}
	settlement := ""
	if s.Settlement != nil {
		settlement = s.Settlement()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := snap.Workloads[:0]
	for _, w := range snap.Workloads {
		st := states[w.Key]
		limit, accounted := maxPriority[w.Namespace]
		code, msg := "", ""
		switch f, failing := s.failing[w.Key]; {
		case len(st.workload.Name) > flotillav1.MaxWorkloadName:
			code, msg = ReasonNameTooLong, fmt.Sprintf("metadata.name has %d characters, more than the %d the names derived from it allow",
				len(st.workload.Name), flotillav1.MaxWorkloadName)
		case !accounted && !s.AllowUnaccounted:
			code, msg = ReasonNoAccount, fmt.Sprintf("namespace %s has no Account named %s; the hub administrator grants one", w.Namespace, flotillav1.AccountName)
		case accounted && settlement != "":
			code, msg = ReasonSettlementUnavailable, "the hub cannot settle payments now, so no new replicas are placed: "+settlement
		case failing && now.Before(f.until):
			code, msg = ReasonLeaseCreateFailed, fmt.Sprintf("creating a Lease failed %d times in a row, retrying in %s: %s",
				f.n, f.until.Sub(now).Round(time.Second), f.err)
		}
		if code != "" {
			st.blocked = &market.Unplaced{Pending: w.Pending, Reasons: []market.Reason{{Code: code, Count: 1, Message: msg}}}
			continue
		}
		if accounted {
			w.Priority = min(w.Priority, limit)
		} else {
			w.Priority = min(w.Priority, 0)
		}
		kept = append(kept, w)
	}
	snap.Workloads = kept
	for key := range s.failing {
		if states[key] == nil {
			delete(s.failing, key)
		}
	}
}

func (s *Scheduler) createFailed(key string, err error, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.failing[key]
	f.n++
	f.until, f.err = now.Add(createBackoff(f.n)), bound.Text(err.Error(), 300)
	s.failing[key] = f
	// Another cycle now gives what this Workload was assigned to others;
	// none comes by itself when its back-off ends.
	s.Trigger()
	time.AfterFunc(createBackoff(f.n), s.Trigger)
}

func (s *Scheduler) createSucceeded(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.failing, key)
}
