package controllers

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/conditions"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/money"
	"github.com/flotilla-dev/flotilla/internal/settle"
	"github.com/flotilla-dev/flotilla/internal/usage"
)

// Default economics.
const (
	DefaultSettlementInterval = 30 * time.Second
	DefaultEscrowPeriod       = 10 * time.Minute
	DefaultFundsGrace         = time.Minute
)

// Bank is the hub's single bookkeeping loop: the only writer of the
// ledger. Each cycle it settles what the hub observed (deposits, metered
// Leases, budgets) through internal/settle, signs and stores the entries,
// publishes the head, mirrors balances into Accounts, and stops Workloads
// whose budget or funds ran out. Its state is the ledger: after a restart or
// a change of leader it replays the stored entries and carries on, so
// nothing is paid twice or lost.
type Bank struct {
	Client client.Client
	// APIReader reads providers' usage reports, which are not cached.
	APIReader client.Reader
	Cache     cache.Cache
	Store     *ledgerstore.Store
	// Publisher publishes the signed head, the index and each party's
	// entries for witnesses.
	Publisher *ledgerstore.Publisher
	Key       func(context.Context) (ed25519.PrivateKey, error)
	Recorder  record.EventRecorder
	Policy    settle.Policy
	// MinInterval between two cycles, so a burst of changes costs one.
	MinInterval time.Duration
	Now         func() time.Time
	// Available, when set, is called each time the bank can settle again
	// (after a start or a failure): the scheduler waits on it, and would
	// otherwise notice only at its next resync.
	Available func()

	trigger chan struct{}
	// unavailable says why the last cycle could not settle; "" once one
	// did. It starts as "loading" so that nothing is placed unbilled
	// before the ledger is read.
	unavailable atomic.Pointer[string]
	failures    int
	// reported is each provider's verified report lines as last read, and
	// costSeen each Lease's metered cost at the last cycle: the bank
	// cycles at every change of a Lease, and reading every provider's
	// report each time was one request per provider per cycle. A report
	// is read again only when one of its provider's Leases was charged
	// more, which is when a payment can be due.
	reported map[string]map[string]*usage.Line
	costSeen map[types.UID]flotillav1.Amount
	book     *settle.Book
	chain    *ledger.Chain
	key      ed25519.PrivateKey
	// unstored are entries signed into the book and chain but not yet
	// known to be stored, unpublished ones stored but not yet in the
	// index; headStale says the published head is behind. After a write
	// that failed the bank keeps its book and stores these first, instead
	// of reloading the whole ledger.
	unstored, unpublished []ledger.Entry
	headStale             bool
}

// maxPendingFailures is how many cycles in a row may fail with entries
// pending before the bank gives up its book and reloads the ledger.
const maxPendingFailures = 6

// pendingError is a failure that left the book whole: what it did not
// store or publish is pending, and the next cycle does that first.
type pendingError struct{ err error }

func (e pendingError) Error() string { return e.err.Error() }
func (e pendingError) Unwrap() error { return e.err }

// NewBank returns a Bank with the default economics.
func NewBank(c client.Client, ca cache.Cache, store *ledgerstore.Store, rec record.EventRecorder,
	key func(context.Context) (ed25519.PrivateKey, error)) *Bank {
	return &Bank{
		Client: c, Cache: ca, Store: store, Key: key, Recorder: rec,
		Publisher:   &ledgerstore.Publisher{Client: store.Client, Reader: store.Reader, Hub: "hub"},
		Policy:      settle.Policy{EscrowPeriod: DefaultEscrowPeriod, Interval: DefaultSettlementInterval, Grace: DefaultFundsGrace},
		MinInterval: 200 * time.Millisecond, Now: time.Now, trigger: make(chan struct{}, 1),
	}
}

// Unavailable says why the bank cannot settle now, or "" when it can.
func (b *Bank) Unavailable() string {
	if p := b.unavailable.Load(); p != nil {
		return *p
	}
	return "the ledger has not been loaded yet"
}

// Trigger asks for a cycle soon.
func (b *Bank) Trigger() {
	select {
	case b.trigger <- struct{}{}:
	default:
	}
}

