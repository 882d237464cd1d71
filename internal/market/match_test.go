package market

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/flotilla-dev/flotilla/internal/money"
)

// Each filter on its own: one provider, one offer, one workload of 1 replica.
func TestFilters(t *testing.T) {
	base := func() *Snapshot {
		return &Snapshot{
			Now:       t0,
			Providers: []Provider{prov("bob-1", "bob").region("us-east").obj()},
			Offers:    []Offer{offer("provider-bob-1/std", "bob-1", vec(4000, 16), "0.01", "0.001").attr("tier", "gold").obj()},
		}
	}
	cases := map[string]struct {
		mutate     func(s *Snapshot)
		workload   *workloadB
		wantPlaced bool
		wantReason string
	}{
		"everything fits": {workload: wl("a/w", 1, req(1000, 1)), wantPlaced: true},
		"provider not Ready": {
			mutate:     func(s *Snapshot) { s.Providers[0].Ready = false },
			workload:   wl("a/w", 1, req(1000, 1)),
			wantReason: "provider bob-1: not Ready",
		},
		"provider cordoned": {
			mutate:     func(s *Snapshot) { s.Providers[0].Cordoned = true },
			workload:   wl("a/w", 1, req(1000, 1)),
			wantReason: "provider bob-1: cordoned",
		},
		"provider silent": {
			mutate:     func(s *Snapshot) { s.Providers[0].Silent = true },
			workload:   wl("a/w", 1, req(1000, 1)),
			wantReason: "provider bob-1: not heard from lately",
		},
		"provider rate-limited": {
			mutate:     func(s *Snapshot) { s.Providers[0].LeaseLimit = new(int32(0)) },
			workload:   wl("a/w", 1, req(1000, 1)),
			wantReason: "provider bob-1: took as many new leases as its rate limit allows for now",
		},
		"provider with leases left under its rate limit": {
			mutate:     func(s *Snapshot) { s.Providers[0].LeaseLimit = new(int32(1)) },
			workload:   wl("a/w", 1, req(1000, 1)),
			wantPlaced: true,
		},
		"provider at its maximum of leases": {
			mutate:     func(s *Snapshot) { s.Providers[0].LeaseRoom = new(int32(0)) },
			workload:   wl("a/w", 1, req(1000, 1)),
			wantReason: "provider bob-1: runs as many leases as its owner allows",
		},
		"provider unknown": {
			mutate:     func(s *Snapshot) { s.Providers = nil },
			workload:   wl("a/w", 1, req(1000, 1)),
			wantReason: "provider bob-1: not registered",
		},
		"offer not yet valid": {
			mutate:     func(s *Snapshot) { s.Offers[0].ValidFrom = t0.Add(time.Minute) },
			workload:   wl("a/w", 1, req(1000, 1)),
			wantReason: "1 offer: not valid now",
		},
		"offer expired": {
			mutate:     func(s *Snapshot) { s.Offers[0].ValidUntil = t0 },
			workload:   wl("a/w", 1, req(1000, 1)),
			wantReason: "1 offer: not valid now",
		},
		"offer valid until later": {
			mutate:     func(s *Snapshot) { s.Offers[0].ValidUntil = t0.Add(time.Second) },
			workload:   wl("a/w", 1, req(1000, 1)),
			wantPlaced: true,
		},
		"class not accepted": {
			mutate:     func(s *Snapshot) { s.Offers[0].Classes = ClassService },
			workload:   wl("a/w", 1, req(1000, 1)).class(ClassBatch),
			wantReason: "1 offer: do not accept class Batch",
		},
		"priority class offered": {
			mutate:     func(s *Snapshot) { s.Offers[0].Allows.PriorityClasses = []string{"batch-low"} },
			workload:   wl("a/w", 1, req(1000, 1)).needs(Needs{PriorityClass: "batch-low"}),
			wantPlaced: true,
		},
		"T5.priority-class-not-offered": {
			workload:   wl("a/w", 1, req(1000, 1)).needs(Needs{PriorityClass: "high"}),
			wantReason: "1 offer: do not offer priority class \"high\"",
		},
		"T5.runtime-class-not-offered": {
			mutate:     func(s *Snapshot) { s.Offers[0].Allows.RuntimeClasses = []string{"kata"} },
			workload:   wl("a/w", 1, req(1000, 1)).needs(Needs{RuntimeClass: "gvisor"}),
			wantReason: "1 offer: do not offer runtime class \"gvisor\"",
		},
		"storage within the offered size": {
			mutate:     func(s *Snapshot) { s.Offers[0].Allows.Storage = map[string]int64{"fast": 10 * gib} },
			workload:   wl("a/w", 1, req(1000, 1)).needs(Needs{Storage: []StorageNeed{{"fast", 10 * gib}}}),
			wantPlaced: true,
		},
		"T5.storage-not-offered": {
			mutate:     func(s *Snapshot) { s.Offers[0].Allows.Storage = map[string]int64{"fast": 10 * gib} },
			workload:   wl("a/w", 1, req(1000, 1)).needs(Needs{Storage: []StorageNeed{{"fast", 11 * gib}}}),
			wantReason: "1 offer: do not offer the storage classes and sizes the template claims",
		},
		"T7.egress-not-offered": {
			workload:   wl("a/w", 1, req(1000, 1)).needs(Needs{Egress: true}),
			wantReason: "1 offer: do not allow egress to the internet",
		},
		"egress allowed": {
			mutate:     func(s *Snapshot) { s.Offers[0].Allows.Egress = true },
			workload:   wl("a/w", 1, req(1000, 1)).needs(Needs{Egress: true}),
			wantPlaced: true,
		},
		"T9.exposure-not-offered": {
			workload:   wl("a/w", 1, req(1000, 1)).needs(Needs{Expose: ExposeHTTP}),
			wantReason: "1 offer: do not expose services (spec.expose), or their provider has no endpoint range on the hub",
		},
		"T9.tcp-exposure-on-an-ingress": {
			mutate:     func(s *Snapshot) { s.Offers[0].Allows.Expose = ExposeHTTP },
			workload:   wl("a/w", 1, req(1000, 1)).needs(Needs{Expose: ExposeTCP}),
			wantReason: "1 offer: do not expose TCP ports (spec.expose; an Ingress serves HTTP only), or their provider has no endpoint range on the hub",
		},
		"http exposure on an ingress": {
			mutate:     func(s *Snapshot) { s.Offers[0].Allows.Expose = ExposeHTTP },
			workload:   wl("a/w", 1, req(1000, 1)).needs(Needs{Expose: ExposeHTTP}),
			wantPlaced: true,
		},
		"tcp exposure on a node port": {
			mutate:     func(s *Snapshot) { s.Offers[0].Allows.Expose = ExposeTCP },
			workload:   wl("a/w", 1, req(1000, 1)).needs(Needs{Expose: ExposeTCP}),
			wantPlaced: true,
		},
		"attributes match": {
			workload:   wl("a/w", 1, req(1000, 1)).selector("tier in (gold,silver)"),
			wantPlaced: true,
		},
		"attributes do not match": {
			workload:   wl("a/w", 1, req(1000, 1)).selector("tier=bronze"),
			wantReason: "1 offer: attributes do not match the selector",
		},
		"price at the ceiling": {
			// 1 core * 0.01 + 1 GiB * 0.001 = 0.011
			workload:   wl("a/w", 1, req(1000, 1)).ceiling("0.011"),
			wantPlaced: true,
		},
		"price above the ceiling": {
			workload:   wl("a/w", 1, req(1000, 1)).ceiling("0.010999"),
			wantReason: "1 offer: price above the ceiling of 0.010999 per replica-hour",
		},
		"price past int64, no ceiling": {
			// A top memory price times 10 GiB is 1e19 micro-credits an hour.
			mutate: func(s *Snapshot) {
				s.Offers[0].Prices[Memory] = mustMicro("999999999999.999999")
			},
			workload:   wl("a/w", 1, req(1000, 10)),
			wantReason: "1 offer: price per replica-hour too large to be charged",
		},
		"reputation below minimum": {
			workload:   wl("a/w", 1, req(1000, 1)).minRep(600),
			wantReason: "provider bob-1: reputation 0.500 below the minimum 0.600",
		},
		"provider refused it lately": {
			workload:   wl("a/w", 1, req(1000, 1)).refusedBy("bob-1", "not enough cpu free"),
			wantReason: "provider bob-1: refused it lately: not enough cpu free",
		},
		"refused by another provider": {
			workload:   wl("a/w", 1, req(1000, 1)).refusedBy("carol-1", "not enough cpu free"),
			wantPlaced: true,
		},
		"reputation at minimum": {
			workload:   wl("a/w", 1, req(1000, 1)).minRep(500),
			wantPlaced: true,
		},
		"not enough memory in the offer": {
			workload:   wl("a/w", 1, req(1000, 17)),
			wantReason: "1 offer: not enough memory for one replica",
		},
		"gpu not offered": {
			workload:   wl("a/w", 1, Vector{CPU: 100, GPU: 1, Pods: 1}),
			wantReason: "1 offer: not enough nvidia.com/gpu for one replica",
		},
		"provider observed capacity below the offer's claim": {
			mutate:     func(s *Snapshot) { s.Providers[0] = prov("bob-1", "bob").chunks(vec(500, 16)).obj() },
			workload:   wl("a/w", 1, req(1000, 1)),
			wantReason: "1 offer: provider has not enough cpu free for one replica",
		},
		"spread per provider already reached": {
			workload:   wl("a/w", 1, req(1000, 1)).perProvider(2).placed("bob-1", 2),
			wantReason: "1 offer: maxReplicasPerProvider (2) reached",
		},
		"spread per owner already reached": {
			workload:   wl("a/w", 1, req(1000, 1)).perOwner(1).placed("bob-1", 1),
			wantReason: "1 offer: maxReplicasPerOwner (1) reached",
		},
		"no offers at all": {
			mutate:     func(s *Snapshot) { s.Offers = nil },
			workload:   wl("a/w", 1, req(1000, 1)),
			wantReason: "no offers on the market",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := base()
			if tc.mutate != nil {
				tc.mutate(s)
			}
			s.Workloads = []Workload{tc.workload.obj()}
			r := Match(s)
			placed := len(r.Assignments) == 1 && r.Assignments[0].Replicas == 1
			if placed != tc.wantPlaced {
				t.Fatalf("placed = %v, want %v (assignments %v, unplaced %v)", placed, tc.wantPlaced, r.Assignments, r.Unplaced)
			}
			if tc.wantPlaced {
				if len(r.Unplaced) != 0 {
					t.Fatalf("unexpected unplaced: %v", r.Unplaced)
				}
				return
			}
			if got := reasons(r, "a/w"); !slices.Equal(got, []string{tc.wantReason}) {
				t.Fatalf("reasons = %q, want [%q]", got, tc.wantReason)
			}
			if r.Unplaced["a/w"].Pending != 1 {
				t.Fatalf("pending = %d, want 1", r.Unplaced["a/w"].Pending)
			}
		})
	}
}

