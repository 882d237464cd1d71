package market

import (
	"math/rand/v2"
	"testing"
)

// checkInvariants fails t when r breaks a rule of the market for s.
func checkInvariants(t *testing.T, s *Snapshot, r Result) {
	t.Helper()
	providers := map[string]*Provider{}
	for i := range s.Providers {
		providers[s.Providers[i].Name] = &s.Providers[i]
	}
	offers := map[string]*Offer{}
	for i := range s.Offers {
		offers[s.Offers[i].Key] = &s.Offers[i]
	}
	workloads := map[string]*Workload{}
	for i := range s.Workloads {
		workloads[s.Workloads[i].Key] = &s.Workloads[i]
	}
	usedOffer := map[string]Vector{}
	usedProvider := map[string]Vector{}
	perProv := map[string]map[string]int32{}
	perOwner := map[string]map[string]int32{}
	placed := map[string]int32{}
	for _, a := range r.Assignments {
		w, o := workloads[a.Workload], offers[a.Offer]
		if w == nil || o == nil {
			t.Fatalf("assignment %+v names an unknown workload or offer", a)
		}
		p := providers[o.Provider]
		if p == nil || !p.Ready || p.Cordoned || p.Silent {
			t.Fatalf("assignment %+v on a provider that is missing, not Ready, cordoned or silent", a)
		}
		if a.Replicas <= 0 {
			t.Fatalf("assignment %+v with no replicas", a)
		}
		if o.Classes&w.Class == 0 {
			t.Fatalf("assignment %+v: offer does not accept the class", a)
		}
		if !w.Needs.allowedBy(&o.Allows) {
			t.Fatalf("assignment %+v: offer does not allow what the workload needs", a)
		}
		if w.Selector != nil && !w.Selector.Matches(o.Attributes) {
			t.Fatalf("assignment %+v: selector does not match", a)
		}
		if p.Reputation < w.MinReputation {
			t.Fatalf("assignment %+v: reputation %d below %d", a, p.Reputation, w.MinReputation)
		}
		price, ok := PricePerReplicaHour(&w.Request, &o.Prices)
		if !ok || price != a.PricePerReplicaHour {
			t.Fatalf("assignment %+v: price %d, recomputed %d", a, a.PricePerReplicaHour, price)
		}
		if w.MaxPrice >= 0 && price > w.MaxPrice {
			t.Fatalf("assignment %+v above the ceiling %d", a, w.MaxPrice)
		}
		uo := usedOffer[a.Offer]
		up := usedProvider[o.Provider]
		for i := range w.Request {
			uo[i] += w.Request[i] * int64(a.Replicas)
			up[i] += w.Request[i] * int64(a.Replicas)
		}
		usedOffer[a.Offer], usedProvider[o.Provider] = uo, up
		if perProv[a.Workload] == nil {
			perProv[a.Workload], perOwner[a.Workload] = map[string]int32{}, map[string]int32{}
		}
		perProv[a.Workload][o.Provider] += a.Replicas
		perOwner[a.Workload][p.Owner] += a.Replicas
		placed[a.Workload] += a.Replicas
	}
	for key, used := range usedOffer {
		o := offers[key]
		if !o.Available.Fits(&used) {
			t.Fatalf("offer %s over capacity: used %v of %v", key, used, o.Available)
		}
	}
	for name, used := range usedProvider {
		if f := providers[name].Free; f != nil && !f.Fits(&used) {
			t.Fatalf("provider %s over its observed capacity: used %v of %v", name, used, *f)
		}
	}
	for key, w := range workloads {
		if w.Pending <= 0 {
			continue
		}
		if placed[key]+r.Unplaced[key].Pending != w.Pending {
			t.Fatalf("workload %s: placed %d + pending %d != %d", key, placed[key], r.Unplaced[key].Pending, w.Pending)
		}
		if r.Unplaced[key].Pending > 0 && len(r.Unplaced[key].Reasons) == 0 {
			t.Fatalf("workload %s left pending without a reason", key)
		}
		existingOwner := map[string]int32{}
		for prov, n := range w.Placed {
			if p := providers[prov]; p != nil {
				existingOwner[p.Owner] += n
			}
		}
		for prov, n := range perProv[key] {
			if w.MaxPerProvider > 0 && n+w.Placed[prov] > w.MaxPerProvider {
				t.Fatalf("workload %s: %d replicas on %s beyond maxReplicasPerProvider %d", key, n+w.Placed[prov], prov, w.MaxPerProvider)
			}
		}
		for owner, n := range perOwner[key] {
			if w.MaxPerOwner > 0 && n+existingOwner[owner] > w.MaxPerOwner {
				t.Fatalf("workload %s: %d replicas on owner %s beyond maxReplicasPerOwner %d", key, n+existingOwner[owner], owner, w.MaxPerOwner)
			}
		}
	}
}

func FuzzMatch(f *testing.F) {
	for _, seed := range []uint64{1, 2, 3, 42, 1 << 40} {
		f.Add(seed, uint8(10), uint8(40), uint8(30))
	}
	f.Fuzz(func(t *testing.T, seed uint64, np, no, nw uint8) {
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		s := randomSnapshot(rng, 1+int(np)%40, int(no), int(nw))
		checkInvariants(t, s, Match(s))
	})
}

func TestInvariantsOnRandomSnapshots(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		s := randomSnapshot(rng, 1+rng.IntN(30), rng.IntN(120), rng.IntN(80))
		checkInvariants(t, s, Match(s))
	}
}