// Start runs the loop until ctx ends; it needs leader election.
func (b *Bank) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("bank")
	ctx = ctrl.LoggerInto(ctx, log)
	if err := watchChanges(ctx, b.Cache, bankInputChanged, b.Trigger,
		&flotillav1.Account{}, &flotillav1.Lease{}, &flotillav1.Workload{}); err != nil {
		return err
	}
	for {
		next, err := b.cycle(ctx)
		if err != nil {
			// Retry with a growing wait, not a reload every second; the
			// scheduler places nothing in accounted namespaces meanwhile.
			b.failures++
			next = min(time.Second<<min(b.failures-1, 6), time.Minute)
			if !errors.As(err, new(pendingError)) || b.failures > maxPendingFailures {
				log.Error(err, "Settlement cycle failed; reloading the ledger", "failures", b.failures, "retryIn", next)
				b.book, b.unstored, b.unpublished = nil, nil, nil
			} else {
				log.Error(err, "Settlement cycle failed; storing its entries first next cycle", "failures", b.failures,
					"retryIn", next, "unstored", len(b.unstored), "unpublished", len(b.unpublished))
			}
			why := bound.Error(err)
			b.unavailable.Store(&why)
			metrics.SettlementFailed(true)
		} else if b.failures > 0 || b.Unavailable() != "" {
			b.failures = 0
			b.unavailable.Store(new(string))
			metrics.SettlementFailed(false)
		}
		tick := time.NewTimer(next)
		select {
		case <-ctx.Done():
			tick.Stop()
			return nil
		case <-b.trigger:
		case <-tick.C:
		}
		tick.Stop()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(b.MinInterval):
		}
	}
}

// bankInputChanged passes the updates a settlement could act on: Leases
// sync their status every few seconds, and each would otherwise cost a
// settlement for nothing.
func bankInputChanged(o, n any) bool {
	switch ov := o.(type) {
	case *flotillav1.Lease:
		nv, ok := n.(*flotillav1.Lease)
		return !ok || ov.Status.Phase != nv.Status.Phase || ov.Status.Usage.Cost != nv.Status.Usage.Cost ||
			ov.Status.Verdict != nv.Status.Verdict || !ov.DeletionTimestamp.Equal(nv.DeletionTimestamp) ||
			len(ov.Finalizers) != len(nv.Finalizers)
	case *flotillav1.Workload:
		nv, ok := n.(*flotillav1.Workload)
		return !ok || ov.Generation != nv.Generation || ov.Status.Phase != nv.Status.Phase ||
			!ov.DeletionTimestamp.Equal(nv.DeletionTimestamp) ||
			apimeta.IsStatusConditionTrue(ov.Status.Conditions, flotillav1.WorkloadBudgetExhausted) !=
				apimeta.IsStatusConditionTrue(nv.Status.Conditions, flotillav1.WorkloadBudgetExhausted)
	}
	return true
}

// load replays the stored ledger.
func (b *Bank) load(ctx context.Context) error {
	if b.key == nil {
		k, err := b.Key(ctx)
		if err != nil {
			return fmt.Errorf("loading the ledger key: %w", err)
		}
		b.key = k
	}
	entries, err := b.Store.Load(ctx)
	if err != nil {
		return err
	}
	if err := ledger.Verify(entries, b.key.Public().(ed25519.PublicKey), ledger.Hash{}); err != nil {
		return fmt.Errorf("the stored ledger does not verify against the hub's key: %w", err)
	}
	book, err := settle.Replay(entries)
	if err != nil {
		return err
	}
	var last *ledger.Entry
	if len(entries) > 0 {
		last = &entries[len(entries)-1]
	}
	b.book, b.chain = book, ledger.NewChain(b.key, last)
	b.unstored, b.unpublished, b.headStale = nil, nil, false
	logr.FromContextOrDiscard(ctx).Info("Ledger loaded", "entries", len(entries), "head", b.chain.Head().String())
	// What witnesses read is rebuilt from what is stored, whatever it
	// said before: a ledger cut or rewritten shows as it now is. When the
	// stored entries extend what was published (a reload after a write
	// that failed), only what is missing is published.
	resumed, err := b.Publisher.Resume(ctx, entries)
	if err != nil {
		return fmt.Errorf("publishing the ledger index: %w", err)
	}
	if !resumed {
		if err := b.Publisher.Load(ctx, entries); err != nil {
			return fmt.Errorf("publishing the ledger index: %w", err)
		}
	}
	return b.publish(ctx)
}

func (b *Bank) publish(ctx context.Context) error {
	return b.Publisher.PublishHead(ctx, b.Publisher.Head(b.key, b.chain.Head(), b.Now()))
}

