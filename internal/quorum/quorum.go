// Package quorum decides the result of a Batch Workload run as several
// copies on independent owners: when enough copies agree, which copies
// dissent, and whether more copies are needed or the run has failed.
//
// The rules:
//   - One vote per owner: the copy that reported first (then by name) votes
//     for its owner; further copies of the same owner do not count, so no
//     owner can make a quorum alone.
//   - A copy that finished without a well-formed digest ("sha256:" and 64
//     hex digits) votes for nothing: it can never agree.
//   - A digest is verified when it has at least Quorum votes and strictly
//     more than any other digest; a tie verifies nothing.
//   - Once verified, the digest never changes: late reports are judged
//     against it (and may dissent), never counted towards another.
//   - While nothing is verified, the copies still running are counted as
//     possible votes for the leading digest. When they cannot be enough,
//     extra copies are asked for, up to MaxExtra beyond Redundancy; when
//     even those cannot be enough, the run fails.
package quorum

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"time"
)

// State of one copy.
type State int

const (
	// Running copies have not reported yet.
	Running State = iota
	// Reported copies finished and reported a digest (maybe malformed).
	Reported
	// Failed copies finished without reporting: their Job failed.
	Failed
)

// Copy is one Lease of the Workload. Copies replaced by failover are not
// passed: their replacements are.
type Copy struct {
	Lease string
	Owner string
	State State
	// Digest reported, when State is Reported.
	Digest string
	// ReportedAt orders reports of the same owner.
	ReportedAt time.Time
}

// Policy is the Workload's verification spec.
type Policy struct {
	Redundancy, Quorum, MaxExtra int
}

// Verdict on one reported copy, once a digest is verified.
type Verdict string

const (
	Agreed    Verdict = "Agreed"
	Dissented Verdict = "Dissented"
)

// Decision is what the hub does next.
type Decision struct {
	// Verified digest, or "" while none is.
	Verified string
	// Votes for the verified or leading digest.
	Votes int
	// Verdicts by Lease, for reported copies once Verified is set.
	Verdicts map[string]Verdict
	// Copies is how many copies should exist in all: the ones started
	// plus the ones to start now.
	Copies int
	// Failed is a reason code when no quorum can be reached any more, with
	// Message saying why.
	Failed, Message string
}

// ReasonNoQuorum is the Failed code when the results cannot reach a quorum.
const ReasonNoQuorum = "QuorumNotReached"

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// WellFormed reports a digest that can take part in a vote.
func WellFormed(d string) bool { return digestRE.MatchString(d) }

// Decide applies the rules to the copies so far. previous is the digest
// verified earlier, if any; it is kept.
func Decide(p Policy, copies []Copy, previous string) Decision {
	p.Redundancy = max(p.Redundancy, 1)
	p.Quorum = min(max(p.Quorum, 1), p.Redundancy)
	p.MaxExtra = max(p.MaxExtra, 0)

	reported := make([]Copy, 0, len(copies))
	for _, c := range copies {
		if c.State == Reported {
			reported = append(reported, c)
		}
	}
	slices.SortStableFunc(reported, func(a, b Copy) int {
		if c := a.ReportedAt.Compare(b.ReportedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.Lease, b.Lease)
	})
	votes := map[string]int{}
	voted := map[string]bool{}
	for _, c := range reported {
		if voted[c.Owner] {
			continue
		}
		voted[c.Owner] = true
		if WellFormed(c.Digest) {
			votes[c.Digest]++
		}
	}
	lead, best := "", 0
	for d, n := range votes {
		if n > best || (n == best && d < lead) {
			lead, best = d, n
		}
	}
	second := 0
	for d, n := range votes {
		if d != lead {
			second = max(second, n)
		}
	}
	// A running copy of an owner that already voted adds no vote.
	running := 0
	for _, c := range copies {
		if c.State == Running && !voted[c.Owner] {
			voted[c.Owner] = true
			running++
		}
	}

	dec := Decision{Copies: max(len(copies), p.Redundancy)}
	switch {
	case previous != "":
		dec.Verified, dec.Votes = previous, votes[previous]
	case best >= p.Quorum && best > second:
		dec.Verified, dec.Votes = lead, best
	}
	if dec.Verified != "" {
		// Copies not placed yet are no longer needed.
		dec.Copies = len(copies)
		dec.Verdicts = make(map[string]Verdict, len(reported))
		for _, c := range reported {
			if c.Digest == dec.Verified {
				dec.Verdicts[c.Lease] = Agreed
			} else {
				dec.Verdicts[c.Lease] = Dissented
			}
		}
		return dec
	}
	dec.Votes = best
	// Votes the leading digest still needs, and one more to break a tie.
	need := p.Quorum - best
	if best > 0 && best == second {
		need = max(need, 1)
	}
	if running >= need {
		return dec
	}
	// Not started yet counts as running: copies below Redundancy are still
	// to be placed.
	if pending := dec.Copies - len(copies); running+pending >= need {
		return dec
	}
	want := len(copies) + need - running
	if limit := p.Redundancy + p.MaxExtra; want > limit {
		dec.Copies = len(copies)
		dec.Failed = ReasonNoQuorum
		dec.Message = fmt.Sprintf("%d of %d copies reported; the most that agree is %d, %d needed, and at most %d copies may run",
			len(reported), len(copies), best, p.Quorum, limit)
		return dec
	}
	dec.Copies = want
	return dec
}
