package ledger

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// The witness chain lets parties who may not read an entry's contents
// check that the ledger only grows: W(i) = SHA-256("flotilla-witness/v1",
// W(i-1), seq, hash of entry i), with W(-1) zero. The hub publishes every
// entry's sequence number, hash and witness hash (the index) and signs the
// last (the head). Someone who kept one head recomputes the chain from it
// through the hashes published since, so a truncated, rewritten or forked
// ledger shows without a single entry's contents. Entries' own Prev links
// need the contents; the witness chain needs only the index.

// NextWitness is the witness hash after an entry whose hash is h.
func NextWitness(prev Hash, seq uint64, h Hash) Hash {
	var buf [19 + 32 + 8 + 32]byte
	n := copy(buf[:], "flotilla-witness/v1")
	n += copy(buf[n:], prev[:])
	for i := 7; i >= 0; i-- {
		buf[n] = byte(seq >> (8 * i))
		n++
	}
	copy(buf[n:], h[:])
	return sha256.Sum256(buf[:])
}

// IndexLine is what the hub publishes about one entry.
type IndexLine struct {
	Seq     uint64
	Hash    Hash
	Witness Hash
}

// Index returns the index lines of entries, continuing after prev (the
// witness hash before entries[0]; zero at the start of the ledger).
func Index(entries []Entry, prev Hash) []IndexLine {
	out := make([]IndexLine, len(entries))
	for i := range entries {
		h := entries[i].Hash()
		prev = NextWitness(prev, entries[i].Seq, h)
		out[i] = IndexLine{Seq: entries[i].Seq, Hash: h, Witness: prev}
	}
	return out
}

// WriteIndex writes lines as "seq hash witness", one per line.
func WriteIndex(w io.Writer, lines []IndexLine) error {
	bw := bufio.NewWriter(w)
	for _, l := range lines {
		if _, err := fmt.Fprintf(bw, "%d %s %s\n", l.Seq, l.Hash, l.Witness); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// MaxIndexLineBytes bounds a line of a published index: a hub's storage is
// hostile input to a witness.
const MaxIndexLineBytes = 160

// ReadIndex reads what WriteIndex wrote; a malformed line is an error
// naming it.
func ReadIndex(r io.Reader) ([]IndexLine, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, MaxIndexLineBytes), MaxIndexLineBytes)
	var out []IndexLine
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			return nil, fmt.Errorf("index line %d: want seq, hash and witness", n)
		}
		seq, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("index line %d: sequence number: %w", n, err)
		}
		l := IndexLine{Seq: seq}
		if l.Hash, err = ParseHash(f[1]); err != nil {
			return nil, fmt.Errorf("index line %d: %w", n, err)
		}
		if l.Witness, err = ParseHash(f[2]); err != nil {
			return nil, fmt.Errorf("index line %d: %w", n, err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	return out, nil
}

// Head is the hub's signed statement of its ledger: how many entries, the
// last one's hash and witness hash. Its text form (Anchor) is stable, so it
// can be published anywhere and checked later with the hub's key alone.
type Head struct {
	Hub       string
	Entries   uint64
	Hash      Hash // of the last entry; zero for an empty ledger
	Witness   Hash // after the last entry; zero for an empty ledger
	Time      time.Time
	PublicKey ed25519.PublicKey
	Signature []byte
}

const anchorMagic = "flotilla-ledger-head/v1"

// signedText is every line of the anchor but the signature.
func (h *Head) signedText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\nhub: %s\nentries: %d\nhead: %s\nwitness: %s\ntime: %s\npublicKey: %s\n",
		anchorMagic, h.Hub, h.Entries, h.Hash, h.Witness, h.Time.UTC().Format(time.RFC3339),
		base64.StdEncoding.EncodeToString(h.PublicKey))
	return b.String()
}

