// Package usage is the provider's side of metering: the agent counts the
// running pods (bound to a node, not finished) of each Lease on its own
// cluster, as the hub charges them, integrates them into
// replica-seconds, and signs a report per Lease with its ed25519 key. The
// hub pays on what it observed itself; a report only confirms it, or marks
// the ledger entry disputed when the two differ beyond a tolerance.
package usage

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla-dev/flotilla/internal/metering"
)

// ConfigMapName is the ConfigMap in the provider's namespace on the hub
// (provider-<name>) that holds its latest report, under DataKey.
const (
	ConfigMapName = "usage-report"
	DataKey       = "report.json"
)

// Line is the provider's claim about one Lease: replica-seconds observed
// running on its cluster from the Lease's start until Until.
type Line struct {
	Lease          string    `json:"lease"` // the Lease's UID
	ReplicaSeconds int64     `json:"replicaSeconds"`
	Until          time.Time `json:"until"`
	Sig            []byte    `json:"sig"`
}

// Report is every Line of one provider.
type Report struct {
	Provider string `json:"provider"`
	Lines    []Line `json:"lines"`
}

// Canonical is what a Line's signature covers.
func (l *Line) Canonical(provider string) []byte {
	return fmt.Appendf(nil, "flotilla-usage/v1\n%s\n%s\n%d\n%d", provider, l.Lease, l.ReplicaSeconds, l.Until.UTC().Unix())
}

// Sign fills in the Line's signature.
func (l *Line) Sign(key ed25519.PrivateKey, provider string) {
	l.Until = l.Until.UTC().Truncate(time.Second)
	l.Sig = ed25519.Sign(key, l.Canonical(provider))
}

// Verify checks the Line's signature with the provider's public key.
func (l *Line) Verify(pub ed25519.PublicKey, provider string) bool {
	return len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, l.Canonical(provider), l.Sig)
}

// Bounds of a report: it comes from a provider and is read by the hub at
// every settlement.
const (
	MaxReportBytes = 1 << 20
	MaxLines       = 5000
	maxLeaseID     = 64
)

// Parse reads a report, refusing one that is too large or malformed, with
// the field named.
func Parse(data []byte) (*Report, error) {
	if len(data) > MaxReportBytes {
		return nil, fmt.Errorf("usage report: %d bytes, more than the %d read", len(data), MaxReportBytes)
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("usage report: %w", err)
	}
	if len(r.Lines) > MaxLines {
		return nil, fmt.Errorf("usage report: lines: %d, more than the %d read", len(r.Lines), MaxLines)
	}
	for i := range r.Lines {
		l := &r.Lines[i]
		switch {
		case l.Lease == "" || len(l.Lease) > maxLeaseID:
			return nil, fmt.Errorf("usage report: lines[%d].lease: must be a Lease UID of 1 to %d characters", i, maxLeaseID)
		case l.ReplicaSeconds < 0:
			return nil, fmt.Errorf("usage report: lines[%d].replicaSeconds: %d is negative", i, l.ReplicaSeconds)
		case len(l.Sig) != ed25519.SignatureSize:
			return nil, fmt.Errorf("usage report: lines[%d].sig: not an ed25519 signature", i)
		}
	}
	return &r, nil
}

// Tracker integrates running pods per Lease, as the agent observes them.
type Tracker struct {
	leases map[string]metering.Usage
	ready  map[string]int32
}

// NewTracker starts from the lines of the last report, so that an agent
// that restarts carries on counting.
func NewTracker(last *Report) *Tracker {
	t := &Tracker{leases: map[string]metering.Usage{}, ready: map[string]int32{}}
	if last != nil {
		for _, l := range last.Lines {
			t.leases[l.Lease] = metering.Usage{ReplicaSeconds: l.ReplicaSeconds, Until: l.Until}
		}
	}
	return t
}

// Observe records the running pods per Lease at now: the time since the last
// observation is counted at the count seen then. Leases no longer seen are
// forgotten.
func (t *Tracker) Observe(now time.Time, ready map[string]int32) {
	now = now.UTC().Truncate(time.Second)
	next := make(map[string]metering.Usage, len(ready))
	for lease := range ready {
		u, ok := t.leases[lease]
		if ok {
			u, _ = metering.Advance(u, t.ready[lease], now)
		} else {
			u = metering.Usage{Until: now}
		}
		next[lease] = u
	}
	t.leases, t.ready = next, ready
}

// Report signs a Line per Lease tracked.
func (t *Tracker) Report(key ed25519.PrivateKey, provider string) Report {
	r := Report{Provider: provider, Lines: make([]Line, 0, len(t.leases))}
	for lease, u := range t.leases {
		l := Line{Lease: lease, ReplicaSeconds: u.ReplicaSeconds, Until: u.Until}
		l.Sign(key, provider)
		r.Lines = append(r.Lines, l)
	}
	sortLines(r.Lines)
	return r
}

func sortLines(ls []Line) {
	slices.SortFunc(ls, func(a, b Line) int { return strings.Compare(a.Lease, b.Lease) })
}

// Tolerance of a comparison: a fixed allowance per replica (for the
// different moments the two sides look) plus a share of the hub's count.
type Tolerance struct {
	PerReplica time.Duration
	Percent    int64
}

// DefaultTolerance allows 60 replica-seconds per replica and 5%.
var DefaultTolerance = Tolerance{PerReplica: time.Minute, Percent: 5}

// Disputed compares the provider's Line with the hub's count (hubRS
// replica-seconds until hubUntil, for a Lease of replicas): the two may
// differ by what replicas could run between the two moments, plus the
// tolerance.
func Disputed(l Line, hubRS int64, hubUntil time.Time, replicas int32, tol Tolerance) bool {
	dt := int64(l.Until.Sub(hubUntil) / time.Second)
	slack := int64(replicas)*int64(tol.PerReplica/time.Second) + hubRS*tol.Percent/100
	low, high := min(0, int64(replicas)*dt)-slack, max(0, int64(replicas)*dt)+slack
	diff := l.ReplicaSeconds - hubRS
	return diff < low || diff > high
}

// Summary is a short text of a Line for events and logs.
func (l *Line) Summary() string {
	return strconv.FormatInt(l.ReplicaSeconds, 10) + " replica-seconds until " + l.Until.UTC().Format(time.RFC3339)
}
