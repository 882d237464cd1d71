package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/money"
)

// long is a ledger of n deposits.
func long(t testing.TB, seed byte, n int) []Entry {
	_, priv := testKey(seed)
	c := NewChain(priv, nil)
	out := make([]Entry, 0, n)
	for i := range n {
		e, err := c.Append(Entry{Kind: Deposit, To: "tenant:team-a", Amount: money.Micro(i + 1), Time: t0.Add(time.Duration(i) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func headOf(t testing.TB, seed byte, idx []IndexLine) Head {
	_, priv := testKey(seed)
	h := Head{Hub: "hub", Entries: uint64(len(idx)), Time: t0}
	if len(idx) > 0 {
		h.Hash, h.Witness = idx[len(idx)-1].Hash, idx[len(idx)-1].Witness
	}
	return SignHead(priv, h)
}

func seenAt(idx []IndexLine, n int) Seen {
	if n == 0 {
		return Seen{}
	}
	return Seen{Entries: uint64(n), Hash: idx[n-1].Hash, Witness: idx[n-1].Witness}
}

func from(idx []IndexLine, n int) []IndexLine {
	if n == 0 {
		return idx
	}
	return idx[n-1:]
}

func TestExtends(t *testing.T) {
	entries := long(t, 1, 10)
	idx := Index(entries, Hash{})

	// The hub's operator rewrites entry 3 and re-signs everything after it
	// with a new key: every hash and witness hash from 3 on changes.
	_, other := testKey(2)
	rewritten := slices.Clone(entries[:3])
	c := NewChain(other, &rewritten[2])
	for _, e := range entries[3:] {
		e.Sig = nil
		if e.Seq == 3 {
			e.Amount = 1_000_000
		}
		s, err := c.Append(e)
		if err != nil {
			t.Fatal(err)
		}
		rewritten = append(rewritten, s)
	}
	ridx := Index(rewritten, Hash{})

	// A fork: the same 6 entries, then others.
	fork := slices.Clone(idx[:6])
	for i := uint64(6); i < 10; i++ {
		fork = append(fork, Index([]Entry{{Seq: i, Kind: Deposit, To: "tenant:team-b"}}, fork[i-1].Witness)...)
	}

	// An index whose witness hashes do not follow.
	broken := slices.Clone(idx)
	broken[7].Witness[0] ^= 1

	for _, tc := range []struct {
		name    string
		seen    Seen
		head    Head
		lines   []IndexLine
		diverge bool   // a *Divergence, not just an error
		at      uint64 // its Seq
		atMost  bool
	}{
		{name: "from nothing", seen: Seen{}, head: headOf(t, 1, idx), lines: idx},
		{name: "grown", seen: seenAt(idx, 4), head: headOf(t, 1, idx), lines: from(idx, 4)},
		{name: "unchanged", seen: seenAt(idx, 10), head: headOf(t, 1, idx), lines: from(idx, 10)},
		{name: "empty ledger", seen: Seen{}, head: headOf(t, 1, nil)},
		{name: "truncated", seen: seenAt(idx, 10), head: headOf(t, 1, idx[:6]), lines: nil, diverge: true, at: 6, atMost: true},
		{name: "truncated to one short", seen: seenAt(idx, 7), head: headOf(t, 1, idx[:6]), diverge: true, at: 6},
		{name: "rewritten and re-signed", seen: seenAt(idx, 8), head: headOf(t, 2, ridx), lines: from(ridx, 8), diverge: true, at: 7, atMost: true},
		{name: "forked", seen: seenAt(idx, 8), head: headOf(t, 1, fork), lines: from(fork, 8), diverge: true, at: 7, atMost: true},
		{name: "index does not chain", seen: seenAt(idx, 4), head: headOf(t, 1, broken), lines: from(broken, 4), diverge: true, at: 7},
		{name: "head not the index's", seen: seenAt(idx, 4), head: headOf(t, 1, idx[:9]), lines: from(idx, 4)},
		{name: "index short", seen: seenAt(idx, 4), head: headOf(t, 1, idx), lines: idx[3:8]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Extends(tc.seen, &tc.head, tc.lines)
			var d *Divergence
			switch {
			case tc.diverge && !errors.As(err, &d):
				t.Fatalf("got %v, want a divergence", err)
			case tc.diverge && (d.Seq != tc.at || d.AtMost != tc.atMost):
				t.Fatalf("got %v, want it at entry %d (at most %v)", err, tc.at, tc.atMost)
			case !tc.diverge && strings.HasPrefix(tc.name, "index short") && (err == nil || errors.As(err, &d)):
				t.Fatalf("got %v, want an incomplete index named", err)
			case !tc.diverge && tc.name == "head not the index's" && err == nil:
				t.Fatal("a head that is not the index's last line was accepted")
			case !tc.diverge && !strings.HasPrefix(tc.name, "index short") && tc.name != "head not the index's" && err != nil:
				t.Fatalf("an honest ledger: %v", err)
			}
		})
	}
}

func TestHeadSignatureAndAnchor(t *testing.T) {
	pub, _ := testKey(1)
	otherPub, _ := testKey(2)
	idx := Index(long(t, 1, 3), Hash{})
	h := headOf(t, 1, idx)
	if err := h.Verify(pub); err != nil {
		t.Fatal(err)
	}
	if err := h.Verify(otherPub); err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("a head signed by another key: %v", err)
	}
	back, err := ParseAnchor(h.Anchor())
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Verify(pub); err != nil || back.Witness != h.Witness || back.Entries != 3 {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	// Every edit of the anchor's content breaks its signature or its form.
	for _, edit := range []struct{ from, to string }{
		{"entries: 3", "entries: 4"},
		{"hub: hub", "hub: hub2"},
		{"head: " + h.Hash.String()[:4], "head: 0000"},
		{"witness: " + h.Witness.String()[:4], "witness: 0000"},
		{"time: 2026", "time: 2027"},
	} {
		a, err := ParseAnchor(strings.Replace(h.Anchor(), edit.from, edit.to, 1))
		if err == nil {
			err = a.Verify(pub)
		}
		if err == nil {
			t.Errorf("%q -> %q: still verifies", edit.from, edit.to)
		}
	}
}

func TestParseAnchorRefusesMalformed(t *testing.T) {
	h := headOf(t, 1, Index(long(t, 1, 2), Hash{}))
	good := h.Anchor()
	for name, s := range map[string]string{
		"empty":           "",
		"other magic":     strings.Replace(good, anchorMagic, "flotilla-ledger-head/v0", 1),
		"line missing":    strings.Replace(good, "hub: hub\n", "", 1),
		"lines reordered": strings.Replace(strings.Replace(good, "hub: hub\n", "", 1), "entries:", "hub: hub\nentries:", 1) + "x: y\n",
		"huge":            good + strings.Repeat("x", 5000),
		"bad entries":     strings.Replace(good, "entries: 2", "entries: -2", 1),
		"bad hash":        strings.Replace(good, "head: ", "head: zz", 1),
		"bad key":         strings.Replace(good, "publicKey: ", "publicKey: !!", 1),
		"short key":       strings.Replace(good, "publicKey: "+good[strings.Index(good, "publicKey: ")+11:strings.Index(good, "publicKey: ")+15], "publicKey: ", 1),
		"bad time":        strings.Replace(good, "time: 2026-11-24T12:00:00Z", "time: yesterday", 1),
		"empty with head": strings.Replace(good, "entries: 2", "entries: 0", 1),
	} {
		if _, err := ParseAnchor(s); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestIndexRoundTripAndHostileLines(t *testing.T) {
	idx := Index(long(t, 1, 5), Hash{})
	var buf bytes.Buffer
	if err := WriteIndex(&buf, idx); err != nil {
		t.Fatal(err)
	}
	back, err := ReadIndex(&buf)
	if err != nil || !slices.Equal(back, idx) {
		t.Fatalf("round trip: %v", err)
	}
	for name, s := range map[string]string{
		"two fields":    "0 " + idx[0].Hash.String() + "\n",
		"negative seq":  fmt.Sprintf("-1 %s %s\n", idx[0].Hash, idx[0].Witness),
		"short hash":    fmt.Sprintf("0 abc %s\n", idx[0].Witness),
		"long line":     strings.Repeat("1", 4096) + "\n",
		"non-hex":       fmt.Sprintf("0 %s %s\n", strings.Repeat("g", 64), idx[0].Witness),
		"extra field":   fmt.Sprintf("0 %s %s x\n", idx[0].Hash, idx[0].Witness),
		"seq overflows": fmt.Sprintf("99999999999999999999 %s %s\n", idx[0].Hash, idx[0].Witness),
	} {
		if _, err := ReadIndex(strings.NewReader(s)); err == nil {
			t.Errorf("%s: read", name)
		}
	}
}

func TestFirstDifference(t *testing.T) {
	idx := Index(long(t, 1, 6), Hash{})
	other := Index(long(t, 2, 6), Hash{})
	changed := slices.Concat(idx[:4], Index(long(t, 3, 6)[4:], idx[3].Witness))
	for _, tc := range []struct {
		kept, now []IndexLine
		at        uint64
		differ    bool
	}{
		{idx, idx, 0, false},
		{idx[:3], idx, 0, false},
		{idx, idx[:3], 0, false},
		{idx, other, 0, true},
		{idx, changed, 4, true},
	} {
		at, differ := FirstDifference(tc.kept, tc.now)
		if at != tc.at || differ != tc.differ {
			t.Errorf("got %d %v, want %d %v", at, differ, tc.at, tc.differ)
		}
	}
}

func TestParties(t *testing.T) {
	for _, tc := range []struct {
		e    Entry
		want []string
	}{
		{Entry{Kind: Deposit, To: "tenant:team-a"}, []string{"tenant:team-a"}},
		{Entry{Kind: EscrowMoved, Lease: "team-a/web/web-1", From: "tenant:team-a", To: "escrow:team-a/web-1"}, []string{"tenant:team-a"}},
		{Entry{Kind: UsageSettled, Lease: "team-a/web/web-1", From: "escrow:team-a/web-1", To: "provider:alice"}, []string{"tenant:team-a", "provider:alice"}},
		{Entry{Kind: Dispute, Lease: "team-b/job/job-1", To: "provider:mallory"}, []string{"provider:mallory", "tenant:team-b"}},
		{Entry{Kind: LeaseOpened, Lease: "team-c/x/y"}, []string{"tenant:team-c"}},
		{Entry{Kind: Deposit, To: "hub"}, nil},
		{Entry{Kind: Deposit, To: "tenant:", From: "escrow:/x", Lease: "/x"}, nil},
	} {
		if got := tc.e.Parties(); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: got %v, want %v", tc.e, got, tc.want)
		}
	}
}

func BenchmarkIndexAndExtends(b *testing.B) {
	entries := long(b, 1, 10_000)
	b.ResetTimer()
	for b.Loop() {
		idx := Index(entries, Hash{})
		h := headOf(b, 1, idx)
		if err := Extends(Seen{}, &h, idx); err != nil {
			b.Fatal(err)
		}
	}
}