func TestScoringOrder(t *testing.T) {
	cases := map[string]struct {
		providers []Provider
		offers    []Offer
		workload  *workloadB
		want      string // provider of the single replica
	}{
		"cheapest first, whatever the reputation and region": {
			providers: []Provider{prov("a", "a").reputation(900).region("eu").obj(), prov("b", "b").reputation(100).region("us").obj()},
			offers:    []Offer{offer("a/o", "a", vec(4000, 8), "0.02", "0").obj(), offer("b/o", "b", vec(4000, 8), "0.01", "0").obj()},
			workload:  wl("t/w", 1, req(1000, 1)).regions("eu"),
			want:      "b",
		},
		"then the better reputation": {
			providers: []Provider{prov("a", "a").reputation(400).obj(), prov("b", "b").reputation(800).obj()},
			offers:    []Offer{offer("a/o", "a", vec(4000, 8), "0.01", "0").obj(), offer("b/o", "b", vec(4000, 8), "0.01", "0").obj()},
			workload:  wl("t/w", 1, req(1000, 1)),
			want:      "b",
		},
		"then the preferred region": {
			providers: []Provider{prov("a", "a").region("us").obj(), prov("b", "b").region("eu").obj()},
			offers:    []Offer{offer("a/o", "a", vec(4000, 8), "0.01", "0").obj(), offer("b/o", "b", vec(4000, 8), "0.01", "0").obj()},
			workload:  wl("t/w", 1, req(1000, 1)).regions("eu", "us"),
			want:      "b",
		},
		"then balance across providers": {
			providers: []Provider{prov("a", "a").obj(), prov("b", "b").obj()},
			offers:    []Offer{offer("a/o", "a", vec(4000, 8), "0.01", "0").obj(), offer("b/o", "b", vec(4000, 8), "0.01", "0").obj()},
			workload:  wl("t/w", 1, req(1000, 1)).placed("a", 1),
			want:      "b",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := Match(&Snapshot{Now: t0, Providers: tc.providers, Offers: tc.offers, Workloads: []Workload{tc.workload.obj()}})
			if len(r.Assignments) != 1 || r.Assignments[0].Provider != tc.want {
				t.Fatalf("assignments %+v, want one on %s", r.Assignments, tc.want)
			}
		})
	}
}