// SignHead signs h with key, which becomes its public key.
func SignHead(key ed25519.PrivateKey, h Head) Head {
	h.Time = h.Time.UTC().Truncate(time.Second)
	h.PublicKey = key.Public().(ed25519.PublicKey)
	h.Signature = ed25519.Sign(key, []byte(h.signedText()))
	return h
}

// Verify checks the head's signature against pinned, the key the party
// trusts (recorded at join), not the one the head carries.
func (h *Head) Verify(pinned ed25519.PublicKey) error {
	if !bytes.Equal(h.PublicKey, pinned) {
		return fmt.Errorf("the head is signed with key %s, not the hub's pinned key %s",
			keyID(h.PublicKey), keyID(pinned))
	}
	if len(h.Signature) != ed25519.SignatureSize || !ed25519.Verify(pinned, []byte(h.signedText()), h.Signature) {
		return errors.New("the head's signature does not match its content")
	}
	return nil
}

// ParsePublicKey reads an ed25519 public key in base64, as the hub
// publishes it, issue-join prints it and parties pin it.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("not a base64 ed25519 public key")
	}
	return b, nil
}

func keyID(k ed25519.PublicKey) string {
	s := base64.StdEncoding.EncodeToString(k)
	if len(s) > 12 {
		s = s[:12] + "..."
	}
	return s
}

// Anchor is the head's stable text form: key: value lines, the signature
// last, over every line before it.
func (h *Head) Anchor() string {
	return h.signedText() + "signature: " + base64.StdEncoding.EncodeToString(h.Signature) + "\n"
}

// ParseAnchor reads an anchored head. It checks the form, not the
// signature: Verify does that against a pinned key.
func ParseAnchor(s string) (Head, error) {
	if len(s) > 4096 {
		return Head{}, errors.New("anchored head: longer than 4096 bytes")
	}
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(s, "\r\n", "\n"), "\n"), "\n")
	if len(lines) != 8 || lines[0] != anchorMagic {
		return Head{}, fmt.Errorf("anchored head: want %q and seven key: value lines", anchorMagic)
	}
	want := []string{"hub", "entries", "head", "witness", "time", "publicKey", "signature"}
	v := map[string]string{}
	for i, l := range lines[1:] {
		k, val, ok := strings.Cut(l, ": ")
		if !ok || k != want[i] {
			return Head{}, fmt.Errorf("anchored head: line %d: want %q", i+2, want[i]+": ...")
		}
		v[k] = val
	}
	var h Head
	var err error
	h.Hub = v["hub"]
	if h.Entries, err = strconv.ParseUint(v["entries"], 10, 64); err != nil {
		return Head{}, fmt.Errorf("anchored head: entries: %w", err)
	}
	if h.Hash, err = ParseHash(v["head"]); err != nil {
		return Head{}, fmt.Errorf("anchored head: head: %w", err)
	}
	if h.Witness, err = ParseHash(v["witness"]); err != nil {
		return Head{}, fmt.Errorf("anchored head: witness: %w", err)
	}
	if h.Time, err = time.Parse(time.RFC3339, v["time"]); err != nil {
		return Head{}, fmt.Errorf("anchored head: time: %w", err)
	}
	if h.PublicKey, err = ParsePublicKey(v["publicKey"]); err != nil {
		return Head{}, fmt.Errorf("anchored head: publicKey: %w", err)
	}
	if h.Signature, err = base64.StdEncoding.DecodeString(v["signature"]); err != nil {
		return Head{}, errors.New("anchored head: signature is not base64")
	}
	if h.Entries == 0 && (h.Hash != Hash{} || h.Witness != Hash{}) {
		return Head{}, errors.New("anchored head: an empty ledger has no head or witness hash")
	}
	return h, nil
}

// Seen is what a witness keeps of the last head it accepted.
type Seen struct {
	Entries uint64
	Hash    Hash
	Witness Hash
}

// Divergence says where a published ledger stops agreeing with what a
// witness saw.
type Divergence struct {
	// Seq of the first entry known to differ, or of the last entry seen
	// when it is only known to lie at or before it.
	Seq    uint64
	AtMost bool
	Why    string
}

