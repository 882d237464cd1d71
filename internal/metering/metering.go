// Package metering integrates observed running replicas over time into
// replica-seconds, and prices them exactly. Pure: the Lease controller
// feeds it what it reads back from providers.
//
// Only time the hub observed counts: an interval is charged at the count
// observed at its start, and the hub closes an interval whenever that count
// changes, so the integral is exact for what was observed. After a gap in
// the hub's observations (a restart, a provider that did not answer, a
// provider Lost) metering restarts from the first new observation: nobody
// can say what ran in between.
package metering

import (
	"math"
	"math/bits"
	"time"

	"github.com/flotilla-dev/flotilla/internal/money"
)

// Usage is what has been metered of one Lease.
type Usage struct {
	ReplicaSeconds int64
	// Until is the end of the metered time; zero before the first
	// observation.
	Until time.Time
}

// Advance charges ready replicas from u.Until to now, in whole seconds (the
// remainder stays unmetered, to be charged with the next interval), and
// reports whether anything changed. The first call only starts the clock.
func Advance(u Usage, ready int32, now time.Time) (Usage, bool) {
	if u.Until.IsZero() {
		return Usage{ReplicaSeconds: u.ReplicaSeconds, Until: now}, true
	}
	secs := int64(now.Sub(u.Until) / time.Second)
	if secs <= 0 {
		return u, false
	}
	u.Until = u.Until.Add(time.Duration(secs) * time.Second)
	if ready > 0 {
		add := int64(ready) * secs
		if u.ReplicaSeconds > math.MaxInt64-add {
			u.ReplicaSeconds = math.MaxInt64
		} else {
			u.ReplicaSeconds += add
		}
	}
	return u, true
}

// Observe is Advance for an observation at now whose previous one was at
// prev (zero when there was none since the hub started). When the two are
// more than maxGap apart the hub did not watch the time between: only the
// time up to prev is charged and the clock restarts at now.
func Observe(u Usage, count int32, prev, now time.Time, maxGap time.Duration) (Usage, bool) {
	if u.Until.IsZero() || (!prev.IsZero() && now.Sub(prev) <= maxGap) {
		return Advance(u, count, now)
	}
	if prev.After(u.Until) {
		u, _ = Advance(u, count, prev)
	}
	changed := !u.Until.Equal(now)
	u.Until = now
	return u, changed
}

// Cost of replica-seconds at a price per replica-hour, rounded down to the
// micro-credit, exactly (128-bit intermediate); it saturates rather than
// overflows.
func Cost(replicaSeconds int64, pricePerReplicaHour money.Micro) money.Micro {
	if replicaSeconds <= 0 || pricePerReplicaHour <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(replicaSeconds), uint64(pricePerReplicaHour))
	if hi >= 3600 {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, 3600)
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return money.Micro(q)
}
