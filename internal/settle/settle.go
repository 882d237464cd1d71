// Package settle is the hub's bookkeeping: from the ledger so far and what
// the hub observes now (credited accounts, metered Leases, budgets), it
// computes the ledger entries that move credits, and which Workloads must
// stop for want of budget or funds. It is pure; the bank loop in
// controllers stores the entries and acts on the verdicts.
//
// Credits move only between accounts, so they are conserved: the sum of all
// balances always equals the sum of deposits.
//
//   - "tenant:<ns>" is a tenant namespace's available balance, credited by
//     an administrator (its Account's spec.credited);
//   - "escrow:<ns>/<lease>" holds credits reserved for one Lease: opening
//     a Lease reserves its price for EscrowPeriod, and every settlement
//     tops it up again;
//   - "provider:<name>" is what a provider earned;
//   - "hub" collects the fee (FeeBPS basis points of every payment).
//
// Usage is paid out of the Lease's escrow, only as far as the hub metered
// it, the Workload's budget allows and the escrow and the tenant's balance
// cover: a tenant never spends more than it has, nor a Workload more than
// its budget. What could not be paid is paid later if funds arrive. When a
// Lease ends, its escrow goes back to the tenant.
package settle

import (
	"cmp"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/metering"
	"github.com/flotilla-dev/flotilla/internal/money"
	"github.com/flotilla-dev/flotilla/internal/usage"
)

// Hub is the account fees go to.
const Hub = "hub"

// Tenant, Escrow and Provider name ledger accounts.
func Tenant(ns string) string              { return "tenant:" + ns }
func Escrow(ns, lease string) string       { return "escrow:" + ns + "/" + lease }
func Provider(name string) string          { return "provider:" + name }
func LeaseRef(ns, wl, lease string) string { return ns + "/" + wl + "/" + lease }

// Book is the state of the ledger, replayed from its entries.
type Book struct {
	Balances map[string]money.Micro
	// Deposited per tenant namespace.
	Deposited map[string]money.Micro
	// Leases by reference ("<ns>/<workload>/<lease>").
	Leases map[string]*LeaseBook
	// Charged per Workload ("<ns>/<workload>"): usage paid, fees included.
	Charged map[string]money.Micro
	// LastDeposit per tenant namespace.
	LastDeposit map[string]time.Time
	// Entries replayed.
	Len int
}

// LeaseBook is one Lease's part of the ledger.
type LeaseBook struct {
	Opened, Closed bool
	// Dissented: a Dispute entry records that its result disagreed with
	// its Workload's verified digest.
	Dissented bool
	// Settled is the usage paid for it so far, fees included.
	Settled money.Micro
	// ReplicaSeconds metered when it was last settled.
	ReplicaSeconds int64
}

// NewBook returns an empty book.
func NewBook() *Book {
	return &Book{Balances: map[string]money.Micro{}, Deposited: map[string]money.Micro{},
		Leases: map[string]*LeaseBook{}, Charged: map[string]money.Micro{}, LastDeposit: map[string]time.Time{}}
}

