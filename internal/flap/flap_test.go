package flap

import (
	"testing"
	"time"
)

func TestLost(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	cases := map[string]struct {
		losses   int32
		previous *time.Time
		now      time.Time
		want     int32
	}{
		"first loss ever":             {0, nil, t0, 1},
		"second loss within window":   {1, at(0), t0.Add(5 * time.Minute), 2},
		"loss exactly at window edge": {3, at(0), t0.Add(10 * time.Minute), 4},
		"loss after a quiet window":   {5, at(0), t0.Add(10*time.Minute + time.Second), 1},
		"count without a time resets": {4, nil, t0, 1},
		"count saturates":             {1 << 20, at(0), t0.Add(time.Second), 1 << 20},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := Default.Lost(c.losses, c.previous, c.now); got != c.want {
				t.Errorf("Lost(%d) = %d, want %d", c.losses, got, c.want)
			}
		})
	}
}

func TestHoldDown(t *testing.T) {
	cases := []struct {
		losses int32
		want   time.Duration
	}{
		{0, 0}, {1, 0}, {2, 30 * time.Second}, {3, time.Minute}, {4, 2 * time.Minute},
		{5, 4 * time.Minute}, {6, 8 * time.Minute}, {7, 10 * time.Minute}, {1000, 10 * time.Minute},
	}
	for _, c := range cases {
		if got := Default.HoldDown(c.losses); got != c.want {
			t.Errorf("HoldDown(%d) = %s, want %s", c.losses, got, c.want)
		}
	}
	custom := Policy{Window: time.Minute, Base: time.Second, Max: 3 * time.Second}
	if got := custom.HoldDown(4); got != 3*time.Second {
		t.Errorf("custom HoldDown(4) = %s, want the 3s cap", got)
	}
	if got := (Policy{}).HoldDown(2); got != Default.Base {
		t.Errorf("zero policy HoldDown(2) = %s, want the default %s", got, Default.Base)
	}
}
