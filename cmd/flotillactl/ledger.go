package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/flotilla-dev/flotilla/internal/ledger"
)

// ledgerCommand: verify an exported ledger offline.
func ledgerCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return usageError("flotillactl ledger verify --file F --public-key KEY [--head HASH]")
	}
	fs := flag.NewFlagSet("ledger verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", "", "Exported ledger, JSON lines (- for standard input).")
	key := fs.String("public-key", "", "The hub's ed25519 public key, base64.")
	headFlag := fs.String("head", "", "The head hash the hub published; checks nothing was cut off the end.")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage{err.Error()}
	}
	if *file == "" || *key == "" {
		return usageError("--file and --public-key are required")
	}
	pub, err := base64.StdEncoding.DecodeString(*key)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("--public-key: not a base64 ed25519 public key")
	}
	var head ledger.Hash
	if *headFlag != "" {
		if head, err = ledger.ParseHash(*headFlag); err != nil {
			return fmt.Errorf("--head: %w", err)
		}
	}
	in := io.Reader(os.Stdin)
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	entries, err := ledger.ReadJSONL(in)
	if err == nil {
		err = ledger.Verify(entries, pub, head)
	}
	if err != nil {
		return fmt.Errorf("ledger does NOT verify: %w", err)
	}
	bal, err := ledger.Balances(entries)
	if err != nil {
		return fmt.Errorf("ledger does NOT verify: %w", err)
	}
	last := ledger.Hash{}
	if len(entries) > 0 {
		last = entries[len(entries)-1].Hash()
	}
	fmt.Fprintf(stdout, "ledger verifies: %d entries, chain and signatures intact, head %s\n", len(entries), last)
	names := make([]string, 0, len(bal))
	for k := range bal {
		names = append(names, k)
	}
	slices.Sort(names)
	fmt.Fprintln(stdout, "balances recomputed from the entries:")
	for _, k := range names {
		fmt.Fprintf(stdout, "  %-40s %s\n", k, bal[k])
	}
	return nil
}
