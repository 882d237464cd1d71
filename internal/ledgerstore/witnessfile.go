package ledgerstore

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-dev/flotilla/internal/ledger"
)

// WitnessFile is what a party keeps outside the hub (flotillactl ledger
// verify --witness): the hub's pinned key and the hash of every entry it
// has seen published, so that a later look names the first entry that
// changed, not only that one did. 32 bytes an entry.
type WitnessFile struct {
	PublicKey string `json:"publicKey"`
	Entries   uint64 `json:"entries"`
	// Hashes: every entry's hash, 32 bytes each, base64.
	Hashes string `json:"hashes"`
}

// WitnessReport says what a look found.
type WitnessReport struct {
	Entries, New uint64
	Head         ledger.Hash
	// Mine: the party's entries checked against the index.
	Mine int
	// PinnedOnFirstUse: no key was pinned before this look.
	PinnedOnFirstUse bool
}

func (w *WitnessFile) lines() ([]ledger.IndexLine, error) {
	raw, err := base64.StdEncoding.DecodeString(w.Hashes)
	if err != nil || uint64(len(raw)) != 32*w.Entries {
		return nil, errors.New("witness file: its hashes do not match its entry count")
	}
	out := make([]ledger.IndexLine, w.Entries)
	var prev ledger.Hash
	for i := range out {
		var h ledger.Hash
		copy(h[:], raw[32*i:])
		prev = ledger.NextWitness(prev, uint64(i), h)
		out[i] = ledger.IndexLine{Seq: uint64(i), Hash: h, Witness: prev}
	}
	return out, nil
}

// Check reads the hub's published ledger and checks it against what w
// witnessed: the first entry that differs is named exactly (a
// *ledger.Divergence), before the head's signature is checked against
// pinned (or w's key; on first use, the published one). With a namespace
// it also checks the entries copied to that party against the index and
// the key. When everything holds, w records what was seen.
func (w *WitnessFile) Check(ctx context.Context, r client.Reader, pinned ed25519.PublicKey, namespace string) (WitnessReport, error) {
	var rep WitnessReport
	kept, err := w.lines()
	if err != nil {
		return rep, err
	}
	if w.PublicKey != "" {
		k, err := ledger.ParsePublicKey(w.PublicKey)
		if err != nil {
			return rep, fmt.Errorf("witness file: publicKey: %w", err)
		}
		if pinned != nil && !pinned.Equal(k) {
			return rep, errors.New("the key given is not the one the witness file pinned")
		}
		pinned = k
	}
	head, lines, err := ReadPublished(ctx, r)
	if err != nil {
		return rep, err
	}
	if seq, differ := ledger.FirstDifference(kept, lines); differ {
		return rep, &ledger.Divergence{Seq: seq, Why: fmt.Sprintf("witnessed with hash %s, published now with %s: the ledger was rewritten from there",
			kept[seq].Hash.String()[:16], lines[seq].Hash.String()[:16])}
	}
	if len(lines) < len(kept) {
		return rep, &ledger.Divergence{Seq: uint64(len(lines)), Why: fmt.Sprintf("the hub publishes %d entries after %d were witnessed: the ledger was truncated", len(lines), len(kept))}
	}
	if err := ledger.Extends(ledger.Seen{}, &head, lines); err != nil {
		return rep, err
	}
	if pinned == nil {
		pinned, rep.PinnedOnFirstUse = head.PublicKey, true
	}
	if err := head.Verify(pinned); err != nil {
		return rep, &ledger.Divergence{Seq: head.Entries, AtMost: true, Why: err.Error()}
	}
	if namespace != "" {
		entries, err := ReadParty(ctx, r, namespace)
		if err != nil {
			return rep, err
		}
		for i := range entries {
			e := &entries[i]
			if e.Seq >= uint64(len(lines)) {
				continue // copied after the head was read
			}
			if e.Hash() != lines[e.Seq].Hash {
				return rep, &ledger.Divergence{Seq: e.Seq, Why: "the copy in " + namespace + " is not the entry published"}
			}
		}
		if err := ledger.VerifyEverySignature(entries, pinned); err != nil {
			return rep, fmt.Errorf("an entry copied to %s: %w", namespace, err)
		}
		rep.Mine = len(entries)
	}
	hashes := make([]byte, 0, 32*len(lines))
	for _, l := range lines {
		hashes = append(hashes, l.Hash[:]...)
	}
	rep.Entries, rep.New, rep.Head = head.Entries, head.Entries-w.Entries, head.Hash
	*w = WitnessFile{PublicKey: base64.StdEncoding.EncodeToString(pinned), Entries: head.Entries, Hashes: base64.StdEncoding.EncodeToString(hashes)}
	return rep, nil
}

// VerifyAnchor checks an anchored head against the pinned key, and that
// the hub's published ledger, as a whole, chains and extends it.
func VerifyAnchor(ctx context.Context, r client.Reader, anchored *ledger.Head, pinned ed25519.PublicKey) (ledger.Head, error) {
	if err := anchored.Verify(pinned); err != nil {
		return ledger.Head{}, fmt.Errorf("the anchored head: %w", err)
	}
	head, lines, err := ReadPublished(ctx, r)
	if err != nil {
		return head, err
	}
	if err := ledger.Extends(ledger.Seen{}, &head, lines); err != nil {
		return head, err
	}
	from := lines
	if anchored.Entries > uint64(len(lines)) {
		from = nil
	} else if anchored.Entries > 0 {
		from = lines[anchored.Entries-1:]
	}
	seen := ledger.Seen{Entries: anchored.Entries, Hash: anchored.Hash, Witness: anchored.Witness}
	if err := ledger.Extends(seen, &head, from); err != nil {
		return head, err
	}
	if err := head.Verify(pinned); err != nil {
		return head, &ledger.Divergence{Seq: head.Entries, AtMost: true, Why: err.Error()}
	}
	return head, nil
}

// ReadPublished reads the published head and the whole index up to it.
func ReadPublished(ctx context.Context, r client.Reader) (ledger.Head, []ledger.IndexLine, error) {
	head, err := ReadHead(ctx, r)
	if err != nil {
		return head, nil, err
	}
	lines, err := ReadIndex(ctx, r, 0, head.Entries)
	return head, lines, err
}
