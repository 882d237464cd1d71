package usage

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func key(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

func TestSignedLines(t *testing.T) {
	k := key(1)
	pub := k.Public().(ed25519.PublicKey)
	l := Line{Lease: "uid-1", ReplicaSeconds: 120, Until: t0.Add(500 * time.Millisecond)}
	l.Sign(k, "alice-1")
	if !l.Verify(pub, "alice-1") {
		t.Fatal("a signed line does not verify")
	}
	for name, tamper := range map[string]func(*Line) string{
		"more replica-seconds": func(l *Line) string { l.ReplicaSeconds++; return "alice-1" },
		"another lease":        func(l *Line) string { l.Lease = "uid-2"; return "alice-1" },
		"a later time":         func(l *Line) string { l.Until = l.Until.Add(time.Second); return "alice-1" },
		"another provider":     func(l *Line) string { return "bob-1" },
		"another key":          func(l *Line) string { l.Sign(key(2), "alice-1"); return "alice-1" },
	} {
		c := l
		if prov := tamper(&c); c.Verify(pub, prov) {
			t.Errorf("%s: still verifies", name)
		}
	}
	// A report survives its JSON round trip.
	r := Report{Provider: "alice-1", Lines: []Line{l}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(b)
	if err != nil || len(back.Lines) != 1 || !back.Lines[0].Verify(pub, "alice-1") {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if _, err := Parse([]byte("{")); err == nil {
		t.Error("a broken report parsed")
	}
}

// TestParseRefusesHostileReports plays a provider writing a report meant to
// slow the bank down or confuse it: each is refused naming the field.
func TestParseRefusesHostileReports(t *testing.T) {
	sig := bytes.Repeat([]byte{1}, ed25519.SignatureSize)
	line := func(mutate func(*Line)) []byte {
		l := Line{Lease: "uid-1", ReplicaSeconds: 1, Until: t0, Sig: sig}
		mutate(&l)
		b, _ := json.Marshal(Report{Provider: "p", Lines: []Line{l}})
		return b
	}
	many, _ := json.Marshal(Report{Provider: "p", Lines: make([]Line, MaxLines+1)})
	for id, tc := range map[string]struct {
		data []byte
		want string
	}{
		"P4.report-too-large":     {append([]byte(`{"provider":"p","x":"`), append(bytes.Repeat([]byte("a"), MaxReportBytes), '"', '}')...), "bytes"},
		"P4.report-too-many":      {many, "lines:"},
		"P4.report-negative":      {line(func(l *Line) { l.ReplicaSeconds = -5 }), "lines[0].replicaSeconds"},
		"P4.report-long-lease-id": {line(func(l *Line) { l.Lease = string(bytes.Repeat([]byte("u"), 65)) }), "lines[0].lease"},
		"P4.report-no-signature":  {line(func(l *Line) { l.Sig = nil }), "lines[0].sig"},
		"P4.report-not-json":      {[]byte(`{"lines":[{"replicaSeconds":"lots"}]}`), "usage report"},
	} {
		t.Run(id, func(t *testing.T) {
			_, err := Parse(tc.data)
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("got %v, want a refusal naming %q", err, tc.want)
			}
		})
	}
}

// FuzzParse reads any report a provider may write: no panic, and what is
// accepted is within bounds.
func FuzzParse(f *testing.F) {
	k := key(4)
	l := Line{Lease: "uid-1", ReplicaSeconds: 60, Until: t0}
	l.Sign(k, "p")
	good, _ := json.Marshal(Report{Provider: "p", Lines: []Line{l}})
	f.Add(good)
	f.Add([]byte(`{"provider":"p","lines":[{"lease":"x","replicaSeconds":-1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse(data)
		if err != nil {
			return
		}
		if len(r.Lines) > MaxLines {
			t.Fatalf("%d lines accepted", len(r.Lines))
		}
		for _, l := range r.Lines {
			if l.ReplicaSeconds < 0 || l.Lease == "" || len(l.Lease) > maxLeaseID || len(l.Sig) != ed25519.SignatureSize {
				t.Fatalf("line out of bounds accepted: %+v", l)
			}
			_ = l.Verify(k.Public().(ed25519.PublicKey), r.Provider)
			_ = Disputed(l, 100, t0, 3, DefaultTolerance)
		}
	})
}

func TestTracker(t *testing.T) {
	k := key(3)
	tr := NewTracker(nil)
	tr.Observe(t0, map[string]int32{"a": 2})
	tr.Observe(t0.Add(10*time.Second), map[string]int32{"a": 3, "b": 1}) // a: 2 x 10 s
	tr.Observe(t0.Add(20*time.Second), map[string]int32{"a": 3, "b": 1}) // a: 3 x 10 s, b: 1 x 10 s
	r := tr.Report(k, "p")
	if len(r.Lines) != 2 || r.Lines[0].Lease != "a" || r.Lines[0].ReplicaSeconds != 50 || r.Lines[1].ReplicaSeconds != 10 {
		t.Fatalf("report %+v, want a=50, b=10", r.Lines)
	}
	// An agent that restarts carries on from its last report, counting
	// nothing for the time it was away.
	tr = NewTracker(&r)
	tr.Observe(t0.Add(60*time.Second), map[string]int32{"a": 3})
	tr.Observe(t0.Add(70*time.Second), map[string]int32{"a": 3})
	r = tr.Report(k, "p")
	if len(r.Lines) != 1 || r.Lines[0].ReplicaSeconds != 80 || !r.Lines[0].Until.Equal(t0.Add(70*time.Second)) {
		t.Fatalf("after a restart %+v, want a=80 until +70s (b forgotten)", r.Lines)
	}
}

func TestDisputed(t *testing.T) {
	tol := Tolerance{PerReplica: 30 * time.Second, Percent: 5}
	for name, tc := range map[string]struct {
		provider int64
		at       time.Duration // provider's report time after the hub's
		hub      int64
		want     bool
	}{
		"equal":                                 {1000, 0, 1000, false},
		"within the tolerance":                  {1100, 0, 1000, false}, // 2 x 30 + 50
		"beyond the tolerance":                  {1200, 0, 1000, true},
		"reported later, running meanwhile":     {1400, 200 * time.Second, 1000, false},
		"reported earlier, not yet counted":     {700, -150 * time.Second, 1000, false},
		"claims far more than could have run":   {5000, 60 * time.Second, 1000, true},
		"claims far less than the hub observed": {100, 0, 1000, true},
		"a new lease on both sides":             {0, 5 * time.Second, 0, false},
	} {
		l := Line{ReplicaSeconds: tc.provider, Until: t0.Add(tc.at)}
		if got := Disputed(l, tc.hub, t0, 2, tol); got != tc.want {
			t.Errorf("%s: Disputed = %v, want %v", name, got, tc.want)
		}
	}
}

func BenchmarkSignLine(b *testing.B) {
	k := key(4)
	l := Line{Lease: "uid", ReplicaSeconds: 1, Until: t0}
	for b.Loop() {
		l.Sign(k, "p")
	}
}
