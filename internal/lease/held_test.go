package lease

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

func TestParseHeld(t *testing.T) {
	for in, want := range map[string]string{
		"41 7200 1764590400":        "",
		"41 7200 1764590400 extra":  "fields",
		"41 7200":                   "fields",
		"":                          "fields",
		"41 -1 1764590400":          "not a count",
		"41 7e3 1764590400":         "not a count",
		"41 99999999999999999999 1": "not a count",
		"41 7200 0":                 "not a time",
		"41 7200 -5":                "not a time",
		"41 7200 99999999999999":    "not a time",
		strings.Repeat("9", 65) + " 1 1764590400": "fields",
	} {
		h, err := ParseHeld(in)
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", in, err)
		case want == "" && h.String() != in:
			t.Errorf("%q read back as %q", in, h.String())
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%q: error %v, want one saying %q", in, err, want)
		}
	}
}

func FuzzParseHeld(f *testing.F) {
	f.Add("41 7200 1764590400")
	f.Add("x 0 1")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHeld(s)
		if err != nil {
			return
		}
		if h.ReplicaSeconds < 0 || !h.Until.After(time.Unix(0, 0)) || h.RV == "" {
			t.Fatalf("%q read as %+v", s, h)
		}
		if again, err := ParseHeld(h.String()); err != nil || again != h {
			t.Fatalf("%q: %+v does not read back (%v)", s, h, err)
		}
	})
}

func TestHeldShardSpreadsLeases(t *testing.T) {
	count := make([]int, HeldShards)
	for i := range 1600 {
		s := HeldShard(types.UID(strings.Repeat("x", i%7) + string(rune('a'+i%26)) + time.Duration(i).String()))
		if s < 0 || s >= HeldShards {
			t.Fatalf("shard %d out of range", s)
		}
		count[s]++
	}
	for i, n := range count {
		if n < 50 || n > 150 {
			t.Errorf("shard %d holds %d of 1600 Leases, want about 100", i, n)
		}
	}
	if HeldShard("a-uid") != HeldShard("a-uid") {
		t.Error("a Lease's shard is not stable")
	}
}

// A put-off flush is restored only onto the very status it was computed
// over, only when it goes further, and never beyond what the written count
// could have run.
func TestRestore(t *testing.T) {
	written := flotillav1.LeaseStatus{Phase: flotillav1.LeaseActive, RunningReplicas: 2, ReadyReplicas: 2,
		Usage: flotillav1.LeaseUsage{ReplicaSeconds: 100, MeteredUntil: at(-time.Minute), Cost: "0.1"}}
	held := func(rv string, rs int64, until time.Duration) Held {
		return Held{RV: rv, ReplicaSeconds: rs, Until: t0.Add(until)}
	}
	for name, tc := range map[string]struct {
		h    Held
		ok   bool
		cost flotillav1.Amount
	}{
		"a minute of 2 replicas":                 {h: held("7", 220, 0), ok: true, cost: "0.22"},
		"a gap in the looks charged less":        {h: held("7", 150, 0), ok: true, cost: "0.15"},
		"the status was written since":           {h: held("6", 220, 0)},
		"not further than written":               {h: held("7", 100, -time.Minute)},
		"behind what is written":                 {h: held("7", 80, -2*time.Minute)},
		"less than written":                      {h: held("7", 90, 0)},
		"more than 2 replicas could have run":    {h: held("7", 221, 0)},
		"far in the future, overflowing a bound": {h: held("7", 1<<62, 1<<62)},
	} {
		t.Run(name, func(t *testing.T) {
			l := newLease(flotillav1.ClassService, *written.DeepCopy())
			l.ResourceVersion = "7"
			st := l.Status.DeepCopy()
			at, ok := Restore(st, l, tc.h)
			if ok != tc.ok {
				t.Fatalf("restored %v, want %v", ok, tc.ok)
			}
			if !ok {
				if st.Usage.ReplicaSeconds != 100 || !st.Usage.MeteredUntil.Time.Equal(t0.Add(-time.Minute)) || st.Usage.Cost != "0.1" {
					t.Errorf("not restored, but usage changed to %+v", st.Usage)
				}
				return
			}
			if st.Usage.ReplicaSeconds != tc.h.ReplicaSeconds || !st.Usage.MeteredUntil.Time.Equal(tc.h.Until) || st.Usage.Cost != tc.cost {
				t.Errorf("usage %+v, want %d replica-seconds until %s costing %s", st.Usage, tc.h.ReplicaSeconds, tc.h.Until, tc.cost)
			}
			if !at.Equal(tc.h.Until) {
				t.Errorf("metering goes on from %s, want %s", at, tc.h.Until)
			}
		})
	}
}

// A put-off flush holds what the look charged, and nothing before the
// first charge.
func TestHeldOf(t *testing.T) {
	st := &flotillav1.LeaseStatus{Usage: flotillav1.LeaseUsage{ReplicaSeconds: 5, MeteredUntil: at(0)}}
	if h, ok := HeldOf("3", st); !ok || h != (Held{RV: "3", ReplicaSeconds: 5, Until: t0}) {
		t.Errorf("held %+v %v", h, ok)
	}
	if _, ok := HeldOf("3", &flotillav1.LeaseStatus{}); ok {
		t.Error("held a status never metered")
	}
	if _, ok := HeldOf("", st); ok {
		t.Error("held a status without a resource version")
	}
}
