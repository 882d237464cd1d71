// Package placement is the hub's match-and-place flow: from one snapshot of
// the hub's objects it plans which Leases to create, shrink and remove
// (Plan), and what a Workload's status says about its placement
// (WorkloadStatus). The matching itself is internal/market's. Pure: the
// scheduling loop and the Workload controller gather the objects and carry
// out what it decides.
//
// Why nothing is double-booked: capacity comes from the Leases that hold
// it, never from Offer status; the loop adds the Leases it created but the
// cache does not show yet; Lease names derive from the Workload's UID, the
// Offer, the epoch and a sequence number, so a create whose reply was lost
// is retried under the same name and answered AlreadyExists.
package placement

import (
	"cmp"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/market"
)

// MaxProgressFailures is how many Leases of one generation may miss their
// progress deadline before the Workload is no longer placed: a template
// that cannot run must not hop from provider to provider forever.
const MaxProgressFailures = 3

// Input is a scheduling cycle's view of the hub.
type Input struct {
	Now       time.Time
	Providers []flotillav1.Provider
	Offers    []flotillav1.Offer
	Workloads []flotillav1.Workload
	// Leases, from the cache and those created but not in it yet.
	Leases   []*flotillav1.Lease
	Accounts []flotillav1.Account
	// LeaseTokens is how many new Leases each provider may take now (its
	// rate limit); a provider not listed takes any number.
	LeaseTokens map[string]int32
	// Failing are Workloads whose last Lease creation failed, by key.
	Failing map[string]Failure
	// Settlement says why the bank cannot settle; "" when it can.
	Settlement string
	// AllowUnaccounted places Workloads of namespaces without an Account.
	AllowUnaccounted bool
	// Silent are Ready providers not heard from for most of their grace
	// period: they keep their replicas but take no new ones.
	Silent map[string]bool
}

// Failure is a Workload's run of failed Lease creations.
type Failure struct {
	N     int
	Until time.Time
	Err   string
}

// Intents are what a cycle does, in this order: remove and shrink Leases
// beyond what Workloads want, create the new ones, remove the drained.
type Intents struct {
	ScaleDown []Change
	Create    []Creation
	Drain     []Change
	// Unplaced says, per Workload key, what its pending replicas wait for.
	Unplaced map[string]market.Unplaced
	// Throttled: a Ready provider had no rate token left this cycle.
	Throttled []string
	Skipped   []Skip
}

// Change removes a Lease, or shrinks it to Replicas when that is not 0.
type Change struct {
	Lease    *flotillav1.Lease
	Replicas int32
	Event    string
}

// Creation is a new Lease for a Workload (its key), ready to create.
type Creation struct {
	Workload string
	Lease    *flotillav1.Lease
	Event    string
}

// Plan decides one scheduling cycle.
func Plan(in Input) Intents {
	snap, states, skips := build(&in)
	out := Intents{Skipped: skips}
	gate(snap, states, &in)
	out.ScaleDown = scaleDown(states)
	out.Throttled = limitLeases(snap, in.LeaseTokens)
	capLeases(snap, in.Providers, in.Leases)
	res := market.Match(snap)
	for k, st := range states {
		if st.blocked != nil {
			res.Unplaced[k] = *st.blocked
		}
	}
	out.Unplaced = res.Unplaced
	out.Create = creations(res.Assignments, states, in.Offers, in.Providers)
	out.Drain = drains(states)
	return out
}