func TestBalanceSpreadsTiedOffers(t *testing.T) {
	r := Match(&Snapshot{
		Now:       t0,
		Providers: []Provider{prov("a", "a").obj(), prov("b", "b").obj(), prov("c", "c").obj()},
		Offers: []Offer{
			offer("a/o", "a", vec(8000, 8), "0.01", "0").obj(),
			offer("b/o", "b", vec(8000, 8), "0.01", "0").obj(),
			offer("c/o", "c", vec(8000, 8), "0.01", "0").obj(),
		},
		Workloads: []Workload{wl("t/w", 6, req(1000, 1)).obj()},
	})
	want := map[string]map[string]int32{"t/w": {"a": 2, "b": 2, "c": 2}}
	if d := cmp.Diff(want, placements(r)); d != "" {
		t.Fatalf("placements (-want +got):\n%s", d)
	}
}

// tiedMarket is n providers of one offer each, all at one price.
func tiedMarket(names ...string) ([]Provider, []Offer) {
	var providers []Provider
	var offers []Offer
	for _, n := range names {
		providers = append(providers, prov(n, n).obj())
		offers = append(offers, offer(n+"/o", n, vec(64000, 64), "0.01", "0").obj())
	}
	return providers, offers
}

// Workloads take turns over a run of equal offers, in offer key order:
// each starts after the offer that took the last replica, so that a market
// where owners post the same rate spreads its work (and its new Leases)
// over every owner.
func TestTiedOffersTakeTurns(t *testing.T) {
	names := []string{"a", "b", "c", "d", "e"}
	providers, offers := tiedMarket(names...)
	r := Match(&Snapshot{Now: t0, Providers: providers, Offers: offers, Workloads: []Workload{
		wl("t/w1", 2, req(1000, 1)).obj(), wl("t/w2", 2, req(1000, 1)).obj(), wl("t/w3", 2, req(1000, 1)).obj(),
	}})
	got := placements(r)
	// The run is entered where the cycle's time says; from there, in turn.
	for k := range names {
		at := func(i int) string { return names[(k+i)%len(names)] }
		want := map[string]map[string]int32{"t/w1": {at(0): 1, at(1): 1}, "t/w2": {at(2): 1, at(3): 1}, "t/w3": {at(4): 1, at(5): 1}}
		if cmp.Equal(want, got) {
			return
		}
	}
	t.Fatalf("placements %v: not six turns in offer key order", got)
}

