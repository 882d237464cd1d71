package settle

import (
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/money"
	"github.com/flotilla-dev/flotilla/internal/usage"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

var policy = Policy{EscrowPeriod: 10 * time.Minute, Interval: 30 * time.Second, Grace: time.Minute, FeeBPS: 250}

func c(s string) money.Micro { return money.MustParse(s) }

// lines renders entries compactly for comparison.
func lines(es []ledger.Entry) string {
	var out []string
	for _, e := range es {
		l := fmt.Sprintf("%s %s>%s %s", e.Kind, e.From, e.To, e.Amount)
		if e.Fee > 0 {
			l += " fee " + e.Fee.String()
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func web(metered string, live bool) Lease {
	return Lease{Namespace: "team", Workload: "web", Name: "l1", Provider: "p1", Live: live,
		Metered: c(metered), PerHour: c("0.6")} // 0.06 for 6 minutes, 0.1 for 10
}

// unwritten is l with one replica running since its usage was written at
// until.
func unwritten(l Lease, until time.Time) Lease {
	l.Replicas, l.Running, l.MeteredUntil = 1, 1, until
	return l
}

func TestSettle(t *testing.T) {
	type step struct {
		in        Input
		entries   string
		stop      string // "reason@seconds after now", or ""
		refused   string
		tenant    string
		provider  string
		hub, held string
	}
	wants := map[string]Workload{"team/web": {Wants: true}}
	tests := map[string][]step{
		"a deposit, an opening with escrow, a payment with fee, a top-up and a refund": {
			{in: Input{Credited: map[string]money.Micro{"team": c("1")}, Workloads: wants, Leases: []Lease{web("0", true)}},
				entries: "Deposit >tenant:team 1\nLeaseOpened tenant:team>escrow:team/l1 0.1",
				tenant:  "0.9", held: "0.1", provider: "0", hub: "0"},
			{in: Input{Credited: map[string]money.Micro{"team": c("1")}, Workloads: wants, Leases: []Lease{web("0.04", true)}},
				entries: "UsageSettled escrow:team/l1>provider:p1 0.039 fee 0.001\nEscrowMoved tenant:team>escrow:team/l1 0.04",
				tenant:  "0.86", held: "0.1", provider: "0.039", hub: "0.001"},
			{in: Input{Credited: map[string]money.Micro{"team": c("1")}, Workloads: wants, Leases: []Lease{web("0.05", false)}},
				entries: "UsageSettled escrow:team/l1>provider:p1 0.00975 fee 0.00025\nLeaseClosed escrow:team/l1>tenant:team 0.09",
				tenant:  "0.95", held: "0", provider: "0.04875", hub: "0.00125"},
			// Closed for good: nothing more, whatever it says.
			{in: Input{Credited: map[string]money.Micro{"team": c("1")}, Workloads: wants, Leases: []Lease{web("0.07", false)}},
				entries: "", tenant: "0.95", held: "0", provider: "0.04875", hub: "0.00125"},
		},
		"credits can only grow": {
			{in: Input{Credited: map[string]money.Micro{"team": c("2")}}, entries: "Deposit >tenant:team 2", tenant: "2"},
			{in: Input{Credited: map[string]money.Micro{"team": c("1")}}, entries: "", tenant: "2",
				refused: "spec.credited 1 is below the 2 already deposited: credits can only grow"},
			{in: Input{Credited: map[string]money.Micro{"team": c("2.5")}}, entries: "Deposit >tenant:team 0.5", tenant: "2.5"},
		},
		"a namespace without an Account is not settled": {
			{in: Input{Credited: map[string]money.Micro{}, Workloads: map[string]Workload{}, Leases: []Lease{web("0.04", true)}}, entries: ""},
		},
		"a budget caps what is paid and stops the Workload": {
			{in: Input{Credited: map[string]money.Micro{"team": c("1")}, Leases: []Lease{web("0", true)},
				Workloads: map[string]Workload{"team/web": {Wants: true, Capped: true, Budget: c("0.049")}}},
				entries: "Deposit >tenant:team 1\nLeaseOpened tenant:team>escrow:team/l1 0.1", tenant: "0.9"},
			// 0.045 charged, 0.004 left: 24 s at 0.6 an hour, less than an interval.
			{in: Input{Credited: map[string]money.Micro{"team": c("1")}, Leases: []Lease{web("0.045", true)},
				Workloads: map[string]Workload{"team/web": {Wants: true, Capped: true, Budget: c("0.049")}}},
				entries: "UsageSettled escrow:team/l1>provider:p1 0.043875 fee 0.001125\nEscrowMoved tenant:team>escrow:team/l1 0.045",
				stop:    "BudgetExhausted@24", tenant: "0.855"},
			// Metered beyond the budget: only the budget is paid.
			{in: Input{Credited: map[string]money.Micro{"team": c("1")}, Leases: []Lease{web("0.06", true)},
				Workloads: map[string]Workload{"team/web": {Wants: true, Capped: true, Budget: c("0.049")}}},
				entries: "UsageSettled escrow:team/l1>provider:p1 0.0039 fee 0.0001\nEscrowMoved tenant:team>escrow:team/l1 0.004",
				stop:    "BudgetExhausted@0", tenant: "0.851"},
		},
		"usage the hub has not written yet counts against the budget": {
			{in: Input{Credited: map[string]money.Micro{"team": c("1")}, Leases: []Lease{web("0", true)},
				Workloads: map[string]Workload{"team/web": {Wants: true, Capped: true, Budget: c("0.049")}}},
				entries: "Deposit >tenant:team 1\nLeaseOpened tenant:team>escrow:team/l1 0.1", tenant: "0.9"},
			// 0.03 written; its one replica ran 2 minutes since (0.02 at 0.6
			// an hour), which leaves nothing of 0.049.
			{in: Input{Credited: map[string]money.Micro{"team": c("1")}, Leases: []Lease{unwritten(web("0.03", true), t0.Add(-time.Minute))},
				Workloads: map[string]Workload{"team/web": {Wants: true, Capped: true, Budget: c("0.049")}}},
				entries: "UsageSettled escrow:team/l1>provider:p1 0.02925 fee 0.00075\nEscrowMoved tenant:team>escrow:team/l1 0.03",
				stop:    "BudgetExhausted@0", tenant: "0.87"},
		},
		"a stopped budget stays stopped until the spec changes": {
			{in: Input{Credited: map[string]money.Micro{"team": c("1")},
				Workloads: map[string]Workload{"team/web": {Wants: true, Capped: true, Budget: c("0.05"), Generation: 1,
					Stopped: ReasonBudgetExhausted, StoppedGeneration: 1}}},
				entries: "Deposit >tenant:team 1", stop: "BudgetExhausted@0", tenant: "1"},
			{in: Input{Credited: map[string]money.Micro{"team": c("1")},
				Workloads: map[string]Workload{"team/web": {Wants: true, Capped: true, Budget: c("0.10"), Generation: 2,
					Stopped: ReasonBudgetExhausted, StoppedGeneration: 1}}},
				entries: "", tenant: "1"},
		},
		"short of funds: what is there is paid, and the Workload stops when it runs out": {
			// 0.004 lasts 24 s at 0.6 an hour: less than an interval.
			{in: Input{Credited: map[string]money.Micro{"team": c("0.004")}, Workloads: wants, Leases: []Lease{web("0", true)}},
				entries: "Deposit >tenant:team 0.004\nLeaseOpened tenant:team>escrow:team/l1 0.004",
				stop:    "InsufficientFunds@24", tenant: "0", held: "0.004"},
			{in: Input{Credited: map[string]money.Micro{"team": c("0.004")}, Workloads: wants, Leases: []Lease{web("0.007", true)}},
				entries: "UsageSettled escrow:team/l1>provider:p1 0.0039 fee 0.0001",
				stop:    "InsufficientFunds@0", tenant: "0", held: "0", provider: "0.0039"},
		},
		"short of funds with escrow to spare: the grace applies": {
			{in: Input{Credited: map[string]money.Micro{"team": c("0.1")}, Workloads: wants, Leases: []Lease{web("0", true)}},
				entries: "Deposit >tenant:team 0.1\nLeaseOpened tenant:team>escrow:team/l1 0.1", tenant: "0", held: "0.1"},
			// Metered 0.096: 0.004 left in escrow, nothing to top up with.
			{in: Input{Credited: map[string]money.Micro{"team": c("0.1")}, Workloads: wants, Leases: []Lease{web("0.096", true)}},
				entries: "UsageSettled escrow:team/l1>provider:p1 0.0936 fee 0.0024",
				stop:    "InsufficientFunds@24", tenant: "0", held: "0.004"},
			// Told to stop a while ago: the grace counts from then.
			{in: Input{Credited: map[string]money.Micro{"team": c("0.1")}, Leases: []Lease{web("0.096", true)},
				Workloads: map[string]Workload{"team/web": {Wants: true, Stopped: ReasonInsufficientFunds, StoppedSince: t0.Add(2*time.Minute - 50*time.Second)}}},
				entries: "", stop: "InsufficientFunds@10", held: "0.004"},
		},
		"without credits nothing starts, and a stop holds until a deposit": {
			{in: Input{Credited: map[string]money.Micro{"team": 0}, Workloads: wants},
				entries: "", stop: "InsufficientFunds@0"},
			{in: Input{Credited: map[string]money.Micro{"team": c("0.01")},
				Workloads: map[string]Workload{"team/web": {Wants: true, Stopped: ReasonInsufficientFunds, StoppedSince: t0.Add(time.Hour)}}},
				entries: "Deposit >tenant:team 0.01", tenant: "0.01", stop: "InsufficientFunds@0"},
			{in: Input{Credited: map[string]money.Micro{"team": c("0.01")},
				Workloads: map[string]Workload{"team/web": {Wants: true, Stopped: ReasonInsufficientFunds, StoppedSince: t0.Add(-time.Hour)}}},
				entries: "", tenant: "0.01"},
		},
	}
	for name, steps := range tests {
		t.Run(name, func(t *testing.T) {
			b := NewBook()
			for i, st := range steps {
				in := st.in
				in.Now = t0.Add(time.Duration(i) * time.Minute)
				out := Settle(b, policy, in)
				if got := lines(out.Entries); got != st.entries {
					t.Errorf("step %d entries:\n%s\nwant:\n%s", i, got, st.entries)
				}
				stop := ""
				if s, ok := out.Stops["team/web"]; ok {
					stop = fmt.Sprintf("%s@%d", s.Reason, int(s.At.Sub(in.Now).Seconds()))
				}
				if stop != st.stop {
					t.Errorf("step %d stop %q (%+v), want %q", i, stop, out.Stops, st.stop)
				}
				if out.Refused["team"] != st.refused {
					t.Errorf("step %d refused %q, want %q", i, out.Refused["team"], st.refused)
				}
				for acct, want := range map[string]string{Tenant("team"): st.tenant, Provider("p1"): st.provider, Hub: st.hub, Escrow("team", "l1"): st.held} {
					if want != "" && b.Balances[acct] != c(want) {
						t.Errorf("step %d: %s holds %s, want %s", i, acct, b.Balances[acct], want)
					}
				}
			}
		})
	}
}

// TestConservation runs random hubs through many settlements: credits are
// only moved, no tenant or escrow goes below zero, no Workload is charged
// beyond its budget, and once every Lease has ended the tenants' spending
// equals the providers' earnings plus fees, to the micro-credit. Replaying
// the entries gives the same book.
func TestConservation(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 7))
		b := NewBook()
		var all []ledger.Entry
		credited := map[string]money.Micro{"a": 0, "b": 0}
		type lease struct {
			Lease
			ended bool
		}
		var leases []*lease
		budgets := map[string]money.Micro{"a/w0": money.Micro(r.IntN(200000)), "b/w1": -1}
		now := t0
		for cycle := range 60 {
			now = now.Add(time.Duration(1+r.IntN(60)) * time.Second)
			for ns := range credited {
				if r.IntN(4) == 0 {
					credited[ns] += money.Micro(r.IntN(100000))
				}
			}
			if r.IntN(3) == 0 && cycle < 50 {
				ns := []string{"a", "b"}[r.IntN(2)]
				wl := map[string]string{"a": "w0", "b": "w1"}[ns]
				leases = append(leases, &lease{Lease: Lease{Namespace: ns, Workload: wl, Name: fmt.Sprintf("l%d", len(leases)),
					Provider: fmt.Sprintf("p%d", r.IntN(3)), Live: true, PerHour: money.Micro(1 + r.IntN(2000000))}})
			}
			var in []Lease
			for _, l := range leases {
				if l.Live {
					l.ReplicaSeconds += int64(r.IntN(120))
					l.Metered += money.Micro(r.IntN(3000))
					if r.IntN(8) == 0 || cycle >= 55 {
						l.Live = false
					}
				}
				in = append(in, l.Lease)
			}
			wls := map[string]Workload{}
			for wl, bud := range budgets {
				wls[wl] = Workload{Wants: true, Capped: bud >= 0, Budget: max(bud, 0)}
			}
			out := Settle(b, policy, Input{Now: now, Credited: credited, Leases: in, Workloads: wls})
			all = append(all, out.Entries...)

			var sum, deposits money.Micro
			for acct, v := range b.Balances {
				sum += v
				if v < 0 {
					t.Fatalf("seed %d cycle %d: %s went below zero: %s", seed, cycle, acct, v)
				}
			}
			for _, d := range b.Deposited {
				deposits += d
			}
			if sum != deposits {
				t.Fatalf("seed %d cycle %d: balances sum to %s, deposits to %s", seed, cycle, sum, deposits)
			}
			if bud := budgets["a/w0"]; b.Charged["a/w0"] > bud {
				t.Fatalf("seed %d cycle %d: charged %s beyond the budget %s", seed, cycle, b.Charged["a/w0"], bud)
			}
		}
		// Every Lease ended: no escrow is left, and what tenants spent
		// is exactly what providers earned plus fees.
		var spent, earned money.Micro
		for ns := range credited {
			spent += b.Deposited[ns] - b.Balances[Tenant(ns)]
		}
		for acct, v := range b.Balances {
			switch {
			case strings.HasPrefix(acct, "escrow:") && v != 0:
				t.Fatalf("seed %d: %s still holds %s after its Lease ended", seed, acct, v)
			case strings.HasPrefix(acct, "provider:"):
				earned += v
			}
		}
		if spent != earned+b.Balances[Hub] {
			t.Fatalf("seed %d: tenants spent %s, providers earned %s and fees are %s", seed, spent, earned, b.Balances[Hub])
		}
		replayed, err := Replay(all)
		if err != nil {
			t.Fatal(err)
		}
		ledgerBal, err := ledger.Balances(all)
		if err != nil {
			t.Fatal(err)
		}
		for acct, v := range b.Balances {
			if replayed.Balances[acct] != v || ledgerBal[acct] != v {
				t.Fatalf("seed %d: %s is %s live, %s replayed, %s by ledger.Balances", seed, acct, v, replayed.Balances[acct], ledgerBal[acct])
			}
		}
	}
}

func BenchmarkSettle(b *testing.B) {
	var leases []Lease
	for i := range 1000 {
		leases = append(leases, Lease{Namespace: fmt.Sprintf("ns%d", i%50), Workload: "w", Name: fmt.Sprintf("l%d", i),
			Provider: "p", Live: true, PerHour: c("0.5")})
	}
	credited := map[string]money.Micro{}
	for i := range 50 {
		credited[fmt.Sprintf("ns%d", i)] = c("1000000")
	}
	book := NewBook()
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(30 * time.Second)
		for i := range leases {
			leases[i].Metered += c("0.004")
		}
		Settle(book, policy, Input{Now: now, Credited: credited, Leases: leases})
	}
}

