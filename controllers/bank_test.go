package controllers

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/keys"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/internal/money"
	"github.com/flotilla-dev/flotilla/internal/settle"
	"github.com/flotilla-dev/flotilla/internal/usage"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// startEconomy runs the scheduler, the Workload controller and the bank
// (settling every second, 2.5% fee) until the returned function is called.
func startEconomy(t *testing.T) (stop func()) {
	t.Helper()
	return startEconomyWith(t, func(*ledgerstore.Store) {})
}

// startEconomyWith lets a test change the bank's ledger store first.
func startEconomyWith(t *testing.T, change func(*ledgerstore.Store)) (stop func()) {
	t.Helper()
	namespace(t, flotillav1.SystemNamespace)
	mgr := newTestManager(t)
	ctx, cancel := context.WithCancel(context.Background())
	if err := SetupIndexes(ctx, mgr); err != nil {
		t.Fatal(err)
	}
	s := NewScheduler(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetCache(), mgr.GetEventRecorderFor("scheduler"))
	s.MinInterval = 50 * time.Millisecond
	if err := mgr.Add(s); err != nil {
		t.Fatal(err)
	}
	if err := (&WorkloadReconciler{Client: mgr.GetClient(), Scheduler: s, Recorder: mgr.GetEventRecorderFor("workload")}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	store := &ledgerstore.Store{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: flotillav1.SystemNamespace, ChunkEntries: 7}
	change(store)
	bank := NewBank(mgr.GetClient(), mgr.GetCache(), store, mgr.GetEventRecorderFor("bank"), ledgerKey(t))
	bank.APIReader = mgr.GetAPIReader()
	bank.Policy.Interval, bank.Policy.FeeBPS = time.Second, 250
	if err := mgr.Add(bank); err != nil {
		t.Fatal(err)
	}
	return run(t, mgr, ctx, cancel)
}

func ledgerKey(t *testing.T) func(context.Context) (ed25519.PrivateKey, error) {
	return func(ctx context.Context) (ed25519.PrivateKey, error) {
		cs, err := kubernetes.NewForConfig(env.Config)
		if err != nil {
			return nil, err
		}
		return keys.Ensure(ctx, cs, flotillav1.SystemNamespace, ledgerstore.KeySecret)
	}
}

// account grants ns credited credits on its Account.
func account(t *testing.T, ns, credited string) {
	t.Helper()
	namespace(t, ns)
	a := getAccount(ns)
	a.Spec.Credited = flotillav1.Amount(credited)
	if err := env.Client.Update(context.Background(), a); err != nil {
		t.Fatal(err)
	}
}

func getAccount(ns string) *flotillav1.Account {
	a := &flotillav1.Account{}
	_ = env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: flotillav1.AccountName}, a)
	return a
}

// meter does what the Lease controller does when it meters usage.
func meter(t *testing.T, l *flotillav1.Lease, cost string, replicaSeconds int64) {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(l), l); err != nil {
		t.Fatal(err)
	}
	l.Status.Phase = flotillav1.LeaseActive
	l.Status.Usage.Cost, l.Status.Usage.ReplicaSeconds = flotillav1.Amount(cost), replicaSeconds
	l.Status.Usage.MeteredUntil = &metav1.Time{Time: time.Now().Truncate(time.Second)}
	if err := env.Client.Status().Update(ctx, l); err != nil {
		t.Fatal(err)
	}
}

// storedLedger reads the ledger as the CLI would and checks it against the
// published head and key.
func storedLedger(t *testing.T) ([]ledger.Entry, ledger.Head) {
	t.Helper()
	ctx := context.Background()
	// The head first: the bank stores entries before it publishes them.
	head, err := ledgerstore.ReadHead(ctx, env.Client)
	if err != nil {
		t.Fatal(err)
	}
	store := &ledgerstore.Store{Client: env.Client, Reader: env.Client, Namespace: flotillav1.SystemNamespace}
	entries, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int(head.Entries) > len(entries) {
		t.Fatalf("head says %d entries, %d stored", head.Entries, len(entries))
	}
	entries = entries[:int(head.Entries)]
	if err := ledger.Verify(entries, head.PublicKey, head.Hash); err != nil {
		t.Fatalf("stored ledger: %v", err)
	}
	return entries, head
}

