// Package ledger is Flotilla's tamper-evident book of account: an
// append-only chain of entries, each carrying the SHA-256 of its
// predecessor over a canonical encoding and the hub's ed25519 signature.
// It is pure: storage and the API live elsewhere.
//
// Verification checks every entry's link to the one before it (cheap:
// one hash), and the signature of the last entry, which through the links
// vouches for every entry before it. Only when that signature fails does it
// check signatures one by one, bisecting, to name the first forged entry.
// Verifying every signature would cap verification at about 16,000 entries
// a second on one core; this way it runs at hashing speed. Truncation (the
// newest entries dropped) leaves a valid chain, so callers pass the head
// the hub published, and Verify checks the chain ends there.
package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-dev/flotilla/internal/money"
)

// Kind of entry.
type Kind string

// The kinds of entry.
const (
	LeaseOpened  Kind = "LeaseOpened"
	EscrowMoved  Kind = "EscrowMoved"
	UsageSettled Kind = "UsageSettled"
	LeaseClosed  Kind = "LeaseClosed"
	Deposit      Kind = "Deposit"
	Dispute      Kind = "Dispute"
)

// Hash is a SHA-256 digest.
type Hash [sha256.Size]byte

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText writes the hash in hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText reads a hex hash.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 2*sha256.Size {
		return fmt.Errorf("hash %q: want %d hex digits", b, 2*sha256.Size)
	}
	_, err := hex.Decode(h[:], b)
	return err
}

// ParseHash reads a hash in hex.
func ParseHash(s string) (Hash, error) {
	var h Hash
	err := h.UnmarshalText([]byte(s))
	return h, err
}

// Entry is one line of the ledger. From moves Amount to To, and Fee to
// the hub; an account is "tenant:<namespace>", "provider:<name>" or
// "escrow:<namespace>/<lease>".
type Entry struct {
	Seq    uint64      `json:"seq"`
	Time   time.Time   `json:"time"`
	Kind   Kind        `json:"kind"`
	Lease  string      `json:"lease,omitempty"`
	From   string      `json:"from,omitempty"`
	To     string      `json:"to,omitempty"`
	Amount money.Micro `json:"amount"`
	Fee    money.Micro `json:"fee,omitempty"`
	// ReplicaSeconds metered by the hub, for usage entries.
	ReplicaSeconds int64 `json:"replicaSeconds,omitempty"`
	// ProviderReport and ProviderSig: the provider agent's own usage
	// report and its signature over it.
	ProviderReport HexBytes `json:"providerReport,omitempty"`
	ProviderSig    HexBytes `json:"providerSig,omitempty"`
	Disputed       bool     `json:"disputed,omitempty"`
	Prev           Hash     `json:"prev"`
	Sig            HexBytes `json:"sig"`
}

// HexBytes are exported in hex: unlike base64, every character of it
// matters, so no edit of an export can leave the bytes unchanged.
type HexBytes []byte

// MarshalText writes hex.
func (b HexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(b)), nil }

// UnmarshalText reads hex.
func (b *HexBytes) UnmarshalText(t []byte) error {
	v, err := hex.DecodeString(string(t))
	*b = v
	return err
}

// canonical is the encoding the hash and signature cover: every field in a
// fixed order, integers fixed-width big-endian, byte strings length-prefixed.
// withSig adds the signature (for the hash the next entry links to).
func (e *Entry) canonical(buf *bytes.Buffer, withSig bool) {
	var n [8]byte
	u := func(v uint64) { binary.BigEndian.PutUint64(n[:], v); buf.Write(n[:]) }
	b := func(p []byte) { u(uint64(len(p))); buf.Write(p) }
	buf.WriteString("flotilla-ledger/v1")
	u(e.Seq)
	u(uint64(e.Time.UTC().UnixNano()))
	b([]byte(e.Kind))
	b([]byte(e.Lease))
	b([]byte(e.From))
	b([]byte(e.To))
	u(uint64(e.Amount))
	u(uint64(e.Fee))
	u(uint64(e.ReplicaSeconds))
	b(e.ProviderReport)
	b(e.ProviderSig)
	if e.Disputed {
		buf.WriteByte(1)
	} else {
		buf.WriteByte(0)
	}
	buf.Write(e.Prev[:])
	if withSig {
		b(e.Sig)
	}
}

// Hash is what the next entry's Prev must be.
func (e *Entry) Hash() Hash {
	var buf bytes.Buffer
	e.canonical(&buf, true)
	return sha256.Sum256(buf.Bytes())
}

func (e *Entry) signedBytes() []byte {
	var buf bytes.Buffer
	e.canonical(&buf, false)
	return buf.Bytes()
}

// Chain appends signed entries. It is not safe for concurrent use.
type Chain struct {
	key  ed25519.PrivateKey
	next uint64
	head Hash
}

