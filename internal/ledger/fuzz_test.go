package ledger

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzImport reads any export a hub (or someone handing over a ledger) may
// give: ReadJSONL, Verify and Balances never panic, a line that is not an
// entry is named, and nothing but the signed ledger verifies.
func FuzzImport(f *testing.F) {
	pub, priv := testKey(1)
	entries, head := sample(f, priv)
	var good bytes.Buffer
	if err := WriteJSONL(&good, entries); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add([]byte("{\"seq\":0,\"kind\":\"Deposit\",\"amount\":\"-1\"}\n"))
	f.Add([]byte("{\"seq\":18446744073709551615}\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ReadJSONL(bytes.NewReader(data))
		if err != nil {
			var p *Problem
			if !errors.As(err, &p) && !errors.Is(err, bytes.ErrTooLarge) {
				t.Logf("not a Problem: %v", err) // a scanner error (line too long) is fine
			}
			return
		}
		verr := Verify(got, pub, head)
		_, _ = Balances(got)
		if verr == nil && !bytes.Equal(data, good.Bytes()) {
			var again bytes.Buffer
			_ = WriteJSONL(&again, got)
			if !bytes.Equal(again.Bytes(), good.Bytes()) {
				t.Fatalf("a different ledger verified against the head:\n%s", data)
			}
		}
	})
}
