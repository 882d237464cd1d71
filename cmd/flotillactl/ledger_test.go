package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/ledger"
)

func TestLedgerVerify(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	pub := base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
	c := ledger.NewChain(priv, nil)
	var entries []ledger.Entry
	for _, e := range []ledger.Entry{
		{Kind: ledger.Deposit, To: "tenant:a", Amount: 5_000_000},
		{Kind: ledger.UsageSettled, From: "tenant:a", To: "provider:p", Amount: 1_000_000, Fee: 10_000},
	} {
		e.Time = time.Unix(0, 0)
		got, err := c.Append(e)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, got)
	}
	var buf bytes.Buffer
	if err := ledger.WriteJSONL(&buf, entries); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	if err := os.WriteFile(good, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte(strings.Replace(buf.String(), `"amount":1000000`, `"amount":1000001`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	head := c.Head().String()
	accounts := func(available string) string {
		f := filepath.Join(dir, "accounts-"+available+".json")
		doc := `{"items": [
		  {"metadata": {"name": "default", "namespace": "a"}, "spec": {"credited": "5"},
		   "status": {"available": "` + available + `", "held": "0", "deposited": "5", "spent": "0", "ledgerEntries": 2}},
		  {"metadata": {"name": "default", "namespace": "provider-p"},
		   "status": {"earned": "1", "ledgerEntries": 2}}]}`
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	for name, tc := range map[string]struct {
		args []string
		code int
		out  string
	}{
		"intact":   {[]string{"--file", good, "--public-key", pub, "--head", head}, 0, "provider:p                               1"},
		"tampered": {[]string{"--file", bad, "--public-key", pub}, 1, "entry 1 (seq 1): signature does not match"},
		"live balances agree": {[]string{"--file", good, "--public-key", pub, "--accounts", accounts("3.99")}, 0,
			"live balances of 2 accounts equal the ones recomputed from the ledger"},
		"live balances differ": {[]string{"--file", good, "--public-key", pub, "--accounts", accounts("4")}, 1,
			`account a: available is "4" live, 3.99 in the ledger`},
		"cut off":      {[]string{"--file", good, "--public-key", pub, "--head", strings.Repeat("ab", 32)}, 1, "entries after this one are missing"},
		"no key":       {[]string{"--file", good}, 2, "--public-key are required"},
		"bad key":      {[]string{"--file", good, "--public-key", "nope"}, 1, "not a base64 ed25519 public key"},
		"missing file": {[]string{"--file", filepath.Join(dir, "none"), "--public-key", pub}, 1, "no such file"},
	} {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(append([]string{"ledger", "verify"}, tc.args...), &out, &errOut)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %s stderr %s", code, tc.code, out.String(), errOut.String())
			}
			if !strings.Contains(out.String()+errOut.String(), tc.out) {
				t.Errorf("output lacks %q:\n%s%s", tc.out, out.String(), errOut.String())
			}
		})
	}
}
