package market

import (
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/flotilla-dev/flotilla/internal/money"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

const gib = int64(1) << 30

func vec(cpuMilli, memGiB int64) Vector {
	return Vector{CPU: cpuMilli, Memory: memGiB * gib, Pods: Unlimited}
}

func req(cpuMilli, memGiB int64) Vector {
	return Vector{CPU: cpuMilli, Memory: memGiB * gib, Pods: 1}
}

type providerB struct{ p Provider }

func prov(name, owner string) *providerB {
	return &providerB{Provider{Name: name, Owner: owner, Ready: true, Reputation: 500}}
}
func (b *providerB) region(r string) *providerB    { b.p.Region = r; return b }
func (b *providerB) notReady() *providerB          { b.p.Ready = false; return b }
func (b *providerB) cordoned() *providerB          { b.p.Cordoned = true; return b }
func (b *providerB) reputation(r int32) *providerB { b.p.Reputation = r; return b }
func (b *providerB) chunks(c ...Vector) *providerB {
	b.p.Chunks = c
	free := sum(c...)
	b.p.Free = &free
	return b
}
func (b *providerB) obj() Provider { return b.p }

type offerB struct{ o Offer }

func offer(key, provider string, available Vector, cpuPrice, memPrice string) *offerB {
	o := Offer{Key: key, Provider: provider, Available: available, Classes: ClassService | ClassBatch,
		Attributes: labels.Set{}}
	o.Prices[CPU] = money.MustParse(cpuPrice)
	o.Prices[Memory] = money.MustParse(memPrice)
	return &offerB{o}
}
func (b *offerB) classes(c Classes) *offerB { b.o.Classes = c; return b }
func (b *offerB) attr(k, v string) *offerB  { b.o.Attributes[k] = v; return b }
func (b *offerB) window(from, until time.Time) *offerB {
	b.o.ValidFrom, b.o.ValidUntil = from, until
	return b
}
func (b *offerB) obj() Offer { return b.o }

type workloadB struct{ w Workload }

func wl(key string, pending int32, r Vector) *workloadB {
	ns := key
	for i := range key {
		if key[i] == '/' {
			ns = key[:i]
			break
		}
	}
	return &workloadB{Workload{Key: key, Namespace: ns, Class: ClassService, Pending: pending, Request: r,
		MaxPrice: -1, Created: t0}}
}
func (b *workloadB) class(c Classes) *workloadB     { b.w.Class = c; return b }
func (b *workloadB) ceiling(p string) *workloadB    { b.w.MaxPrice = money.MustParse(p); return b }
func (b *workloadB) perProvider(n int32) *workloadB { b.w.MaxPerProvider = n; return b }
func (b *workloadB) perOwner(n int32) *workloadB    { b.w.MaxPerOwner = n; return b }
func (b *workloadB) minRep(n int32) *workloadB      { b.w.MinReputation = n; return b }
func (b *workloadB) regions(r ...string) *workloadB { b.w.PreferredRegions = r; return b }
func (b *workloadB) priority(p int32) *workloadB    { b.w.Priority = p; return b }
func (b *workloadB) refusedBy(prov, why string) *workloadB {
	if b.w.Refused == nil {
		b.w.Refused = map[string]string{}
	}
	b.w.Refused[prov] = why
	return b
}
func (b *workloadB) created(t time.Time) *workloadB { b.w.Created = t; return b }
func (b *workloadB) placed(prov string, n int32) *workloadB {
	if b.w.Placed == nil {
		b.w.Placed = map[string]int32{}
	}
	b.w.Placed[prov] = n
	return b
}
func (b *workloadB) selector(s string) *workloadB {
	sel, err := labels.Parse(s)
	if err != nil {
		panic(err)
	}
	b.w.Selector = sel
	return b
}
func (b *workloadB) needs(n Needs) *workloadB { b.w.Needs = n; return b }
func (b *workloadB) obj() Workload            { return b.w }

// placements sums assignments as workload -> provider -> replicas.
func placements(r Result) map[string]map[string]int32 {
	out := map[string]map[string]int32{}
	for _, a := range r.Assignments {
		if out[a.Workload] == nil {
			out[a.Workload] = map[string]int32{}
		}
		out[a.Workload][a.Provider] += a.Replicas
	}
	return out
}

func reasons(r Result, key string) []string {
	var out []string
	for _, x := range r.Unplaced[key].Reasons {
		out = append(out, x.Message)
	}
	return out
}

type moneyMicro = money.Micro

func mustMicro(s string) money.Micro { return money.MustParse(s) }

func (v Vector) plusMem(b int64) Vector { v[Memory] += b; return v }

// sum adds vectors, keeping Unlimited entries Unlimited.
func sum(vs ...Vector) Vector {
	var out Vector
	for _, v := range vs {
		for i := range v {
			if v[i] >= Unlimited-out[i] {
				out[i] = Unlimited
			} else {
				out[i] += v[i]
			}
		}
	}
	return out
}
