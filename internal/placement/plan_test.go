package placement

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/fixture"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// planned is what a test compares of a cycle's intents.
type planned struct {
	Create    []string          // provider ×replicas @price/h e<epoch>
	ScaleDown []string          // lease→replicas (0: removed)
	Drain     []string          // lease
	Unplaced  map[string]string // workload → reason codes
	Throttled []string
}

func summarize(in Intents) planned {
	var p planned
	for _, c := range in.Create {
		l := c.Lease
		p.Create = append(p.Create, fmt.Sprintf("%s ×%d @%s e%d", l.Spec.ProviderRef.Name, l.Spec.Replicas, l.Spec.PricePerReplicaHour, l.Spec.Epoch))
	}
	for _, c := range in.ScaleDown {
		p.ScaleDown = append(p.ScaleDown, fmt.Sprintf("%s→%d", c.Lease.Name, c.Replicas))
	}
	for _, c := range in.Drain {
		p.Drain = append(p.Drain, c.Lease.Name)
	}
	for k, u := range in.Unplaced {
		var codes []string
		for _, r := range u.Reasons {
			codes = append(codes, r.Code)
		}
		if p.Unplaced == nil {
			p.Unplaced = map[string]string{}
		}
		p.Unplaced[k] = strings.Join(codes, ",")
	}
	p.Throttled = in.Throttled
	return p
}