// A payment carries the provider's signed report when there is one, and is
// marked disputed when the report differs from the hub's count beyond the
// tolerance; either way the hub pays what it observed.
func TestSettleComparesProviderReports(t *testing.T) {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	line := func(rs int64) *usage.Line {
		l := &usage.Line{Lease: "uid-1", ReplicaSeconds: rs, Until: t0}
		l.Sign(key, "p1")
		return l
	}
	b := NewBook()
	wants := map[string]Workload{"team/web": {Wants: true}}
	credited := map[string]money.Micro{"team": c("10")}
	lease := func(metered string, rs int64, r *usage.Line) Lease {
		l := web(metered, true)
		l.ReplicaSeconds, l.Replicas, l.MeteredUntil, l.Report = rs, 1, t0, r
		return l
	}
	Settle(b, policy, Input{Now: t0, Credited: credited, Workloads: wants, Leases: []Lease{lease("0", 0, nil)}})

	out := Settle(b, policy, Input{Now: t0.Add(time.Minute), Credited: credited, Workloads: wants, Leases: []Lease{lease("0.05", 300, line(310))}})
	paid := out.Entries[0]
	if paid.Kind != ledger.UsageSettled || paid.Disputed || len(paid.ProviderSig) == 0 || string(paid.ProviderReport) != string(line(310).Canonical("p1")) {
		t.Fatalf("honest report: entry %+v", paid)
	}
	if len(out.Disputed) != 0 {
		t.Errorf("honest report disputed: %+v", out.Disputed)
	}

	out = Settle(b, policy, Input{Now: t0.Add(2 * time.Minute), Credited: credited, Workloads: wants, Leases: []Lease{lease("0.06", 360, line(3600))}})
	paid = out.Entries[0]
	if !paid.Disputed || paid.Amount+paid.Fee != c("0.01") {
		t.Fatalf("inflated report: entry %+v, want disputed and 0.01 paid (the hub's count)", paid)
	}
	if len(out.Disputed) != 1 || out.Disputed[0].ProviderReplicaSeconds != 3600 || out.Disputed[0].HubReplicaSeconds != 360 {
		t.Errorf("disputes %+v", out.Disputed)
	}
}