// cycle settles once and returns when the next one is due at the latest.
func (b *Bank) cycle(ctx context.Context) (time.Duration, error) {
	if b.book == nil {
		if err := b.load(ctx); err != nil {
			return 0, err
		}
	} else if err := b.flush(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	now := b.Now().UTC().Truncate(time.Second)
	var accounts flotillav1.AccountList
	var leases flotillav1.LeaseList
	var workloads flotillav1.WorkloadList
	for _, l := range []client.ObjectList{&accounts, &leases, &workloads} {
		if err := b.Client.List(ctx, l); err != nil {
			return 0, fmt.Errorf("listing %T: %w", l, err)
		}
	}
	obs := settle.Gather(now, accounts.Items, workloads.Items, leases.Items, b.reports(ctx, leases.Items))
	out := settle.Settle(b.book, b.Policy, obs.Input)
	if err := b.record(ctx, out.Entries); err != nil {
		return 0, err
	}
	// The books are loaded and up to date: placement may go on while the
	// rest of the cycle writes conditions and Account status, which after
	// a restart on a busy hub took tens of seconds.
	if b.Unavailable() != "" {
		b.unavailable.Store(new(string))
		if b.Available != nil {
			b.Available()
		}
	}
	b.reportDisputes(out.Disputed, leases.Items)
	// Only now that the entries are stored may ended Leases go.
	for _, l := range obs.Ending {
		if !obs.Releasable(b.book, l) {
			continue
		}
		patch := client.MergeFrom(l.DeepCopy())
		controllerutil.RemoveFinalizer(l, flotillav1.FinalizerSettlement)
		if err := b.Client.Patch(ctx, l, patch); client.IgnoreNotFound(err) != nil {
			return 0, fmt.Errorf("releasing lease %s/%s: %w", l.Namespace, l.Name, err)
		}
	}
	next, err := b.enforce(ctx, &obs, &out, workloads.Items, leases.Items, now)
	if err != nil {
		return 0, err
	}
	if err := b.mirror(ctx, obs.Tenants, accounts.Items, out.Refused); err != nil {
		return 0, err
	}
	// A party's copy that cannot be written now is written next cycle;
	// it must not hold up settlement.
	if err := b.Publisher.CopyToParties(ctx); err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "Copying ledger entries to their parties; retrying next cycle")
	}
	metrics.SettlementCycle(time.Since(start))
	return next, nil
}

// record signs a settlement's entries, then stores and publishes them.
func (b *Bank) record(ctx context.Context, entries []ledger.Entry) error {
	for _, e := range entries {
		s, err := b.chain.Append(e)
		if err != nil {
			return err
		}
		b.unstored = append(b.unstored, s)
		b.headStale = true
	}
	return b.flush(ctx)
}

// flush stores the entries not yet stored, publishes those not yet
// published, then the head, finding out first what a write that failed
// stored.
func (b *Bank) flush(ctx context.Context) error {
	if b.Store.Unsure() {
		if err := b.recoverStore(ctx); err != nil {
			return err
		}
	}
	if len(b.unstored) > 0 {
		if err := b.Store.Append(ctx, b.unstored); err != nil {
			// A write that timed out has often stored: read it back now
			// rather than a cycle later.
			if rerr := b.recoverStore(ctx); rerr != nil {
				return fmt.Errorf("%w; reading it back: %w", err, rerr)
			}
			if len(b.unstored) > 0 {
				return pendingError{err}
			}
		} else {
			metrics.LedgerAppended(len(b.unstored))
			b.unpublished, b.unstored = append(b.unpublished, b.unstored...), nil
		}
	}
	if len(b.unpublished) > 0 {
		err := b.Publisher.Append(ctx, b.unpublished)
		n := min(max(int(b.Publisher.Published())-int(b.unpublished[0].Seq), 0), len(b.unpublished))
		b.unpublished = b.unpublished[n:]
		if err != nil {
			return pendingError{fmt.Errorf("publishing the ledger index: %w", err)}
		}
	}
	if b.headStale {
		if err := b.publish(ctx); err != nil {
			return pendingError{fmt.Errorf("publishing the ledger head: %w", err)}
		}
		b.headStale = false
	}
	return nil
}

