package placement

import (
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
	"github.com/flotilla-dev/flotilla/internal/trust"
)

// identityKeys are the attributes only a Provider's recorded identity sets.
var identityKeys = []string{"owner", "region", "zone"}

// neutralReputation is what a provider without a measured score gets.
const neutralReputation = 500

// Skip is an object left out of the market, with why.
type Skip struct {
	Kind, Key, Reason string
}

// workloadState is what a cycle knows of one Workload.
type workloadState struct {
	workload *flotillav1.Workload
	leases   []*flotillav1.Lease // holding capacity
	all      []*flotillav1.Lease // every one, closed too
	leased   int32               // replicas on Leases holding capacity, not being deleted
	desired  int32               // replicas (verified: copies) wanted in all
	epoch    int64               // for new Leases
	placed   map[string]int32
	// draining Leases are on cordoned or deregistering providers.
	draining []*flotillav1.Lease

	failedOverEpoch int64
	// progressFailures counts Leases of the current generation closed
	// because their replicas never got ready.
	progressFailures int
	// refused maps providers whose agents refused a Lease of the current
	// generation within RefusalHold to the reason.
	refused map[string]string
	// blocked says why it gets no new replicas.
	blocked *market.Unplaced
}

// snapshotter turns hub objects into the market's input. Offer capacity is
// derived from the Leases holding it, never from Offer status, so a stale
// status cannot cause double-booking.
type snapshotter struct {
	snap     *market.Snapshot
	states   map[string]*workloadState
	skips    []Skip
	byName   map[string]*flotillav1.Provider
	draining map[string]bool
	used     map[string]market.Vector
}

// build returns the market's snapshot and the workload states, keyed like
// the market's workloads.
func build(in *Input) (*market.Snapshot, map[string]*workloadState, []Skip) {
	b := &snapshotter{snap: &market.Snapshot{Now: in.Now}, states: map[string]*workloadState{},
		byName: map[string]*flotillav1.Provider{}, draining: map[string]bool{}, used: map[string]market.Vector{}}
	b.addProviders(in.Providers, in.Silent)
	for i := range in.Workloads {
		w := &in.Workloads[i]
		b.states[key(w.Namespace, w.Name)] = &workloadState{workload: w, placed: map[string]int32{}}
	}
	for _, l := range in.Leases {
		b.addLease(l)
	}
	for _, st := range b.states {
		desire(st)
	}
	b.addOffers(in.Offers)
	for k, st := range b.states {
		b.addWorkload(k, st)
	}
	return b.snap, b.states, b.skips
}

