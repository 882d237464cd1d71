package controllers

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// How a chunk write fails: after it stored (a timeout the API server
// outlived) or before.
const (
	failNone int32 = iota
	failAfterStoring
	failBeforeStoring
)

// chunkFaults wraps a client so that the next write of a ledger chunk
// fails as armed.
type chunkFaults struct {
	armed  atomic.Int32
	pass   atomic.Int32 // chunk writes to let through before the armed one
	failed atomic.Int32
}

func (f *chunkFaults) client(t *testing.T) client.Client {
	t.Helper()
	direct, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	write := func(obj client.Object, do func() error) error {
		// The store's chunks only: the index chunks the publisher writes
		// carry the same label, valued "index".
		if obj.GetLabels()[ledgerstore.ChunkLabel] != "chunk" {
			return do()
		}
		if f.armed.Load() != failNone && f.pass.Add(-1) >= 0 {
			return do()
		}
		switch f.armed.Swap(failNone) {
		case failAfterStoring:
			if err := do(); err != nil {
				return err
			}
		case failBeforeStoring:
		default:
			return do()
		}
		f.failed.Add(1)
		return apierrors.NewTimeoutError("the API server is busy", 1)
	}
	return interceptor.NewClient(direct, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, o ...client.UpdateOption) error {
			return write(obj, func() error { return c.Update(ctx, obj, o...) })
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, o ...client.CreateOption) error {
			return write(obj, func() error { return c.Create(ctx, obj, o...) })
		},
	})
}

// A failed append is found out by reading back the chunks it could have
// written, whether it stored or not, and appends go on after it; a chunk
// changed by another hand is reported, not written over.
func TestLedgerStoreRecoversAFailedAppend(t *testing.T) {
	ctx := context.Background()
	ns := "ledger-recover"
	faults := &chunkFaults{}
	s, chain, priv := emptyLedger(t, ns, faults.client(t), 3)
	next := func(n int) []ledger.Entry { return deposits(t, chain, ns, n) }
	seqs := func(entries []ledger.Entry) string { return fmt.Sprint(ledgerSeqs(entries)) }
	var want []ledger.Entry
	steps := []struct {
		name  string
		fail  int32
		pass  int32
		n     int
		found string // what Recover returns
	}{
		{"creating the first chunk stored", failAfterStoring, 0, 2, "[]"},
		{"an append stored", failAfterStoring, 0, 1, "[2]"},
		{"creating a chunk did not store", failBeforeStoring, 0, 2, "[]"},
		{"an append did not store", failBeforeStoring, 0, 1, "[]"},
		{"the second write of an append stored", failAfterStoring, 1, 4, "[6 7 8]"},
	}
	for _, step := range steps {
		batch := next(step.n)
		faults.pass.Store(step.pass)
		faults.armed.Store(step.fail)
		if err := s.Append(ctx, batch); err == nil {
			t.Fatalf("%s: the append did not fail", step.name)
		}
		if err := s.Append(ctx, batch); err == nil || !s.Unsure() {
			t.Fatalf("%s: the store appended again before it found out what the failed append stored", step.name)
		}
		found, err := s.Recover(ctx)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		// A creation that stored holds no entries yet; what Recover does
		// not find was not stored, and is appended again.
		if got := seqs(found); got != step.found {
			t.Errorf("%s: recovered %s, want %s", step.name, got, step.found)
		}
		want = append(want, found...)
		if err := s.Append(ctx, batch[len(found):]); err != nil {
			t.Fatalf("%s: appending after recovery: %v", step.name, err)
		}
		want = append(want, batch[len(found):]...)
	}
	if faults.failed.Load() != int32(len(steps)) {
		t.Fatalf("%d writes failed, want %d", faults.failed.Load(), len(steps))
	}
	stored, err := (&ledgerstore.Store{Client: env.Client, Reader: env.Client, Namespace: ns}).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if seqs(stored) != seqs(want) {
		t.Fatalf("stored %s, want %s", seqs(stored), seqs(want))
	}
	if err := ledger.Verify(stored, priv.Public().(ed25519.PublicKey), chain.Head()); err != nil {
		t.Fatal(err)
	}

	// Someone cuts the last chunk while an append is in flight.
	var list corev1.ConfigMapList
	if err := env.Client.List(ctx, &list, client.InNamespace(ns), client.HasLabels{ledgerstore.ChunkLabel}); err != nil {
		t.Fatal(err)
	}
	last := list.Items[len(list.Items)-1]
	last.Data["entries.jsonl"] = ""
	if err := env.Client.Update(ctx, &last); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, next(1)); err == nil {
		t.Fatal("appended over a chunk changed since it was read")
	}
	if _, err := s.Recover(ctx); !errors.Is(err, ledgerstore.ErrRewritten) {
		t.Fatalf("recovering over a cut chunk: %v, want %v", err, ledgerstore.ErrRewritten)
	}
	// Or deletes it.
	if err := env.Client.Delete(ctx, &last); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recover(ctx); !errors.Is(err, ledgerstore.ErrRewritten) {
		t.Fatalf("recovering over a deleted chunk: %v, want %v", err, ledgerstore.ErrRewritten)
	}
}