// A Lease opens with escrow, its metered usage is paid to the provider with
// the fee, and when it ends its escrow comes back; a restart in between
// neither loses nor repeats an entry, and the books balance.
func TestBankSettlesLeasesAcrossRestart(t *testing.T) {
	ctx := context.Background()
	const ns, suite = "tenant-bank", "bank"
	readyProvider(t, "bank-a", "bank-a")
	createOffer(t, "bank-a", "std", suite, "8", "0.6")
	account(t, ns, "10")
	w := newWorkload(ns, "web", suite, 1, "1")
	if err := env.Client.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	stop := startEconomy(t)

	var l flotillav1.Lease
	hubenv.Await(t, 20*time.Second, "a lease with its escrow", func() (bool, string) {
		ls := leasesOfWorkload(t, ns, "web")
		a := getAccount(ns)
		if len(ls) == 1 {
			l = ls[0]
		}
		// 0.6 an hour for 10 minutes.
		return len(ls) == 1 && a.Status.Held == "0.1" && a.Status.Available == "9.9", fmt.Sprintf("%d leases, %+v", len(ls), a.Status)
	})
	if !controllerutil.ContainsFinalizer(&l, flotillav1.FinalizerSettlement) {
		t.Errorf("lease %s lacks the settlement finalizer: %v", l.Name, l.Finalizers)
	}
	meter(t, &l, "0.05", 300)
	hubenv.Await(t, 10*time.Second, "usage paid to the provider", func() (bool, string) {
		a, p := getAccount(ns), getAccount(flotillav1.ProviderNamespace("bank-a"))
		return a.Status.Spent == "0.05" && a.Status.Held == "0.1" && a.Status.Available == "9.85" && p.Status.Earned == "0.04875",
			fmt.Sprintf("tenant %+v provider %+v", a.Status, p.Status)
	})
	before, _ := storedLedger(t)

	stop()
	stop = startEconomy(t)
	defer func() { stop() }()
	hubenv.Holds(t, 3*time.Second, "the ledger unchanged over settlements with nothing new after a restart", func() (bool, string) {
		after, _ := storedLedger(t)
		return len(after) == len(before), fmt.Sprintf("from %d to %d entries", len(before), len(after))
	})

	// The Workload goes; its Lease is metered one last time, the provider
	// side cleaned (the Lease controller's finalizer), and the bank pays,
	// refunds and lets the Lease go.
	if err := env.Client.Delete(ctx, w); err != nil {
		t.Fatal(err)
	}
	meter(t, &l, "0.06", 360)
	if err := env.Client.Delete(ctx, &l); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(&l), &l); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(l.DeepCopy())
	controllerutil.RemoveFinalizer(&l, flotillav1.FinalizerProviderCleanup)
	if err := env.Client.Patch(ctx, &l, patch); err != nil {
		t.Fatal(err)
	}
	hubenv.Await(t, 10*time.Second, "the lease settled, refunded and gone", func() (bool, string) {
		a := getAccount(ns)
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(&l), &flotillav1.Lease{})
		return a.Status.Spent == "0.06" && a.Status.Held == "0" && a.Status.Available == "9.94" && err != nil,
			fmt.Sprintf("%+v; lease: %v", a.Status, err)
	})

	entries, _ := storedLedger(t)
	bal, err := ledger.Balances(entries)
	if err != nil {
		t.Fatal(err)
	}
	if got := bal["tenant:"+ns]; got != money.MustParse("9.94") {
		t.Errorf("tenant balance recomputed from the ledger %s, want 9.94", got)
	}
	var sum money.Micro
	for _, v := range bal {
		sum += v
	}
	var deposits money.Micro
	for _, e := range entries {
		if e.Kind == ledger.Deposit {
			deposits += e.Amount
		}
	}
	if sum != deposits {
		t.Errorf("balances sum to %s, deposits to %s", sum, deposits)
	}
}