func (b *snapshotter) addProviders(providers []flotillav1.Provider, silent map[string]bool) {
	for i := range providers {
		p := &providers[i]
		b.byName[p.Name] = p
		b.draining[p.Name] = p.Spec.Unschedulable || p.DeletionTimestamp != nil
		mp := market.Provider{
			Name:       p.Name,
			Owner:      p.Spec.Owner,
			Region:     p.Spec.Region,
			Ready:      p.Status.Phase == flotillav1.ProviderReady && p.DeletionTimestamp == nil,
			Cordoned:   p.Spec.Unschedulable,
			Silent:     silent[p.Name],
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
		b.snap.Providers = append(b.snap.Providers, mp)
	}
}

func (b *snapshotter) addLease(l *flotillav1.Lease) {
	st := b.states[key(l.Namespace, l.Spec.WorkloadRef.Name)]
	if st != nil {
		st.all = append(st.all, l)
		st.epoch = max(st.epoch, l.Spec.Epoch)
		if l.Status.Phase == flotillav1.LeaseClosed && l.Status.Outcome.Replaced() {
			st.failedOverEpoch = max(st.failedOverEpoch, l.Spec.Epoch)
		}
		sameGen := l.Annotations[flotillav1.AnnotationWorkloadGeneration] == strconv.FormatInt(st.workload.Generation, 10)
		if l.Status.Outcome == flotillav1.OutcomeProgressDeadlineExceeded && sameGen {
			st.progressFailures++
		}
		if c := l.Ended(); l.Status.Outcome == flotillav1.OutcomeRefused && sameGen && c != nil && b.snap.Now.Sub(c.LastTransitionTime.Time) < RefusalHold {
			if st.refused == nil {
				st.refused = map[string]string{}
			}
			st.refused[l.Spec.ProviderRef.Name] = refusal(c.Message)
		}
	}
	if !l.HoldsCapacity() {
		// A finished Batch copy is done, not to be run again.
		if st != nil && l.Status.Outcome.Finished() {
			st.leased += l.Spec.Replicas
		}
		return
	}
	ok := key(l.Spec.OfferRef.Namespace, l.Spec.OfferRef.Name)
	u := b.used[ok]
	per := market.FromList(l.Spec.ResourcesPerReplica)
	per[market.Pods] = max(per[market.Pods], 1)
	for r := range u {
		u[r] += per[r] * int64(l.Spec.Replicas)
	}
	b.used[ok] = u
	if st == nil {
		return
	}
	st.leases = append(st.leases, l)
	switch {
	case l.DeletionTimestamp != nil:
	case b.draining[l.Spec.ProviderRef.Name] && l.Spec.Class != flotillav1.ClassBatch:
		// Replaced elsewhere first, closed once the replacements are
		// ready; Batch copies run to completion instead.
		st.draining = append(st.draining, l)
	default:
		st.leased += l.Spec.Replicas
		st.placed[l.Spec.ProviderRef.Name] += l.Spec.Replicas
	}
}

// desire sets how many replicas a Workload wants and the epoch of its new
// Leases.
func desire(st *workloadState) {
	st.desired = st.workload.Spec.Replicas
	if trust.Verified(st.workload) {
		// Every copy, finished or replaced, keeps its owner from running
		// another: copies must come from distinct owners.
		d, _ := trust.Verify(st.workload, st.all)
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

func (b *snapshotter) addOffers(offers []flotillav1.Offer) {
	for i := range offers {
		o := &offers[i]
		k := key(o.Namespace, o.Name)
		// An offer may only sell capacity of the provider whose namespace it
		// lives in; anything else is a spoofing attempt or a mistake.
		if o.Namespace != flotillav1.ProviderNamespace(o.Spec.ProviderRef.Name) {
			b.skips = append(b.skips, Skip{"Offer", k, "not in namespace " + flotillav1.ProviderNamespace(o.Spec.ProviderRef.Name)})
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
			b.skips = append(b.skips, Skip{"Offer", k, err.Error()})
			continue
		}
		avail := market.OfferCapacity(o.Spec.Resources)
		used := b.used[k]
		avail.Sub(&used, 1)
		b.snap.Offers = append(b.snap.Offers, market.Offer{
			Key: k, Provider: o.Spec.ProviderRef.Name, Available: avail, Prices: prices,
			Classes: classesOf(o.Spec.Classes), Attributes: b.attributes(o),
			ValidFrom: timeOf(o.Spec.ValidFrom), ValidUntil: timeOf(o.Spec.ValidUntil),
			Allows: allowsOf(&o.Spec, b.byName[o.Spec.ProviderRef.Name]),
		})
	}
}

// attributes of an Offer as the market matches them. Identity comes from
// the Provider as the administrator recorded it, last, so that neither an
// Offer nor the provider's own attributes can claim another owner, region
// or zone.
func (b *snapshotter) attributes(o *flotillav1.Offer) labels.Set {
	attrs := labels.Set{}
	maps.Copy(attrs, o.Spec.Attributes)
	p := b.byName[o.Spec.ProviderRef.Name]
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
	return attrs
}

// addWorkload puts a Workload with replicas to place on the market, or
// says why it cannot go there.
func (b *snapshotter) addWorkload(k string, st *workloadState) {
	w := st.workload
	pending := st.desired - st.leased
	if w.DeletionTimestamp != nil || pending <= 0 {
		return
	}
	block := func(code, msg string) {
		st.blocked = &market.Unplaced{Pending: pending, Reasons: []market.Reason{{Code: code, Count: 1, Message: msg}}}
	}
	if c := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadBudgetExhausted); c != nil && c.Status == metav1.ConditionTrue {
		// The bank stopped it: no new replicas until funds or budget allow.
		block(c.Reason, c.Message)
		return
	}
	if err := market.CheckRequest(&w.Spec.Template.Spec); err != nil {
		// Refused at admission; one written before that rule gets no
		// capacity until it is fixed.
		block(flotillav1.WorkloadReasonInvalidTemplate, "spec.template."+err.Error())
		return
	}
	if n := st.progressFailures; n >= MaxProgressFailures {
		block(flotillav1.WorkloadReasonProgressDeadline, strconv.Itoa(n)+" leases of this generation did not get their replicas ready "+
			"within spec.progressDeadlineSeconds; fix the template (its image, probes or requests) to place it again")
		return
	}
	mw := market.Workload{
		Key: k, Namespace: w.Namespace, Class: classOf(w.Spec.Class), Pending: pending,
		Request: market.PodRequest(&w.Spec.Template.Spec), MaxPrice: -1,
		Priority: w.Spec.Priority, Created: w.CreationTimestamp.Time, Placed: st.placed,
		PreferredRegions: w.Spec.Placement.PreferredRegions, Needs: needsOf(w), Refused: st.refused,
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
	if trust.Verified(w) {
		mw.MaxPerOwner = 1
	}
	if pl.MinReputation != nil {
		mw.MinReputation = parseScore(*pl.MinReputation)
	}
	if pl.AttributeSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(pl.AttributeSelector)
		if err != nil {
			b.skips = append(b.skips, Skip{"Workload", k, "attribute selector: " + err.Error()})
			return
		}
		mw.Selector = sel
	}
	b.snap.Workloads = append(b.snap.Workloads, mw)
}

func key(namespace, name string) string { return namespace + "/" + name }

// RefusalHold is how long a provider whose agent refused a Workload's
// Lease gets none of its replicas: its free capacity may change, but
// offering the same replicas back at once would only be refused again.
const RefusalHold = 2 * time.Minute

// refusal is the agent's reason out of a refused Lease's Closed message
// ("provider p refused it: <reason> (<Code>); replicas placed elsewhere").
func refusal(msg string) string {
	_, after, ok := strings.Cut(msg, " refused it: ")
	if !ok {
		return msg
	}
	before, _, _ := strings.Cut(after, "; replicas placed elsewhere")
	return before
}

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

// needsOf is what one replica of w uses that its Offer must allow.
func needsOf(w *flotillav1.Workload) market.Needs {
	spec := &w.Spec.Template.Spec
	n := market.Needs{PriorityClass: spec.PriorityClassName, Egress: w.Spec.Network.Egress == flotillav1.EgressInternet}
	if e := w.Spec.Expose; e != nil {
		n.Expose = market.ExposeHTTP
		for _, p := range e.Ports {
			if p.Protocol != flotillav1.ExposeHTTP {
				n.Expose = market.ExposeTCP
			}
		}
	}
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
		if q, ok := claim.Resources.Requests[corev1.ResourceStorage]; ok && bytesOf(q) > 0 {
			need.Bytes = bytesOf(q)
		}
		n.Storage = append(n.Storage, need)
	}
	return n
}

// allowsOf is what an Offer's owner opted into. Exposure also needs
// endpoint ranges recorded on the Provider (p, nil when unknown): the hub
// checks no endpoint outside them, so without any nothing could be checked.
func allowsOf(o *flotillav1.OfferSpec, p *flotillav1.Provider) market.Features {
	f := market.Features{PriorityClasses: o.PriorityClasses, RuntimeClasses: o.RuntimeClasses, Egress: o.AllowEgress}
	if e := o.Exposure; e != nil && p != nil && len(p.Spec.EndpointRanges) > 0 {
		f.Expose = market.ExposeTCP
		if e.Type == flotillav1.ExposeIngress {
			f.Expose = market.ExposeHTTP
		}
	}
	for _, s := range o.Storage {
		if f.Storage == nil {
			f.Storage = map[string]int64{}
		}
		if b := bytesOf(s.MaxSize); b > 0 {
			f.Storage[s.ClassName] = b
		}
	}
	return f
}

// bytesOf is q in bytes, or 0 when it is not positive or too large.
func bytesOf(q resource.Quantity) int64 {
	if q.Sign() <= 0 || q.Cmp(*resource.NewQuantity(1<<62, resource.BinarySI)) >= 0 {
		return 0
	}
	return q.Value()
}
