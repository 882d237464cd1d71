// Package reputation turns what the hub observes of a provider into a score
// in [0, 1]. It is a beta reputation with forgetting: good and bad evidence
// are weights that halve every half-life, and the score is the expected
// probability of good behaviour under a uniform prior,
//
//	score = (positive + uptimeWeight*upHours + 1) /
//	        (positive + negative + uptimeWeight*(upHours+downHours) + 2)
//
// so a newcomer without evidence scores exactly 0.5, every score lies
// strictly between 0 and 1, and old evidence fades back towards 0.5.
//
// Evidence, with its weight:
//   - a Batch Lease that completed: +1 positive;
//   - a Lease lost with its provider, or a Job that failed: +1 negative;
//   - a verified result that agreed with the quorum: +1 positive;
//   - a result that disagreed with the quorum, or none: +5 negative, because
//     a wrong result is what redundant execution exists to catch;
//   - each hour the provider was Ready or Cordoned: +0.1 positive, and each
//     hour it was Lost: +0.1 negative. With a 24 h half-life, uptime alone
//     amounts to at most about 3.5 events.
package reputation

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Outcome is one piece of evidence about a provider.
type Outcome int

const (
	// LeaseCompleted: a Batch Lease ran to completion.
	LeaseCompleted Outcome = iota
	// LeaseFailed: a Lease was lost with its provider, or its Job failed.
	LeaseFailed
	// VerificationPassed: the provider's result agreed with the quorum.
	VerificationPassed
	// VerificationFailed: its result disagreed with the quorum, or it
	// reported none.
	VerificationFailed
	// EndpointUnreachable: it reported replicas ready whose endpoint did
	// not answer the hub: a false report, weighed as a dissent.
	EndpointUnreachable
)

// Weights of each kind of evidence; see the package comment.
const (
	WeightLease         = 1.0
	WeightAgreed        = 1.0
	WeightDissented     = 5.0
	UptimeWeightPerHour = 0.1
)

// DefaultHalfLife is how long evidence keeps half its weight.
const DefaultHalfLife = 24 * time.Hour

// Neutral is the score of a provider with no evidence.
const Neutral = 0.5

// State is the decayed evidence about one provider, as of At.
type State struct {
	Positive, Negative float64
	// UpSeconds and DownSeconds are the decayed time observed Ready (or
	// Cordoned) and Lost.
	UpSeconds, DownSeconds float64
	// At is when the weights were last decayed; zero for a newcomer.
	At time.Time
}

// Decay ages the evidence to now. Time never runs backwards: an earlier now
// leaves the state as it is.
func (s State) Decay(now time.Time, halfLife time.Duration) State {
	if s.At.IsZero() {
		s.At = now
		return s
	}
	dt := now.Sub(s.At)
	if dt <= 0 {
		return s
	}
	if halfLife <= 0 {
		halfLife = DefaultHalfLife
	}
	f := math.Exp2(-dt.Seconds() / halfLife.Seconds())
	s.Positive *= f
	s.Negative *= f
	s.UpSeconds *= f
	s.DownSeconds *= f
	s.At = now
	return s
}

// Add decays the state to now and adds one outcome.
func (s State) Add(o Outcome, now time.Time, halfLife time.Duration) State {
	s = s.Decay(now, halfLife)
	switch o {
	case LeaseCompleted:
		s.Positive += WeightLease
	case LeaseFailed:
		s.Negative += WeightLease
	case VerificationPassed:
		s.Positive += WeightAgreed
	case VerificationFailed, EndpointUnreachable:
		s.Negative += WeightDissented
	}
	return s
}

// Observe decays the state to now and adds d of observed time, up or down.
// The time is added at now, undecayed: the intervals are short next to any
// sensible half-life.
func (s State) Observe(up bool, d time.Duration, now time.Time, halfLife time.Duration) State {
	s = s.Decay(now, halfLife)
	if d <= 0 {
		return s
	}
	if up {
		s.UpSeconds += d.Seconds()
	} else {
		s.DownSeconds += d.Seconds()
	}
	return s
}

// Score is the provider's score in [0, 1].
func (s State) Score() float64 {
	up := UptimeWeightPerHour * s.UpSeconds / 3600
	down := UptimeWeightPerHour * s.DownSeconds / 3600
	pos, neg := max(s.Positive, 0), max(s.Negative, 0)
	return (pos + max(up, 0) + 1) / (pos + neg + max(up, 0) + max(down, 0) + 2)
}

// Uptime is the decayed share of observed time the provider was up, and
// false when nothing was observed yet.
func (s State) Uptime() (float64, bool) {
	total := s.UpSeconds + s.DownSeconds
	if total <= 0 {
		return 0, false
	}
	return s.UpSeconds / total, true
}

// Milli rounds a score or weight in [0, 1] or above to thousandths, the
// resolution status keeps.
func Milli(v float64) int64 {
	if math.IsNaN(v) || v < 0 {
		return 0
	}
	return int64(math.Round(v * 1000))
}

// FormatMilli writes thousandths as a decimal with three fractional digits
// ("0.500", "12.345"), the form status keeps scores and weights in.
func FormatMilli(m int64) string {
	if m < 0 {
		m = 0
	}
	return fmt.Sprintf("%d.%03d", m/1000, m%1000)
}

// ParseMilli reads a decimal with at most three fractional digits into
// thousandths.
func ParseMilli(s string) (int64, error) {
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" || len(frac) > 3 || (dot && frac == "") {
		return 0, fmt.Errorf("%q is not a decimal with at most three fractional digits", s)
	}
	w, err := strconv.ParseUint(whole, 10, 40)
	if err != nil {
		return 0, fmt.Errorf("%q is not a decimal with at most three fractional digits", s)
	}
	var f uint64
	if frac != "" {
		if f, err = strconv.ParseUint((frac + "00")[:3], 10, 16); err != nil {
			return 0, fmt.Errorf("%q is not a decimal with at most three fractional digits", s)
		}
	}
	return int64(w*1000 + f), nil
}
