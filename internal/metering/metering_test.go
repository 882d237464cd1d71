package metering

import (
	"math"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/money"
)

func TestAdvance(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	u, changed := Advance(Usage{}, 3, t0)
	if !changed || u.Until != t0 || u.ReplicaSeconds != 0 {
		t.Fatalf("first observation must start the clock only: %+v", u)
	}
	// ready is the count that held during the interval ending at "at".
	steps := []struct {
		ready      int32
		at         time.Duration
		wantRS     int64
		wantUntil  time.Duration
		wantChange bool
	}{
		{3, 10 * time.Second, 30, 10 * time.Second, true},                       // 3 replicas for 10s
		{3, 10*time.Second + 500*time.Millisecond, 30, 10 * time.Second, false}, // under a second: nothing yet
		{3, 12*time.Second + 700*time.Millisecond, 36, 12 * time.Second, true},  // 2 whole seconds at 3; 0.7s carried
		{2, 20 * time.Second, 36 + 16, 20 * time.Second, true},                  // 8s at 2
		{0, time.Hour, 52, time.Hour, true},                                     // nothing ready: clock moves, no charge
	}
	for i, s := range steps {
		var ch bool
		u, ch = Advance(u, s.ready, t0.Add(s.at))
		if u.ReplicaSeconds != s.wantRS || u.Until != t0.Add(s.wantUntil) || ch != s.wantChange {
			t.Errorf("step %d: %+v changed %v, want %d replica-seconds until +%s, changed %v", i, u, ch, s.wantRS, s.wantUntil, s.wantChange)
		}
	}
	sat, _ := Advance(Usage{ReplicaSeconds: math.MaxInt64 - 1, Until: t0}, 10, t0.Add(time.Hour))
	if sat.ReplicaSeconds != math.MaxInt64 {
		t.Errorf("replica-seconds must saturate: %d", sat.ReplicaSeconds)
	}
}

// TestObserveChargesOnlyObservedTime: after a gap in the hub's
// observations, the time between is never charged.
func TestObserveChargesOnlyObservedTime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	gap := 15 * time.Second
	for name, tc := range map[string]struct {
		u           Usage
		prev, now   time.Time
		wantRS      int64
		wantUntil   time.Time
		wantChanged bool
	}{
		"watched throughout":         {Usage{Until: at(0)}, at(27), at(30), 60, at(30), true},
		"first observation":          {Usage{}, time.Time{}, at(30), 0, at(30), true},
		"P3.hub-restart":             {Usage{ReplicaSeconds: 7, Until: at(0)}, time.Time{}, at(600), 7, at(600), true},
		"P3.unobserved-gap":          {Usage{Until: at(0)}, at(9), at(100), 18, at(100), true},
		"gap right after a flush":    {Usage{ReplicaSeconds: 4, Until: at(50)}, at(50), at(100), 4, at(100), true},
		"exactly the gap is watched": {Usage{Until: at(0)}, at(15), at(30), 60, at(30), true},
	} {
		t.Run(name, func(t *testing.T) {
			u, changed := Observe(tc.u, 2, tc.prev, tc.now, gap)
			if u.ReplicaSeconds != tc.wantRS || !u.Until.Equal(tc.wantUntil) || changed != tc.wantChanged {
				t.Errorf("got %+v changed %v, want %d replica-seconds until %s, changed %v", u, changed, tc.wantRS, tc.wantUntil, tc.wantChanged)
			}
		})
	}
}

func TestCost(t *testing.T) {
	cases := []struct {
		rs    int64
		price string
		want  string
	}{
		{3600, "0.006", "0.006"},
		{1800, "0.006", "0.003"},
		{1, "0.006", "0.000001"}, // 1.67 micro-credits round down
		{600, "0.000001", "0"},   // 600/3600 of a micro-credit
		{3600 * 24 * 365, "2.5", "21900"},
		{0, "1", "0"},
		{100, "0", "0"},
	}
	for _, c := range cases {
		if got := Cost(c.rs, money.MustParse(c.price)); got != money.MustParse(c.want) {
			t.Errorf("Cost(%d, %s) = %s, want %s", c.rs, c.price, got, c.want)
		}
	}
	if got := Cost(math.MaxInt64, money.MustParse("1000000")); got != math.MaxInt64 {
		t.Errorf("cost must saturate, got %s", got)
	}
	// No rounding drift: cost is computed from the total, so metering in
	// many small steps costs what one big step does.
	var u Usage
	t0 := time.Now()
	u, _ = Advance(u, 1, t0)
	for i := 1; i <= 3600; i++ {
		u, _ = Advance(u, 1, t0.Add(time.Duration(i)*time.Second))
	}
	if got := Cost(u.ReplicaSeconds, money.MustParse("0.007")); got != money.MustParse("0.007") {
		t.Errorf("an hour metered second by second costs %s, want 0.007", got)
	}
}
