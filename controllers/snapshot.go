package controllers

import (
	"maps"
	"strconv"
	"strings"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/market"
	"github.com/flotilla-dev/flotilla/internal/money"
)

// neutralReputation is what a provider without a measured score gets.
const neutralReputation = 500

// skipped is an object the snapshot left out, with why.
type skipped struct {
	kind, key, reason string
}

// buildSnapshot turns hub objects into the market's input. Offer capacity is
// derived from the live Leases, never from Offer status, so a stale status
// cannot cause double-booking. It returns the workload states the scheduler
// acts on, keyed like the market's workloads.
func buildSnapshot(now time.Time, providers []flotillav1.Provider, offers []flotillav1.Offer,
	workloads []flotillav1.Workload, leases []*flotillav1.Lease) (*market.Snapshot, map[string]*workloadState, []skipped) {
	s := &market.Snapshot{Now: now}
	var skips []skipped

	byName := map[string]*flotillav1.Provider{}
	draining := map[string]bool{}
	for i := range providers {
		p := &providers[i]
		byName[p.Name] = p
		draining[p.Name] = p.Spec.Unschedulable || p.DeletionTimestamp != nil
		mp := market.Provider{
			Name:       p.Name,
			Owner:      p.Spec.Owner,
			Region:     p.Spec.Region,
			Ready:      p.Status.Phase == flotillav1.ProviderReady && p.DeletionTimestamp == nil,
			Cordoned:   p.Spec.Unschedulable,
			Reputation: parseScore(p.Status.Reputation.Score),
		}
		if c := p.Status.Capacity; c.Free != nil {
			free := market.FromList(c.Free)
			free[market.Pods] = market.Unlimited
			if q, ok := c.Free["pods"]; ok {
				free[market.Pods] = q.Value()
			}
			mp.Free = &free
			if c.LargestFreeChunk != nil {
				chunk := market.FromList(c.LargestFreeChunk)
				chunk[market.Pods] = market.Unlimited
				mp.LargestChunk = &chunk
			}
		}
		s.Providers = append(s.Providers, mp)
	}

	used := map[string]market.Vector{}
	states := map[string]*workloadState{}
	for i := range workloads {
		w := &workloads[i]
		key := offerKey(w.Namespace, w.Name)
		states[key] = &workloadState{workload: w, placed: map[string]int32{}}
	}
	for _, l := range leases {
		if st := states[offerKey(l.Namespace, l.Spec.WorkloadRef.Name)]; st != nil {
			st.all = append(st.all, l)
			st.epoch = max(st.epoch, l.Spec.Epoch)
			if failedOver(l) {
				st.failedOverEpoch = max(st.failedOverEpoch, l.Spec.Epoch)
			}
		}
		if !leaseLive(l) {
			// A finished Batch copy is done, not to be run again.
			if st := states[offerKey(l.Namespace, l.Spec.WorkloadRef.Name)]; st != nil && finished(l) {
				st.leased += l.Spec.Replicas
			}
			continue
		}
		ok := offerKey(l.Spec.OfferRef.Namespace, l.Spec.OfferRef.Name)
		u := used[ok]
		per := market.FromList(l.Spec.ResourcesPerReplica)
		per[market.Pods] = max(per[market.Pods], 1)
		for r := range u {
			u[r] += per[r] * int64(l.Spec.Replicas)
		}
		used[ok] = u
		if st := states[offerKey(l.Namespace, l.Spec.WorkloadRef.Name)]; st != nil {
			st.leases = append(st.leases, l)
			switch {
			case l.DeletionTimestamp != nil:
			case draining[l.Spec.ProviderRef.Name] && l.Spec.Class != flotillav1.ClassBatch:
				// Replaced elsewhere first, closed once the replacements
				// are ready; Batch copies run to completion instead.
				st.draining = append(st.draining, l)
			default:
				st.leased += l.Spec.Replicas
				st.placed[l.Spec.ProviderRef.Name] += l.Spec.Replicas
			}
		}
	}
	for _, st := range states {
		st.desired = desiredReplicas(st.workload)
		if verified(st.workload) {
			// Every copy, finished or replaced, keeps its owner from
			// running another: copies must come from distinct owners.
			d, _ := decideVerification(st.workload, st.all)
			st.desired = int32(d.Copies)
			clear(st.placed)
			for _, l := range st.all {
				st.placed[l.Spec.ProviderRef.Name]++
			}
		}
		// Replacements of failed-over replicas get a higher epoch, so that
		// anything of the old one left on a returning provider is fenced.
		if st.failedOverEpoch > 0 && st.failedOverEpoch >= st.epoch {
			st.epoch = st.failedOverEpoch + 1
		}
		st.epoch = max(st.epoch, 1)
	}

	for i := range offers {
		o := &offers[i]
		key := offerKey(o.Namespace, o.Name)
		p := byName[o.Spec.ProviderRef.Name]
		// An offer may only sell capacity of the provider whose namespace it
		// lives in; anything else is a spoofing attempt or a mistake.
		if o.Namespace != flotillav1.ProviderNamespace(o.Spec.ProviderRef.Name) {
			skips = append(skips, skipped{"Offer", key, "not in namespace " + flotillav1.ProviderNamespace(o.Spec.ProviderRef.Name)})
			continue
		}
		if o.DeletionTimestamp != nil {
			continue
		}
		prices, err := market.Prices(o.Spec.Prices)
		if err != nil {
			skips = append(skips, skipped{"Offer", key, err.Error()})
			continue
		}
		avail := market.OfferCapacity(o.Spec.Resources)
		avail.Sub(ptrTo(used[key]), 1)
		attrs := labels.Set{}
		if p != nil {
			maps.Copy(attrs, p.Spec.Attributes)
			setIf(attrs, "region", p.Spec.Region)
			setIf(attrs, "zone", p.Spec.Zone)
			setIf(attrs, "owner", p.Spec.Owner)
		}
		maps.Copy(attrs, o.Spec.Attributes)
		mo := market.Offer{
			Key: key, Provider: o.Spec.ProviderRef.Name, Available: avail, Prices: prices,
			Classes: classesOf(o.Spec.Classes), Attributes: attrs,
			ValidFrom: timeOf(o.Spec.ValidFrom), ValidUntil: timeOf(o.Spec.ValidUntil),
		}
		s.Offers = append(s.Offers, mo)
	}

	for key, st := range states {
		w := st.workload
		if w.DeletionTimestamp != nil {
			continue
		}
		pending := st.desired - st.leased
		if pending <= 0 {
			continue
		}
		if c := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadBudgetExhausted); c != nil && c.Status == metav1.ConditionTrue {
			// The bank stopped it: no new replicas until funds or budget allow.
			st.blocked = &market.Unplaced{Pending: pending, Reasons: []market.Reason{{Code: c.Reason, Count: 1, Message: c.Message}}}
			continue
		}
		mw := market.Workload{
			Key: key, Namespace: w.Namespace, Class: classOf(w.Spec.Class), Pending: pending,
			Request: market.PodRequest(&w.Spec.Template.Spec), MaxPrice: -1,
			Priority: w.Spec.Priority, Created: w.CreationTimestamp.Time, Placed: st.placed,
			PreferredRegions: w.Spec.Placement.PreferredRegions,
		}
		pl := w.Spec.Placement
		if pl.MaxPricePerReplicaHour != nil {
			if m, err := money.Parse(string(*pl.MaxPricePerReplicaHour)); err == nil {
				mw.MaxPrice = m
			}
		}
		if pl.MaxReplicasPerProvider != nil {
			mw.MaxPerProvider = *pl.MaxReplicasPerProvider
		}
		if pl.MaxReplicasPerOwner != nil {
			mw.MaxPerOwner = *pl.MaxReplicasPerOwner
		}
		if verified(w) {
			mw.MaxPerOwner = 1
		}
		if pl.MinReputation != nil {
			mw.MinReputation = parseScore(*pl.MinReputation)
		}
		if pl.AttributeSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(pl.AttributeSelector)
			if err != nil {
				skips = append(skips, skipped{"Workload", key, "attribute selector: " + err.Error()})
				continue
			}
			mw.Selector = sel
		}
		s.Workloads = append(s.Workloads, mw)
	}
	return s, states, skips
}