// emptyLedger loads a store of a ledger of its own in ns, signed with the
// hub's key.
func emptyLedger(t *testing.T, ns string, c client.Client, chunkEntries int) (*ledgerstore.Store, *ledger.Chain, ed25519.PrivateKey) {
	t.Helper()
	namespace(t, ns)
	namespace(t, flotillav1.SystemNamespace) // the key's
	priv, err := ledgerKey(t)(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := &ledgerstore.Store{Client: c, Reader: env.Client, Namespace: ns, ChunkEntries: chunkEntries}
	if entries, err := s.Load(context.Background()); err != nil || len(entries) > 0 {
		t.Fatalf("the ledger in %s holds %d entries: %v", ns, len(entries), err)
	}
	return s, ledger.NewChain(priv, nil), priv
}

// deposits signs n deposits to ns onto chain.
func deposits(t *testing.T, chain *ledger.Chain, ns string, n int) []ledger.Entry {
	t.Helper()
	out := make([]ledger.Entry, 0, n)
	for range n {
		e, err := chain.Append(ledger.Entry{Kind: ledger.Deposit, To: "tenant:" + ns, Amount: 1, Time: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func ledgerSeqs(entries []ledger.Entry) []uint64 {
	out := make([]uint64, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Seq)
	}
	return out
}

// After a ledger write fails, whether it stored or not, the bank neither
// reloads the whole ledger nor loses or repeats an entry: it reads back
// the chunk and stores what is missing.
func TestBankKeepsItsBooksAfterAFailedWrite(t *testing.T) {
	faults := &chunkFaults{}
	reader := &listCounter{}
	stop := startEconomyWith(t, func(s *ledgerstore.Store) {
		s.Client = faults.client(t)
		reader.Reader = s.Reader
		s.Reader = reader
	})
	defer stop()
	hubenv.Await(t, 20*time.Second, "the bank to load its ledger and publish its head", func() (bool, string) {
		_, err := ledgerstore.ReadHead(context.Background(), env.Client)
		return reader.lists.Load() > 0 && err == nil, fmt.Sprintf("%d loads: %v", reader.lists.Load(), err)
	})
	loads := reader.lists.Load()
	for i, fail := range []int32{failAfterStoring, failBeforeStoring} {
		before, _ := storedLedger(t)
		faults.armed.Store(fail)
		ns := fmt.Sprintf("books-kept-%d", i)
		namespace(t, ns)
		account(t, ns, "5")
		// storedLedger reads only what the published head covers.
		hubenv.Await(t, 30*time.Second, "the deposit stored and published after a failed write", func() (bool, string) {
			entries, _ := storedLedger(t)
			for _, e := range entries[len(before):] {
				if e.Kind == ledger.Deposit && e.To == "tenant:"+ns {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%d entries published, no deposit to %s", len(entries), ns)
		})
		if faults.failed.Load() != int32(i+1) {
			t.Fatalf("%d chunk writes failed, want %d", faults.failed.Load(), i+1)
		}
	}
	if n := reader.lists.Load(); n != loads {
		t.Errorf("the bank listed the ledger's chunks %d times after it loaded, want 0: it reloaded instead of reading back", n-loads)
	}
	entries, _ := storedLedger(t)
	deposits := map[string]int{}
	for _, e := range entries {
		if e.Kind == ledger.Deposit && strings.HasPrefix(e.To, "tenant:books-kept-") {
			deposits[e.To]++
		}
	}
	if len(deposits) != 2 || deposits["tenant:books-kept-0"] != 1 || deposits["tenant:books-kept-1"] != 1 {
		t.Errorf("deposits %v, want one to each namespace", deposits)
	}
}

// listCounter counts lists of ledger chunks, which only a full load does.
type listCounter struct {
	client.Reader
	lists atomic.Int32
}

func (r *listCounter) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*corev1.ConfigMapList); ok {
		lo := (&client.ListOptions{}).ApplyOptions(opts)
		if lo.LabelSelector != nil && strings.Contains(lo.LabelSelector.String(), ledgerstore.ChunkLabel) {
			r.lists.Add(1)
		}
	}
	return r.Reader.List(ctx, list, opts...)
}

// A ledger of many chunks loads a page at a time, in order.
func TestLedgerStoreLoadsPageByPage(t *testing.T) {
	ctx := context.Background()
	ns := "ledger-pages"
	s, chain, priv := emptyLedger(t, ns, env.Client, 1)
	const n = 40
	for _, e := range deposits(t, chain, ns, n) {
		if err := s.Append(ctx, []ledger.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	reader := &listCounter{Reader: env.Client}
	entries, err := (&ledgerstore.Store{Client: env.Client, Reader: reader, Namespace: ns}).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		t.Fatalf("loaded %d entries, want %d", len(entries), n)
	}
	if err := ledger.Verify(entries, priv.Public().(ed25519.PublicKey), chain.Head()); err != nil {
		t.Fatal(err)
	}
	if lists := reader.lists.Load(); lists < 3 {
		t.Errorf("%d chunks loaded in %d lists, want pages", n, lists)
	}
}
