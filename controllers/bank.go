package controllers

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/money"
	"github.com/flotilla-dev/flotilla/internal/settle"
	"github.com/flotilla-dev/flotilla/internal/usage"
)

// SettlementFinalizer keeps an ended Lease until the bank has paid its last
// usage and refunded its escrow.
const SettlementFinalizer = "flotilla.dev/settlement"

// Reasons of the BudgetExhausted condition and the Account's Ready.
const (
	ReasonWithinBudget  = "WithinBudget"
	ReasonCreditRefused = "CreditRefused"
	ReasonCredited      = "Credited"
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
	Key       func(context.Context) (ed25519.PrivateKey, error)
	Recorder  record.EventRecorder
	Policy    settle.Policy
	// MinInterval between two cycles, so a burst of changes costs one.
	MinInterval time.Duration
	Now         func() time.Time

	trigger chan struct{}
	// unavailable says why the last cycle could not settle; "" once one
	// did. It starts as "loading" so that nothing is placed unbilled
	// before the ledger is read.
	unavailable atomic.Pointer[string]
	failures    int
	book        *settle.Book
	chain       *ledger.Chain
	key         ed25519.PrivateKey
}

// NewBank returns a Bank with the default economics.
func NewBank(c client.Client, ca cache.Cache, store *ledgerstore.Store, rec record.EventRecorder,
	key func(context.Context) (ed25519.PrivateKey, error)) *Bank {
	return &Bank{
		Client: c, Cache: ca, Store: store, Key: key, Recorder: rec,
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
			log.Error(err, "Settlement cycle failed; reloading the ledger", "failures", b.failures, "retryIn", next)
			b.book = nil
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
	logr.FromContextOrDiscard(ctx).Info("Ledger loaded", "entries", len(entries), "head", b.chain.Head().String())
	return b.publish(ctx)
}

func (b *Bank) publish(ctx context.Context) error {
	return b.Store.PublishHead(ctx, ledgerstore.Head{Entries: b.book.Len, Hash: b.chain.Head(),
		PublicKey: b.key.Public().(ed25519.PublicKey), Time: b.Now()})
}

// cycle settles once and returns when the next one is due at the latest.
func (b *Bank) cycle(ctx context.Context) (time.Duration, error) {
	if b.book == nil {
		if err := b.load(ctx); err != nil {
			return 0, err
		}
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
	in := settle.Input{Now: now, Credited: map[string]money.Micro{}, Workloads: map[string]settle.Workload{}}
	tenants := map[string]*flotillav1.Account{}
	for i := range accounts.Items {
		a := &accounts.Items[i]
		if a.Name != flotillav1.AccountName || strings.HasPrefix(a.Namespace, "provider-") {
			continue
		}
		c, err := money.Parse(string(a.Spec.Credited))
		if a.Spec.Credited == "" {
			c, err = 0, nil
		}
		if err != nil {
			continue // refused at admission
		}
		in.Credited[a.Namespace] = c
		tenants[a.Namespace] = a
	}
	for i := range workloads.Items {
		w := &workloads.Items[i]
		if _, ok := in.Credited[w.Namespace]; !ok || w.DeletionTimestamp != nil {
			continue
		}
		sw := settle.Workload{Wants: wantsToRun(w), Generation: w.Generation}
		if w.Spec.Budget != nil {
			if bud, err := money.Parse(string(*w.Spec.Budget)); err == nil {
				sw.Budget, sw.Capped = bud, true
			}
		}
		if c := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadBudgetExhausted); c != nil && c.Status == metav1.ConditionTrue {
			sw.Stopped, sw.StoppedSince, sw.StoppedGeneration = c.Reason, c.LastTransitionTime.Time, c.ObservedGeneration
		}
		in.Workloads[w.Namespace+"/"+w.Name] = sw
	}
	reports := b.reports(ctx, leases.Items)
	var release []*flotillav1.Lease
	for i := range leases.Items {
		l := &leases.Items[i]
		deleting := l.DeletionTimestamp != nil
		if deleting && controllerutil.ContainsFinalizer(l, LeaseFinalizer) {
			continue // its last usage is metered when the provider side is gone
		}
		if deleting && controllerutil.ContainsFinalizer(l, SettlementFinalizer) {
			release = append(release, l)
		}
		sl := settle.Lease{Namespace: l.Namespace, Workload: l.Spec.WorkloadRef.Name, Name: l.Name, Provider: l.Spec.ProviderRef.Name,
			Live: leaseLive(l) && !deleting, ReplicaSeconds: l.Status.Usage.ReplicaSeconds}
		sl.Metered, _ = money.Parse(string(l.Status.Usage.Cost))
		if p, err := money.Parse(string(l.Spec.PricePerReplicaHour)); err == nil {
			sl.PerHour = p * money.Micro(l.Spec.Replicas)
		}
		sl.Replicas = l.Spec.Replicas
		if l.Status.Verdict == flotillav1.VerdictDissented {
			sl.Dissent = orNone(l.Status.Digest)
		}
		if u := l.Status.Usage.MeteredUntil; u != nil {
			sl.MeteredUntil = u.Time
			sl.Report = reports[l.Spec.ProviderRef.Name][string(l.UID)]
		}
		in.Leases = append(in.Leases, sl)
	}

	out := settle.Settle(b.book, b.Policy, in)
	if len(out.Entries) > 0 {
		signed := make([]ledger.Entry, 0, len(out.Entries))
		for _, e := range out.Entries {
			s, err := b.chain.Append(e)
			if err != nil {
				return 0, err
			}
			signed = append(signed, s)
		}
		if err := b.Store.Append(ctx, signed); err != nil {
			return 0, err
		}
		if err := b.publish(ctx); err != nil {
			return 0, fmt.Errorf("publishing the ledger head: %w", err)
		}
		metrics.LedgerAppended(len(signed))
	}
	for _, d := range out.Disputed {
		metrics.UsageDisputed()
		for i := range leases.Items {
			if l := &leases.Items[i]; l.Namespace == d.Lease.Namespace && l.Name == d.Lease.Name {
				b.Recorder.Eventf(l, "Warning", "UsageDisputed", "Provider %s reports %d replica-seconds, the hub observed %d: paid what the hub observed, entry marked disputed",
					d.Lease.Provider, d.ProviderReplicaSeconds, d.HubReplicaSeconds)
			}
		}
	}

	// Only now that the entries are stored may ended Leases go.
	for _, l := range release {
		if _, accounted := in.Credited[l.Namespace]; accounted {
			if lb := b.book.Leases[settle.LeaseRef(l.Namespace, l.Spec.WorkloadRef.Name, l.Name)]; lb == nil || !lb.Closed {
				continue
			}
		}
		patch := client.MergeFrom(l.DeepCopy())
		controllerutil.RemoveFinalizer(l, SettlementFinalizer)
		if err := b.Client.Patch(ctx, l, patch); client.IgnoreNotFound(err) != nil {
			return 0, fmt.Errorf("releasing lease %s/%s: %w", l.Namespace, l.Name, err)
		}
	}
	next := b.Policy.Interval
	retry := false
	for i := range workloads.Items {
		w := &workloads.Items[i]
		key := w.Namespace + "/" + w.Name
		if _, ok := in.Workloads[key]; !ok {
			continue
		}
		st, stopping := out.Stops[key]
		// Leases are closed only once the condition is in the cache the
		// scheduler reads too: seeing the Leases go before it, the
		// scheduler would replace them.
		told := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadBudgetExhausted)
		visible := told != nil && told.Status == metav1.ConditionTrue && told.Reason == st.Reason
		if ok, err := b.setFunds(ctx, w, st, stopping, now); err != nil {
			return 0, err
		} else if !ok {
			retry = true
		}
		if !stopping {
			continue
		}
		if wait := st.At.Sub(now); wait > 0 {
			next = min(next, wait)
			continue
		}
		if !visible {
			retry = true
			continue
		}
		if err := b.stopWorkload(ctx, w, leases.Items, st); err != nil {
			return 0, err
		}
	}
	if err := b.mirror(ctx, tenants, accounts.Items, out.Refused); err != nil {
		return 0, err
	}
	if retry {
		next = min(next, time.Second)
	}
	metrics.SettlementCycle(time.Since(start))
	return next, nil
}

