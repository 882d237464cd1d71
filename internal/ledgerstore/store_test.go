package ledgerstore

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/usage"
)

// The largest entries the hub writes (a payment carrying a provider's
// signed report, with the longest names) are small enough that the byte cap
// of a chunk, not its entry cap, keeps it under the API server's 1 MiB.
func TestFullChunkFitsAnObject(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	chain := ledger.NewChain(key, nil)
	long := strings.Repeat("x", 63)
	line := usage.Line{Lease: "0f8fad5b-d9cb-469f-a165-70867728950e", ReplicaSeconds: 1 << 40, Until: time.Now()}
	line.Sign(key, long)
	var entries []ledger.Entry
	for range DefaultChunkEntries {
		e, err := chain.Append(ledger.Entry{Kind: ledger.UsageSettled, Time: time.Now(),
			Lease: long + "/" + long + "/" + long + "-abcdefgh", From: "escrow:" + long + "/" + long + "-abcdefgh", To: "provider:" + long,
			Amount: 1 << 60, Fee: 1 << 50, ReplicaSeconds: 1 << 40, ProviderReport: line.Canonical(long), ProviderSig: line.Sig, Disputed: true})
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	var buf bytes.Buffer
	if err := ledger.WriteJSONL(&buf, entries); err != nil {
		t.Fatal(err)
	}
	per := buf.Len() / DefaultChunkEntries
	if MaxChunkBytes+per > 1000<<10 {
		t.Errorf("entries of %d bytes can take a chunk to %d bytes; the API server takes at most 1 MiB per object", per, MaxChunkBytes+per)
	}
	t.Logf("the largest entries take %d bytes: %d fit a chunk", per, MaxChunkBytes/per)
}