// gate keeps off the market the Workloads that may not be placed now, with
// the reason: a name too long for what is derived from it, a namespace
// without an Account (unless the hub runs them free), an accounted
// namespace while the bank cannot settle, a Workload whose last Lease
// creation failed, until its back-off ends. It caps the priority of the
// rest at their Account's maxPriority.
func gate(snap *market.Snapshot, states map[string]*workloadState, in *Input) {
	maxPriority := map[string]int32{}
	for i := range in.Accounts {
		a := &in.Accounts[i]
		if a.Name == flotillav1.AccountName {
			maxPriority[a.Namespace] = ptr.Deref(a.Spec.MaxPriority, 0)
		}
	}
	kept := snap.Workloads[:0]
	for _, w := range snap.Workloads {
		st := states[w.Key]
		limit, accounted := maxPriority[w.Namespace]
		code, msg := "", ""
		switch f, failing := in.Failing[w.Key]; {
		case len(st.workload.Name) > flotillav1.MaxWorkloadName:
			code, msg = flotillav1.WorkloadReasonNameTooLong, fmt.Sprintf("metadata.name has %d characters, more than the %d the names derived from it allow",
				len(st.workload.Name), flotillav1.MaxWorkloadName)
		case !accounted && !in.AllowUnaccounted:
			code, msg = flotillav1.WorkloadReasonNoAccount, fmt.Sprintf("namespace %s has no Account named %s; the hub administrator grants one",
				w.Namespace, flotillav1.AccountName)
		case accounted && in.Settlement != "":
			code, msg = flotillav1.WorkloadReasonSettlementUnavailable, "the hub cannot settle payments now, so no new replicas are placed: "+in.Settlement
		case failing && in.Now.Before(f.Until):
			code, msg = flotillav1.WorkloadReasonLeaseCreateFailed, fmt.Sprintf("creating a Lease failed %d times in a row, retrying at %s: %s",
				f.N, f.Until.UTC().Format(time.RFC3339), f.Err)
		}
		if code != "" {
			st.blocked = &market.Unplaced{Pending: w.Pending, Reasons: []market.Reason{{Code: code, Count: 1, Message: msg}}}
			continue
		}
		if !accounted {
			limit = 0
		}
		w.Priority = min(w.Priority, limit)
		kept = append(kept, w)
	}
	snap.Workloads = kept
}

// limitLeases tells the market how many new Leases each provider may still
// take, and returns the Ready providers that had none left.
func limitLeases(snap *market.Snapshot, tokens map[string]int32) []string {
	var throttled []string
	for i := range snap.Providers {
		p := &snap.Providers[i]
		n, limited := tokens[p.Name]
		if !limited {
			continue
		}
		p.LeaseLimit = ptr.To(n)
		if n <= 0 && p.Ready && !p.Cordoned && !p.Silent {
			throttled = append(throttled, p.Name)
		}
	}
	slices.Sort(throttled)
	return throttled
}

// capLeases tells the market how many more Leases each provider whose
// owner set spec.maxLeases may hold.
func capLeases(snap *market.Snapshot, providers []flotillav1.Provider, leases []*flotillav1.Lease) {
	limit := map[string]int32{}
	for i := range providers {
		if m := providers[i].Spec.MaxLeases; m > 0 {
			limit[providers[i].Name] = m
		}
	}
	if len(limit) == 0 {
		return
	}
	live := map[string]int32{}
	for _, l := range leases {
		if l.HoldsCapacity() {
			live[l.Spec.ProviderRef.Name]++
		}
	}
	for i := range snap.Providers {
		p := &snap.Providers[i]
		if m, ok := limit[p.Name]; ok {
			p.LeaseRoom = ptr.To(max(0, m-live[p.Name]))
		}
	}
}

// scaleDown removes replicas beyond a Workload's desired count, newest
// Leases first, so that the capacity returns to the market.
func scaleDown(states map[string]*workloadState) []Change {
	var out []Change
	for _, k := range sortedKeys(states) {
		st := states[k]
		surplus := st.leased - st.desired
		if st.workload.DeletionTimestamp != nil || surplus <= 0 {
			continue
		}
		live := slices.DeleteFunc(slices.Clone(st.leases), func(l *flotillav1.Lease) bool { return l.DeletionTimestamp != nil })
		slices.SortFunc(live, func(a, b *flotillav1.Lease) int {
			return cmp.Or(b.CreationTimestamp.Compare(a.CreationTimestamp.Time), strings.Compare(b.Name, a.Name))
		})
		for _, l := range live {
			if surplus <= 0 {
				break
			}
			if l.Spec.Replicas <= surplus {
				surplus -= l.Spec.Replicas
				out = append(out, Change{Lease: l, Event: fmt.Sprintf("Closed lease %s (%d replicas on provider %s)",
					l.Name, l.Spec.Replicas, l.Spec.ProviderRef.Name)})
				continue
			}
			n := l.Spec.Replicas - surplus
			out = append(out, Change{Lease: l, Replicas: n, Event: fmt.Sprintf("Lease %s on provider %s now holds %d replicas",
				l.Name, l.Spec.ProviderRef.Name, n)})
			surplus = 0
		}
	}
	return out
}

