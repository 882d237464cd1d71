package ledgerstore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/ledger"
)

// What the hub publishes for witnesses, in LedgerNamespace (readable by
// every provider and tenant): the signed head, and the index of every
// entry's sequence number, hash and witness hash in chunks of
// IndexEntries lines with names that follow from the sequence numbers, so
// a witness reads only the chunks after the head it last saw. Entries'
// contents go only to the parties they concern: each tenant's and
// provider's entries are copied, as JSON lines, into chunks of their own
// namespace (PartyLabel).
const (
	// IndexEntries lines per index chunk: about 140 bytes each, so that a
	// witness catching up reads some 140 KB, not a whole ledger chunk.
	IndexEntries = 1000
	// PartyLabel marks a party's copy of its entries.
	PartyLabel = "flotilla.dev/ledger-party"
	// PartyEntries caps the entries of a party's chunk.
	PartyEntries = 1000
	// PartiesPerCopy bounds the parties one CopyToParties writes to, and
	// PartyWriters those it writes to at once.
	PartiesPerCopy = 64
	PartyWriters   = 16
	indexKey       = "index"
	anchorKey      = "anchor"
	indexPrefix    = "flotilla-ledger-index-"
	lastSeqAnno    = "flotilla.dev/last-seq"
)

// IndexChunkName holds the index lines of entries
// [(n-1)*IndexEntries, n*IndexEntries).
func IndexChunkName(n int) string { return fmt.Sprintf("%s%08d", indexPrefix, n) }

// IndexChunkOf is the number of the index chunk holding entry seq.
func IndexChunkOf(seq uint64) int { return int(seq/IndexEntries) + 1 }

// PartyNamespace is where a party's entries are copied: a tenant's own
// namespace, a provider's provider-<name>.
// Never the hub's own namespaces, whatever a tenant is called.
func PartyNamespace(party string) string {
	switch kind, rest, _ := strings.Cut(party, ":"); kind {
	case "tenant":
		if rest == flotillav1.SystemNamespace || rest == flotillav1.LedgerNamespace || strings.HasPrefix(rest, "kube-") {
			return ""
		}
		return rest
	case "provider":
		return flotillav1.ProviderNamespace(rest)
	}
	return ""
}

// Publisher keeps what the hub publishes in step with the stored ledger.
// It is derived from the entries: after a load it is rebuilt from them, so
// a ledger whose storage was cut or rewritten is published as it now is,
// for witnesses to see. Like Store, the bank's loop owns it.
type Publisher struct {
	Client client.Client
	Reader client.Reader
	Hub    string

	witness ledger.Hash // after the last entry published
	count   uint64
	// lines of the last index chunk, as published.
	lastChunk []ledger.IndexLine
	// parties: what each party's copy holds, and entries not yet copied.
	parties map[string]*party
	// lastCopied is the party CopyToParties copied last.
	lastCopied string
}

type party struct {
	chunk   int
	count   int
	lastSeq int64 // -1: nothing copied
	pending []ledger.Entry
}

// Load rebuilds the index from every stored entry and finds where each
// party's copy stops.
func (p *Publisher) Load(ctx context.Context, entries []ledger.Entry) error {
	if err := p.ensureNamespace(ctx); err != nil {
		return err
	}
	lines := ledger.Index(entries, ledger.Hash{})
	chunks := (len(lines) + IndexEntries - 1) / IndexEntries
	for n := 1; n <= chunks; n++ {
		part := lines[(n-1)*IndexEntries : min(n*IndexEntries, len(lines))]
		if err := p.putIndex(ctx, n, part); err != nil {
			return err
		}
	}
	// Chunks past the end (the ledger was cut) are emptied: nothing reads
	// past the head, and the manager deletes no ConfigMap.
	var list metav1.PartialObjectMetadataList
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMapList"))
	if err := p.Reader.List(ctx, &list, client.InNamespace(flotillav1.LedgerNamespace)); err != nil {
		return fmt.Errorf("listing index chunks: %w", err)
	}
	for _, m := range list.Items {
		n, err := strconv.Atoi(strings.TrimPrefix(m.Name, indexPrefix))
		if strings.HasPrefix(m.Name, indexPrefix) && err == nil && n > chunks {
			if err := p.putIndex(ctx, n, nil); err != nil {
				return err
			}
		}
	}
	p.count, p.witness, p.lastChunk = uint64(len(lines)), ledger.Hash{}, nil
	if len(lines) > 0 {
		p.witness = lines[len(lines)-1].Witness
		p.lastChunk = slices.Clone(lines[(chunks-1)*IndexEntries:])
	}
	return p.loadParties(ctx, entries)
}