func (d *Divergence) Error() string {
	if d.AtMost {
		return fmt.Sprintf("the ledger diverges at or before entry %d: %s", d.Seq, d.Why)
	}
	return fmt.Sprintf("the ledger diverges at entry %d: %s", d.Seq, d.Why)
}

// Extends checks that head (already verified against the pinned key)
// extends seen through lines, the index from entry seen.Entries-1 (the last
// one seen; from 0 when nothing was seen) to the head's last entry. It
// returns a *Divergence when the ledger was truncated, rewritten or
// forked, and another error when the index is merely incomplete.
func Extends(seen Seen, head *Head, lines []IndexLine) error {
	if head.Entries < seen.Entries {
		return &Divergence{Seq: head.Entries, AtMost: seen.Entries > head.Entries+1,
			Why: fmt.Sprintf("the hub now publishes %d entries after %d were seen: the ledger was truncated", head.Entries, seen.Entries)}
	}
	from := uint64(0)
	w := Hash{}
	if seen.Entries > 0 {
		from = seen.Entries - 1
	}
	if head.Entries == 0 {
		if head.Hash != (Hash{}) || head.Witness != (Hash{}) {
			return &Divergence{Seq: 0, Why: "an empty ledger with a head hash"}
		}
		return nil
	}
	if want := head.Entries - from; uint64(len(lines)) != want {
		return fmt.Errorf("index from entry %d: got %d lines, want %d", from, len(lines), want)
	}
	for i, l := range lines {
		seq := from + uint64(i)
		if l.Seq != seq {
			return fmt.Errorf("index line for entry %d has sequence number %d", seq, l.Seq)
		}
		if i == 0 && seen.Entries > 0 {
			if l.Hash != seen.Hash || l.Witness != seen.Witness {
				return &Divergence{Seq: seq, AtMost: true,
					Why: fmt.Sprintf("entry %d was seen with witness hash %s, and is now published with %s: an entry up to it was rewritten",
						seq, seen.Witness.String()[:12], l.Witness.String()[:12])}
			}
			w = l.Witness
			continue
		}
		if next := NextWitness(w, seq, l.Hash); next != l.Witness {
			return &Divergence{Seq: seq, Why: "its published witness hash does not follow from the one before and its hash"}
		}
		w = l.Witness
	}
	last := lines[len(lines)-1]
	if last.Hash != head.Hash || last.Witness != head.Witness {
		return &Divergence{Seq: last.Seq, Why: "the signed head does not match the published index"}
	}
	return nil
}

// FirstDifference compares an index a witness kept with one published now
// and returns the sequence number of the first entry whose hash differs,
// or false when the shorter is a prefix of the longer.
func FirstDifference(kept, now []IndexLine) (uint64, bool) {
	for i := range min(len(kept), len(now)) {
		if kept[i].Hash != now[i].Hash || kept[i].Witness != now[i].Witness {
			return kept[i].Seq, true
		}
	}
	return 0, false
}

// Parties are the tenants ("tenant:<namespace>") and providers
// ("provider:<name>") an entry concerns: whose account it moves, whose
// escrow, whose Lease it is about. Only they may read its contents.
func (e *Entry) Parties() []string {
	var out []string
	add := func(p string) {
		for _, q := range out {
			if q == p {
				return
			}
		}
		out = append(out, p)
	}
	for _, acct := range []string{e.From, e.To} {
		switch kind, rest, _ := strings.Cut(acct, ":"); kind {
		case "tenant", "provider":
			if rest != "" {
				add(acct)
			}
		case "escrow":
			if ns, _, ok := strings.Cut(rest, "/"); ok && ns != "" {
				add("tenant:" + ns)
			}
		}
	}
	if ns, _, ok := strings.Cut(e.Lease, "/"); ok && ns != "" {
		add("tenant:" + ns)
	}
	return out
}