// recoverStore reads back what the store's failed append stored and
// moves it from unstored to unpublished. Entries there that this bank
// did not sign mean another writer: the book must be reloaded.
func (b *Bank) recoverStore(ctx context.Context) error {
	found, err := b.Store.Recover(ctx)
	switch {
	case errors.Is(err, ledgerstore.ErrRewritten):
		return err
	case err != nil:
		return pendingError{err}
	}
	if len(found) > len(b.unstored) || !slices.EqualFunc(found, b.unstored[:len(found)], func(x, y ledger.Entry) bool {
		return x.Seq == y.Seq && bytes.Equal(x.Sig, y.Sig)
	}) {
		return fmt.Errorf("%w: it holds entries this hub did not sign", ledgerstore.ErrRewritten)
	}
	if len(found) > 0 {
		logr.FromContextOrDiscard(ctx).Info("A ledger write that failed had stored entries", "entries", len(found))
		metrics.LedgerAppended(len(found))
	}
	b.unpublished, b.unstored = append(b.unpublished, found...), b.unstored[len(found):]
	return nil
}

func (b *Bank) reportDisputes(disputed []settle.Dispute, leases []flotillav1.Lease) {
	for _, d := range disputed {
		metrics.UsageDisputed()
		for i := range leases {
			if l := &leases[i]; l.Namespace == d.Lease.Namespace && l.Name == d.Lease.Name {
				b.Recorder.Eventf(l, "Warning", "UsageDisputed", "Provider %s reports %d replica-seconds, the hub observed %d: paid what the hub observed, entry marked disputed",
					d.Lease.Provider, d.ProviderReplicaSeconds, d.HubReplicaSeconds)
			}
		}
	}
}

