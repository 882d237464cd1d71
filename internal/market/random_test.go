package market

import (
	"fmt"
	"math/rand/v2"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/flotilla-dev/flotilla/internal/money"
)

var (
	regions = []string{"eu-west", "us-east", "ap-south"}
	tiers   = []string{"gold", "silver", "bronze"}
)

// randomSnapshot builds a market of nProviders providers (about 1 offer in
// 4 on a provider that is not Ready or cordoned), nOffers offers and
// nWorkloads workloads over 8 namespaces with varied constraints.
func randomSnapshot(rng *rand.Rand, nProviders, nOffers, nWorkloads int) *Snapshot {
	s := &Snapshot{Now: t0}
	for i := range nProviders {
		p := Provider{
			Name:       fmt.Sprintf("p%04d", i),
			Owner:      fmt.Sprintf("owner%03d", i/3),
			Region:     regions[rng.IntN(len(regions))],
			Ready:      rng.IntN(8) != 0,
			Cordoned:   rng.IntN(16) == 0,
			Reputation: int32(rng.IntN(1001)),
		}
		if rng.IntN(2) == 0 {
			var chunks []Vector
			for range 1 + rng.IntN(4) {
				chunks = append(chunks, vec(int64(1000*(1+rng.IntN(16))), int64(1+rng.IntN(64))))
			}
			p.Chunks = chunks
			free := sum(chunks...)
			p.Free = &free
		}
		s.Providers = append(s.Providers, p)
	}
	for i := range nOffers {
		p := s.Providers[rng.IntN(nProviders)]
		o := Offer{
			Key:       fmt.Sprintf("provider-%s/o%05d", p.Name, i),
			Provider:  p.Name,
			Available: vec(int64(500*rng.IntN(64)), int64(rng.IntN(128))),
			Classes:   Classes(1 + rng.IntN(3)),
			Attributes: labels.Set{
				"region": p.Region, "owner": p.Owner, "tier": tiers[rng.IntN(len(tiers))],
			},
		}
		if rng.IntN(4) == 0 {
			o.Available[GPU] = int64(rng.IntN(4))
			o.Prices[GPU] = money.Micro(rng.IntN(2_000_000))
		}
		if rng.IntN(3) == 0 {
			o.Available[Pods] = int64(rng.IntN(50))
		}
		o.Prices[CPU] = money.Micro(rng.IntN(30_000))
		o.Prices[Memory] = money.Micro(rng.IntN(3_000))
		switch rng.IntN(10) {
		case 0:
			o.ValidUntil = t0.Add(-time.Minute)
		case 1:
			o.ValidFrom = t0.Add(time.Minute)
		}
		s.Offers = append(s.Offers, o)
	}
	sels := []string{"", "tier=gold", "region in (eu-west,us-east)", "tier!=bronze"}
	for i := range nWorkloads {
		ns := fmt.Sprintf("ns%d", rng.IntN(8))
		w := Workload{
			Key:       fmt.Sprintf("%s/w%05d", ns, i),
			Namespace: ns,
			Class:     Classes(1 + rng.IntN(2)),
			Pending:   int32(1 + rng.IntN(20)),
			Request:   req(int64(250*(1+rng.IntN(16))), int64(rng.IntN(8))),
			MaxPrice:  -1,
			Priority:  int32(rng.IntN(3)),
			Created:   t0.Add(-time.Duration(rng.IntN(1000)) * time.Second),
		}
		if rng.IntN(6) == 0 {
			w.Request[GPU] = 1
		}
		if sel := sels[rng.IntN(len(sels))]; sel != "" {
			w.Selector, _ = labels.Parse(sel)
		}
		if rng.IntN(2) == 0 {
			w.MaxPrice = money.Micro(rng.IntN(120_000))
		}
		if rng.IntN(2) == 0 {
			w.MaxPerProvider = int32(1 + rng.IntN(4))
		}
		if rng.IntN(3) == 0 {
			w.MaxPerOwner = w.MaxPerProvider + int32(rng.IntN(4))
		}
		if rng.IntN(3) == 0 {
			w.MinReputation = int32(rng.IntN(800))
		}
		if rng.IntN(2) == 0 {
			w.PreferredRegions = []string{regions[rng.IntN(len(regions))]}
		}
		if rng.IntN(4) == 0 {
			w.Placed = map[string]int32{s.Providers[rng.IntN(nProviders)].Name: int32(rng.IntN(3))}
		}
		s.Workloads = append(s.Workloads, w)
	}
	return s
}

// placeOneScan is the plain form of placeOne: it collects every admitted
// offer of the run of tied offers, in turn, then picks the least-used
// provider.
func (m *matcher) placeOneScan(w *workloadState) bool {
	if w.ranking == nil {
		m.prepare(w)
	}
	rk := w.ranking
	for {
		if len(w.group) == 0 {
			for w.pos < len(rk.ranks) && len(w.group) == 0 {
				a, b := int(rk.runStart[w.pos]), int(rk.runEnd[w.pos])
				turn := int(rk.turn[a])
				for k := range b - a {
					c := rk.ranks[a+(turn+k)%(b-a)]
					if w.admits(c.order, &m.offers[c.order]) {
						w.group = append(w.group, c)
					}
				}
				w.pos = b
			}
			if len(w.group) == 0 {
				return false
			}
		}
		best := -1
		kept := w.group[:0]
		for _, c := range w.group {
			if m.dynamicReject(w, c.order).kind != accepted {
				continue
			}
			kept = append(kept, c)
			if best < 0 || w.perProv[m.offers[c.order].Provider] < w.perProv[m.offers[kept[best].order].Provider] {
				best = len(kept) - 1
			}
		}
		w.group = kept
		if best < 0 {
			continue
		}
		rk.took(w.group[best].at)
		m.commit(w, w.group[best].order, w.group[best].price)
		return true
	}
}