func (p *Publisher) ensureNamespace(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.LedgerNamespace}}
	if err := p.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", ns.Name, err)
	}
	return nil
}

// putIndex writes index chunk n, unless it already says the same.
func (p *Publisher) putIndex(ctx context.Context, n int, lines []ledger.IndexLine) error {
	var buf bytes.Buffer
	if err := ledger.WriteIndex(&buf, lines); err != nil {
		return err
	}
	cm := &corev1.ConfigMap{}
	key := client.ObjectKey{Namespace: flotillav1.LedgerNamespace, Name: IndexChunkName(n)}
	switch err := p.Reader.Get(ctx, key, cm); {
	case apierrors.IsNotFound(err):
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace,
			Labels: map[string]string{ChunkLabel: "index"}}, Data: map[string]string{indexKey: buf.String()}}
		if err := p.Client.Create(ctx, cm); err != nil {
			return fmt.Errorf("creating index chunk %s: %w", key.Name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("reading index chunk %s: %w", key.Name, err)
	}
	if cm.Data[indexKey] == buf.String() {
		return nil
	}
	cm.Data = map[string]string{indexKey: buf.String()}
	if err := p.Client.Update(ctx, cm); err != nil {
		return fmt.Errorf("writing index chunk %s: %w", key.Name, err)
	}
	return nil
}

// Append publishes the index lines of entries just stored, and queues
// them for their parties' copies.
func (p *Publisher) Append(ctx context.Context, entries []ledger.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if entries[0].Seq != p.count {
		return fmt.Errorf("publishing entry %d after %d", entries[0].Seq, p.count)
	}
	lines := ledger.Index(entries, p.witness)
	for len(lines) > 0 {
		if len(p.lastChunk) == IndexEntries {
			p.lastChunk = nil
		}
		n := min(IndexEntries-len(p.lastChunk), len(lines))
		chunk := append(slices.Clone(p.lastChunk), lines[:n]...)
		if err := p.putIndex(ctx, IndexChunkOf(chunk[0].Seq), chunk); err != nil {
			return err
		}
		p.lastChunk, p.count, p.witness = chunk, chunk[len(chunk)-1].Seq+1, chunk[len(chunk)-1].Witness
		// Queued with their index, so that what Resume finds published is
		// queued too.
		p.queue(entries[:n])
		lines, entries = lines[n:], entries[n:]
	}
	return nil
}

// queue adds entries to their parties' pending copies.
func (p *Publisher) queue(entries []ledger.Entry) {
	for i := range entries {
		for _, who := range entries[i].Parties() {
			if p.parties == nil {
				p.parties = map[string]*party{}
			}
			pt := p.parties[who]
			if pt == nil {
				pt = &party{lastSeq: -1}
				p.parties[who] = pt
			}
			pt.pending = append(pt.pending, entries[i])
		}
	}
}

// Resume brings a loaded publisher up to the stored entries when they
// extend what it published, and reports whether they did; when they do
// not (the ledger was cut or rewritten), Load must rebuild it. After an
// append that timed out, Load's rebuild (every index chunk read, every
// party's copy listed) took minutes on the busy hub that timed it out.
func (p *Publisher) Resume(ctx context.Context, entries []ledger.Entry) (bool, error) {
	if p.parties == nil || p.count == 0 || uint64(len(entries)) < p.count {
		return false, nil
	}
	if lines := ledger.Index(entries[:p.count], ledger.Hash{}); lines[len(lines)-1].Witness != p.witness {
		return false, nil
	}
	return true, p.Append(ctx, entries[p.count:])
}

// Published is how many entries the index holds.
func (p *Publisher) Published() uint64 { return p.count }

// Head is the head of what was published so far, signed with key.
func (p *Publisher) Head(key ed25519.PrivateKey, hash ledger.Hash, now time.Time) ledger.Head {
	h := ledger.Head{Hub: p.Hub, Entries: p.count, Time: now}
	if p.count > 0 {
		h.Hash, h.Witness = hash, p.witness
	}
	return ledger.SignHead(key, h)
}

// PublishHead writes the signed head, after the index it ends.
func (p *Publisher) PublishHead(ctx context.Context, h ledger.Head) error {
	data := map[string]string{
		anchorKey: h.Anchor(),
		// For people reading it with kubectl; witnesses read the anchor.
		"entries": strconv.FormatUint(h.Entries, 10),
		"head":    h.Hash.String(),
	}
	cm := &corev1.ConfigMap{}
	key := client.ObjectKey{Namespace: flotillav1.LedgerNamespace, Name: HeadName}
	switch err := p.Reader.Get(ctx, key, cm); {
	case apierrors.IsNotFound(err):
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: HeadName, Namespace: key.Namespace}, Data: data}
		return p.Client.Create(ctx, cm)
	case err != nil:
		return err
	}
	cm.Data = data
	return p.Client.Update(ctx, cm)
}