// enforce tells each settled Workload whether its budget and funds hold,
// closes the Leases of those stopped, and returns when to settle next.
func (b *Bank) enforce(ctx context.Context, obs *settle.Observed, out *settle.Output, workloads []flotillav1.Workload,
	leases []flotillav1.Lease, now time.Time) (time.Duration, error) {
	next, retry := b.Policy.Interval, false
	var unwritten atomic.Bool // a condition write lost a race: retry soon
	// Side by side: one after another, a restart or a budget stop at
	// thousands of Workloads held the settlement for minutes.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(bankWriters)
	for i := range workloads {
		w := &workloads[i]
		if _, ok := obs.Input.Workloads[w.Namespace+"/"+w.Name]; !ok {
			continue
		}
		e := settle.Enforce(now, w, out)
		switch {
		case e.Wait > 0:
			next = min(next, e.Wait)
		case e.Retry:
			retry = true
		}
		g.Go(func() error {
			if ok, err := b.setFunds(gctx, w, e.Stop, e.Stopping, now); err != nil {
				return err
			} else if !ok {
				unwritten.Store(true)
			}
			if e.Wait <= 0 && !e.Retry && e.CloseLeases {
				return b.stopWorkload(gctx, w, leases, e.Stop)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	if retry || unwritten.Load() {
		next = min(next, time.Second)
	}
	return next, nil
}

// reports reads each provider's signed usage report and keeps the lines
// whose signature its public key verifies; a report that cannot be read or
// checked counts as none.
func (b *Bank) reports(ctx context.Context, leases []flotillav1.Lease) map[string]map[string]*usage.Line {
	out := map[string]map[string]*usage.Line{}
	stale := map[string]bool{}
	costs := make(map[types.UID]flotillav1.Amount, len(leases))
	for i := range leases {
		l := &leases[i]
		costs[l.UID] = l.Status.Usage.Cost
		if c, ok := b.costSeen[l.UID]; !ok || c != l.Status.Usage.Cost {
			stale[l.Spec.ProviderRef.Name] = true
		}
	}
	b.costSeen = costs
	if b.reported == nil {
		b.reported = map[string]map[string]*usage.Line{}
	}
	var toRead []string
	for i := range leases {
		name := leases[i].Spec.ProviderRef.Name
		if _, done := out[name]; done {
			continue
		}
		if lines, ok := b.reported[name]; ok && !stale[name] {
			out[name] = lines
			continue
		}
		out[name] = nil
		toRead = append(toRead, name)
	}
	// Side by side: read one after another, a thousand providers' reports
	// on a busy API server held a settlement for minutes.
	read := make([]map[string]*usage.Line, len(toRead))
	got := make([]bool, len(toRead))
	var g errgroup.Group
	g.SetLimit(reportReaders)
	for i, name := range toRead {
		g.Go(func() error {
			read[i], got[i] = b.report(ctx, name)
			return nil
		})
	}
	_ = g.Wait() // nothing fails: a report not read is read next cycle
	for i, name := range toRead {
		out[name] = read[i]
		if got[i] {
			b.reported[name] = read[i]
		} else {
			// Not read: asked again next cycle, not taken as an empty report
			// until its next charge.
			delete(b.reported, name)
		}
	}
	for name := range b.reported {
		if _, ok := out[name]; !ok {
			delete(b.reported, name)
		}
	}
	return out
}

// reportReaders bounds the usage reports read at once, and reportTimeout
// each read.
const (
	reportReaders = 16
	reportTimeout = 10 * time.Second
)

// report reads provider name's usage report and keeps the lines its key
// signed; got is false when the report could not be read (not when it was
// read and found wanting, which the provider must mend).
func (b *Bank) report(ctx context.Context, name string) (lines map[string]*usage.Line, got bool) {
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	p := &flotillav1.Provider{}
	if err := b.Client.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
		return nil, false
	}
	if p.Spec.PublicKey == "" {
		return nil, true
	}
	cm := &corev1.ConfigMap{}
	if err := b.reader().Get(ctx, client.ObjectKey{Namespace: flotillav1.ProviderNamespace(name), Name: usage.ConfigMapName}, cm); err != nil {
		return nil, false
	}
	pub, err := base64.StdEncoding.DecodeString(p.Spec.PublicKey)
	r, perr := usage.Parse([]byte(cm.Data[usage.DataKey]))
	if err != nil || perr != nil || r.Provider != name {
		return nil, true
	}
	lines = map[string]*usage.Line{}
	for j := range r.Lines {
		if l := &r.Lines[j]; l.Verify(pub, name) {
			lines[l.Lease] = l
		}
	}
	return lines, true
}

func (b *Bank) reader() client.Reader {
	if b.APIReader != nil {
		return b.APIReader
	}
	return b.Client
}

// setFunds writes the Workload's BudgetExhausted condition; false means a
// conflicting write, to retry.
func (b *Bank) setFunds(ctx context.Context, w *flotillav1.Workload, st settle.Stop, stopping bool, now time.Time) (bool, error) {
	cond := metav1.Condition{Type: flotillav1.WorkloadBudgetExhausted, ObservedGeneration: w.Generation,
		Status: metav1.ConditionFalse, Reason: flotillav1.WorkloadReasonWithinBudget, Message: "budget and credits cover the next settlement"}
	if stopping {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, st.Reason, bound.Message(st.Message)
	}
	old := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadBudgetExhausted)
	if old != nil && old.Status == cond.Status && old.Reason == cond.Reason && old.Message == cond.Message {
		return true, nil
	}
	if old != nil && old.Status == cond.Status && old.Reason == cond.Reason {
		// Keep when it was first told, for the grace period; and the
		// generation it was told at, for a budget stop to hold.
		cond.ObservedGeneration = old.ObservedGeneration
	}
	cond.LastTransitionTime = metav1.Time{Time: now}
	if old != nil && old.Status == cond.Status {
		cond.LastTransitionTime = old.LastTransitionTime
	}
	// The bank owns this one condition of the Workload; the Workload
	// controller owns the rest of its status.
	c, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&cond)
	if err != nil {
		return false, err
	}
	if err := applyStatus(ctx, b.Client, w, map[string]any{"conditions": []any{c}}, ManagerBank, w.ResourceVersion); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("setting %s on workload %s/%s: %w", cond.Type, w.Namespace, w.Name, err)
	}
	if stopping && (old == nil || old.Status != metav1.ConditionTrue || old.Reason != st.Reason) {
		b.Recorder.Eventf(w, "Warning", st.Reason, "%s", st.Message)
	} else if !stopping && old != nil && old.Status == metav1.ConditionTrue {
		b.Recorder.Eventf(w, "Normal", flotillav1.WorkloadReasonResumed, "Budget and credits suffice again: %s", cond.Message)
	}
	return true, nil
}

// stopWorkload closes a Workload's live Leases; their pods go with their
// namespaces on the providers, and their escrow comes back at the next
// settlement.
func (b *Bank) stopWorkload(ctx context.Context, w *flotillav1.Workload, leases []flotillav1.Lease, st settle.Stop) error {
	n := 0
	for i := range leases {
		l := &leases[i]
		if l.Namespace != w.Namespace || l.Spec.WorkloadRef.Name != w.Name || !l.Live() {
			continue
		}
		if err := b.Client.Delete(ctx, l); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("closing lease %s/%s: %w", l.Namespace, l.Name, err)
		}
		n++
	}
	if n > 0 {
		b.Recorder.Eventf(w, "Warning", flotillav1.WorkloadReasonStopped, "Closed %d leases: %s", n, st.Message)
	}
	return nil
}