// A Workload whose usage reaches its budget is charged the budget and no
// more, stopped, kept from new replicas, and resumes when the budget grows.
func TestBudgetStopsAndResumesAWorkload(t *testing.T) {
	ctx := context.Background()
	const ns, suite = "tenant-budget", "budget"
	readyProvider(t, "budget-a", "budget-a")
	createOffer(t, "budget-a", "std", suite, "8", "0.6")
	account(t, ns, "10")
	w := newWorkload(ns, "web", suite, 1, "1")
	w.Spec.Budget = ptr.To(flotillav1.Amount("0.05"))
	if err := env.Client.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	stop := startEconomy(t)
	defer stop()

	l := awaitOneLease(t, ns, "web")
	meter(t, &l, "0.08", 480) // beyond the budget
	got := awaitStopped(t, w, &l, "BudgetExhausted")
	awaitKStatus(t, got.DeepCopy(), "Failed") // until its owner raises the budget
	if a := getAccount(ns); a.Status.Spent != "0.05" {
		t.Errorf("spent %s with a budget of 0.05", a.Status.Spent)
	}
	sched := apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.WorkloadScheduled)
	hubenv.Await(t, 10*time.Second, "Scheduled to say why", func() (bool, string) {
		_ = env.Client.Get(ctx, client.ObjectKeyFromObject(w), got)
		sched = apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.WorkloadScheduled)
		return sched != nil && sched.Reason == "BudgetExhausted", fmt.Sprintf("%+v", sched)
	})
	hubenv.Holds(t, time.Second, "only the closing lease while stopped for its budget", func() (bool, string) {
		n := len(leasesOfWorkload(t, ns, "web"))
		return n == 1, fmt.Sprint(n, " leases")
	})

	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(w), got); err != nil {
		t.Fatal(err)
	}
	got.Spec.Budget = ptr.To(flotillav1.Amount("1"))
	if err := env.Client.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	awaitResumed(t, w)
	awaitKStatus(t, got, "InProgress") // placing again
}

// awaitStopped waits for the bank to stop the Workload for reason: the
// condition set and its Lease l closing.
func awaitStopped(t *testing.T, w *flotillav1.Workload, l *flotillav1.Lease, reason string) *flotillav1.Workload {
	t.Helper()
	ctx := context.Background()
	got := &flotillav1.Workload{}
	hubenv.Await(t, 10*time.Second, "the workload stopped for "+reason, func() (bool, string) {
		_ = env.Client.Get(ctx, client.ObjectKeyFromObject(w), got)
		c := apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.WorkloadBudgetExhausted)
		cur := &flotillav1.Lease{}
		_ = env.Client.Get(ctx, client.ObjectKeyFromObject(l), cur)
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == reason && cur.DeletionTimestamp != nil,
			fmt.Sprintf("%+v; lease deleting %v", c, cur.DeletionTimestamp)
	})
	return got
}

// awaitResumed waits for the Workload's stop to be lifted and a second Lease
// to replace the closed one.
func awaitResumed(t *testing.T, w *flotillav1.Workload) {
	t.Helper()
	hubenv.Await(t, 10*time.Second, "the workload to resume with a new lease", func() (bool, string) {
		got := &flotillav1.Workload{}
		_ = env.Client.Get(context.Background(), client.ObjectKeyFromObject(w), got)
		c := apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.WorkloadBudgetExhausted)
		return c != nil && c.Status == metav1.ConditionFalse && len(leasesOfWorkload(t, w.Namespace, w.Name)) == 2, fmt.Sprintf("%+v", c)
	})
}

// report publishes a provider's signed usage report, as its agent does.
func report(t *testing.T, key ed25519.PrivateKey, provider string, l *flotillav1.Lease, replicaSeconds int64) {
	t.Helper()
	ctx := context.Background()
	line := usage.Line{Lease: string(l.UID), ReplicaSeconds: replicaSeconds, Until: l.Status.Usage.MeteredUntil.Time}
	line.Sign(key, provider)
	b, err := json.Marshal(usage.Report{Provider: provider, Lines: []usage.Line{line}})
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: usage.ConfigMapName, Namespace: flotillav1.ProviderNamespace(provider)},
		Data: map[string]string{usage.DataKey: string(b)}}
	if err := env.Client.Update(ctx, cm); apierrors.IsNotFound(err) {
		err = env.Client.Create(ctx, cm)
	} else if err != nil {
		t.Fatal(err)
	}
}

// settledEntries returns the stored payments for a Lease.
func settledEntries(t *testing.T, l *flotillav1.Lease) []ledger.Entry {
	t.Helper()
	entries, _ := storedLedger(t)
	var out []ledger.Entry
	for _, e := range entries {
		if e.Kind == ledger.UsageSettled && strings.HasSuffix(e.Lease, "/"+l.Name) {
			out = append(out, e)
		}
	}
	return out
}