// ReadHead reads the published head. Its signature is checked by the
// caller, against the key it pinned.
func ReadHead(ctx context.Context, r client.Reader) (ledger.Head, error) {
	cm := &corev1.ConfigMap{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: flotillav1.LedgerNamespace, Name: HeadName}, cm); err != nil {
		return ledger.Head{}, fmt.Errorf("reading the published ledger head: %w", err)
	}
	return ledger.ParseAnchor(cm.Data[anchorKey])
}

// ReadIndex reads the published index from entry from to entry to-1.
func ReadIndex(ctx context.Context, r client.Reader, from, to uint64) ([]ledger.IndexLine, error) {
	var out []ledger.IndexLine
	if to <= from {
		return nil, nil
	}
	for n := IndexChunkOf(from); n <= IndexChunkOf(to-1); n++ {
		cm := &corev1.ConfigMap{}
		if err := r.Get(ctx, client.ObjectKey{Namespace: flotillav1.LedgerNamespace, Name: IndexChunkName(n)}, cm); err != nil {
			return nil, fmt.Errorf("reading index chunk %d: %w", n, err)
		}
		lines, err := ledger.ReadIndex(strings.NewReader(cm.Data[indexKey]))
		if err != nil {
			return nil, fmt.Errorf("index chunk %d: %w", n, err)
		}
		if len(lines) > IndexEntries {
			return nil, fmt.Errorf("index chunk %d: %d lines, more than %d", n, len(lines), IndexEntries)
		}
		for _, l := range lines {
			if l.Seq >= from && l.Seq < to {
				out = append(out, l)
			}
		}
	}
	return out, nil
}

func partyChunkName(n int) string { return fmt.Sprintf("%s%08d", chunkPrefix, n) }

// loadParties finds, from the metadata of every party chunk, where each
// copy stops, and queues what it misses.
func (p *Publisher) loadParties(ctx context.Context, entries []ledger.Entry) error {
	var list metav1.PartialObjectMetadataList
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMapList"))
	if err := p.Reader.List(ctx, &list, client.HasLabels{PartyLabel}); err != nil {
		return fmt.Errorf("listing parties' ledger copies: %w", err)
	}
	p.parties = map[string]*party{}
	byNS := map[string]*party{}
	for _, m := range list.Items {
		n, err := strconv.Atoi(strings.TrimPrefix(m.Name, chunkPrefix))
		last, lerr := strconv.ParseInt(m.Annotations[lastSeqAnno], 10, 64)
		count, cerr := strconv.Atoi(m.Annotations["flotilla.dev/entries"])
		if err != nil || lerr != nil || cerr != nil {
			continue
		}
		if pt := byNS[m.Namespace]; pt == nil || n > pt.chunk {
			byNS[m.Namespace] = &party{chunk: n, count: count, lastSeq: last}
		}
	}
	for i := range entries {
		for _, who := range entries[i].Parties() {
			pt := p.parties[who]
			if pt == nil {
				pt = byNS[PartyNamespace(who)]
				if pt == nil {
					pt = &party{lastSeq: -1}
				}
				p.parties[who] = pt
			}
			if int64(entries[i].Seq) > pt.lastSeq {
				pt.pending = append(pt.pending, entries[i])
			}
		}
	}
	return nil
}

// CopyToParties writes pending entries into their parties' namespaces:
// at most PartiesPerCopy parties a call, taking turns, PartyWriters at a
// time. A party whose namespace is gone is dropped; other failures are
// kept for a later call and returned. One party after another, a thousand
// providers' copies held a settlement for minutes; the rest now wait for
// the next settlement.
func (p *Publisher) CopyToParties(ctx context.Context) error {
	var due []string
	for _, who := range slices.Sorted(maps.Keys(p.parties)) {
		if len(p.parties[who].pending) == 0 {
			continue
		}
		if PartyNamespace(who) == "" {
			delete(p.parties, who)
			continue
		}
		due = append(due, who)
	}
	if len(due) > PartiesPerCopy {
		// Taking turns: start after the last party copied.
		i, _ := slices.BinarySearch(due, p.lastCopied+"\x00")
		due = slices.Concat(due[i:], due[:i])[:PartiesPerCopy]
	}
	errs := make([]error, len(due))
	var g errgroup.Group
	g.SetLimit(PartyWriters)
	for i, who := range due {
		pt := p.parties[who]
		g.Go(func() error {
			errs[i] = p.copyTo(ctx, PartyNamespace(who), pt)
			return nil
		})
	}
	_ = g.Wait()
	for i, who := range due {
		p.lastCopied = who
		switch {
		case apierrors.IsNotFound(errs[i]):
			delete(p.parties, who)
			errs[i] = nil
		case errs[i] != nil:
			errs[i] = fmt.Errorf("copying ledger entries to %s: %w", PartyNamespace(who), errs[i])
		}
	}
	return errors.Join(errs...)
}

