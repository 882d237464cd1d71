package quorum

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var (
	x = "sha256:" + strings.Repeat("a", 64)
	y = "sha256:" + strings.Repeat("b", 64)
	z = "sha256:" + strings.Repeat("c", 64)
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func rep(lease, owner, digest string, sec int) Copy {
	return Copy{Lease: lease, Owner: owner, State: Reported, Digest: digest, ReportedAt: t0.Add(time.Duration(sec) * time.Second)}
}

func run(lease, owner string) Copy { return Copy{Lease: lease, Owner: owner, State: Running} }

func TestDecide(t *testing.T) {
	p32 := Policy{Redundancy: 3, Quorum: 2, MaxExtra: 2}
	tests := map[string]struct {
		policy   Policy
		copies   []Copy
		previous string
		want     Decision
	}{
		"nothing placed yet waits for the redundancy": {
			policy: p32,
			want:   Decision{Copies: 3},
		},
		"one report is not a quorum": {
			policy: p32,
			copies: []Copy{rep("l1", "a", x, 1), run("l2", "b"), run("l3", "c")},
			want:   Decision{Votes: 1, Copies: 3},
		},
		"two agreeing owners verify while the third still runs": {
			policy: p32,
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "b", x, 2), run("l3", "c")},
			want:   Decision{Verified: x, Votes: 2, Copies: 3, Verdicts: map[string]Verdict{"l1": Agreed, "l2": Agreed}},
		},
		"verified before the last copy is placed needs it no more": {
			policy: p32,
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "b", x, 2)},
			want:   Decision{Verified: x, Votes: 2, Copies: 2, Verdicts: map[string]Verdict{"l1": Agreed, "l2": Agreed}},
		},
		"one liar dissents": {
			policy: p32,
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "b", y, 2), rep("l3", "c", x, 3)},
			want: Decision{Verified: x, Votes: 2, Copies: 3,
				Verdicts: map[string]Verdict{"l1": Agreed, "l2": Dissented, "l3": Agreed}},
		},
		"a late report is judged against the verified digest and changes nothing": {
			policy:   p32,
			copies:   []Copy{rep("l1", "a", x, 1), rep("l2", "b", x, 2), rep("l3", "c", y, 9)},
			previous: x,
			want: Decision{Verified: x, Votes: 2, Copies: 3,
				Verdicts: map[string]Verdict{"l1": Agreed, "l2": Agreed, "l3": Dissented}},
		},
		"a verified digest is kept even if later reports outvote it": {
			policy:   Policy{Redundancy: 5, Quorum: 2},
			copies:   []Copy{rep("l1", "a", x, 1), rep("l2", "b", x, 2), rep("l3", "c", y, 3), rep("l4", "d", y, 4), rep("l5", "e", y, 5)},
			previous: x,
			want: Decision{Verified: x, Votes: 2, Copies: 5,
				Verdicts: map[string]Verdict{"l1": Agreed, "l2": Agreed, "l3": Dissented, "l4": Dissented, "l5": Dissented}},
		},
		"three different digests ask for one extra copy": {
			policy: p32,
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "b", y, 2), rep("l3", "c", z, 3)},
			want:   Decision{Votes: 1, Copies: 4},
		},
		"the extra copy breaks the disagreement": {
			policy: p32,
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "b", y, 2), rep("l3", "c", z, 3), rep("l4", "d", y, 4)},
			want: Decision{Verified: y, Votes: 2, Copies: 4,
				Verdicts: map[string]Verdict{"l1": Dissented, "l2": Agreed, "l3": Dissented, "l4": Agreed}},
		},
		"an extra copy still running is waited for": {
			policy: p32,
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "b", y, 2), rep("l3", "c", z, 3), run("l4", "d")},
			want:   Decision{Votes: 1, Copies: 4},
		},
		"no extra copies allowed fails the run": {
			policy: Policy{Redundancy: 3, Quorum: 2},
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "b", y, 2), rep("l3", "c", z, 3)},
			want: Decision{Votes: 1, Copies: 3, Failed: ReasonNoQuorum,
				Message: "3 of 3 copies reported; the most that agree is 1, 2 needed, and at most 3 copies may run"},
		},
		"extra copies used up fails the run": {
			policy: Policy{Redundancy: 3, Quorum: 2, MaxExtra: 1},
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "b", y, 2), rep("l3", "c", z, 3), rep("l4", "d", "sha256:nope", 4)},
			want: Decision{Votes: 1, Copies: 4, Failed: ReasonNoQuorum,
				Message: "4 of 4 copies reported; the most that agree is 1, 2 needed, and at most 4 copies may run"},
		},
		"a tie at the quorum verifies nothing and asks for a tie-breaker": {
			policy: Policy{Redundancy: 4, Quorum: 2, MaxExtra: 1},
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "b", y, 2), rep("l3", "c", x, 3), rep("l4", "d", y, 4)},
			want:   Decision{Votes: 2, Copies: 5},
		},
		"a tie with no copies left fails": {
			policy: Policy{Redundancy: 4, Quorum: 2},
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "b", y, 2), rep("l3", "c", x, 3), rep("l4", "d", y, 4)},
			want: Decision{Votes: 2, Copies: 4, Failed: ReasonNoQuorum,
				Message: "4 of 4 copies reported; the most that agree is 2, 2 needed, and at most 4 copies may run"},
		},
		"an owner's second copy does not vote": {
			policy: p32,
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "a", x, 2), rep("l3", "b", y, 3)},
			want:   Decision{Votes: 1, Copies: 4},
		},
		"an owner's first report counts, not its later one": {
			policy: Policy{Redundancy: 3, Quorum: 2},
			copies: []Copy{rep("l2", "a", y, 5), rep("l1", "a", x, 1), rep("l3", "b", x, 3), run("l4", "c")},
			want: Decision{Verified: x, Votes: 2, Copies: 4,
				Verdicts: map[string]Verdict{"l1": Agreed, "l2": Dissented, "l3": Agreed}},
		},
		"a running copy of an owner that voted is no possible vote": {
			policy: Policy{Redundancy: 3, Quorum: 2, MaxExtra: 1},
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "b", y, 2), rep("l3", "c", z, 3), run("l4", "a")},
			want: Decision{Votes: 1, Copies: 4, Failed: ReasonNoQuorum,
				Message: "3 of 4 copies reported; the most that agree is 1, 2 needed, and at most 4 copies may run"},
		},
		"a malformed digest never agrees": {
			policy: Policy{Redundancy: 2, Quorum: 2},
			copies: []Copy{rep("l1", "a", "sha256:XYZ", 1), rep("l2", "b", "sha256:XYZ", 2)},
			want: Decision{Copies: 2, Failed: ReasonNoQuorum,
				Message: "2 of 2 copies reported; the most that agree is 0, 2 needed, and at most 2 copies may run"},
		},
		"a failed copy is replaced by an extra one": {
			policy: p32,
			copies: []Copy{rep("l1", "a", x, 1), {Lease: "l2", Owner: "b", State: Failed}, rep("l3", "c", y, 3)},
			want:   Decision{Votes: 1, Copies: 4},
		},
		"quorum one verifies the first report": {
			policy: Policy{Redundancy: 1, Quorum: 1},
			copies: []Copy{rep("l1", "a", x, 1)},
			want:   Decision{Verified: x, Votes: 1, Copies: 1, Verdicts: map[string]Verdict{"l1": Agreed}},
		},
		"a quorum above the redundancy is capped": {
			policy: Policy{Redundancy: 2, Quorum: 5},
			copies: []Copy{rep("l1", "a", x, 1), rep("l2", "b", x, 2)},
			want:   Decision{Verified: x, Votes: 2, Copies: 2, Verdicts: map[string]Verdict{"l1": Agreed, "l2": Agreed}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Decide(tc.policy, tc.copies, tc.previous)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Decide:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestDecideNeverVerifiesAMinority checks over many random runs that a
// digest is verified only with a quorum of distinct owners and a strict lead.
func TestDecideNeverVerifiesAMinority(t *testing.T) {
	digests := []string{x, y, z, "bad"}
	seed := uint64(1)
	next := func(n int) int {
		seed = seed*6364136223846793005 + 1442695040888963407
		return int(seed>>33) % n
	}
	for i := range 5000 {
		p := Policy{Redundancy: 1 + next(6), MaxExtra: next(3)}
		p.Quorum = 1 + next(p.Redundancy)
		var copies []Copy
		for j := range 1 + next(8) {
			c := Copy{Lease: fmt.Sprintf("l%d", j), Owner: fmt.Sprintf("o%d", next(5)), State: State(next(3))}
			if c.State == Reported {
				c.Digest = digests[next(len(digests))]
				c.ReportedAt = t0.Add(time.Duration(next(100)) * time.Second)
			}
			copies = append(copies, c)
		}
		d := Decide(p, copies, "")
		if d.Copies < len(copies) {
			t.Fatalf("run %d: asked for %d copies, fewer than the %d started", i, d.Copies, len(copies))
		}
		if d.Copies > max(p.Redundancy+p.MaxExtra, len(copies)) {
			t.Fatalf("run %d: asked for %d copies, over the limit %d", i, d.Copies, p.Redundancy+p.MaxExtra)
		}
		if d.Verified == "" {
			continue
		}
		owners := map[string]bool{}
		for _, c := range copies {
			if c.State == Reported && c.Digest == d.Verified {
				owners[c.Owner] = true
			}
		}
		if len(owners) < min(p.Quorum, p.Redundancy) || !WellFormed(d.Verified) {
			t.Fatalf("run %d: verified %s with %d owners, quorum %d: %+v", i, d.Verified, len(owners), p.Quorum, copies)
		}
		if d.Failed != "" {
			t.Fatalf("run %d: both verified and failed", i)
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	copies := []Copy{rep("l1", "a", x, 1), rep("l2", "b", y, 2), rep("l3", "c", z, 3), rep("l4", "d", y, 4), run("l5", "e")}
	p := Policy{Redundancy: 3, Quorum: 2, MaxExtra: 2}
	b.ReportAllocs()
	for b.Loop() {
		Decide(p, copies, "")
	}
}
