package market

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"slices"

	"github.com/flotilla-dev/flotilla/internal/money"
)

// unpriceable marks an offer whose price for a request does not fit int64
// (PricePerReplicaHour's !ok); prepare leaves it out of that request's
// ranking, so no replica is placed there.
const unpriceable money.Micro = math.MaxInt64

// The ranking of feasible offers for a replica, best first. It is
// lexicographic: each criterion only breaks ties of the ones above it.
//
//  1. price per replica-hour, cheapest first;
//  2. provider reputation, highest first;
//  3. region preference: the workload's preferredRegions in order, then the rest;
//  4. balance: the provider running the fewest replicas of this workload;
//  5. turn: offer key order, starting after the offer that took the last
//     replica of this ranking from the run of tied offers, and for the
//     cycle's first at a point drawn from the snapshot's time, so that a
//     market of equal offers spreads its workloads over all of them rather
//     than putting every workload on the first few, whether they come in
//     one cycle or one a cycle (same input, same result).
//
// Criteria 1-3 are fixed for a workload and an offer during a cycle; 4
// changes as replicas are placed and is applied among offers tied on 1-3;
// 5 is fixed for a workload once it reaches a run of ties.
type rank struct {
	price      money.Micro
	reputation int32
	region     int32
	order      int32 // offer's position in key order
	at         int32 // its own position in the ranking
}

func (a rank) compare(b rank) int {
	if c := cmp.Compare(a.price, b.price); c != 0 {
		return c
	}
	if c := cmp.Compare(b.reputation, a.reputation); c != 0 {
		return c
	}
	if c := cmp.Compare(a.region, b.region); c != 0 {
		return c
	}
	return cmp.Compare(a.order, b.order)
}

func (a rank) tied(b rank) bool {
	return a.price == b.price && a.reputation == b.reputation && a.region == b.region
}

// ranking is the order of the eligible offers for one request shape and
// region preference, shared by the workloads that have both.
type ranking struct {
	ranks []rank
	// runStart[i] and runEnd[i] bound the run of offers tied with ranks[i].
	runStart, runEnd []int32
	// turn[a] is where the run starting at a is next entered, relative to
	// a: just after the offer that took its last replica.
	turn []int32
	// next skips offers too small for the request, which stay too small
	// for every workload of this ranking as capacity only shrinks: next[i]
	// leads to the first entry at or after i not known to be too small
	// (a disjoint-set forest with path halving; next[len] is the end).
	next []int32
}

func newRanking(ranks []rank) *ranking {
	r := &ranking{ranks: ranks, runStart: make([]int32, len(ranks)), runEnd: make([]int32, len(ranks)),
		turn: make([]int32, len(ranks)), next: make([]int32, len(ranks)+1)}
	for i := len(ranks) - 1; i >= 0; i-- {
		ranks[i].at = int32(i)
		r.runEnd[i] = int32(i + 1)
		if i+1 < len(ranks) && ranks[i+1].tied(ranks[i]) {
			r.runEnd[i] = r.runEnd[i+1]
		}
	}
	for i := range ranks {
		if i > 0 && ranks[i-1].tied(ranks[i]) {
			r.runStart[i] = r.runStart[i-1]
		} else {
			r.runStart[i] = int32(i)
		}
	}
	for i := range r.next {
		r.next[i] = int32(i)
	}
	return r
}

// startAt sets where each run of ties is first entered: at point, wrapped
// to the run. The turns alone start afresh every cycle, and Workloads that
// arrived one a cycle all went to the first offers of a run.
func (r *ranking) startAt(point uint32) {
	for a := range r.ranks {
		if int(r.runStart[a]) == a {
			r.turn[a] = int32(point % uint32(r.runEnd[a]-int32(a)))
		}
	}
}

// live returns the first entry at or after i not known to be too small.
func (r *ranking) live(i int) int {
	for int(r.next[i]) != i {
		r.next[i] = r.next[r.next[i]]
		i = int(r.next[i])
	}
	return i
}

// tooSmall records that entry i cannot take a replica of the request.
func (r *ranking) tooSmall(i int) { r.next[i] = int32(i + 1) }

