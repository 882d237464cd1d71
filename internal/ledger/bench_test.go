package ledger

import (
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/money"
)

func usageEntry(i int) Entry {
	return Entry{Kind: UsageSettled, Time: t0.Add(time.Duration(i) * time.Second), Lease: "team-a/web-1",
		From: "escrow:team-a/web-1", To: "provider:alice-1", Amount: money.MustParse("0.045"), Fee: money.MustParse("0.005"),
		ReplicaSeconds: 3600, ProviderReport: []byte(`{"lease":"team-a/web-1","replicaSeconds":3600}`), ProviderSig: make([]byte, 64)}
}

// BenchmarkAppend: signed entries appended per second, 1,000 per
// operation (goal: 5,000 a second on one core).
func BenchmarkAppend(b *testing.B) {
	_, priv := testKey(1)
	c := NewChain(priv, nil)
	e := usageEntry(0)
	const perOp = 1000
	for b.Loop() {
		for range perOp {
			if _, err := c.Append(e); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(perOp*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkVerify: entries verified per second, over a 100,000-entry
// ledger (goal: 50,000 on one core).
func BenchmarkVerify(b *testing.B) {
	pub, priv := testKey(1)
	c := NewChain(priv, nil)
	const n = 100_000
	entries := make([]Entry, n)
	for i := range entries {
		e, err := c.Append(usageEntry(i))
		if err != nil {
			b.Fatal(err)
		}
		entries[i] = e
	}
	head := c.Head()
	b.ResetTimer()
	for b.Loop() {
		if err := Verify(entries, pub, head); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
}