// Replay builds the book of a ledger.
func Replay(entries []ledger.Entry) (*Book, error) {
	b := NewBook()
	for i := range entries {
		if err := b.Apply(&entries[i]); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Apply adds one entry to the book.
func (b *Book) Apply(e *ledger.Entry) error {
	if e.Amount < 0 || e.Fee < 0 {
		return fmt.Errorf("entry %d: negative amount", e.Seq)
	}
	switch e.Kind {
	case ledger.Deposit:
		ns, ok := strings.CutPrefix(e.To, "tenant:")
		if !ok {
			return fmt.Errorf("entry %d: deposit to %q, not a tenant", e.Seq, e.To)
		}
		b.Deposited[ns] += e.Amount
		b.Balances[e.To] += e.Amount
		if e.Time.After(b.LastDeposit[ns]) {
			b.LastDeposit[ns] = e.Time
		}
		b.Len++
		return nil
	case ledger.Dispute:
		b.lease(e.Lease).Dissented = true
		b.Len++
		return nil
	}
	lb := b.lease(e.Lease)
	switch e.Kind {
	case ledger.LeaseOpened:
		lb.Opened = true
	case ledger.LeaseClosed:
		lb.Closed = true
	case ledger.UsageSettled:
		lb.Settled += e.Amount + e.Fee
		lb.ReplicaSeconds = max(lb.ReplicaSeconds, e.ReplicaSeconds)
		b.Charged[workloadOf(e.Lease)] += e.Amount + e.Fee
	}
	if e.Amount > 0 || e.Fee > 0 {
		if e.From == "" || e.To == "" {
			return fmt.Errorf("entry %d: moves credits without both accounts", e.Seq)
		}
		b.Balances[e.From] -= e.Amount + e.Fee
		b.Balances[e.To] += e.Amount
		if e.Fee > 0 {
			b.Balances[Hub] += e.Fee
		}
	}
	b.Len++
	return nil
}

func (b *Book) lease(ref string) *LeaseBook {
	lb := b.Leases[ref]
	if lb == nil {
		lb = &LeaseBook{}
		b.Leases[ref] = lb
	}
	return lb
}

func workloadOf(ref string) string {
	i := strings.LastIndexByte(ref, '/')
	if i < 0 {
		return ref
	}
	return ref[:i]
}

// Policy sets the economics.
type Policy struct {
	// EscrowPeriod of a Lease's price is reserved when it opens.
	EscrowPeriod time.Duration
	// Interval between settlements; a Workload whose budget or funds would
	// not last it is told to stop when they run out.
	Interval time.Duration
	// Grace a Workload short of funds keeps running, while its escrow lasts,
	// before its Leases close.
	Grace time.Duration
	// FeeBPS is the hub's fee in basis points of each payment.
	FeeBPS int64
	// Tolerance between the hub's count and a provider's report before a
	// payment is marked disputed; zero means usage.DefaultTolerance.
	Tolerance usage.Tolerance
}

// Lease is what the hub observes of one Lease now.
type Lease struct {
	Namespace, Workload, Name, Provider string
	// Live Leases hold replicas; ended ones are settled for the last time
	// and their escrow refunded.
	Live bool
	// Metered cost and replica-seconds so far (Lease status.usage).
	Metered        money.Micro
	ReplicaSeconds int64
	// PerHour is the Lease's price per hour for all its replicas.
	PerHour money.Micro
	// Replicas and MeteredUntil (the end of the hub's count) are compared
	// with the provider's Report, a Line whose signature was checked.
	Replicas     int32
	MeteredUntil time.Time
	Report       *usage.Line
	// Running is the replicas running as last written: a busy hub puts
	// off writing usage (up to lease.MaxFlushDelay), and a budget counts
	// the time since MeteredUntil at that count.
	Running int32
	// Dissent is the result digest this copy of a verified Workload
	// reported when it disagreed with the quorum ("none" for no digest).
	Dissent string
}

// Unmetered is what a live Lease's replicas cost since its usage was last
// written, at the count written then.
func (l *Lease) Unmetered(now time.Time) money.Micro {
	if !l.Live || l.MeteredUntil.IsZero() || l.Running <= 0 || l.Replicas <= 0 || !now.After(l.MeteredUntil) {
		return 0
	}
	secs := min(int64(now.Sub(l.MeteredUntil)/time.Second), 1<<31)
	return metering.Cost(int64(l.Running)*secs, l.PerHour/money.Micro(l.Replicas))
}

// Ref is the Lease's reference in the ledger.
func (l *Lease) Ref() string { return LeaseRef(l.Namespace, l.Workload, l.Name) }

// Workload is what settlement needs of a Workload in an accounted namespace.
type Workload struct {
	// Wants replicas running: a Service with replicas, a Batch not finished.
	Wants bool
	// Budget caps its total cost when Capped.
	Budget money.Micro
	Capped bool
	// Generation of its spec.
	Generation int64
	// Stopped is the reason it was told to stop (its BudgetExhausted
	// condition is True), with since when and at which generation.
	Stopped           string
	StoppedSince      time.Time
	StoppedGeneration int64
}

// Input is one settlement's view of the hub.
type Input struct {
	Now time.Time
	// Credited per accounted tenant namespace: what its Account says an
	// administrator granted in all. Leases of other namespaces are not
	// settled.
	Credited map[string]money.Micro
	Leases   []Lease
	// Workloads of accounted namespaces by "<ns>/<name>".
	Workloads map[string]Workload
}

// Reasons a Workload must stop.
const (
	ReasonBudgetExhausted   = "BudgetExhausted"
	ReasonInsufficientFunds = "InsufficientFunds"
)

// Stop tells a Workload to stop at At (now or later), and why.
type Stop struct {
	Reason, Message string
	At              time.Time
}

// Output is what a settlement decided.
type Output struct {
	// Entries to append, unsigned, in order.
	Entries []ledger.Entry
	// Stops by Workload ("<ns>/<workload>").
	Stops map[string]Stop
	// Refused deposits by namespace, with why.
	Refused map[string]string
	// Disputed payments: the provider's report differs from the hub's
	// count beyond the tolerance. The hub paid what it observed.
	Disputed []Dispute
}

// Dispute is one payment the provider's report disagrees with.
type Dispute struct {
	Lease                  Lease
	HubReplicaSeconds      int64
	ProviderReplicaSeconds int64
}

// Settle computes one settlement and applies its entries to b.
func Settle(b *Book, p Policy, in Input) Output {
	out := Output{Stops: map[string]Stop{}, Refused: map[string]string{}}
	add := func(e ledger.Entry) {
		e.Time = in.Now
		if err := b.Apply(&e); err != nil {
			panic(err) // entries made here are well-formed by construction
		}
		out.Entries = append(out.Entries, e)
	}
	move := func(kind ledger.Kind, ref, from, to string, amount money.Micro) {
		if amount < 0 {
			amount = 0
		}
		add(ledger.Entry{Kind: kind, Lease: ref, From: from, To: to, Amount: amount})
	}

	for _, ns := range slices.Sorted(maps.Keys(in.Credited)) {
		switch c, d := in.Credited[ns], b.Deposited[ns]; {
		case c > d:
			add(ledger.Entry{Kind: ledger.Deposit, To: Tenant(ns), Amount: c - d})
		case c < d:
			out.Refused[ns] = fmt.Sprintf("spec.credited %s is below the %s already deposited: credits can only grow", c, d)
		}
	}

	leases := slices.Clone(in.Leases)
	slices.SortFunc(leases, func(x, y Lease) int { return cmp.Compare(x.Ref(), y.Ref()) })
	unpaid := map[string]string{} // workload -> reason
	perHour := map[string]money.Micro{}
	held := map[string]money.Micro{}      // escrow of live Leases, by workload
	unmetered := map[string]money.Micro{} // spent but not yet written, by workload
	for i := range leases {
		l := &leases[i]
		ref, wl := l.Ref(), l.Namespace+"/"+l.Workload
		if lb := b.Leases[ref]; l.Dissent != "" && (lb == nil || !lb.Dissented) {
			// Recorded for every namespace: it is about the provider.
			add(ledger.Entry{Kind: ledger.Dispute, Lease: ref, To: Provider(l.Provider),
				ProviderReport: []byte("result " + l.Dissent + " disagreed with the quorum")})
		}
		if _, accounted := in.Credited[l.Namespace]; !accounted {
			continue
		}
		lb := b.lease(ref)
		if lb.Closed {
			continue
		}
		tenant, escrow := Tenant(l.Namespace), Escrow(l.Namespace, l.Name)
		target := metering.Cost(int64(p.EscrowPeriod/time.Second), l.PerHour)
		if !lb.Opened {
			amount := money.Micro(0)
			if l.Live {
				amount = min(target, max(b.Balances[tenant], 0))
			}
			move(ledger.LeaseOpened, ref, tenant, escrow, amount)
		}
		if due := l.Metered - lb.Settled; due > 0 {
			pay := due
			w := in.Workloads[wl]
			budget, capped := w.Budget, w.Capped
			if capped {
				pay = min(pay, max(budget-b.Charged[wl], 0))
			}
			if short := pay - b.Balances[escrow]; short > 0 {
				if top := min(short, max(b.Balances[tenant], 0)); top > 0 {
					move(ledger.EscrowMoved, ref, tenant, escrow, top)
				}
			}
			pay = min(pay, max(b.Balances[escrow], 0))
			if pay > 0 {
				fee := money.Micro(int64(pay) / 10000 * p.FeeBPS)
				fee += money.Micro(int64(pay) % 10000 * p.FeeBPS / 10000)
				e := ledger.Entry{Kind: ledger.UsageSettled, Lease: ref, From: escrow, To: Provider(l.Provider),
					Amount: pay - fee, Fee: fee, ReplicaSeconds: l.ReplicaSeconds}
				if r := l.Report; r != nil {
					tol := p.Tolerance
					if tol == (usage.Tolerance{}) {
						tol = usage.DefaultTolerance
					}
					e.ProviderReport, e.ProviderSig = r.Canonical(l.Provider), r.Sig
					e.Disputed = usage.Disputed(*r, l.ReplicaSeconds, l.MeteredUntil, l.Replicas, tol)
					if e.Disputed {
						out.Disputed = append(out.Disputed, Dispute{Lease: *l, HubReplicaSeconds: l.ReplicaSeconds, ProviderReplicaSeconds: r.ReplicaSeconds})
					}
				}
				add(e)
			}
			if pay < due {
				if capped && b.Charged[wl] >= budget {
					unpaid[wl] = ReasonBudgetExhausted
				} else if unpaid[wl] == "" {
					unpaid[wl] = ReasonInsufficientFunds
				}
			}
		}
		if !l.Live {
			move(ledger.LeaseClosed, ref, escrow, tenant, b.Balances[escrow])
			continue
		}
		perHour[wl] += l.PerHour
		unmetered[wl] += l.Unmetered(in.Now)
		if top := min(target-b.Balances[escrow], max(b.Balances[tenant], 0)); top > 0 {
			move(ledger.EscrowMoved, ref, tenant, escrow, top)
		}
		// No later entry of this settlement touches this escrow.
		held[wl] += max(b.Balances[escrow], 0)
	}

	for _, wl := range slices.Sorted(maps.Keys(in.Workloads)) {
		w, rate := in.Workloads[wl], perHour[wl]
		if rate == 0 && !w.Wants {
			continue
		}
		if st, ok := stop(b, p, in.Now, wl, w, rate, unpaid[wl], held[wl], unmetered[wl]); ok {
			out.Stops[wl] = st
		}
	}
	return out
}

// stop decides whether a Workload running at rate an hour (0: nothing
// live) must stop, and when. A Workload told to stop for its budget stays
// stopped until its spec changes; one stopped for want of funds, until a
// deposit arrives after it stopped: otherwise each refund of escrow would
// start it again for a moment.
func stop(b *Book, p Policy, now time.Time, wl string, w Workload, rate money.Micro, unpaid string, escrow, unmetered money.Micro) (Stop, bool) {
	ns, _, _ := strings.Cut(wl, "/")
	if w.Capped {
		left := w.Budget - b.Charged[wl] - unmetered
		switch {
		case left <= 0 || unpaid == ReasonBudgetExhausted:
			return Stop{Reason: ReasonBudgetExhausted, At: now,
				Message: fmt.Sprintf("its budget of %s is spent; raise spec.budget to resume", w.Budget)}, true
		case rate == 0 && w.Stopped == ReasonBudgetExhausted && w.StoppedGeneration == w.Generation:
			return Stop{Reason: ReasonBudgetExhausted, At: now,
				Message: fmt.Sprintf("stopped with %s of its budget of %s left; raise spec.budget to resume", left, w.Budget)}, true
		case rate > 0 && duration(left, rate) < p.Interval:
			at := now.Add(duration(left, rate))
			return Stop{Reason: ReasonBudgetExhausted, At: at,
				Message: fmt.Sprintf("%s of its budget of %s is left, enough until %s at %s an hour", left, w.Budget, stamp(at), rate)}, true
		}
	}
	avail := max(b.Balances[Tenant(ns)], 0)
	if rate == 0 {
		switch {
		case avail == 0:
			return Stop{Reason: ReasonInsufficientFunds, At: now,
				Message: fmt.Sprintf("namespace %s has no credits available", ns)}, true
		case w.Stopped == ReasonInsufficientFunds && !b.LastDeposit[ns].After(w.StoppedSince):
			return Stop{Reason: ReasonInsufficientFunds, At: now,
				Message: fmt.Sprintf("stopped for want of credits; namespace %s has %s available, and resumes with the next deposit", ns, avail)}, true
		}
		return Stop{}, false
	}
	lasts := duration(escrow+avail, rate)
	if unpaid != ReasonInsufficientFunds && lasts >= p.Interval {
		return Stop{}, false
	}
	since := now
	if w.Stopped == ReasonInsufficientFunds && !w.StoppedSince.IsZero() {
		since = w.StoppedSince
	}
	at := since.Add(p.Grace)
	if end := now.Add(lasts); end.Before(at) {
		at = end
	}
	if at.Before(now) {
		at = now
	}
	return Stop{Reason: ReasonInsufficientFunds, At: at,
		Message: fmt.Sprintf("namespace %s has %s available and %s in escrow, less than %s of usage at %s an hour; stopping at %s unless credits arrive",
			ns, avail, escrow, p.Interval, rate, stamp(at))}, true
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// duration is how long amount lasts at perHour, rounded down to the second.
func duration(amount, perHour money.Micro) time.Duration {
	if perHour <= 0 {
		return 1<<63 - 1
	}
	if amount <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(amount), 3600)
	if hi >= uint64(perHour) {
		return 1<<63 - 1
	}
	secs, _ := bits.Div64(hi, lo, uint64(perHour))
	if secs > uint64(1<<63-1)/uint64(time.Second) {
		return 1<<63 - 1
	}
	return time.Duration(secs) * time.Second
}
