package controllers

import (
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/market"
	"github.com/flotilla-dev/flotilla/internal/money"
)

// identityKeys are the attributes only a Provider's recorded identity sets.
var identityKeys = []string{"owner", "region", "zone"}

// maxProgressFailures is how many Leases of one generation may miss their
// progress deadline before the Workload is no longer placed: a template
// that cannot run must not hop from provider to provider forever.
const maxProgressFailures = 3

// Scheduling reasons the snapshot gives Workloads it keeps off the market.
const (
	ReasonInvalidTemplate = "InvalidTemplate"
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
			if l.Status.Outcome == flotillav1.OutcomeProgressDeadlineExceeded &&
				l.Annotations[flotillav1.AnnotationWorkloadGeneration] == strconv.FormatInt(st.workload.Generation, 10) {
				st.progressFailures++
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
		if err == nil {
			err = market.CheckOffer(o.Spec.Resources)
		}
		if err != nil {
			skips = append(skips, skipped{"Offer", key, err.Error()})
			continue
		}
		avail := market.OfferCapacity(o.Spec.Resources)
		avail.Sub(ptrTo(used[key]), 1)
		// Identity comes from the Provider as the administrator recorded it,
		// last, so that neither an Offer nor the provider's own attributes
		// can claim another owner, region or zone.
		attrs := labels.Set{}
		maps.Copy(attrs, o.Spec.Attributes)
		if p != nil {
			maps.Copy(attrs, p.Spec.Attributes)
		}
		for _, k := range identityKeys {
			delete(attrs, k)
		}
		if p != nil {
			setIf(attrs, "region", p.Spec.Region)
			setIf(attrs, "zone", p.Spec.Zone)
			setIf(attrs, "owner", p.Spec.Owner)
		}
		mo := market.Offer{
			Key: key, Provider: o.Spec.ProviderRef.Name, Available: avail, Prices: prices,
			Classes: classesOf(o.Spec.Classes), Attributes: attrs,
			ValidFrom: timeOf(o.Spec.ValidFrom), ValidUntil: timeOf(o.Spec.ValidUntil),
			Allows: allowsOf(&o.Spec),
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
		if err := market.CheckRequest(&w.Spec.Template.Spec); err != nil {
			// Refused at admission; one written before that rule gets no
			// capacity until it is fixed.
			st.blocked = &market.Unplaced{Pending: pending, Reasons: []market.Reason{{Code: ReasonInvalidTemplate, Count: 1,
				Message: "spec.template." + err.Error()}}}
			continue
		}
		if n := st.progressFailures; n >= maxProgressFailures {
			st.blocked = &market.Unplaced{Pending: pending, Reasons: []market.Reason{{Code: ReasonNoProgress, Count: 1,
				Message: fmt.Sprintf("%d leases of this generation did not get their replicas ready within spec.progressDeadlineSeconds; "+
					"fix the template (its image, probes or requests) to place it again", n)}}}
			continue
		}
		mw := market.Workload{
			Key: key, Namespace: w.Namespace, Class: classOf(w.Spec.Class), Pending: pending,
			Request: market.PodRequest(&w.Spec.Template.Spec), MaxPrice: -1,
			Priority: w.Spec.Priority, Created: w.CreationTimestamp.Time, Placed: st.placed,
			PreferredRegions: w.Spec.Placement.PreferredRegions, Needs: needsOf(w),
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
	// progressFailures counts Leases of the current generation closed
	// because their replicas never got ready.
	progressFailures int
	// blocked says why the bank keeps it from getting new replicas.
	blocked *market.Unplaced
}

// failedOver reports a Lease closed so that its replicas run elsewhere: its
// provider stayed Lost, or they never got ready.
func failedOver(l *flotillav1.Lease) bool {
	return l.Status.Phase == flotillav1.LeaseClosed && l.Status.Outcome.Replaced()
}

// finished reports a Batch Lease closed because its Job completed or failed.
func finished(l *flotillav1.Lease) bool {
	return l.Status.Phase == flotillav1.LeaseClosed && l.Status.Outcome.Finished()
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

// needsOf is what one replica of w uses that its Offer must allow.
func needsOf(w *flotillav1.Workload) market.Needs {
	spec := &w.Spec.Template.Spec
	n := market.Needs{PriorityClass: spec.PriorityClassName, Egress: w.Spec.Network.Egress == flotillav1.EgressInternet}
	if spec.RuntimeClassName != nil {
		n.RuntimeClass = *spec.RuntimeClassName
	}
	for _, v := range spec.Volumes {
		if v.Ephemeral == nil || v.Ephemeral.VolumeClaimTemplate == nil {
			continue
		}
		claim := &v.Ephemeral.VolumeClaimTemplate.Spec
		need := market.StorageNeed{Bytes: math.MaxInt64}
		if claim.StorageClassName != nil {
			need.Class = *claim.StorageClassName
		}
		if q, ok := claim.Resources.Requests[corev1.ResourceStorage]; ok && q.Sign() > 0 && q.Cmp(*resource.NewQuantity(1<<62, resource.BinarySI)) < 0 {
			need.Bytes = q.Value()
		}
		n.Storage = append(n.Storage, need)
	}
	return n
}

// allowsOf is what an Offer's owner opted into.
func allowsOf(o *flotillav1.OfferSpec) market.Features {
	f := market.Features{PriorityClasses: o.PriorityClasses, RuntimeClasses: o.RuntimeClasses, Egress: o.AllowEgress}
	for _, s := range o.Storage {
		if f.Storage == nil {
			f.Storage = map[string]int64{}
		}
		if s.MaxSize.Sign() > 0 && s.MaxSize.Cmp(*resource.NewQuantity(1<<62, resource.BinarySI)) < 0 {
			f.Storage[s.ClassName] = s.MaxSize.Value()
		}
	}
	return f
}