// Workloads that come one a cycle spread over a run of equal offers too:
// each cycle enters the run at a point drawn from its time. (Entered at
// its start, every Workload went to the first offers of the run, and the
// first providers in key order held most of the replicas.)
func TestTiedOffersSpreadAcrossCycles(t *testing.T) {
	providers, offers := tiedMarket("a", "b", "c", "d", "e")
	count := map[string]int32{}
	const cycles = 50
	for i := range cycles {
		r := Match(&Snapshot{Now: t0.Add(time.Duration(i) * 1500 * time.Millisecond), Providers: providers, Offers: offers,
			Workloads: []Workload{wl(fmt.Sprintf("t/w%d", i), 2, req(1000, 1)).obj()}})
		for _, a := range r.Assignments {
			count[a.Provider] += a.Replicas
		}
	}
	for _, p := range providers {
		// 20 each on average.
		if n := count[p.Name]; n < 10 {
			t.Errorf("%s took %d of %d replicas placed one Workload a cycle: %v", p.Name, n, 2*cycles, count)
		}
	}
}

func TestSpreadLimits(t *testing.T) {
	providers := []Provider{prov("alice-1", "alice").obj(), prov("alice-2", "alice").obj(), prov("bob-1", "bob").obj()}
	cheapFirst := []Offer{
		offer("alice-1/o", "alice-1", vec(16000, 64), "0.001", "0").obj(),
		offer("alice-2/o", "alice-2", vec(16000, 64), "0.002", "0").obj(),
		offer("bob-1/o", "bob-1", vec(16000, 64), "0.003", "0").obj(),
	}
	cases := map[string]struct {
		workload    *workloadB
		want        map[string]int32
		wantPending int32
		wantReasons []string
	}{
		"per provider": {
			workload: wl("t/w", 6, req(1000, 1)).perProvider(2),
			want:     map[string]int32{"alice-1": 2, "alice-2": 2, "bob-1": 2},
		},
		"per owner": {
			workload: wl("t/w", 4, req(1000, 1)).perOwner(2),
			want:     map[string]int32{"alice-1": 2, "bob-1": 2},
		},
		"per provider and owner, leaving replicas pending": {
			workload:    wl("t/w", 5, req(1000, 1)).perProvider(1).perOwner(2),
			want:        map[string]int32{"alice-1": 1, "alice-2": 1, "bob-1": 1},
			wantPending: 2,
			// Each offer is explained by the first filter it fails.
			wantReasons: []string{"3 offers: maxReplicasPerProvider (1) reached"},
		},
		"existing placements count": {
			workload: wl("t/w", 2, req(1000, 1)).perOwner(2).placed("alice-1", 1),
			want:     map[string]int32{"alice-1": 1, "bob-1": 1},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := Match(&Snapshot{Now: t0, Providers: providers, Offers: cheapFirst, Workloads: []Workload{tc.workload.obj()}})
			if d := cmp.Diff(tc.want, placements(r)["t/w"]); d != "" {
				t.Fatalf("placements (-want +got):\n%s", d)
			}
			if got := r.Unplaced["t/w"].Pending; got != tc.wantPending {
				t.Fatalf("pending %d, want %d", got, tc.wantPending)
			}
			if d := cmp.Diff(tc.wantReasons, reasons(r, "t/w")); d != "" {
				t.Fatalf("reasons (-want +got):\n%s", d)
			}
		})
	}
}