// reports reads each provider's signed usage report and keeps the lines
// whose signature its public key verifies; a report that cannot be read or
// checked counts as none.
func (b *Bank) reports(ctx context.Context, leases []flotillav1.Lease) map[string]map[string]*usage.Line {
	out := map[string]map[string]*usage.Line{}
	for i := range leases {
		name := leases[i].Spec.ProviderRef.Name
		if _, done := out[name]; done {
			continue
		}
		out[name] = nil
		p := &flotillav1.Provider{}
		cm := &corev1.ConfigMap{}
		if b.Client.Get(ctx, client.ObjectKey{Name: name}, p) != nil || p.Spec.PublicKey == "" ||
			b.reader().Get(ctx, client.ObjectKey{Namespace: flotillav1.ProviderNamespace(name), Name: usage.ConfigMapName}, cm) != nil {
			continue
		}
		pub, err := base64.StdEncoding.DecodeString(p.Spec.PublicKey)
		r, perr := usage.Parse([]byte(cm.Data[usage.DataKey]))
		if err != nil || perr != nil || r.Provider != name {
			continue
		}
		lines := map[string]*usage.Line{}
		for j := range r.Lines {
			if l := &r.Lines[j]; l.Verify(pub, name) {
				lines[l.Lease] = l
			}
		}
		out[name] = lines
	}
	return out
}