func TestPlan(t *testing.T) {
	web := fixture.Workload("team-a", "web", fixture.Replicas(2), fixture.Identity("web-uid", 1))
	cheap := fixture.Offer("bob-1", "std", fixture.Priced("0.01", "0.004"))
	dear := fixture.Offer("carol-1", "std", fixture.Priced("0.02", "0.008"))
	providers := func(opts ...fixture.ProviderOption) []flotillav1.Provider {
		bob := fixture.Provider("bob-1", "bob", append([]fixture.ProviderOption{fixture.Ready()}, opts...)...)
		return []flotillav1.Provider{*bob, *fixture.Provider("carol-1", "carol", fixture.Ready())}
	}
	accounts := []flotillav1.Account{*fixture.Account("team-a", "100")}
	created := func(d time.Duration) fixture.LeaseOption { return fixture.Created(metav1.Time{Time: t0.Add(d)}) }
	base := func(mutate func(*Input)) Input {
		in := Input{Now: t0, Providers: providers(), Offers: []flotillav1.Offer{*cheap, *dear},
			Workloads: []flotillav1.Workload{*web}, Accounts: accounts}
		if mutate != nil {
			mutate(&in)
		}
		return in
	}
	cordoned := func(p *flotillav1.Provider) { p.Spec.Unschedulable = true }
	for name, tc := range map[string]struct {
		in   Input
		want planned
	}{
		"new Workload: all replicas on the cheapest offer, epoch 1": {
			in:   base(nil),
			want: planned{Create: []string{"bob-1 ×2 @0.006 e1"}},
		},
		"placed already: nothing to do": {
			in: base(func(in *Input) {
				in.Leases = []*flotillav1.Lease{fixture.Lease(web, cheap, "web-a", 2, fixture.Running(2))}
			}),
			want: planned{},
		},
		"scaled down: the newest Lease shrinks first": {
			in: base(func(in *Input) {
				in.Leases = []*flotillav1.Lease{
					fixture.Lease(web, cheap, "web-old", 2, fixture.Running(2), created(-time.Hour)),
					fixture.Lease(web, dear, "web-new", 1, fixture.Running(1), created(-time.Minute)),
				}
			}),
			want: planned{ScaleDown: []string{"web-new→0"}},
		},
		"scaled down by one of two: the Lease shrinks": {
			in: base(func(in *Input) {
				in.Workloads[0].Spec.Replicas = 1
				in.Leases = []*flotillav1.Lease{fixture.Lease(web, cheap, "web-a", 2, fixture.Running(2))}
			}),
			want: planned{ScaleDown: []string{"web-a→1"}},
		},
		"failed over: replaced under the next epoch": {
			in: base(func(in *Input) {
				in.Leases = []*flotillav1.Lease{fixture.Lease(web, cheap, "web-a", 2, fixture.Ended(flotillav1.OutcomeFailedOver))}
			}),
			want: planned{Create: []string{"bob-1 ×2 @0.006 e2"}},
		},
		"on a cordoned provider: replaced elsewhere first, kept until the replacement is ready": {
			in: base(func(in *Input) {
				in.Providers = providers(cordoned)
				in.Leases = []*flotillav1.Lease{fixture.Lease(web, cheap, "web-a", 2, fixture.Running(2))}
			}),
			want: planned{Create: []string{"carol-1 ×2 @0.012 e1"}},
		},
		"on a cordoned provider, replacement ready: drained": {
			in: base(func(in *Input) {
				in.Providers = providers(cordoned)
				in.Leases = []*flotillav1.Lease{fixture.Lease(web, cheap, "web-a", 2, fixture.Running(2)),
					fixture.Lease(web, dear, "web-b", 2, fixture.Running(2))}
			}),
			want: planned{Drain: []string{"web-a"}},
		},
		"the cheap provider silent: the dearer one takes new replicas": {
			in:   base(func(in *Input) { in.Silent = map[string]bool{"bob-1": true} }),
			want: planned{Create: []string{"carol-1 ×2 @0.012 e1"}},
		},
		"on a silent provider: its replicas stay": {
			in: base(func(in *Input) {
				in.Silent = map[string]bool{"bob-1": true}
				in.Leases = []*flotillav1.Lease{fixture.Lease(web, cheap, "web-a", 2, fixture.Running(2))}
			}),
			want: planned{},
		},
		"a silent provider out of lease tokens is not throttled: it takes none anyway": {
			in: base(func(in *Input) {
				in.Silent, in.LeaseTokens = map[string]bool{"bob-1": true}, map[string]int32{"bob-1": 0}
			}),
			want: planned{Create: []string{"carol-1 ×2 @0.012 e1"}},
		},
		"no Account in the namespace: not placed": {
			in:   base(func(in *Input) { in.Accounts = nil }),
			want: planned{Unplaced: map[string]string{"team-a/web": flotillav1.WorkloadReasonNoAccount}},
		},
		"no Account, the hub runs Workloads free: placed": {
			in:   base(func(in *Input) { in.Accounts, in.AllowUnaccounted = nil, true }),
			want: planned{Create: []string{"bob-1 ×2 @0.006 e1"}},
		},
		"the bank cannot settle: nothing new placed": {
			in:   base(func(in *Input) { in.Settlement = "ledger store unreachable" }),
			want: planned{Unplaced: map[string]string{"team-a/web": flotillav1.WorkloadReasonSettlementUnavailable}},
		},
		"creating its Lease failed: backs off": {
			in: base(func(in *Input) {
				in.Failing = map[string]Failure{"team-a/web": {N: 2, Until: t0.Add(time.Second), Err: "forbidden"}}
			}),
			want: planned{Unplaced: map[string]string{"team-a/web": flotillav1.WorkloadReasonLeaseCreateFailed}},
		},
		"back-off over: tried again": {
			in:   base(func(in *Input) { in.Failing = map[string]Failure{"team-a/web": {N: 2, Until: t0, Err: "forbidden"}} }),
			want: planned{Create: []string{"bob-1 ×2 @0.006 e1"}},
		},
		"name too long for its derived names: not placed": {
			in: base(func(in *Input) {
				in.Workloads[0].Name = strings.Repeat("w", flotillav1.MaxWorkloadName+1)
			}),
			want: planned{Unplaced: map[string]string{"team-a/" + strings.Repeat("w", flotillav1.MaxWorkloadName+1): flotillav1.WorkloadReasonNameTooLong}},
		},
		"the cheap provider has no lease token left: the dearer one takes it": {
			in:   base(func(in *Input) { in.LeaseTokens = map[string]int32{"bob-1": 0} }),
			want: planned{Create: []string{"carol-1 ×2 @0.012 e1"}, Throttled: []string{"bob-1"}},
		},
		"above the price ceiling: not placed": {
			in:   base(func(in *Input) { fixture.MaxPrice("0.001")(&in.Workloads[0]) }),
			want: planned{Unplaced: map[string]string{"team-a/web": "PriceAboveCeiling"}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			before := copyInput(tc.in)
			if d := cmp.Diff(tc.want, summarize(Plan(tc.in))); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
			// The scheduler hands Plan the cache's own objects, uncopied.
			if after := (inputObjects{tc.in.Providers, tc.in.Offers, tc.in.Workloads, tc.in.Accounts, tc.in.Leases}); !equality.Semantic.DeepEqual(before, after) {
				t.Errorf("Plan changed its input:\n%s", diff.Diff(before, after))
			}
		})
	}
}

// A Workload backing off after failed creations is reported by every
// cycle; its reason must read the same each time, or each cycle rewrites
// its status.
func TestBackOffReadsTheSameEachCycle(t *testing.T) {
	w := fixture.Workload("team-a", "web", fixture.Replicas(2), fixture.Identity("web-uid", 1))
	in := Input{Now: t0, Providers: []flotillav1.Provider{*fixture.Provider("bob-1", "bob", fixture.Ready())},
		Offers: []flotillav1.Offer{*fixture.Offer("bob-1", "std")}, Workloads: []flotillav1.Workload{*w}, AllowUnaccounted: true,
		Failing: map[string]Failure{"team-a/web": {N: 3, Until: t0.Add(8 * time.Second), Err: "forbidden"}}}
	first, held := Plan(in).Unplaced["team-a/web"]
	in.Now = t0.Add(5 * time.Second)
	later, stillHeld := Plan(in).Unplaced["team-a/web"]
	if !held || !stillHeld {
		t.Fatalf("not held back: %v, %v", first, later)
	}
	if first.Summary() != later.Summary() {
		t.Errorf("the reason changed within one back-off:\n%s\n%s", first.Summary(), later.Summary())
	}
	if !strings.Contains(first.Summary(), "2026-12-01T12:00:08Z") {
		t.Errorf("the reason does not say when it is retried: %s", first.Summary())
	}
}

