package market

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/flotilla-dev/flotilla/internal/money"
)

// benchSnapshot builds a market of nOffers offers on nOffers/2 providers and
// workloads of 1 to 99 replicas (50 on average) adding up to nReplicas
// pending replicas, from 50 namespaces: a quarter select on attributes, half
// have a price ceiling, half a spread limit.
func benchSnapshot(nOffers, nReplicas int) *Snapshot {
	return benchMarket(benchShape{offers: nOffers, replicas: nReplicas, prices: randomPrices, constrained: true})
}

type priceSpread int

const (
	randomPrices priceSpread = iota
	// fewLevels: four price levels and three reputations.
	fewLevels
	// onePrice: every offer at one price, every provider of one
	// reputation, so that every offer ties with every other.
	onePrice
)

func (p priceSpread) String() string { return [...]string{"random", "levels", "one"}[p] }

type benchShape struct {
	offers, replicas int
	// each is every workload's replicas; 0 means 1 to 99.
	each        int
	prices      priceSpread
	constrained bool // selectors, price ceilings and spread limits
}

func benchMarket(sh benchShape) *Snapshot {
	nOffers, nReplicas := sh.offers, sh.replicas
	rng := rand.New(rand.NewPCG(uint64(nOffers), uint64(nReplicas)))
	s := &Snapshot{Now: t0}
	nProviders := max(nOffers/2, 1)
	for i := range nProviders {
		s.Providers = append(s.Providers, Provider{
			Name: fmt.Sprintf("p%05d", i), Owner: fmt.Sprintf("o%04d", i/4), Region: regions[i%len(regions)],
			Ready: i%50 != 0, Reputation: int32(rng.IntN(1001)),
		})
		switch sh.prices {
		case fewLevels:
			s.Providers[i].Reputation = int32(250 * (1 + i%3))
		case onePrice:
			s.Providers[i].Reputation = 500
		}
	}
	for i := range nOffers {
		p := &s.Providers[i%nProviders]
		o := Offer{
			Key: fmt.Sprintf("provider-%s/o%05d", p.Name, i), Provider: p.Name,
			Available:  vec(int64(16000+1000*rng.IntN(48)), int64(64+rng.IntN(192))),
			Classes:    ClassService | ClassBatch,
			Attributes: labels.Set{"region": p.Region, "owner": p.Owner, "tier": tiers[rng.IntN(len(tiers))]},
		}
		o.Prices[CPU] = money.Micro(5_000 + rng.IntN(20_000))
		o.Prices[Memory] = money.Micro(500 + rng.IntN(2_000))
		switch sh.prices {
		case fewLevels:
			o.Prices[CPU], o.Prices[Memory] = money.Micro(5_000*(1+i%4)), 1_000
		case onePrice:
			o.Prices[CPU], o.Prices[Memory] = 10_000, 1_000
		}
		s.Offers = append(s.Offers, o)
	}
	gold, _ := labels.Parse("tier in (gold,silver)")
	for i := 0; nReplicas > 0; i++ {
		n := min(1+rng.IntN(99), nReplicas)
		if sh.each > 0 {
			n = min(sh.each, nReplicas)
		}
		nReplicas -= n
		ns := fmt.Sprintf("ns%02d", i%50)
		w := Workload{
			Key: fmt.Sprintf("%s/w%06d", ns, i), Namespace: ns, Class: ClassService, Pending: int32(n),
			Request: req(int64(250*(1+rng.IntN(8))), int64(1+rng.IntN(4))), MaxPrice: -1,
			Created: t0.Add(-time.Duration(i) * time.Second),
		}
		ceiling := money.Micro(40_000 + rng.IntN(40_000))
		if sh.constrained {
			if i%4 == 0 {
				w.Selector = gold
			}
			if i%2 == 0 {
				w.MaxPrice = ceiling
			}
			if i%2 == 1 {
				w.MaxPerProvider = 4
			}
		}
		s.Workloads = append(s.Workloads, w)
	}
	return s
}

func BenchmarkMatch(b *testing.B) {
	for _, size := range []struct{ offers, replicas int }{
		{1_000, 10_000}, {1_000, 100_000}, {10_000, 10_000}, {10_000, 100_000},
	} {
		b.Run(fmt.Sprintf("offers=%d/replicas=%d", size.offers, size.replicas), func(b *testing.B) {
			benchMatch(b, benchSnapshot(size.offers, size.replicas), size.replicas)
		})
	}
}

// BenchmarkMatchPrices is the matcher over every price distribution, with
// and without constraints, for workloads of 10 replicas: the shape where
// ties used to cost a scan of the whole tie group per replica.
func BenchmarkMatchPrices(b *testing.B) {
	for _, prices := range []priceSpread{onePrice, fewLevels, randomPrices} {
		for _, constrained := range []bool{false, true} {
			for _, size := range []struct{ offers, replicas int }{
				{1_000, 10_000}, {1_000, 100_000}, {10_000, 10_000}, {10_000, 100_000},
			} {
				sh := benchShape{offers: size.offers, replicas: size.replicas, each: 10, prices: prices, constrained: constrained}
				b.Run(fmt.Sprintf("prices=%s/constrained=%t/offers=%d/replicas=%d", prices, constrained, size.offers, size.replicas), func(b *testing.B) {
					benchMatch(b, benchMarket(sh), size.replicas)
				})
			}
		}
	}
}

func benchMatch(b *testing.B, s *Snapshot, replicas int) {
	var placed int
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		r := Match(s)
		placed = 0
		for _, a := range r.Assignments {
			placed += int(a.Replicas)
		}
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(placed), "placed/op")
	b.ReportMetric(float64(replicas)*float64(b.N)/elapsed.Seconds(), "replicas/s")
}