func TestPartialPlacement(t *testing.T) {
	providers := []Provider{prov("a", "a").obj(), prov("b", "b").obj()}
	offers := []Offer{
		offer("a/o", "a", vec(3000, 64), "0.01", "0").obj(),
		offer("b/o", "b", vec(2000, 64), "0.01", "0").obj(),
	}
	w := wl("t/w", 8, req(1000, 1))
	r := Match(&Snapshot{Now: t0, Providers: providers, Offers: offers, Workloads: []Workload{w.obj()}})
	if d := cmp.Diff(map[string]int32{"a": 3, "b": 2}, placements(r)["t/w"]); d != "" {
		t.Fatalf("first cycle placements (-want +got):\n%s", d)
	}
	u := r.Unplaced["t/w"]
	if u.Pending != 3 || u.Summary() != "2 offers: not enough cpu for one replica" {
		t.Fatalf("unplaced = %+v", u)
	}

	// Capacity appears: the next cycle places the rest and nothing else moves.
	offers[0].Available = vec(0, 60)
	offers[1].Available = vec(0, 62)
	offers = append(offers, offer("c/o", "c", vec(8000, 64), "0.01", "0").obj())
	providers = append(providers, prov("c", "c").obj())
	w.w.Pending = 3
	w.placed("a", 3).placed("b", 2)
	r = Match(&Snapshot{Now: t0, Providers: providers, Offers: offers, Workloads: []Workload{w.obj()}})
	if d := cmp.Diff(map[string]int32{"c": 3}, placements(r)["t/w"]); d != "" {
		t.Fatalf("second cycle placements (-want +got):\n%s", d)
	}
	if len(r.Unplaced) != 0 {
		t.Fatalf("still unplaced: %v", r.Unplaced)
	}
}