// NewChain continues a ledger whose last entry is last (nil for a new one).
func NewChain(key ed25519.PrivateKey, last *Entry) *Chain {
	c := &Chain{key: key}
	if last != nil {
		c.next, c.head = last.Seq+1, last.Hash()
	}
	return c
}

// Head is the hash of the last entry appended (zero for an empty ledger).
func (c *Chain) Head() Hash { return c.head }

// Append fills in e's sequence number, link and signature and advances the
// chain. Amounts must not be negative.
func (c *Chain) Append(e Entry) (Entry, error) {
	if e.Amount < 0 || e.Fee < 0 {
		return Entry{}, fmt.Errorf("entry %d: negative amount %s or fee %s", c.next, e.Amount, e.Fee)
	}
	e.Seq, e.Prev, e.Time = c.next, c.head, e.Time.UTC()
	e.Sig = ed25519.Sign(c.key, e.signedBytes())
	c.next++
	c.head = e.Hash()
	return e, nil
}

// Problem names the first entry that fails verification.
type Problem struct {
	// Index in the slice given to Verify, and the Seq found there.
	Index int
	Seq   uint64
	Why   string
}

func (p *Problem) Error() string {
	return fmt.Sprintf("entry %d (seq %d): %s", p.Index, p.Seq, p.Why)
}

// ErrEmpty is returned for a ledger with no entries but an expected head.
var ErrEmpty = errors.New("the ledger is empty")

// Verify checks entries against the hub's public key: sequence numbers
// from 0 without gaps, every link, the signatures, and, when head is not
// zero, that the chain ends at head. It returns a *Problem naming the first
// bad entry.
func Verify(entries []Entry, pub ed25519.PublicKey, head Hash) error {
	if len(entries) == 0 {
		if head != (Hash{}) {
			return ErrEmpty
		}
		return nil
	}
	var prev Hash
	for i := range entries {
		e := &entries[i]
		if e.Seq != uint64(i) {
			return &Problem{Index: i, Seq: e.Seq, Why: fmt.Sprintf("sequence number %d where %d belongs: entries missing, added or reordered", e.Seq, i)}
		}
		if e.Prev != prev {
			// The entry before was changed, or this link was.
			if i > 0 && !signed(&entries[i-1], pub) {
				return &Problem{Index: i - 1, Seq: entries[i-1].Seq, Why: "signature does not match the content"}
			}
			if !signed(e, pub) {
				return &Problem{Index: i, Seq: e.Seq, Why: "signature does not match the content"}
			}
			return &Problem{Index: i, Seq: e.Seq, Why: "does not link to the entry before it (prev " + e.Prev.String()[:12] + ", want " + prev.String()[:12] + ")"}
		}
		prev = e.Hash()
	}
	last := len(entries) - 1
	if !signed(&entries[last], pub) {
		// The links hold, so some entry was rewritten and every link after
		// it recomputed: find the first one whose signature fails.
		lo, hi := 0, last // the first bad one is in [lo, hi]
		for lo < hi {
			mid := (lo + hi) / 2
			if signed(&entries[mid], pub) {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		return &Problem{Index: lo, Seq: entries[lo].Seq, Why: "signature does not match the content"}
	}
	if head != (Hash{}) && prev != head {
		return &Problem{Index: last, Seq: entries[last].Seq,
			Why: fmt.Sprintf("the ledger ends at %s, but the hub published head %s: entries after this one are missing", prev.String()[:12], head.String()[:12])}
	}
	return nil
}

// VerifyEverySignature checks each entry's signature on its own, and names
// the first that fails. Verify already vouches for every entry through the
// links; this is the slower, belt-and-braces check an auditor may want.
func VerifyEverySignature(entries []Entry, pub ed25519.PublicKey) error {
	for i := range entries {
		if !signed(&entries[i], pub) {
			return &Problem{Index: i, Seq: entries[i].Seq, Why: "signature does not match the content"}
		}
	}
	return nil
}

func signed(e *Entry, pub ed25519.PublicKey) bool {
	return len(e.Sig) == ed25519.SignatureSize && ed25519.Verify(pub, e.signedBytes(), e.Sig)
}

// Balances replays the entries: every account's credits, with the hub's
// fees under "hub". Credits are conserved: the balances always sum to the
// deposits.
func Balances(entries []Entry) (map[string]money.Micro, error) {
	out := map[string]money.Micro{}
	for i := range entries {
		e := &entries[i]
		switch e.Kind {
		case Deposit:
			out[e.To] += e.Amount
		case LeaseOpened, LeaseClosed, Dispute:
			if e.Amount == 0 && e.Fee == 0 {
				continue
			}
			fallthrough
		default:
			if e.From == "" || e.To == "" {
				return nil, &Problem{Index: i, Seq: e.Seq, Why: "moves credits without both accounts"}
			}
			out[e.From] -= e.Amount + e.Fee
			out[e.To] += e.Amount
			if e.Fee > 0 {
				out["hub"] += e.Fee
			}
		}
	}
	return out, nil
}
