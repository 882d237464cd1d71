package reputation

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

const h = time.Hour

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestScore(t *testing.T) {
	tests := map[string]struct {
		build func() State
		want  float64
	}{
		"a newcomer is neutral": {
			build: func() State { return State{} },
			want:  0.5,
		},
		"one completed lease": {
			build: func() State { return State{}.Add(LeaseCompleted, t0, DefaultHalfLife) },
			want:  2.0 / 3,
		},
		"one lost lease": {
			build: func() State { return State{}.Add(LeaseFailed, t0, DefaultHalfLife) },
			want:  1.0 / 3,
		},
		"an agreeing result": {
			build: func() State { return State{}.Add(VerificationPassed, t0, DefaultHalfLife) },
			want:  2.0 / 3,
		},
		"a dissenting result weighs five": {
			build: func() State { return State{}.Add(VerificationFailed, t0, DefaultHalfLife) },
			want:  1.0 / 7,
		},
		"ten hours up weigh one event": {
			build: func() State { return State{}.Observe(true, 10*h, t0, DefaultHalfLife) },
			want:  2.0 / 3,
		},
		"ten hours down weigh one event": {
			build: func() State { return State{}.Observe(false, 10*h, t0, DefaultHalfLife) },
			want:  1.0 / 3,
		},
		"evidence one half-life old weighs half": {
			build: func() State {
				return State{}.Add(VerificationFailed, t0, DefaultHalfLife).Decay(t0.Add(DefaultHalfLife), DefaultHalfLife)
			},
			want: 1.0 / 4.5,
		},
		"a short half-life forgets faster": {
			build: func() State {
				return State{}.Add(LeaseFailed, t0, h).Decay(t0.Add(2*h), h)
			},
			want: 1.0 / 2.25,
		},
		"time running backwards changes nothing": {
			build: func() State {
				return State{}.Add(LeaseFailed, t0, h).Decay(t0.Add(-5*h), h)
			},
			want: 1.0 / 3,
		},
		"an honest provider outscores a liar with the same history": {
			build: func() State {
				return State{}.Add(LeaseCompleted, t0, h).Add(VerificationPassed, t0, h)
			},
			want: 3.0 / 4,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.build().Score(); !near(got, tc.want) {
				t.Errorf("Score() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestScoreStaysWithinBounds(t *testing.T) {
	good, bad := State{}, State{}
	for i := range 100000 {
		now := t0.Add(time.Duration(i) * time.Second)
		good = good.Add(VerificationPassed, now, DefaultHalfLife).Observe(true, time.Hour, now, DefaultHalfLife)
		bad = bad.Add(VerificationFailed, now, DefaultHalfLife).Observe(false, time.Hour, now, DefaultHalfLife)
	}
	if s := good.Score(); s <= 0.99 || s >= 1 {
		t.Errorf("all-good score %v, want in (0.99, 1)", s)
	}
	if s := bad.Score(); s <= 0 || s >= 0.01 {
		t.Errorf("all-bad score %v, want in (0, 0.01)", s)
	}
	if m := Milli(good.Score()); m > 1000 {
		t.Errorf("Milli of the all-good score is %d, above 1000", m)
	}
}

func TestEvidenceFadesToNeutral(t *testing.T) {
	s := State{}.Add(VerificationFailed, t0, h)
	prev := s.Score()
	for i := 1; i <= 40; i++ {
		cur := s.Decay(t0.Add(time.Duration(i)*h), h).Score()
		if cur <= prev || cur >= 0.5 {
			t.Fatalf("after %d half-lives score %v; want above %v and below 0.5", i, cur, prev)
		}
		prev = cur
	}
	if prev < 0.4999 {
		t.Errorf("after 40 half-lives score %v, want about 0.5", prev)
	}
}

func TestUptime(t *testing.T) {
	if _, ok := (State{}).Uptime(); ok {
		t.Error("a newcomer has an uptime")
	}
	s := State{}.Observe(true, 3*h, t0, DefaultHalfLife).Observe(false, h, t0, DefaultHalfLife)
	if u, ok := s.Uptime(); !ok || !near(u, 0.75) {
		t.Errorf("Uptime() = %v, %v; want 0.75", u, ok)
	}
}

func TestMilli(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "0.5": 500, "0.05": 50, "0.123": 123, "1": 1000, "1.000": 1000, "12.345": 12345} {
		got, err := ParseMilli(in)
		if err != nil || got != want {
			t.Errorf("ParseMilli(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", ".5", "0.", "0.1234", "-1", "a", "1.x", "1e3"} {
		if _, err := ParseMilli(bad); err == nil {
			t.Errorf("ParseMilli(%q) succeeded", bad)
		}
	}
	for in, want := range map[int64]string{0: "0.000", 5: "0.005", 500: "0.500", 1000: "1.000", 12345: "12.345", -3: "0.000"} {
		if got := FormatMilli(in); got != want {
			t.Errorf("FormatMilli(%d) = %q, want %q", in, got, want)
		}
	}
	if Milli(math.NaN()) != 0 || Milli(-1) != 0 || Milli(0.6666) != 667 {
		t.Error("Milli rounds wrongly")
	}
}

func BenchmarkAddAndScore(b *testing.B) {
	s := State{}
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second)
		s = s.Add(LeaseCompleted, now, DefaultHalfLife)
		_ = s.Score()
	}
}