// drains removes the Leases on cordoned or deregistering providers of each
// Workload whose other Leases already run its replicas ready.
func drains(states map[string]*workloadState) []Change {
	var out []Change
	for _, k := range sortedKeys(states) {
		st := states[k]
		if len(st.draining) == 0 || st.workload.DeletionTimestamp != nil {
			continue
		}
		var readyElsewhere int32
		for _, l := range st.leases {
			if l.DeletionTimestamp == nil && !slices.Contains(st.draining, l) && l.Status.Phase == flotillav1.LeaseActive {
				readyElsewhere += min(l.Status.ReadyReplicas, l.Spec.Replicas)
			}
		}
		if readyElsewhere < st.desired {
			continue
		}
		for _, l := range st.draining {
			out = append(out, Change{Lease: l, Event: fmt.Sprintf("Closed lease %s on provider %s: its %d replicas run ready elsewhere",
				l.Name, l.Spec.ProviderRef.Name, l.Spec.Replicas)})
		}
	}
	return out
}

// creations turns the market's assignments into Leases, with the Offer's
// unit prices and the price per replica-hour locked in, the Workload's
// epoch, and names no Lease of the Workload has taken.
func creations(assignments []market.Assignment, states map[string]*workloadState, offers []flotillav1.Offer,
	providers []flotillav1.Provider) []Creation {
	offerByKey := make(map[string]*flotillav1.Offer, len(offers))
	for i := range offers {
		offerByKey[key(offers[i].Namespace, offers[i].Name)] = &offers[i]
	}
	owners := make(map[string]string, len(providers))
	for i := range providers {
		owners[providers[i].Name] = providers[i].Spec.Owner
	}
	taken := map[string]map[string]bool{}
	var out []Creation
	for _, a := range assignments {
		st, offer := states[a.Workload], offerByKey[a.Offer]
		if st == nil || offer == nil {
			continue
		}
		if taken[a.Workload] == nil {
			taken[a.Workload] = map[string]bool{}
			for _, l := range st.all {
				taken[a.Workload][l.Name] = true
			}
		}
		name := leaseName(st, a.Offer, taken[a.Workload])
		taken[a.Workload][name] = true
		l := newLease(st, a, offer, owners[a.Provider], name)
		out = append(out, Creation{Workload: a.Workload, Lease: l,
			Event: fmt.Sprintf("Scheduled %d replicas on provider %s at %s credits per replica-hour (lease %s)",
				a.Replicas, a.Provider, a.PricePerReplicaHour, name)})
	}
	return out
}

// leaseName is deterministic in the Workload's UID, the Offer, the epoch and
// the first sequence number not taken by another of its Leases.
func leaseName(st *workloadState, offer string, taken map[string]bool) string {
	base := st.workload.Name
	if len(base) > 200 {
		base = base[:200]
	}
	for seq := 0; ; seq++ {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d/%d", st.workload.UID, offer, st.epoch, seq))
		name := base + "-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:5]))
		if !taken[name] {
			return name
		}
	}
}

func newLease(st *workloadState, a market.Assignment, offer *flotillav1.Offer, owner, name string) *flotillav1.Lease {
	w := st.workload
	req := market.PodRequest(&w.Spec.Template.Spec)
	// The Offer may be the cache's own: the Lease gets its own prices.
	prices := maps.Clone(offer.Spec.Prices)
	if prices == nil {
		prices = flotillav1.PriceList{}
	}
	return &flotillav1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: w.Namespace,
			Labels: map[string]string{
				flotillav1.LabelWorkload: w.Name,
				flotillav1.LabelProvider: a.Provider,
				flotillav1.LabelOwner:    owner,
			},
			Annotations: map[string]string{flotillav1.AnnotationWorkloadGeneration: strconv.FormatInt(w.Generation, 10)},
			// Set at creation, which saves the Lease controller a write
			// before it can act.
			Finalizers: []string{flotillav1.FinalizerProviderCleanup, flotillav1.FinalizerSettlement},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: flotillav1.GroupVersion.String(), Kind: "Workload",
				Name: w.Name, UID: w.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Spec: flotillav1.LeaseSpec{
			WorkloadRef:         flotillav1.LocalObjectReference{Name: w.Name},
			ProviderRef:         flotillav1.ProviderReference{Name: a.Provider},
			OfferRef:            flotillav1.ObjectReference{Namespace: offer.Namespace, Name: offer.Name},
			Class:               w.Spec.Class,
			Replicas:            a.Replicas,
			ResourcesPerReplica: req.List(),
			Prices:              prices,
			PricePerReplicaHour: flotillav1.Amount(a.PricePerReplicaHour.String()),
			Epoch:               st.epoch,
		},
	}
}

func sortedKeys(m map[string]*workloadState) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