// A payment carries the provider agent's signed report; when the report
// claims more than could have run, the entry is marked disputed, an event
// says so, and the hub pays only what it observed.
func TestBankComparesProviderReports(t *testing.T) {
	ctx := context.Background()
	const ns, suite, prov = "tenant-dispute", "dispute", "dispute-a"
	p := readyProvider(t, prov, prov)
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	p.Spec.PublicKey = base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	if err := env.Client.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	createOffer(t, prov, "std", suite, "8", "0.6")
	account(t, ns, "10")
	if err := env.Client.Create(ctx, newWorkload(ns, "web", suite, 1, "1")); err != nil {
		t.Fatal(err)
	}
	stop := startEconomy(t)
	defer stop()

	l := awaitOneLease(t, ns, "web")
	meter(t, &l, "0.05", 300)
	report(t, key, prov, &l, 310)
	hubenv.Await(t, 10*time.Second, "a payment with the provider's report", func() (bool, string) {
		es := settledEntries(t, &l)
		return len(es) == 1 && len(es[0].ProviderSig) > 0, fmt.Sprintf("%+v", es)
	})
	if es := settledEntries(t, &l); es[0].Disputed || es[0].Amount+es[0].Fee != money.MustParse("0.05") {
		t.Errorf("honest report: %+v", es[0])
	}

	meter(t, &l, "0.06", 360)
	report(t, key, prov, &l, 3600)
	hubenv.Await(t, 10*time.Second, "a disputed payment", func() (bool, string) {
		es := settledEntries(t, &l)
		return len(es) == 2 && es[1].Disputed, fmt.Sprintf("%+v", es)
	})
	if es := settledEntries(t, &l); es[1].Amount+es[1].Fee != money.MustParse("0.01") {
		t.Errorf("disputed payment %s, want the 0.01 the hub observed", es[1].Amount+es[1].Fee)
	}
	hubenv.Await(t, 10*time.Second, "a UsageDisputed event", func() (bool, string) {
		var evs corev1.EventList
		_ = env.Client.List(ctx, &evs, client.InNamespace(ns))
		for _, e := range evs.Items {
			if e.Reason == "UsageDisputed" && e.InvolvedObject.Name == l.Name && strings.Contains(e.Message, "reports 3600 replica-seconds, the hub observed 360") {
				return true, ""
			}
		}
		return false, fmt.Sprint(len(evs.Items), " events")
	})
}

// A namespace that runs out of credits has its Workload stopped and kept
// from new replicas; a deposit brings it back.
func TestInsufficientFundsStopsAndResumesAWorkload(t *testing.T) {
	ctx := context.Background()
	const ns, suite = "tenant-funds", "funds"
	readyProvider(t, "funds-a", "funds-a")
	createOffer(t, "funds-a", "std", suite, "8", "0.6")
	account(t, ns, "0.004") // 24 seconds at 0.6 an hour
	w := newWorkload(ns, "web", suite, 1, "1")
	if err := env.Client.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	stop := startEconomy(t)
	defer stop()

	var l flotillav1.Lease
	hubenv.Await(t, 20*time.Second, "a lease holding every credit in escrow", func() (bool, string) {
		ls := leasesOfWorkload(t, ns, "web")
		if len(ls) == 1 {
			l = ls[0]
		}
		a := getAccount(ns)
		return len(ls) == 1 && a.Status.Held == "0.004" && a.Status.Available == "0", fmt.Sprintf("%d leases %+v", len(ls), a.Status)
	})
	meter(t, &l, "0.005", 30) // more than there is
	// Failed until credits arrive.
	awaitKStatus(t, awaitStopped(t, w, &l, "InsufficientFunds"), "Failed")
	if a := getAccount(ns); a.Status.Spent != "0.004" || a.Status.Available != "0" {
		t.Errorf("spent %s, available %s: want every credit and no more", a.Status.Spent, a.Status.Available)
	}
	hubenv.Holds(t, time.Second, "only the closing lease while out of credits", func() (bool, string) {
		n := len(leasesOfWorkload(t, ns, "web"))
		return n == 1, fmt.Sprint(n, " leases")
	})

	a := getAccount(ns)
	a.Spec.Credited = "1"
	if err := env.Client.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	awaitResumed(t, w)
	awaitKStatus(t, w.DeepCopy(), "InProgress") // placing again
}