func TestLargestChunkBoundsAReplica(t *testing.T) {
	p := prov("a", "a").obj()
	free, chunk := vec(8000, 32), vec(2000, 8)
	p.Free, p.LargestChunk = &free, &chunk
	offers := []Offer{offer("a/o", "a", vec(8000, 32), "0.01", "0").obj()}
	r := Match(&Snapshot{Now: t0, Providers: []Provider{p}, Offers: offers, Workloads: []Workload{
		wl("t/big", 1, req(3000, 1)).obj(), wl("t/small", 2, req(2000, 1)).obj()}})
	if d := cmp.Diff(map[string]map[string]int32{"t/small": {"a": 2}}, placements(r)); d != "" {
		t.Fatalf("placements (-want +got):\n%s", d)
	}
	if u := r.Unplaced["t/big"]; u.Summary() != "1 offer: no node has room for one replica" || u.Reasons[0].Code != "NoNodeFits" {
		t.Fatalf("unplaced %+v", u)
	}
}

// A replica must fit on one node: aggregate room is not enough.
func TestFragmentation(t *testing.T) {
	providers := []Provider{prov("a", "a").chunks(vec(2000, 8), vec(2000, 8), vec(2000, 8)).obj()}
	offers := []Offer{offer("a/o", "a", vec(6000, 24), "0.01", "0").obj()}
	r := Match(&Snapshot{Now: t0, Providers: providers, Offers: offers, Workloads: []Workload{wl("t/big", 1, req(3000, 1)).obj()}})
	if len(r.Assignments) != 0 {
		t.Fatalf("placed a 3-core replica on 2-core nodes: %+v", r.Assignments)
	}
	if got := r.Unplaced["t/big"].Summary(); got != "1 offer: no node has room for one replica" {
		t.Fatalf("reason %q", got)
	}
	// Replicas are packed node by node: three 1.5-core replicas fit only
	// one per 2-core node.
	r = Match(&Snapshot{Now: t0, Providers: providers, Offers: offers, Workloads: []Workload{wl("t/mid", 4, req(1500, 1)).obj()}})
	if d := cmp.Diff(map[string]int32{"a": 3}, placements(r)["t/mid"]); d != "" {
		t.Fatalf("placements (-want +got):\n%s", d)
	}
}

func TestTenantFairness(t *testing.T) {
	providers := []Provider{prov("a", "a").obj()}
	offers := []Offer{offer("a/o", "a", vec(10000, 100), "0.01", "0").obj()}
	huge := wl("big/huge", 1000, req(1000, 1)).created(t0.Add(-time.Hour))
	small1 := wl("small/one", 2, req(1000, 1))
	small2 := wl("tiny/two", 2, req(1000, 1))
	r := Match(&Snapshot{Now: t0, Providers: providers, Offers: offers, Workloads: []Workload{huge.obj(), small1.obj(), small2.obj()}})
	got := placements(r)
	if got["small/one"]["a"] != 2 || got["tiny/two"]["a"] != 2 || got["big/huge"]["a"] != 6 {
		t.Fatalf("placements %v: each small tenant should get its 2 replicas and the huge one the remaining 6", got)
	}
	// Priority still wins over fairness.
	r = Match(&Snapshot{Now: t0, Providers: providers, Offers: offers,
		Workloads: []Workload{huge.priority(10).obj(), small1.obj(), small2.obj()}})
	if got := placements(r); got["big/huge"]["a"] != 10 || len(got) != 1 {
		t.Fatalf("placements %v: the higher priority workload should take everything", got)
	}
}

func TestOldestWorkloadOfANamespaceFirst(t *testing.T) {
	providers := []Provider{prov("a", "a").obj()}
	offers := []Offer{offer("a/o", "a", vec(2000, 100), "0.01", "0").obj()}
	r := Match(&Snapshot{Now: t0, Providers: providers, Offers: offers, Workloads: []Workload{
		wl("t/new", 2, req(1000, 1)).created(t0).obj(),
		wl("t/old", 2, req(1000, 1)).created(t0.Add(-time.Minute)).obj(),
	}})
	if got := placements(r); got["t/old"]["a"] != 2 || got["t/new"] != nil {
		t.Fatalf("placements %v: the older workload should be placed first", got)
	}
}