// took records that the offer at position i took a replica: its run is
// next entered just after it.
func (r *ranking) took(i int32) {
	a := r.runStart[i]
	r.turn[a] = (i - a + 1) % (r.runEnd[i] - a)
}

type providerState struct {
	*Provider
	free       *Vector
	chunks     []Vector
	leasesLeft int32 // new Leases it may still take this cycle; negative means no limit
	roomLeft   int32 // Leases it may still hold; negative means no maximum
}

type offerState struct {
	*Offer
	provider  *providerState // nil when the provider is not in the snapshot
	available Vector
	validNow  bool
}

type workloadState struct {
	*Workload
	pending    int32
	perProv    map[string]int32
	perOwner   map[string]int32
	assignment map[int32]int // offer index -> index in Result.Assignments

	ranking *ranking // nil until the workload is first served
	prices  []money.Micro
	matches []bool // selector verdict per offer; nil without a selector
	// The run of tied offers being looked at, [runStart, runEnd), is
	// scanned from runStart+turn to runEnd, then (wrapped) from runStart
	// to runStart+turn; pos is the next entry to consider, segEnd the end
	// of the part being scanned. runDone: the run is used up.
	pos, segEnd, runStart, runEnd, turn int
	wrapped, runDone                    bool
	group                               []rank // offers of that run already looked at that may still take a replica
}

type matcher struct {
	snap      *Snapshot
	providers map[string]*providerState
	offers    []offerState // in key order
	eligible  []int32      // offers on Ready, uncordoned providers, valid now
	result    Result

	// Shared by workloads with the same request shape, region preference or
	// selector, so that a cycle costs O(shapes x offers), not O(workloads x
	// offers).
	rankings  map[string]*ranking
	start     uint32 // where runs of ties are first entered; from the snapshot's time
	prices    map[Vector][]money.Micro
	selectors map[string][]bool
	// place is placeOne; a test swaps in a plain scan to check that both
	// choose alike.
	place func(*workloadState) bool
}

// Match places as many pending replicas as fit and explains the rest.
//
// Workloads are served by priority, highest first. Within a priority level
// the namespaces take turns, one replica each, so that one tenant's huge
// workload cannot starve the others; a namespace's workloads go oldest first.
// Replicas already placed never move.
func Match(s *Snapshot) Result {
	return newMatcher(s).run()
}

func newMatcher(s *Snapshot) *matcher {
	m := &matcher{
		snap:      s,
		providers: make(map[string]*providerState, len(s.Providers)),
		rankings:  map[string]*ranking{},
		prices:    map[Vector][]money.Micro{},
		selectors: map[string][]bool{},
	}
	m.result.Unplaced = map[string]Unplaced{}
	h := fnv.New32a()
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(s.Now.UnixNano())))
	m.start = h.Sum32()
	for i := range s.Providers {
		p := &s.Providers[i]
		ps := &providerState{Provider: p, leasesLeft: -1, roomLeft: -1}
		if p.LeaseLimit != nil {
			ps.leasesLeft = max(0, *p.LeaseLimit)
		}
		if p.LeaseRoom != nil {
			ps.roomLeft = max(0, *p.LeaseRoom)
		}
		if p.Free != nil {
			f := *p.Free
			ps.free = &f
		}
		if p.Chunks != nil {
			ps.chunks = slices.Clone(p.Chunks)
		}
		m.providers[p.Name] = ps
	}
	order := make([]int, len(s.Offers))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(s.Offers[a].Key, s.Offers[b].Key) })
	m.offers = make([]offerState, len(order))
	for i, oi := range order {
		o := &s.Offers[oi]
		st := offerState{
			Offer:     o,
			provider:  m.providers[o.Provider],
			available: o.Available,
			validNow:  (o.ValidFrom.IsZero() || !s.Now.Before(o.ValidFrom)) && (o.ValidUntil.IsZero() || s.Now.Before(o.ValidUntil)),
		}
		m.offers[i] = st
		if p := st.provider; p != nil && p.Ready && !p.Cordoned && !p.Silent && st.validNow {
			m.eligible = append(m.eligible, int32(i))
		}
	}
	m.place = m.placeOne
	return m
}