// Two managers that both believe they lead cannot both append: the second
// write conflicts, and the loser sees the winner's entries once it reloads.
func TestLedgerStoreRefusesASecondWriter(t *testing.T) {
	ctx := context.Background()
	namespace(t, flotillav1.SystemNamespace)
	priv, err := ledgerKey(t)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	open := func() (*ledgerstore.Store, *ledger.Chain) {
		s := &ledgerstore.Store{Client: env.Client, Reader: env.Client, Namespace: flotillav1.SystemNamespace, ChunkEntries: 7}
		entries, err := s.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var last *ledger.Entry
		if len(entries) > 0 {
			last = &entries[len(entries)-1]
		}
		return s, ledger.NewChain(priv, last)
	}
	a, chainA := open()
	b, chainB := open()
	entry := func(c *ledger.Chain, ns string) []ledger.Entry {
		e, err := c.Append(ledger.Entry{Kind: ledger.Deposit, To: "tenant:" + ns, Amount: 1, Time: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return []ledger.Entry{e}
	}
	if err := a.Append(ctx, entry(chainA, "writer-a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(ctx, entry(chainB, "writer-b")); err == nil {
		t.Fatal("a second writer appended over the first")
	}
	stored := func() []ledger.Entry {
		t.Helper()
		s, _ := open()
		entries, err := s.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := ledger.Verify(entries, priv.Public().(ed25519.PublicKey), ledger.Hash{}); err != nil {
			t.Fatal(err)
		}
		return entries
	}
	entries := stored()
	if last := entries[len(entries)-1]; last.To != "tenant:writer-a" {
		t.Fatalf("the ledger ends with %+v, want writer-a's deposit", last)
	}
	b, chainB = open()
	if err := b.Append(ctx, entry(chainB, "writer-b")); err != nil {
		t.Fatalf("after reloading: %v", err)
	}
	if entries := stored(); entries[len(entries)-1].To != "tenant:writer-b" || entries[len(entries)-2].To != "tenant:writer-a" {
		t.Fatalf("the ledger ends %+v", entries[len(entries)-2:])
	}
}

// The bank cycles at every change of a Lease; it reads a provider's usage
// report again only when one of its Leases was charged more (when a
// payment can be due), not at every cycle.
func TestBankReadsAReportOnlyWhenItsLeaseWasCharged(t *testing.T) {
	ctx := context.Background()
	p := readyProvider(t, "rereads-a", "rereads-a")
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	p.Spec.PublicKey = base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	if err := env.Client.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	l := flotillav1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "t", UID: "rereads-1"},
		Spec: flotillav1.LeaseSpec{ProviderRef: flotillav1.ProviderReference{Name: p.Name}}}
	l.Status.Usage.Cost, l.Status.Usage.MeteredUntil = "0.01", &metav1.Time{Time: time.Now()}
	report(t, key, p.Name, &l, 60)
	direct, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int32
	b := &Bank{Client: env.Client, APIReader: interceptor.NewClient(direct, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, o ...client.GetOption) error {
			if _, ok := obj.(*corev1.ConfigMap); ok {
				reads.Add(1)
			}
			return c.Get(ctx, k, obj, o...)
		}})}
	look := func(want int32, what string) {
		t.Helper()
		got := b.reports(ctx, []flotillav1.Lease{l})
		if reads.Load() != want {
			t.Errorf("%s: %d reads of the report, want %d", what, reads.Load(), want)
		}
		if line := got[p.Name][string(l.UID)]; line == nil || line.ReplicaSeconds != 60 {
			t.Errorf("%s: the report's line for the Lease is %+v, want its 60 replica-seconds", what, line)
		}
	}
	look(1, "first cycle")
	look(1, "a cycle with nothing charged since")
	look(1, "another")
	l.Status.Usage.Cost = "0.02"
	look(2, "a cycle after the Lease was charged")
}