// Stability: replicas already placed are not in Pending, and placing the
// rest never produces assignments for them; spreading counts them.
func TestStability(t *testing.T) {
	providers := []Provider{prov("a", "a").obj(), prov("b", "b").obj()}
	offers := []Offer{
		offer("a/o", "a", vec(8000, 64), "0.02", "0").obj(), // now the dearer one
		offer("b/o", "b", vec(8000, 64), "0.01", "0").obj(),
	}
	w := wl("t/w", 1, req(1000, 1)).placed("a", 3).perProvider(3)
	r := Match(&Snapshot{Now: t0, Providers: providers, Offers: offers, Workloads: []Workload{w.obj()}})
	if d := cmp.Diff(map[string]int32{"b": 1}, placements(r)["t/w"]); d != "" {
		t.Fatalf("placements (-want +got):\n%s", d)
	}
}

func TestDeterministic(t *testing.T) {
	s := randomSnapshot(rand.New(rand.NewPCG(1, 2)), 40, 200, 60)
	want := Match(s)
	for i := range 20 {
		rng := rand.New(rand.NewPCG(uint64(i), 99))
		c := *s
		c.Providers = slices.Clone(s.Providers)
		c.Offers = slices.Clone(s.Offers)
		c.Workloads = slices.Clone(s.Workloads)
		rng.Shuffle(len(c.Providers), func(i, j int) { c.Providers[i], c.Providers[j] = c.Providers[j], c.Providers[i] })
		rng.Shuffle(len(c.Offers), func(i, j int) { c.Offers[i], c.Offers[j] = c.Offers[j], c.Offers[i] })
		rng.Shuffle(len(c.Workloads), func(i, j int) { c.Workloads[i], c.Workloads[j] = c.Workloads[j], c.Workloads[i] })
		got := Match(&c)
		if d := cmp.Diff(want, got, cmp.AllowUnexported(Reason{})); d != "" {
			t.Fatalf("shuffle %d changed the result (-want +got):\n%s", i, d)
		}
	}
	if len(want.Assignments) == 0 || len(want.Unplaced) == 0 {
		t.Fatalf("random snapshot should both place and leave pending; got %d assignments, %d unplaced",
			len(want.Assignments), len(want.Unplaced))
	}
}

func TestMatchDoesNotModifyTheSnapshot(t *testing.T) {
	s := randomSnapshot(rand.New(rand.NewPCG(3, 4)), 10, 30, 20)
	before := cloneSnapshot(s)
	Match(s)
	for i := range s.Workloads {
		if s.Workloads[i].Pending != before.Workloads[i].Pending || len(s.Workloads[i].Placed) != len(before.Workloads[i].Placed) {
			t.Fatalf("workload %s changed", s.Workloads[i].Key)
		}
	}
	for i := range s.Offers {
		if s.Offers[i].Available != before.Offers[i].Available {
			t.Fatalf("offer %s available changed", s.Offers[i].Key)
		}
	}
	for i := range s.Providers {
		if s.Providers[i].Free != nil && *s.Providers[i].Free != *before.Providers[i].Free {
			t.Fatalf("provider %s free changed", s.Providers[i].Name)
		}
	}
}

func cloneSnapshot(s *Snapshot) *Snapshot {
	c := *s
	c.Providers = slices.Clone(s.Providers)
	for i := range c.Providers {
		if f := c.Providers[i].Free; f != nil {
			v := *f
			c.Providers[i].Free = &v
		}
		c.Providers[i].Chunks = slices.Clone(c.Providers[i].Chunks)
	}
	for i := range c.Workloads {
		c.Workloads[i].Placed = maps.Clone(c.Workloads[i].Placed)
	}
	c.Offers = slices.Clone(s.Offers)
	c.Workloads = slices.Clone(s.Workloads)
	return &c
}

