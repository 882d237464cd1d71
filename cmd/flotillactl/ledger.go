package main

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/internal/money"
	"github.com/flotilla-dev/flotilla/internal/settle"
)

const ledgerUsage = `flotillactl ledger export [--kubeconfig F] [-o FILE]
flotillactl ledger verify --file F --public-key KEY [--head HASH] [--accounts FILE]
flotillactl ledger verify --hub [--public-key KEY] [--kubeconfig F]
flotillactl ledger verify --witness FILE [--namespace NS] [--public-key KEY] [--kubeconfig F]
flotillactl ledger verify --anchor FILE --public-key KEY [--kubeconfig F]
flotillactl ledger anchor [--kubeconfig F]`

// ledgerCommand: export the hub's ledger, or verify one.
func ledgerCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError(ledgerUsage)
	}
	switch args[0] {
	case "export":
		return ledgerExport(ctx, args[1:], stdout, stderr)
	case "verify":
		return ledgerVerify(ctx, args[1:], stdout, stderr)
	case "anchor":
		return ledgerAnchor(ctx, args[1:], stdout, stderr)
	}
	return usageError(ledgerUsage)
}

func ledgerExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ledger export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "Kubeconfig of the hub (default: KUBECONFIG or ~/.kube/config).")
	out := fs.String("o", "-", "File to write the JSON lines to (- for standard output).")
	if err := fs.Parse(args); err != nil {
		return errUsage{err.Error()}
	}
	entries, head, _, err := fromHub(ctx, *kubeconfig, false)
	if err != nil {
		return err
	}
	w := stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if err := ledger.WriteJSONL(w, entries); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "exported %d entries; head %s; public key %s\n", len(entries), lastHash(entries),
		base64.StdEncoding.EncodeToString(head.PublicKey))
	return nil
}

// fromHub reads the stored ledger, the published head and, if asked, the
// Accounts.
func fromHub(ctx context.Context, kubeconfig string, withAccounts bool) ([]ledger.Entry, ledger.Head, []flotillav1.Account, error) {
	c, _, err := hubClient(kubeconfig)
	if err != nil {
		return nil, ledger.Head{}, nil, err
	}
	// In the reverse of the order the hub writes them (entries, head,
	// Accounts), so that each read covers everything the one before it saw.
	var accounts flotillav1.AccountList
	if withAccounts {
		if err := c.List(ctx, &accounts); err != nil {
			return nil, ledger.Head{}, nil, fmt.Errorf("listing accounts: %w", err)
		}
	}
	head, err := ledgerstore.ReadHead(ctx, c)
	if err != nil {
		return nil, head, nil, err
	}
	store := &ledgerstore.Store{Client: c, Reader: c, Namespace: flotillav1.SystemNamespace}
	entries, err := store.Load(ctx)
	if err != nil {
		return nil, head, nil, err
	}
	return entries, head, accounts.Items, nil
}

func ledgerVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ledger verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", "", "Exported ledger, JSON lines (- for standard input).")
	key := fs.String("public-key", "", "The hub's ed25519 public key, base64, as pinned at join (the hub publishes it in flotilla-ledger/flotilla-ledger-head).")
	headFlag := fs.String("head", "", "The head hash the hub published; checks nothing was cut off the end.")
	accountsFile := fs.String("accounts", "", "Accounts as `kubectl get accounts.flotilla.dev -A -o json` printed them; their balances must equal the ledger's.")
	hub := fs.Bool("hub", false, "Read the ledger, its head, its key and the Accounts from the hub instead of files.")
	kubeconfig := fs.String("kubeconfig", "", "Kubeconfig of the hub, with --hub, --witness or --anchor.")
	witness := fs.String("witness", "", "File of what this party witnessed before (made on first use): the hub's published ledger must extend it; updated when it does.")
	namespace := fs.String("namespace", "", "With --witness: also check the entries the hub copied to this namespace (a tenant's, or provider-<name>).")
	anchor := fs.String("anchor", "", "A head printed by `ledger anchor` and kept elsewhere: the hub's published ledger must extend it.")
	if err := fs.Parse(args); err != nil {
		return errUsage{err.Error()}
	}
	if *witness != "" || *anchor != "" {
		c, _, err := hubClient(*kubeconfig)
		if err != nil {
			return err
		}
		if *anchor != "" {
			if err := anchorVerify(ctx, c, *anchor, *key, stdout); err != nil {
				return err
			}
		}
		if *witness != "" {
			return witnessVerify(ctx, c, *witness, *key, *namespace, stdout)
		}
		return nil
	}
	var entries []ledger.Entry
	var pub ed25519.PublicKey
	var head ledger.Hash
	var accounts []flotillav1.Account
	var compare bool
	if *hub {
		h := ledger.Head{}
		var err error
		if entries, h, accounts, err = fromHub(ctx, *kubeconfig, true); err != nil {
			return err
		}
		pub, head, compare = h.PublicKey, h.Hash, true
		if *key != "" {
			// A key pinned elsewhere, not the one the hub hands out.
			if pub, err = ledger.ParsePublicKey(*key); err != nil {
				return fmt.Errorf("--public-key: %w", err)
			}
		}
		if err := h.Verify(pub); err != nil {
			return fmt.Errorf("ledger does NOT verify: the published head: %w", err)
		}
		if int(h.Entries) < len(entries) {
			// Appended after the head was read: check up to the head.
			entries = entries[:h.Entries]
		}
	} else {
		if *file == "" || *key == "" {
			return usageError("--file and --public-key are required, or --hub")
		}
		var err error
		if pub, err = ledger.ParsePublicKey(*key); err != nil {
			return fmt.Errorf("--public-key: %w", err)
		}
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
		if entries, err = ledger.ReadJSONL(in); err != nil {
			return fmt.Errorf("ledger does NOT verify: %w", err)
		}
		if *accountsFile != "" {
			raw, err := os.ReadFile(*accountsFile)
			if err != nil {
				return err
			}
			var list flotillav1.AccountList
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("--accounts: %w", err)
			}
			accounts, compare = list.Items, true
		}
	}
	if err := ledger.Verify(entries, pub, head); err != nil {
		return fmt.Errorf("ledger does NOT verify: %w", err)
	}
	if err := ledger.VerifyEverySignature(entries, pub); err != nil {
		return fmt.Errorf("ledger does NOT verify: %w", err)
	}
	bal, err := ledger.Balances(entries)
	if err != nil {
		return fmt.Errorf("ledger does NOT verify: %w", err)
	}
	fmt.Fprintf(stdout, "ledger verifies: %d entries, chain and every signature intact, head %s\n", len(entries), lastHash(entries))
	if compare {
		if diffs, err := compareAccounts(entries, accounts); err != nil {
			return err
		} else if len(diffs) > 0 {
			return fmt.Errorf("live balances do NOT match the ledger:\n  %s", strings.Join(diffs, "\n  "))
		}
		fmt.Fprintf(stdout, "live balances of %d accounts equal the ones recomputed from the ledger\n", len(accounts))
	}
	fmt.Fprintln(stdout, "balances recomputed from the entries:")
	for _, k := range slices.Sorted(maps.Keys(bal)) {
		fmt.Fprintf(stdout, "  %-40s %s\n", k, bal[k])
	}
	return nil
}

func lastHash(entries []ledger.Entry) ledger.Hash {
	if len(entries) == 0 {
		return ledger.Hash{}
	}
	return entries[len(entries)-1].Hash()
}

// compareAccounts checks each Account's status against the ledger as it
// stood when the status was written (status.ledgerEntries entries in). The
// ledger is replayed once, the Accounts checked in order of that count.
func compareAccounts(entries []ledger.Entry, accounts []flotillav1.Account) ([]string, error) {
	var diffs []string
	accounts = slices.Clone(accounts)
	slices.SortStableFunc(accounts, func(a, b flotillav1.Account) int { return cmp.Compare(a.Status.LedgerEntries, b.Status.LedgerEntries) })
	book, replayed := settle.NewBook(), 0
	for _, a := range accounts {
		n := int(a.Status.LedgerEntries)
		if n == 0 && a.Status.Available == "" && a.Status.Earned == "" {
			continue // not settled yet
		}
		if n > len(entries) {
			diffs = append(diffs, fmt.Sprintf("account %s counts %d entries, the ledger has %d", a.Namespace, n, len(entries)))
			continue
		}
		for ; replayed < n; replayed++ {
			if err := book.Apply(&entries[replayed]); err != nil {
				return nil, err
			}
		}
		check := func(field string, live flotillav1.Amount, want money.Micro) {
			got, err := money.Parse(string(live))
			if live == "" {
				got, err = 0, nil
			}
			if err != nil || got != want {
				diffs = append(diffs, fmt.Sprintf("account %s: %s is %q live, %s in the ledger", a.Namespace, field, live, want))
			}
		}
		if name, ok := strings.CutPrefix(a.Namespace, "provider-"); ok && a.Spec.Credited == "" {
			check("earned", a.Status.Earned, book.Balances[settle.Provider(name)])
			continue
		}
		var held, spent money.Micro
		for acct, v := range book.Balances {
			if strings.HasPrefix(acct, "escrow:"+a.Namespace+"/") {
				held += v
			}
		}
		for wl, v := range book.Charged {
			if strings.HasPrefix(wl, a.Namespace+"/") {
				spent += v
			}
		}
		check("available", a.Status.Available, book.Balances[settle.Tenant(a.Namespace)])
		check("held", a.Status.Held, held)
		check("deposited", a.Status.Deposited, book.Deposited[a.Namespace])
		check("spent", a.Status.Spent, spent)
	}
	return diffs, nil
}