// A settlement reads the providers' reports side by side, and a report it
// could not read is read again at the next cycle rather than taken as
// empty until its Lease is charged again.
func TestBankReadsReportsSideBySideAndRetriesOnesItMissed(t *testing.T) {
	ctx := context.Background()
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	var leases []flotillav1.Lease
	for i := range 4 {
		p := readyProvider(t, fmt.Sprintf("side-%d", i), "side")
		p.Spec.PublicKey = base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
		if err := env.Client.Update(ctx, p); err != nil {
			t.Fatal(err)
		}
		l := flotillav1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "t", UID: types.UID(fmt.Sprintf("side-%d", i))},
			Spec: flotillav1.LeaseSpec{ProviderRef: flotillav1.ProviderReference{Name: p.Name}}}
		l.Status.Usage.Cost, l.Status.Usage.MeteredUntil = "0.01", &metav1.Time{Time: time.Now()}
		report(t, key, p.Name, &l, 60)
		leases = append(leases, l)
	}
	direct, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	inFlight, most := 0, 0
	reads := map[string]int{}
	b := &Bank{Client: env.Client, APIReader: interceptor.NewClient(direct, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, o ...client.GetOption) error {
			if _, ok := obj.(*corev1.ConfigMap); !ok {
				return c.Get(ctx, k, obj, o...)
			}
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			reads[k.Namespace]++
			first := reads[k.Namespace] == 1
			mu.Unlock()
			defer func() { mu.Lock(); inFlight--; mu.Unlock() }()
			time.Sleep(200 * time.Millisecond) // long enough for the others to start
			if first && k.Namespace == flotillav1.ProviderNamespace("side-0") {
				return apierrors.NewTimeoutError("the API server is busy", 1)
			}
			return c.Get(ctx, k, obj, o...)
		}})}
	got := b.reports(ctx, leases)
	if most < 2 {
		t.Errorf("at most %d report read at a time, want them side by side", most)
	}
	for i, l := range leases {
		line := got[l.Spec.ProviderRef.Name][string(l.UID)]
		if (line == nil) != (i == 0) {
			t.Errorf("first cycle: provider %s's line is %+v; only side-0's read failed", l.Spec.ProviderRef.Name, line)
		}
	}
	got = b.reports(ctx, leases) // nothing charged since
	for _, l := range leases {
		if line := got[l.Spec.ProviderRef.Name][string(l.UID)]; line == nil || line.ReplicaSeconds != 60 {
			t.Errorf("second cycle: provider %s's line is %+v, want its 60 replica-seconds", l.Spec.ProviderRef.Name, line)
		}
	}
	want := map[string]int{}
	for i := range leases {
		want[flotillav1.ProviderNamespace(fmt.Sprintf("side-%d", i))] = 1
	}
	want[flotillav1.ProviderNamespace("side-0")] = 2
	if !maps.Equal(reads, want) {
		t.Errorf("reads by namespace %v, want %v: only the missed report is read again", reads, want)
	}
}

// A settlement writes its Workloads' conditions side by side: one after
// another they held it for minutes at thousands of Workloads.
func TestBankEnforcesSideBySide(t *testing.T) {
	ctx := context.Background()
	const ns = "tenant-enforce"
	namespace(t, ns)
	obs := &settle.Observed{Input: settle.Input{Workloads: map[string]settle.Workload{}}}
	var workloads []flotillav1.Workload
	for i := range 6 {
		w := fixture.Workload(ns, fmt.Sprintf("w%d", i), fixture.Replicas(1))
		if err := env.Client.Create(ctx, w); err != nil {
			t.Fatal(err)
		}
		workloads = append(workloads, *w)
		obs.Input.Workloads[ns+"/"+w.Name] = settle.Workload{}
	}
	direct, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	inFlight, most := 0, 0
	b := &Bank{Client: interceptor.NewClient(direct, interceptor.Funcs{
		SubResourceApply: func(ctx context.Context, c client.Client, sub string, obj runtime.ApplyConfiguration, o ...client.SubResourceApplyOption) error {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			mu.Unlock()
			defer func() { mu.Lock(); inFlight--; mu.Unlock() }()
			time.Sleep(200 * time.Millisecond) // long enough for the others to start
			return c.SubResource(sub).Apply(ctx, obj, o...)
		}}), Policy: settle.Policy{Interval: time.Minute}}
	next, err := b.enforce(ctx, obs, &settle.Output{}, workloads, nil, time.Now())
	if err != nil || next != time.Minute {
		t.Fatalf("enforce: next %v, %v", next, err)
	}
	if most < 2 {
		t.Errorf("at most %d condition written at a time, want them side by side", most)
	}
	for _, w := range workloads {
		c := apimeta.FindStatusCondition(get(t, &flotillav1.Workload{}, ns, w.Name).Status.Conditions, flotillav1.WorkloadBudgetExhausted)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != flotillav1.WorkloadReasonWithinBudget {
			t.Errorf("%s: %s condition %+v, want False, %s", w.Name, flotillav1.WorkloadBudgetExhausted, c, flotillav1.WorkloadReasonWithinBudget)
		}
	}
}