func TestPricePerReplicaHour(t *testing.T) {
	p := func(cpu, mem, gpu string) *[NumResources]moneyMicro {
		var out [NumResources]moneyMicro
		out[CPU], out[Memory], out[GPU] = mustMicro(cpu), mustMicro(mem), mustMicro(gpu)
		return &out
	}
	cases := map[string]struct {
		r    Vector
		p    *[NumResources]moneyMicro
		want string
	}{
		"half a core and half a GiB": {req(500, 0).plusMem(512 << 20), p("0.012", "0.0015", "0"), "0.00675"},
		"rounds each term up":        {Vector{CPU: 1}, p("0.000001", "0", "0"), "0.000001"},
		"gpu":                        {Vector{CPU: 4000, GPU: 2}, p("0.01", "0", "1.25"), "2.54"},
		"free":                       {req(1000, 1), p("0", "0", "0"), "0"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, ok := PricePerReplicaHour(&tc.r, tc.p)
			if !ok || got.String() != tc.want {
				t.Fatalf("got %s (ok=%v), want %s", got, ok, tc.want)
			}
		})
	}
	huge := Vector{Memory: 1 << 62}
	if _, ok := PricePerReplicaHour(&huge, p("0", "999999999999", "0")); ok {
		t.Fatal("overflow not reported")
	}
}

// A provider takes at most LeaseRoom (or LeaseLimit) new assignments; further
// replicas of a workload it already took ride on the same assignment, and
// the rest go to the next offer.
func TestLeaseLimit(t *testing.T) {
	s := &Snapshot{
		Now: t0,
		Providers: []Provider{
			{Name: "cheap", Owner: "a", Ready: true, LeaseLimit: new(int32(5)), LeaseRoom: new(int32(2))},
			{Name: "dear", Owner: "b", Ready: true},
		},
		Offers: []Offer{
			offer("provider-cheap/o", "cheap", vec(64000, 256), "0.01", "0").obj(),
			offer("provider-dear/o", "dear", vec(64000, 256), "0.02", "0").obj(),
		},
		Workloads: []Workload{
			wl("a/w1", 3, req(1000, 1)).obj(), wl("a/w2", 1, req(1000, 1)).obj(), wl("a/w3", 2, req(1000, 1)).obj(),
		},
	}
	got := map[string]map[string]int32{}
	for _, a := range Match(s).Assignments {
		if got[a.Workload] == nil {
			got[a.Workload] = map[string]int32{}
		}
		got[a.Workload][a.Provider] += a.Replicas
	}
	want := map[string]map[string]int32{
		"a/w1": {"cheap": 3}, "a/w2": {"cheap": 1}, "a/w3": {"dear": 2},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("placements (-want +got):\n%s", d)
	}
}

// TestLazyTieGroupsChooseAsAFullScan checks that looking at tied offers
// lazily places every replica where scanning the whole run would, on
// markets where most offers tie (a few price levels, reputations and
// regions).
func TestLazyTieGroupsChooseAsAFullScan(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		s := randomSnapshot(rng, 1+rng.IntN(30), rng.IntN(150), rng.IntN(60))
		levels := 1 + rng.IntN(3)
		for i := range s.Offers {
			s.Offers[i].Prices[CPU] = money.Micro(10_000 * (1 + rng.IntN(levels)))
			s.Offers[i].Prices[Memory] = 1_000
			s.Offers[i].Prices[GPU] = 0
		}
		for i := range s.Providers {
			s.Providers[i].Reputation = int32(500 * rng.IntN(2))
		}
		lazy := Match(s)
		m := newMatcher(s)
		m.place = m.placeOneScan
		full := m.run()
		if d := cmp.Diff(full.Assignments, lazy.Assignments); d != "" {
			t.Fatalf("seed %d: lazy tie groups chose otherwise than a full scan (-full +lazy):\n%s", seed, d)
		}
		summaries := func(r Result) map[string]string {
			out := map[string]string{}
			for k, u := range r.Unplaced {
				out[k] = u.Summary()
			}
			return out
		}
		if d := cmp.Diff(summaries(full), summaries(lazy)); d != "" {
			t.Fatalf("seed %d: lazy tie groups explained otherwise than a full scan (-full +lazy):\n%s", seed, d)
		}
	}
}