func (m *matcher) run() Result {
	for _, level := range m.queues() {
		m.roundRobin(level)
	}
	return m.result
}

// queues returns, per priority level (highest first), the namespaces' queues
// of workloads (namespaces by name, workloads oldest first).
func (m *matcher) queues() [][][]*workloadState {
	ws := make([]*workloadState, 0, len(m.snap.Workloads))
	for i := range m.snap.Workloads {
		w := &m.snap.Workloads[i]
		if w.Pending <= 0 {
			continue
		}
		st := &workloadState{Workload: w, pending: w.Pending, perProv: map[string]int32{}, perOwner: map[string]int32{}, assignment: map[int32]int{},
			runDone: true}
		for prov, n := range w.Placed {
			st.perProv[prov] += n
			if p := m.providers[prov]; p != nil {
				st.perOwner[p.Owner] += n
			}
		}
		ws = append(ws, st)
	}
	slices.SortStableFunc(ws, func(a, b *workloadState) int {
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	var levels [][][]*workloadState
	for i := 0; i < len(ws); {
		j := i
		var level [][]*workloadState
		for j < len(ws) && ws[j].Priority == ws[i].Priority {
			k := j
			for k < len(ws) && ws[k].Priority == ws[i].Priority && ws[k].Namespace == ws[j].Namespace {
				k++
			}
			level = append(level, ws[j:k])
			j = k
		}
		levels = append(levels, level)
		i = j
	}
	return levels
}

func (m *matcher) roundRobin(level [][]*workloadState) {
	for len(level) > 0 {
		next := level[:0]
		for _, q := range level {
			w := q[0]
			if !m.place(w) {
				m.explain(w)
				q = q[1:]
			} else if w.pending == 0 {
				q = q[1:]
			}
			if len(q) > 0 {
				next = append(next, q)
			}
		}
		level = next
	}
}

// prepare looks up, or computes once per shape, what serving w needs: the
// price of one replica on each offer, the selector's verdict on each offer,
// and the ranking of the eligible offers.
func (m *matcher) prepare(w *workloadState) {
	prices, ok := m.prices[w.Request]
	if !ok {
		prices = make([]money.Micro, len(m.offers))
		for i := range m.offers {
			p, ok := PricePerReplicaHour(&w.Request, &m.offers[i].Prices)
			if !ok {
				p = unpriceable
			}
			prices[i] = p
		}
		m.prices[w.Request] = prices
	}
	w.prices = prices

	if w.Selector != nil {
		key := w.Selector.String()
		matches, ok := m.selectors[key]
		if !ok {
			matches = make([]bool, len(m.offers))
			for i := range m.offers {
				matches[i] = w.Selector.Matches(m.offers[i].Attributes)
			}
			m.selectors[key] = matches
		}
		w.matches = matches
	}

	key := fmt.Sprint(w.Request, w.PreferredRegions)
	rk, ok := m.rankings[key]
	if !ok {
		r := make([]rank, 0, len(m.eligible))
		for _, i := range m.eligible {
			if prices[i] == unpriceable {
				continue // out of reach for this request, ceiling or not
			}
			r = append(r, rank{price: prices[i], reputation: m.offers[i].provider.Reputation,
				region: regionRank(w, m.offers[i].provider.Region), order: i})
		}
		slices.SortFunc(r, rank.compare)
		rk = newRanking(r)
		rk.startAt(m.start)
		m.rankings[key] = rk
	}
	w.ranking = rk
}

func regionRank(w *workloadState, region string) int32 {
	for i, r := range w.PreferredRegions {
		if r == region {
			return int32(i)
		}
	}
	return int32(len(w.PreferredRegions))
}

// admits applies w's own static filters to an eligible offer.
func (w *workloadState) admits(i int32, o *offerState) bool {
	return o.Classes&w.Class != 0 &&
		(w.matches == nil || w.matches[i]) &&
		(w.MaxPrice < 0 || w.prices[i] <= w.MaxPrice) &&
		o.provider.Reputation >= w.MinReputation &&
		w.Refused[o.provider.Name] == "" &&
		w.Needs.allowedBy(&o.Allows)
}

// allowedBy reports whether an Offer allows every feature a replica needs.
func (n *Needs) allowedBy(a *Features) bool {
	return (n.PriorityClass == "" || slices.Contains(a.PriorityClasses, n.PriorityClass)) &&
		(n.RuntimeClass == "" || slices.Contains(a.RuntimeClasses, n.RuntimeClass)) &&
		storageAllowed(n.Storage, a.Storage) && (!n.Egress || a.Egress) && n.Expose <= a.Expose
}

// placeOne places one replica of w and reports whether it could.
//
// Among offers tied on price, reputation and region, the provider with the
// fewest replicas of this workload wins, the first in turn among equals
// (criterion 5 of rank). Tied offers are looked at lazily: one whose provider holds none
// of this workload's replicas cannot be beaten, so a run of thousands of
// offers at one price (owners posting the same rate) costs a replica a few
// looks, not a scan of the whole run. Offers that can no longer take a
// replica leave the group for good, as capacity only shrinks and counts
// only grow.
func (m *matcher) placeOne(w *workloadState) bool {
	if w.ranking == nil {
		m.prepare(w)
	}
	count := func(c rank) int32 { return w.perProv[m.offers[c.order].Provider] }
	rk := w.ranking
	for {
		if len(w.group) == 0 && w.runDone {
			// The next run of tied offers, entered at its turn.
			first := rk.live(w.runEnd)
			if first == len(rk.ranks) {
				return false
			}
			w.runStart, w.runEnd = int(rk.runStart[first]), int(rk.runEnd[first])
			w.turn = int(rk.turn[w.runStart])
			w.pos, w.segEnd, w.wrapped, w.runDone = w.runStart+w.turn, w.runEnd, false, false
		}
		best := -1
		kept := w.group[:0]
		for _, c := range w.group {
			if m.dynamicReject(w, c.order).kind != accepted {
				continue
			}
			kept = append(kept, c)
			if best < 0 || count(c) < count(kept[best]) {
				best = len(kept) - 1
			}
		}
		w.group = kept
		for !w.runDone && (best < 0 || count(w.group[best]) > 0) {
			if w.pos = rk.live(w.pos); w.pos >= w.segEnd {
				if w.wrapped {
					w.runDone = true
				} else {
					w.wrapped, w.pos, w.segEnd = true, w.runStart, w.runStart+w.turn
				}
				continue
			}
			i := w.pos
			w.pos++
			c := rk.ranks[i]
			switch m.dynamicReject(w, c.order).kind {
			case accepted:
			case offerShort, providerShort, noChunk:
				rk.tooSmall(i)
				continue
			default:
				continue
			}
			if !w.admits(c.order, &m.offers[c.order]) {
				continue
			}
			w.group = append(w.group, c)
			if best < 0 || count(c) < count(w.group[best]) {
				best = len(w.group) - 1
			}
		}
		if best < 0 {
			continue // this run is used up
		}
		c := w.group[best]
		rk.took(c.at)
		m.commit(w, c.order, c.price)
		return true
	}
}

func (m *matcher) commit(w *workloadState, oi int32, price money.Micro) {
	o := &m.offers[oi]
	p := o.provider
	o.available.Sub(&w.Request, 1)
	if p.free != nil {
		p.free.Sub(&w.Request, 1)
	}
	if p.chunks != nil {
		for i := range p.chunks {
			if p.chunks[i].Fits(&w.Request) {
				p.chunks[i].Sub(&w.Request, 1)
				break
			}
		}
	}
	w.pending--
	w.perProv[o.Provider]++
	w.perOwner[p.Owner]++
	if ai, ok := w.assignment[oi]; ok {
		m.result.Assignments[ai].Replicas++
		return
	}
	if p.leasesLeft > 0 {
		p.leasesLeft--
	}
	if p.roomLeft > 0 {
		p.roomLeft--
	}
	w.assignment[oi] = len(m.result.Assignments)
	m.result.Assignments = append(m.result.Assignments, Assignment{
		Workload: w.Key, Offer: o.Key, Provider: o.Provider, Replicas: 1, PricePerReplicaHour: price,
	})
}