// mirror writes each Account's status from the book, and makes the
// Accounts of providers that earned something.
func (b *Bank) mirror(ctx context.Context, tenants map[string]*flotillav1.Account, all []flotillav1.Account, refused map[string]string) error {
	held := map[string]money.Micro{}
	for acct, v := range b.book.Balances {
		if rest, ok := strings.CutPrefix(acct, "escrow:"); ok {
			ns, _, _ := strings.Cut(rest, "/")
			held[ns] += v
		}
	}
	spent := map[string]money.Micro{}
	for wl, v := range b.book.Charged {
		ns, _, _ := strings.Cut(wl, "/")
		spent[ns] += v
	}
	existing := map[string]*flotillav1.Account{}
	for i := range all {
		existing[all[i].Namespace] = &all[i]
	}
	// Written side by side: a thousand providers' earnings, one after
	// another, took a settlement minutes on a busy API server.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(bankWriters)
	for ns, a := range tenants {
		st := a.Status.DeepCopy()
		st.ObservedGeneration = a.Generation
		st.Deposited = amount(b.book.Deposited[ns])
		st.Available = amount(b.book.Balances[settle.Tenant(ns)])
		st.Held = amount(held[ns])
		st.Spent = amount(spent[ns])
		st.LedgerEntries = int64(b.book.Len)
		conditions.Apply(&st.Conditions, a.Generation, accountSummary(refused, ns))
		g.Go(func() error { return b.writeAccount(gctx, a, st) })
	}
	for acct, v := range b.book.Balances {
		if name, ok := strings.CutPrefix(acct, "provider:"); ok {
			a := existing[flotillav1.ProviderNamespace(name)]
			g.Go(func() error { return b.mirrorProvider(gctx, name, a, v) })
		}
	}
	return g.Wait()
}

// bankWriters bounds the Account writes a settlement has in flight.
const bankWriters = 16

// mirrorProvider writes what provider name earned into its Account, a
// (nil: made first).
func (b *Bank) mirrorProvider(ctx context.Context, name string, a *flotillav1.Account, earned money.Micro) error {
	if a == nil {
		a = &flotillav1.Account{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.AccountName, Namespace: flotillav1.ProviderNamespace(name)}}
		if err := b.Client.Create(ctx, a); err != nil {
			if apierrors.IsNotFound(err) || apierrors.IsAlreadyExists(err) {
				return nil // the provider's namespace is gone, or the next cycle sees it
			}
			return fmt.Errorf("creating the account of provider %s: %w", name, err)
		}
	}
	st := a.Status.DeepCopy()
	st.ObservedGeneration = a.Generation
	st.Earned, st.LedgerEntries = amount(earned), int64(b.book.Len)
	conditions.Apply(&st.Conditions, a.Generation, conditions.Summary{State: conditions.Current,
		Reason: flotillav1.AccountReasonCredited, Message: "earnings are recorded in the ledger"})
	return b.writeAccount(ctx, a, st)
}

func (b *Bank) writeAccount(ctx context.Context, a *flotillav1.Account, st *flotillav1.AccountStatus) error {
	// The entry count alone changing is no reason to write.
	unchanged := *st
	unchanged.LedgerEntries = a.Status.LedgerEntries
	if equality.Semantic.DeepEqual(&unchanged, &a.Status) {
		return nil
	}
	// Mirrored from the book, not added to: the last write wins.
	if err := applyStatus(ctx, b.Client, a, st, ManagerBank, ""); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("writing the status of account %s: %w", a.Namespace, err)
	}
	return nil
}

// accountSummary is a tenant Account's Ready: a refused credit stalls it
// until its owner corrects the deposit.
func accountSummary(refused map[string]string, ns string) conditions.Summary {
	if why, bad := refused[ns]; bad {
		return conditions.Summary{State: conditions.Stalled, Reason: flotillav1.AccountReasonCreditRefused, Message: why}
	}
	return conditions.Summary{State: conditions.Current, Reason: flotillav1.AccountReasonCredited,
		Message: "credits are recorded in the ledger"}
}

func amount(m money.Micro) flotillav1.Amount { return flotillav1.Amount(max(m, 0).String()) }