func (b *Bank) reader() client.Reader {
	if b.APIReader != nil {
		return b.APIReader
	}
	return b.Client
}

// wantsToRun reports a Workload that would have replicas running.
func wantsToRun(w *flotillav1.Workload) bool {
	if w.Spec.Replicas == 0 {
		return false
	}
	return w.Status.Phase != flotillav1.WorkloadSucceeded && w.Status.Phase != flotillav1.WorkloadFailed
}

// setFunds writes the Workload's BudgetExhausted condition; false means a
// conflicting write, to retry.
func (b *Bank) setFunds(ctx context.Context, w *flotillav1.Workload, st settle.Stop, stopping bool, now time.Time) (bool, error) {
	cond := metav1.Condition{Type: flotillav1.WorkloadBudgetExhausted, ObservedGeneration: w.Generation,
		Status: metav1.ConditionFalse, Reason: ReasonWithinBudget, Message: "budget and credits cover the next settlement"}
	if stopping {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, st.Reason, st.Message
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
	patch := client.MergeFromWithOptions(w.DeepCopy(), client.MergeFromWithOptimisticLock{})
	setCondition(&w.Status.Conditions, cond)
	if err := b.Client.Status().Patch(ctx, w, patch); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("setting %s on workload %s/%s: %w", cond.Type, w.Namespace, w.Name, err)
	}
	if stopping && (old == nil || old.Status != metav1.ConditionTrue || old.Reason != st.Reason) {
		b.Recorder.Eventf(w, "Warning", st.Reason, "%s", st.Message)
	} else if !stopping && old != nil && old.Status == metav1.ConditionTrue {
		b.Recorder.Eventf(w, "Normal", "Resumed", "Budget and credits suffice again: %s", cond.Message)
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
		if l.Namespace != w.Namespace || l.Spec.WorkloadRef.Name != w.Name || !leaseLive(l) || l.DeletionTimestamp != nil {
			continue
		}
		if err := b.Client.Delete(ctx, l); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("closing lease %s/%s: %w", l.Namespace, l.Name, err)
		}
		n++
	}
	if n > 0 {
		b.Recorder.Eventf(w, "Warning", "Stopped", "Closed %d leases: %s", n, st.Message)
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
	for ns, a := range tenants {
		st := a.Status.DeepCopy()
		st.ObservedGeneration = a.Generation
		st.Deposited = amount(b.book.Deposited[ns])
		st.Available = amount(b.book.Balances[settle.Tenant(ns)])
		st.Held = amount(held[ns])
		st.Spent = amount(spent[ns])
		st.LedgerEntries = int64(b.book.Len)
		ready := metav1.Condition{Type: flotillav1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonCredited,
			Message: "credits are recorded in the ledger", ObservedGeneration: a.Generation}
		if why, bad := refused[ns]; bad {
			ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonCreditRefused, why
		}
		setCondition(&st.Conditions, ready)
		if err := b.writeAccount(ctx, a, st); err != nil {
			return err
		}
	}
	for acct, v := range b.book.Balances {
		name, ok := strings.CutPrefix(acct, "provider:")
		if !ok {
			continue
		}
		ns := flotillav1.ProviderNamespace(name)
		a := existing[ns]
		if a == nil {
			a = &flotillav1.Account{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.AccountName, Namespace: ns}}
			if err := b.Client.Create(ctx, a); err != nil {
				if apierrors.IsNotFound(err) {
					continue // the provider's namespace is gone
				}
				if !apierrors.IsAlreadyExists(err) {
					return fmt.Errorf("creating the account of provider %s: %w", name, err)
				}
				continue // next cycle sees it
			}
		}
		st := a.Status.DeepCopy()
		st.Earned, st.LedgerEntries = amount(v), int64(b.book.Len)
		if err := b.writeAccount(ctx, a, st); err != nil {
			return err
		}
	}
	return nil
}

func (b *Bank) writeAccount(ctx context.Context, a *flotillav1.Account, st *flotillav1.AccountStatus) error {
	// The entry count alone changing is no reason to write.
	unchanged := *st
	unchanged.LedgerEntries = a.Status.LedgerEntries
	if equality.Semantic.DeepEqual(&unchanged, &a.Status) {
		return nil
	}
	patch := client.MergeFrom(a.DeepCopy())
	a.Status = *st
	if err := b.Client.Status().Patch(ctx, a, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("writing the status of account %s: %w", a.Namespace, err)
	}
	return nil
}

func amount(m money.Micro) flotillav1.Amount { return flotillav1.Amount(max(m, 0).String()) }
