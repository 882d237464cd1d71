package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
)

// published reads the head and the whole index, and checks that the index
// chains and ends at the head.
func published(ctx context.Context, c client.Reader) (ledger.Head, []ledger.IndexLine, error) {
	head, lines, err := ledgerstore.ReadPublished(ctx, c)
	if err != nil {
		return head, nil, err
	}
	if err := ledger.Extends(ledger.Seen{}, &head, lines); err != nil {
		return head, nil, fmt.Errorf("ledger does NOT verify: the published index: %w", err)
	}
	return head, lines, nil
}

func pinnedKey(v string) (ed25519.PublicKey, error) {
	if v == "" {
		return nil, nil
	}
	k, err := ledger.ParsePublicKey(v)
	if err != nil {
		return nil, fmt.Errorf("--public-key: %w", err)
	}
	return k, nil
}

// witnessVerify checks the hub's published ledger against a witness file
// and, with a namespace, the entries copied to that party; when all holds
// it records what it saw.
func witnessVerify(ctx context.Context, c client.Reader, path, key, namespace string, stdout io.Writer) error {
	var w ledgerstore.WitnessFile
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(raw, &w); err != nil {
			return fmt.Errorf("witness file %s: %w", path, err)
		}
	}
	pinned, err := pinnedKey(key)
	if err != nil {
		return err
	}
	rep, err := w.Check(ctx, c, pinned, namespace)
	if err != nil {
		return fmt.Errorf("ledger does NOT verify against %s: %w", path, err)
	}
	if rep.PinnedOnFirstUse {
		fmt.Fprintf(stdout, "pinned the hub's ledger key %s on first use; pass --public-key to pin the one given at join\n", w.PublicKey)
	}
	out, err := json.Marshal(w)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ledger extends what %s witnessed: %d entries (%d new), head %s", path, rep.Entries, rep.New, rep.Head)
	if namespace != "" {
		fmt.Fprintf(stdout, "; %d entries of %s match it", rep.Mine, namespace)
	}
	fmt.Fprintln(stdout)
	return nil
}

// anchorVerify checks that the hub's published ledger extends a head
// anchored elsewhere.
func anchorVerify(ctx context.Context, c client.Reader, path, key string, stdout io.Writer) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	anchored, err := ledger.ParseAnchor(string(raw))
	if err != nil {
		return err
	}
	pinned, err := pinnedKey(key)
	if err != nil || pinned == nil {
		return usageError("--anchor needs --public-key: the hub's key as pinned at join")
	}
	head, err := ledgerstore.VerifyAnchor(ctx, c, &anchored, pinned)
	if err != nil {
		return fmt.Errorf("ledger does NOT verify against the anchored head: %w", err)
	}
	fmt.Fprintf(stdout, "ledger extends the anchored head of %s (%d entries) to %d entries\n", anchored.Time.Format("2006-01-02T15:04:05Z"), anchored.Entries, head.Entries)
	return nil
}

func ledgerAnchor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ledger anchor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "Kubeconfig of the hub (default: KUBECONFIG or ~/.kube/config).")
	if err := fs.Parse(args); err != nil {
		return errUsage{err.Error()}
	}
	c, _, err := hubClient(*kubeconfig)
	if err != nil {
		return err
	}
	head, _, err := published(ctx, c)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, head.Anchor())
	return nil
}
