package controllers

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/agent"
	"github.com/flotilla-dev/flotilla/internal/keys"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// witnessAgent is the real agent's witness, keeping its state in its own
// namespace of the test API server and reading the hub as hub.
func witnessAgent(t *testing.T, ns string, hub client.Client) *agent.Agent {
	t.Helper()
	namespace(t, ns)
	cfg, err := agent.ParseConfig([]byte(`{"hubID": "hub", "provider": {"name": "lw-1", "owner": "lw-1", "mode": "Pull"},
		"offer": {"name": "lw-offer", "reserve": {"cpu": "0", "memory": "0"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	return &agent.Agent{Log: logr.Discard(), Namespace: ns, Local: kubernetes.NewForConfigOrDie(env.Config), Hub: hub, Config: cfg}
}

func witnessStatus(t *testing.T, ns string) map[string]string {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: agent.WitnessConfigMap}, cm); err != nil {
		t.Fatal(err)
	}
	return cm.Data
}

// rewriteLedger changes the amount of stored entry k and signs it and every
// entry after it again with a new key, which replaces the hub's: what an
// operator holding the storage and the key Secret can do.
func rewriteLedger(t *testing.T, k int) {
	t.Helper()
	ctx := context.Background()
	var list corev1.ConfigMapList
	if err := env.Client.List(ctx, &list, client.InNamespace(flotillav1.SystemNamespace), client.HasLabels{ledgerstore.ChunkLabel}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(list.Items, func(a, b corev1.ConfigMap) int { return strings.Compare(a.Name, b.Name) })
	var all []ledger.Entry
	var sizes []int
	for _, cm := range list.Items {
		e, err := ledger.ReadJSONL(strings.NewReader(cm.Data["entries.jsonl"]))
		if err != nil {
			t.Fatal(err)
		}
		all, sizes = append(all, e...), append(sizes, len(e))
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var last *ledger.Entry
	if k > 0 {
		last = &all[k-1]
	}
	chain := ledger.NewChain(priv, last)
	for i := k; i < len(all); i++ {
		e := all[i]
		e.Sig = nil
		if i == k {
			e.Amount += 1_000_000
		}
		if all[i], err = chain.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	at := 0
	for i := range list.Items {
		var b strings.Builder
		if err := ledger.WriteJSONL(&b, all[at:at+sizes[i]]); err != nil {
			t.Fatal(err)
		}
		at += sizes[i]
		list.Items[i].Data["entries.jsonl"] = b.String()
		if err := env.Client.Update(ctx, &list.Items[i]); err != nil {
			t.Fatal(err)
		}
	}
	s := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: ledgerstore.KeySecret}, s); err != nil {
		t.Fatal(err)
	}
	s.Data[keys.PublicKey], s.Data[keys.PrivateKey] = pub, priv
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
}

// The hub publishes its signed head, the index of entry hashes and each
// party's entries; a provider's join credential reads exactly the public
// part and its own; a provider's agent and a tenant's witness file catch a
// ledger rewritten and re-signed with a new key, and one cut short.
func TestLedgerWitness(t *testing.T) {
	ctx := context.Background()
	const ns, suite = "lw-tenant", "lw"
	c1 := joinIdentity(t, "lw-1", flotillav1.ModePull)
	_ = joinIdentity(t, "lw-2", flotillav1.ModePull)
	p := get(t, &flotillav1.Provider{}, "", "lw-1")
	p.Status.Phase = flotillav1.ProviderReady
	if err := env.Client.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	createOffer(t, "lw-1", "lw-offer", suite, "8", "0.6")
	account(t, ns, "10")
	if err := env.Client.Create(ctx, newWorkload(ns, "web", suite, 1, "1")); err != nil {
		t.Fatal(err)
	}
	stop := startEconomy(t)
	defer func() { stop() }()
	var l flotillav1.Lease
	hubenv.Await(t, 20*time.Second, "a lease", func() (bool, string) {
		ls := leasesOfWorkload(t, ns, "web")
		if len(ls) == 1 {
			l = ls[0]
		}
		return len(ls) == 1, fmt.Sprintf("%d leases", len(ls))
	})
	meter(t, &l, "0.05", 300)
	// One write per party, the provider's before the tenant's: wait for both.
	hubenv.Await(t, 10*time.Second, "usage paid to lw-1 and copied to it and the tenant", func() (bool, string) {
		mine, err := ledgerstore.ReadParty(ctx, env.Client, flotillav1.ProviderNamespace("lw-1"))
		tenants, terr := ledgerstore.ReadParty(ctx, env.Client, ns)
		return err == nil && terr == nil && getAccount(flotillav1.ProviderNamespace("lw-1")).Status.Earned != "" && len(mine) > 0 && len(tenants) > 0,
			fmt.Sprintf("%d entries copied to lw-1, %d to the tenant: %v %v", len(mine), len(tenants), err, terr)
	})

	// What the join credential reads: the head and index, its own entries
	// and Account.
	head, err := ledgerstore.ReadHead(ctx, c1)
	if err != nil {
		t.Fatalf("P4.join-reads-published-ledger: %v", err)
	}
	lines, err := ledgerstore.ReadIndex(ctx, c1, 0, head.Entries)
	if err != nil {
		t.Fatalf("P4.join-reads-published-ledger: %v", err)
	}
	if err := ledger.Extends(ledger.Seen{}, &head, lines); err != nil {
		t.Fatalf("the published index does not end at the published head: %v", err)
	}
	mine, err := ledgerstore.ReadParty(ctx, c1, flotillav1.ProviderNamespace("lw-1"))
	if err != nil {
		t.Fatalf("P4.join-reads-own-ledger-entries: %v", err)
	}
	for _, e := range mine {
		if !slices.Contains(e.Parties(), "provider:lw-1") {
			t.Errorf("entry %d copied to lw-1 does not concern it: %+v", e.Seq, e)
		}
		if e.Seq < uint64(len(lines)) && e.Hash() != lines[e.Seq].Hash {
			t.Errorf("entry %d copied to lw-1 is not the one published", e.Seq)
		}
	}
	if err := c1.Get(ctx, client.ObjectKey{Namespace: flotillav1.ProviderNamespace("lw-1"), Name: flotillav1.AccountName}, &flotillav1.Account{}); err != nil {
		t.Errorf("P4.join-reads-own-ledger-entries: its own Account: %v", err)
	}
	theirsCopy := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "flotilla-ledger-00000001", Namespace: flotillav1.ProviderNamespace("lw-2"),
		Labels: map[string]string{ledgerstore.PartyLabel: "entries"}}}
	if err := env.Client.Create(ctx, theirsCopy); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	ownCopy := &corev1.ConfigMap{}
	if err := c1.Get(ctx, client.ObjectKey{Namespace: flotillav1.ProviderNamespace("lw-1"), Name: "flotilla-ledger-00000001"}, ownCopy); err != nil {
		t.Fatal(err)
	}
	published := &corev1.ConfigMap{}
	if err := c1.Get(ctx, client.ObjectKey{Namespace: flotillav1.LedgerNamespace, Name: ledgerstore.HeadName}, published); err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"P4.join-cannot-read-ledger-store: list the ledger's chunks": c1.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(flotillav1.SystemNamespace)),
		"P4.join-cannot-read-ledger-store: get a ledger chunk": c1.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace,
			Name: "flotilla-ledger-00000001"}, &corev1.ConfigMap{}),
		"P4.join-cannot-read-ledger-store: get the ledger key": c1.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace,
			Name: ledgerstore.KeySecret}, &corev1.Secret{}),
		"P4.join-reads-own-ledger-entries: list another provider's entries": c1.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(flotillav1.ProviderNamespace("lw-2"))),
		"P4.join-reads-own-ledger-entries: get another provider's entries":  c1.Get(ctx, client.ObjectKeyFromObject(theirsCopy), &corev1.ConfigMap{}),
		"P4.join-reads-own-ledger-entries: list a tenant's entries":         c1.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(ns)),
		"P4.join-reads-own-ledger-entries: another provider's Account": c1.Get(ctx, client.ObjectKey{Namespace: flotillav1.ProviderNamespace("lw-2"),
			Name: flotillav1.AccountName}, &flotillav1.Account{}),
		"P4.join-reads-own-ledger-entries: a tenant's Account": c1.Get(ctx, client.ObjectKey{Namespace: ns, Name: flotillav1.AccountName}, &flotillav1.Account{}),
		"P4.join-cannot-write-published-ledger: rewrite the head": func() error {
			o := published.DeepCopy()
			o.Data["entries"] = "0"
			return c1.Update(ctx, o)
		}(),
		"P4.join-cannot-write-published-ledger: delete an index chunk": c1.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name: ledgerstore.IndexChunkName(1), Namespace: flotillav1.LedgerNamespace}}),
		"P4.join-cannot-write-published-ledger: edit its own copy": func() error {
			o := ownCopy.DeepCopy()
			o.Data = map[string]string{"entries.jsonl": ""}
			return c1.Update(ctx, o)
		}(),
		"P4.join-cannot-write-published-ledger: credit its own Account": func() error {
			a := getAccount(flotillav1.ProviderNamespace("lw-1"))
			a.Status.Earned = "1000000"
			return c1.Status().Update(ctx, a)
		}(),
	} {
		if err == nil {
			t.Errorf("%s: allowed", what)
		} else if !apierrors.IsForbidden(err) {
			t.Errorf("%s: %v, want Forbidden", what, err)
		}
	}

	// Two agents witness the honest ledger, and so does the tenant.
	a, b := witnessAgent(t, "lw-agent-a", c1), witnessAgent(t, "lw-agent-b", c1)
	for _, ag := range []*agent.Agent{a, b} {
		if err := ag.Witness(ctx); err != nil || ag.Diverged() != "" {
			t.Fatalf("witnessing an honest ledger: %v %q", err, ag.Diverged())
		}
	}
	if st := witnessStatus(t, "lw-agent-a"); st["status"] != agent.WitnessConsistent || st["entries"] == "0" {
		t.Fatalf("witness state: %v", st)
	}
	var tenantWitness ledgerstore.WitnessFile
	rep, err := tenantWitness.Check(ctx, env.Client, nil, ns)
	if err != nil || rep.Mine == 0 || !rep.PinnedOnFirstUse {
		t.Fatalf("the tenant's first look: %+v %v", rep, err)
	}
	witnessed := tenantWitness
	// An anchor of the honest head, published elsewhere.
	anchored, err := ledgerstore.ReadHead(ctx, env.Client)
	if err != nil {
		t.Fatal(err)
	}
	if anchored, err = ledger.ParseAnchor(anchored.Anchor()); err != nil {
		t.Fatal(err)
	}
	if _, err := ledgerstore.VerifyAnchor(ctx, env.Client, &anchored, head.PublicKey); err != nil {
		t.Fatalf("the honest ledger against its own anchor: %v", err)
	}

	// Rewritten from the tenant's first deposit on, and re-signed with a
	// new key; the hub restarts on it and publishes it.
	stop()
	entries, _ := storedLedger(t)
	k := slices.IndexFunc(entries, func(e ledger.Entry) bool { return e.Kind == ledger.Deposit && e.To == "tenant:"+ns })
	if k < 0 {
		t.Fatal("no deposit of the tenant's in the ledger")
	}
	rewriteLedger(t, k)
	stop = startEconomy(t)
	hubenv.Await(t, 20*time.Second, "the rewritten ledger published", func() (bool, string) {
		h, err := ledgerstore.ReadHead(ctx, env.Client)
		return err == nil && !h.PublicKey.Equal(head.PublicKey), fmt.Sprintf("%v", err)
	})
	if err := a.Witness(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Diverged() == "" {
		t.Error("P4.agent-witness-catches-rewrite: the agent accepted a ledger rewritten and re-signed")
	}
	st := witnessStatus(t, "lw-agent-a")
	var cond metav1.Condition
	if err := json.Unmarshal([]byte(st["condition"]), &cond); err != nil || st["status"] != agent.WitnessDiverged ||
		cond.Type != agent.ConditionLedgerConsistent || cond.Status != metav1.ConditionFalse || cond.Reason != agent.ReasonLedgerDiverged {
		t.Errorf("P4.agent-witness-catches-rewrite: witness state %v (%v)", st, err)
	}
	if _, err := ledgerstore.VerifyAnchor(ctx, env.Client, &anchored, head.PublicKey); !errors.As(err, new(*ledger.Divergence)) {
		t.Errorf("P4.agent-witness-catches-rewrite: the rewritten ledger against the anchored head: %v", err)
	}
	var events corev1.EventList
	if err := env.Client.List(ctx, &events, client.InNamespace("lw-agent-a")); err != nil ||
		!slices.ContainsFunc(events.Items, func(e corev1.Event) bool { return e.Reason == agent.ReasonLedgerDiverged }) {
		t.Errorf("P4.agent-witness-catches-rewrite: no %s event on the provider (%v)", agent.ReasonLedgerDiverged, err)
	}
	// It takes no new work: its Offer is withdrawn.
	if err := a.PublishOffer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: flotillav1.ProviderNamespace("lw-1"), Name: "lw-offer"}, &flotillav1.Offer{}); !apierrors.IsNotFound(err) {
		t.Errorf("P4.agent-witness-catches-rewrite: the Offer stays on a diverged hub: %v", err)
	}
	// The tenant's look names the entry rewritten.
	check := witnessed
	_, err = check.Check(ctx, env.Client, nil, ns)
	var d *ledger.Divergence
	if !errors.As(err, &d) || d.Seq != uint64(k) || d.AtMost {
		t.Errorf("T4.witness-names-rewritten-entry: got %v, want entry %d named", err, k)
	}
	if check != witnessed {
		t.Error("a failed look changed the witness file")
	}

	// Cut short: the last chunk of the (new) ledger goes; agent b, which
	// accepts the new key from scratch, catches it.
	if err := env.Client.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: agent.WitnessConfigMap, Namespace: "lw-agent-b"}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Witness(ctx); err != nil || b.Diverged() != "" {
		t.Fatalf("witnessing after accepting the new key: %v %q", err, b.Diverged())
	}
	// Its copy of its entries still holds the ones before the rewrite:
	// evidence the hub does not take back.
	var retenant ledgerstore.WitnessFile
	if _, err := retenant.Check(ctx, env.Client, nil, ns); !errors.As(err, &d) || d.Seq != uint64(k) {
		t.Errorf("T4.witness-names-rewritten-entry: the tenant's own copy against the rewritten ledger: %v", err)
	}
	if _, err := retenant.Check(ctx, env.Client, nil, ""); err != nil {
		t.Fatal(err)
	}
	stop()
	before, err := ledgerstore.ReadHead(ctx, env.Client)
	if err != nil {
		t.Fatal(err)
	}
	var chunks corev1.ConfigMapList
	if err := env.Client.List(ctx, &chunks, client.InNamespace(flotillav1.SystemNamespace), client.HasLabels{ledgerstore.ChunkLabel}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(chunks.Items, func(a, b corev1.ConfigMap) int { return strings.Compare(a.Name, b.Name) })
	cut := chunks.Items[len(chunks.Items)-1]
	cutAt, _ := ledger.ReadJSONL(strings.NewReader(cut.Data["entries.jsonl"]))
	if err := env.Client.Delete(ctx, &cut); err != nil {
		t.Fatal(err)
	}
	stop = startEconomy(t)
	// The bank may append again at once: what is published from entry
	// cutAt[0].Seq on is new either way.
	hubenv.Await(t, 20*time.Second, "the truncated ledger published", func() (bool, string) {
		h, err := ledgerstore.ReadHead(ctx, env.Client)
		return err == nil && h.Hash != before.Hash, fmt.Sprintf("%+v %v", h.Entries, err)
	})
	if err := b.Witness(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Diverged() == "" {
		t.Error("P4.agent-witness-catches-truncation: the agent accepted a ledger cut short")
	}
	_, err = retenant.Check(ctx, env.Client, nil, "")
	if !errors.As(err, &d) || d.Seq != cutAt[0].Seq {
		t.Errorf("T4.witness-names-truncation: got %v, want entry %d named", err, cutAt[0].Seq)
	}
}

// Parties' copies of their entries are written a bounded number of
// parties a settlement, side by side, taking turns: a thousand providers'
// copies, one after another, held a settlement for minutes.
func TestPartyCopiesTakeTurns(t *testing.T) {
	ctx := context.Background()
	n := ledgerstore.PartiesPerCopy + 10
	entries := payments(t, "turn", n)
	for i := range n {
		namespace(t, flotillav1.ProviderNamespace(fmt.Sprintf("turn-%03d", i)))
	}
	republishAfter(t)
	p := &ledgerstore.Publisher{Client: env.Client, Reader: env.Client, Hub: "turns"}
	if err := p.Load(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.Append(ctx, entries); err != nil {
		t.Fatal(err)
	}
	copied := func() (int, []string) {
		t.Helper()
		done := 0
		var odd []string
		for i := range n {
			got, err := ledgerstore.ReadParty(ctx, env.Client, flotillav1.ProviderNamespace(fmt.Sprintf("turn-%03d", i)))
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case len(got) == 1 && got[0].Seq == entries[i].Seq:
				done++
			case len(got) != 0:
				odd = append(odd, fmt.Sprintf("turn-%03d: %d entries", i, len(got)))
			}
		}
		return done, odd
	}
	if err := p.CopyToParties(ctx); err != nil {
		t.Fatal(err)
	}
	if done, odd := copied(); done != ledgerstore.PartiesPerCopy || odd != nil {
		t.Errorf("after one copy: %d parties have their entry, want %d; %v", done, ledgerstore.PartiesPerCopy, odd)
	}
	if err := p.CopyToParties(ctx); err != nil {
		t.Fatal(err)
	}
	if done, odd := copied(); done != n || odd != nil {
		t.Errorf("after two copies: %d parties have their entry, want all %d, each once; %v", done, n, odd)
	}
}

// republishAfter publishes the stored ledger again once the test is over,
// as a bank's start does: a test that publishes a ledger of its own
// overwrites the package's shared published index.
func republishAfter(t *testing.T) {
	namespace(t, flotillav1.SystemNamespace)
	t.Cleanup(func() {
		ctx := context.Background()
		entries, err := (&ledgerstore.Store{Client: env.Client, Reader: env.Client, Namespace: flotillav1.SystemNamespace}).Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		key, err := ledgerKey(t)(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p := &ledgerstore.Publisher{Client: env.Client, Reader: env.Client, Hub: "hub"}
		if err := p.Load(ctx, entries); err != nil {
			t.Fatal(err)
		}
		var head ledger.Hash
		if len(entries) > 0 {
			head = entries[len(entries)-1].Hash()
		}
		if err := p.PublishHead(ctx, p.Head(key, head, time.Now())); err != nil {
			t.Fatal(err)
		}
	})
}

// A publisher reloaded after a failed write publishes only what it
// missed when the stored entries extend what it published, without
// reading back every index chunk and party copy (minutes on the busy hub
// that failed the write); a ledger cut or rewritten is rebuilt whole.
func TestPublisherResumesWhatItMissed(t *testing.T) {
	ctx := context.Background()
	republishAfter(t)
	entries := payments(t, "resume", 5)
	direct, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int32
	counted := interceptor.NewClient(direct, interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, o ...client.ListOption) error {
			reads.Add(1)
			return c.List(ctx, l, o...)
		},
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, o ...client.GetOption) error {
			reads.Add(1)
			return c.Get(ctx, k, obj, o...)
		},
	})
	p := &ledgerstore.Publisher{Client: env.Client, Reader: counted, Hub: "resume"}
	if err := p.Load(ctx, entries[:3]); err != nil {
		t.Fatal(err)
	}
	reads.Store(0)
	if ok, err := p.Resume(ctx, entries); !ok || err != nil {
		t.Fatalf("resuming with two more entries: %v, %v; want it resumed", ok, err)
	}
	// Appending reads the index chunk it rewrites, and nothing else.
	if n := reads.Load(); n > 1 {
		t.Errorf("resuming read the hub %d times, want at most the one chunk it appends to", n)
	}
	lines, err := ledgerstore.ReadIndex(ctx, env.Client, 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	if want := ledger.Index(entries, ledger.Hash{}); !slices.Equal(lines, want) {
		t.Errorf("published index %v, want %v", lines, want)
	}
	for name, other := range map[string][]ledger.Entry{"a rewritten ledger": payments(t, "resume", 6), "a cut ledger": entries[:4]} {
		if ok, err := p.Resume(ctx, other); ok || err != nil {
			t.Errorf("%s: resumed %v (%v); want it left to a rebuild", name, ok, err)
		}
	}
}

// payments is a ledger of n entries, each paying provider <prefix>-NNN,
// signed with a key of its own.
func payments(t *testing.T, prefix string, n int) []ledger.Entry {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain := ledger.NewChain(key, nil)
	out := make([]ledger.Entry, 0, n)
	for i := range n {
		e, err := chain.Append(ledger.Entry{Kind: ledger.Deposit, From: "hub", To: fmt.Sprintf("provider:%s-%03d", prefix, i), Amount: 1})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}