// The scheduler plans from the cache's own Offers: a planned Lease's
// prices must be its own, or writing them would write the cache.
func TestPlannedLeaseOwnsItsPrices(t *testing.T) {
	w := fixture.Workload("team-a", "web", fixture.Replicas(1), fixture.Identity("web-uid", 1))
	o := fixture.Offer("bob-1", "std", fixture.Priced("0.01", "0.004"))
	in := Input{Now: t0, Providers: []flotillav1.Provider{*fixture.Provider("bob-1", "bob", fixture.Ready())},
		Offers: []flotillav1.Offer{*o}, Workloads: []flotillav1.Workload{*w}, AllowUnaccounted: true}
	before := o.DeepCopy()
	created := Plan(in).Create
	if len(created) != 1 {
		t.Fatalf("planned %d Leases, want 1", len(created))
	}
	for r := range created[0].Lease.Spec.Prices {
		created[0].Lease.Spec.Prices[r] = "9"
	}
	if d := cmp.Diff(before.Spec.Prices, in.Offers[0].Spec.Prices); d != "" {
		t.Errorf("writing the planned Lease's prices changed the Offer's (-before +after):\n%s", d)
	}
}

// A Lease created under a name is never created again under it: names
// are deterministic in the Workload, the Offer and the epoch, and skip
// every name the Workload's Leases hold, closed ones included.
func TestPlanNamesAreNewAndStable(t *testing.T) {
	w := fixture.Workload("team-a", "web", fixture.Replicas(2), fixture.Identity("web-uid", 1))
	o := fixture.Offer("bob-1", "std")
	in := Input{Now: t0, Providers: []flotillav1.Provider{*fixture.Provider("bob-1", "bob", fixture.Ready())},
		Offers: []flotillav1.Offer{*o}, Workloads: []flotillav1.Workload{*w}, AllowUnaccounted: true}
	first := Plan(in).Create
	again := Plan(in).Create
	if len(first) != 1 || len(again) != 1 || first[0].Lease.Name != again[0].Lease.Name {
		t.Fatalf("the same cycle named its Lease differently: %v %v", first, again)
	}
	taken := first[0].Lease.DeepCopy()
	taken.Spec.Replicas = 1
	fixture.Ended(flotillav1.OutcomeCompleted)(taken) // holds no capacity, keeps its name
	in.Workloads[0].Spec.Class = flotillav1.ClassService
	in.Leases = []*flotillav1.Lease{taken}
	next := Plan(in).Create
	if len(next) != 1 || next[0].Lease.Name == taken.Name {
		t.Fatalf("a new Lease reused the name %s of a closed one: %+v", taken.Name, next)
	}
}

// inputObjects copies the API objects of in, so that a test can tell
// whether Plan wrote to any.
type inputObjects struct {
	Providers []flotillav1.Provider
	Offers    []flotillav1.Offer
	Workloads []flotillav1.Workload
	Accounts  []flotillav1.Account
	Leases    []*flotillav1.Lease
}

func copyInput(in Input) inputObjects {
	out := inputObjects{Providers: copyAll(in.Providers), Offers: copyAll(in.Offers),
		Workloads: copyAll(in.Workloads), Accounts: copyAll(in.Accounts)}
	for _, l := range in.Leases {
		out.Leases = append(out.Leases, l.DeepCopy())
	}
	return out
}

func copyAll[T any, P interface {
	*T
	DeepCopy() *T
}](in []T) []T {
	if in == nil {
		return nil
	}
	out := make([]T, len(in))
	for i := range in {
		out[i] = *P(&in[i]).DeepCopy()
	}
	return out
}

func BenchmarkPlan(b *testing.B) {
	in := Input{Now: t0, AllowUnaccounted: true}
	for i := range 100 {
		p := fmt.Sprintf("p-%d", i)
		in.Providers = append(in.Providers, *fixture.Provider(p, "owner-"+p, fixture.Ready()))
		in.Offers = append(in.Offers, *fixture.Offer(p, "std", fixture.Selling("64", "256Gi")))
	}
	for i := range 1000 {
		in.Workloads = append(in.Workloads, *fixture.Workload("team", fmt.Sprintf("w-%d", i), fixture.Replicas(3),
			fixture.Identity("uid", 1)))
	}
	b.ReportAllocs()
	for b.Loop() {
		Plan(in)
	}
}