func (p *Publisher) copyTo(ctx context.Context, ns string, pt *party) error {
	for len(pt.pending) > 0 {
		if pt.chunk == 0 || pt.count >= PartyEntries {
			pt.chunk, pt.count = pt.chunk+1, 0
		}
		key := client.ObjectKey{Namespace: ns, Name: partyChunkName(pt.chunk)}
		cm := &corev1.ConfigMap{}
		err := p.Reader.Get(ctx, key, cm)
		create := apierrors.IsNotFound(err)
		if err != nil && !create {
			return err
		}
		if create {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: ns}}
		}
		data := cm.Data[dataKey]
		if pt.count == 0 || create {
			// A chunk someone else made under this name is the hub's.
			data, pt.count = "", 0
		}
		n := 0
		var buf bytes.Buffer
		for n < len(pt.pending) && pt.count+n < PartyEntries && len(data)+buf.Len() < MaxChunkBytes {
			if err := ledger.WriteJSONL(&buf, pt.pending[n:n+1]); err != nil {
				return err
			}
			n++
		}
		if n == 0 {
			pt.count = PartyEntries // full by size: the next one
			continue
		}
		cm.Labels = map[string]string{PartyLabel: "entries"}
		cm.Annotations = map[string]string{lastSeqAnno: strconv.FormatUint(pt.pending[n-1].Seq, 10),
			"flotilla.dev/entries": strconv.Itoa(pt.count + n)}
		cm.Data = map[string]string{dataKey: data + buf.String()}
		if create {
			err = p.Client.Create(ctx, cm)
		} else {
			err = p.Client.Update(ctx, cm)
		}
		if err != nil {
			return err
		}
		pt.count += n
		pt.lastSeq = int64(pt.pending[n-1].Seq)
		pt.pending = pt.pending[n:]
	}
	return nil
}

// ReadParty reads the entries copied into a party's namespace, in order.
func ReadParty(ctx context.Context, r client.Reader, ns string) ([]ledger.Entry, error) {
	var list corev1.ConfigMapList
	if err := r.List(ctx, &list, client.InNamespace(ns), client.HasLabels{PartyLabel}); err != nil {
		return nil, fmt.Errorf("listing ledger entries in %s: %w", ns, err)
	}
	slices.SortFunc(list.Items, func(a, b corev1.ConfigMap) int { return strings.Compare(a.Name, b.Name) })
	var out []ledger.Entry
	for i := range list.Items {
		e, err := ledger.ReadJSONL(strings.NewReader(list.Items[i].Data[dataKey]))
		if err != nil {
			return nil, fmt.Errorf("ledger entries %s/%s: %w", ns, list.Items[i].Name, err)
		}
		out = append(out, e...)
	}
	return out, nil
}

// Observe is a witness's look at the hub: it reads the published head,
// checks it against the pinned key (nil on a first look trusts the head's
// own), reads the index since seen and checks that the head extends seen
// through it. A *ledger.Divergence means the
// ledger was truncated, rewritten or forked; other errors that it could
// not be read.
func Observe(ctx context.Context, r client.Reader, pinned ed25519.PublicKey, seen ledger.Seen) (ledger.Head, error) {
	head, err := ReadHead(ctx, r)
	if err != nil {
		return head, err
	}
	if pinned == nil {
		pinned = head.PublicKey
	}
	if head.Entries < seen.Entries {
		return head, ledger.Extends(seen, &head, nil)
	}
	if head.Entries == seen.Entries && head.Hash == seen.Hash && head.Witness == seen.Witness {
		// Nothing new: only the signature needs checking.
		if err := head.Verify(pinned); err != nil {
			return head, &ledger.Divergence{Seq: head.Entries, AtMost: true, Why: err.Error()}
		}
		return head, nil
	}
	from := uint64(0)
	if seen.Entries > 0 {
		from = seen.Entries - 1
	}
	lines, err := ReadIndex(ctx, r, from, head.Entries)
	if err != nil {
		return head, err
	}
	// The index is checked before the key, so that a ledger rewritten and
	// re-signed with another key is named by the entry where it diverges.
	if err := ledger.Extends(seen, &head, lines); err != nil {
		return head, err
	}
	if err := head.Verify(pinned); err != nil {
		return head, &ledger.Divergence{Seq: head.Entries, AtMost: true, Why: err.Error()}
	}
	return head, nil
}
