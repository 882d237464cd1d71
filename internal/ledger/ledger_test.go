package ledger

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/money"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func testKey(seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), priv
}

// sample is a small ledger with every kind of entry.
func sample(t testing.TB, priv ed25519.PrivateKey) ([]Entry, Hash) {
	c := NewChain(priv, nil)
	var out []Entry
	for i, e := range []Entry{
		{Kind: Deposit, To: "tenant:team-a", Amount: money.MustParse("100")},
		{Kind: LeaseOpened, Lease: "team-a/web-1"},
		{Kind: EscrowMoved, Lease: "team-a/web-1", From: "tenant:team-a", To: "escrow:team-a/web-1", Amount: money.MustParse("0.06")},
		{Kind: UsageSettled, Lease: "team-a/web-1", From: "escrow:team-a/web-1", To: "provider:alice-1", Amount: money.MustParse("0.045"),
			Fee: money.MustParse("0.005"), ReplicaSeconds: 3600, ProviderReport: []byte(`{"replicaSeconds":3600}`), ProviderSig: bytes.Repeat([]byte{7}, 64)},
		{Kind: Dispute, Lease: "team-a/web-1", Disputed: true},
		{Kind: LeaseClosed, Lease: "team-a/web-1", From: "escrow:team-a/web-1", To: "tenant:team-a", Amount: money.MustParse("0.01")},
	} {
		e.Time = t0.Add(time.Duration(i) * time.Second)
		got, err := c.Append(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, got)
	}
	return out, c.Head()
}

func problemAt(t *testing.T, err error) int {
	t.Helper()
	var p *Problem
	if !errors.As(err, &p) {
		t.Fatalf("got %v, want a *Problem", err)
	}
	return p.Index
}

func TestVerifyIntact(t *testing.T) {
	pub, priv := testKey(1)
	entries, head := sample(t, priv)
	if err := Verify(entries, pub, head); err != nil {
		t.Fatal(err)
	}
	if head != entries[len(entries)-1].Hash() {
		t.Fatal("head is not the last entry's hash")
	}
	// Continuing from the last entry links on.
	c := NewChain(priv, &entries[len(entries)-1])
	more, err := c.Append(Entry{Kind: Deposit, To: "tenant:team-b", Amount: 5, Time: t0})
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(append(entries, more), pub, c.Head()); err != nil {
		t.Fatalf("a chain continued after a restart does not verify: %v", err)
	}
	otherPub, _ := testKey(2)
	if problemAt(t, Verify(entries, otherPub, head)) != 0 {
		t.Error("another hub's key must fail at the first entry")
	}
	if _, err := c.Append(Entry{Kind: EscrowMoved, From: "a", To: "b", Amount: -1}); err == nil {
		t.Error("a negative amount was appended")
	}
}

// Flipping any single byte of an export makes reading or verifying fail,
// naming the entry on the line that holds the byte.
func TestEveryByteFlipIsCaught(t *testing.T) {
	pub, priv := testKey(1)
	entries, head := sample(t, priv)
	var buf bytes.Buffer
	if err := WriteJSONL(&buf, entries); err != nil {
		t.Fatal(err)
	}
	export := buf.Bytes()
	for pos := range export {
		line := bytes.Count(export[:pos], []byte("\n"))
		flipped := bytes.Clone(export)
		flipped[pos] ^= 0x01
		got, err := ReadJSONL(bytes.NewReader(flipped))
		if err == nil {
			err = Verify(got, pub, head)
		}
		if err == nil {
			t.Errorf("flipping byte %d (%q on line %d) went unnoticed", pos, export[pos], line+1)
			continue
		}
		// A flipped newline merges or splits lines: then the line before
		// or after may be the one named.
		if at := problemAt(t, err); at != line && !(export[pos] == '\n' && (at == line+1 || at == line-1)) {
			t.Errorf("flipping byte %d on line %d: named entry %d (%v)", pos, line+1, at, err)
		}
	}
}

func TestDeletedReorderedAndRewrittenEntries(t *testing.T) {
	pub, priv := testKey(1)
	entries, head := sample(t, priv)
	for i := range entries {
		cut := append(append([]Entry{}, entries[:i]...), entries[i+1:]...)
		err := Verify(cut, pub, head)
		if at := problemAt(t, err); at != min(i, len(cut)-1) {
			t.Errorf("deleting entry %d: named %d (%v)", i, at, err)
		}
	}
	for i := 0; i+1 < len(entries); i++ {
		swapped := append([]Entry{}, entries...)
		swapped[i], swapped[i+1] = swapped[i+1], swapped[i]
		if at := problemAt(t, Verify(swapped, pub, head)); at != i {
			t.Errorf("swapping entries %d and %d: named %d", i, i+1, at)
		}
	}
	// Rewriting entry 3 and recomputing every later link, without the
	// hub's key, is caught by the signatures.
	forged := append([]Entry{}, entries...)
	forged[3].Amount = money.MustParse("99")
	for i := 4; i < len(forged); i++ {
		forged[i].Prev = forged[i-1].Hash()
	}
	if at := problemAt(t, Verify(forged, pub, Hash{})); at != 3 {
		t.Errorf("rewritten and relinked entry 3: named %d", at)
	}
	if err := Verify(nil, pub, head); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty ledger with a published head: %v", err)
	}
	if err := Verify(entries[:3], pub, head); err == nil || !strings.Contains(err.Error(), "entries after this one are missing") {
		t.Errorf("truncated ledger: %v", err)
	}
}

func TestBalances(t *testing.T) {
	_, priv := testKey(1)
	entries, _ := sample(t, priv)
	got, err := Balances(entries)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]money.Micro{
		"tenant:team-a":       money.MustParse("99.95"), // 100 - 0.06 escrowed + 0.01 refunded
		"escrow:team-a/web-1": 0,                        // 0.06 in, 0.05 settled (0.045 + 0.005 fee), 0.01 refunded
		"provider:alice-1":    money.MustParse("0.045"),
		"hub":                 money.MustParse("0.005"),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s, want %s", k, got[k], v)
		}
	}
}

// Conservation: whatever moves happen, balances sum to the deposits, to
// the micro-credit.
func TestConservation(t *testing.T) {
	_, priv := testKey(3)
	r := rand.New(rand.NewPCG(1, 2))
	accounts := []string{"tenant:a", "tenant:b", "escrow:a/l1", "escrow:b/l2", "provider:p1", "provider:p2"}
	for run := range 200 {
		c := NewChain(priv, nil)
		var entries []Entry
		var deposits money.Micro
		for range 50 {
			var e Entry
			if r.IntN(5) == 0 {
				amt := money.Micro(r.Int64N(10_000_000))
				e = Entry{Kind: Deposit, To: accounts[r.IntN(2)], Amount: amt}
				deposits += amt
			} else {
				e = Entry{Kind: UsageSettled, From: accounts[r.IntN(len(accounts))], To: accounts[r.IntN(len(accounts))],
					Amount: money.Micro(r.Int64N(1_000_000)), Fee: money.Micro(r.Int64N(1000))}
			}
			got, err := c.Append(e)
			if err != nil {
				t.Fatal(err)
			}
			entries = append(entries, got)
		}
		bal, err := Balances(entries)
		if err != nil {
			t.Fatal(err)
		}
		var sum money.Micro
		for _, v := range bal {
			sum += v
		}
		if sum != deposits {
			t.Fatalf("run %d: balances sum to %s, deposits %s", run, sum, deposits)
		}
	}
}