// A copy that dissented from its quorum gets one Dispute entry naming its
// provider, in any namespace, moving no credits.
func TestSettleRecordsDissentOnce(t *testing.T) {
	b := NewBook()
	l := web("0", false)
	l.Dissent = "sha256:ff"
	var all []ledger.Entry
	for i := range 3 {
		out := Settle(b, policy, Input{Now: t0.Add(time.Duration(i) * time.Minute), Credited: map[string]money.Micro{}, Leases: []Lease{l}})
		all = append(all, out.Entries...)
		want := ""
		if i == 0 {
			want = "Dispute >provider:p1 0"
		}
		if got := lines(out.Entries); got != want {
			t.Errorf("settlement %d: %q, want %q", i, got, want)
		}
		if i == 0 && string(out.Entries[0].ProviderReport) != "result sha256:ff disagreed with the quorum" {
			t.Errorf("dispute entry %+v", out.Entries[0])
		}
	}
	// A restarted hub, replaying the ledger, does not record it again.
	replayed, err := Replay(all)
	if err != nil {
		t.Fatal(err)
	}
	if out := Settle(replayed, policy, Input{Now: t0.Add(time.Hour), Credited: map[string]money.Micro{}, Leases: []Lease{l}}); len(out.Entries) != 0 {
		t.Errorf("after a replay: %s", lines(out.Entries))
	}
}