// workloadState is what the scheduler knows of one Workload in a cycle.
type workloadState struct {
	workload *flotillav1.Workload
	leases   []*flotillav1.Lease // live ones
	all      []*flotillav1.Lease // every one, closed too
	leased   int32               // replicas on live Leases not being deleted
	desired  int32               // replicas (verified: copies) wanted in all
	epoch    int64               // for new Leases
	placed   map[string]int32
	// draining Leases are on cordoned or deregistering providers.
	draining []*flotillav1.Lease

	failedOverEpoch int64
	// blocked says why the bank keeps it from getting new replicas.
	blocked *market.Unplaced
}

// failedOver reports a Lease closed because its provider stayed Lost.
func failedOver(l *flotillav1.Lease) bool {
	if l.Status.Phase != flotillav1.LeaseClosed {
		return false
	}
	c := apimeta.FindStatusCondition(l.Status.Conditions, flotillav1.ConditionReady)
	return c != nil && c.Reason == ReasonFailedOver
}

// finished reports a Batch Lease closed because its Job completed or failed.
func finished(l *flotillav1.Lease) bool {
	if l.Status.Phase != flotillav1.LeaseClosed {
		return false
	}
	c := apimeta.FindStatusCondition(l.Status.Conditions, flotillav1.ConditionReady)
	return c != nil && (c.Reason == ReasonJobCompleted || c.Reason == ReasonJobFailed)
}

// desiredReplicas is how many replicas a Workload should have leased.
func desiredReplicas(w *flotillav1.Workload) int32 { return w.Spec.Replicas }

func parseScore(s flotillav1.Score) int32 {
	if s == "" {
		return neutralReputation
	}
	whole, frac, _ := strings.Cut(string(s), ".")
	frac = (frac + "000")[:3]
	w, err1 := strconv.Atoi(whole)
	f, err2 := strconv.Atoi(frac)
	if err1 != nil || err2 != nil {
		return neutralReputation
	}
	return int32(min(w*1000+f, 1000))
}

func classOf(c flotillav1.WorkloadClass) market.Classes {
	if c == flotillav1.ClassBatch {
		return market.ClassBatch
	}
	return market.ClassService
}

func classesOf(cs []flotillav1.WorkloadClass) market.Classes {
	if len(cs) == 0 {
		return market.ClassService | market.ClassBatch
	}
	var out market.Classes
	for _, c := range cs {
		out |= classOf(c)
	}
	return out
}

func timeOf(t *metav1.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.Time
}

func setIf(s labels.Set, k, v string) {
	if v != "" {
		s[k] = v
	}
}

func ptrTo[T any](v T) *T { return &v }
