// Package ledgerstore keeps the hub's ledger in the API server: entries as
// JSON lines in ConfigMaps of flotilla-system ("chunks", up to ChunkEntries
// each, so a million entries take a thousand objects, not a million), and
// what witnesses read (the signed head, the index of hashes, each party's
// copy of its entries) is published by a Publisher (publish.go).
//
// Appends are conditional writes: the last chunk is updated at the
// resourceVersion it was read at, and a new chunk is created, never
// overwritten. Two managers that both believe they lead cannot both append:
// the second gets a conflict, reloads and recomputes. The chunks are the
// truth; the head is derived from them and re-published after every append.
package ledgerstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-dev/flotilla/internal/ledger"
)

const (
	// ChunkLabel marks ledger chunks.
	ChunkLabel = "flotilla.dev/ledger"
	// HeadName is the ConfigMap the head is published in.
	HeadName = "flotilla-ledger-head"
	// KeySecret holds the hub's signing key.
	KeySecret = "flotilla-ledger-key"
	// DefaultChunkEntries caps the entries of a chunk. Every append
	// rewrites the last chunk whole, so it is kept small: typical entries
	// take about 400 bytes, so a chunk holds some 200 KB. (At 2,000 entries
	// appends timed out on a saturated API server.)
	DefaultChunkEntries = 500
	// MaxChunkBytes keeps a chunk under the API server's 1 MiB object limit
	// whatever its entries: a payment carrying a provider's report with
	// the longest names takes about 1.3 KB.
	MaxChunkBytes = 800 << 10
	dataKey       = "entries.jsonl"
	firstSeqKey   = "flotilla.dev/first-seq"
	loadPage      = 16
	chunkPrefix   = "flotilla-ledger-"
)

// Store reads and appends the ledger. It is not safe for concurrent use:
// the hub's single bank loop owns it.
type Store struct {
	Client    client.Client
	Reader    client.Reader // uncached: chunks are large and not watched
	Namespace string
	// ChunkEntries per chunk; 0 means DefaultChunkEntries.
	ChunkEntries int

	last  *corev1.ConfigMap // the chunk appends go to; nil before Load
	count int               // entries in last
	index int               // number of last
	total int
	// unsure is set when an Append failed: what it stored is unknown
	// until Recover or Load.
	unsure bool
}

// ErrRewritten says the stored chunks are not as this store left them:
// another writer appended, or someone cut or changed them. Load again.
var ErrRewritten = errors.New("the stored ledger changed under this hub")

func chunkName(i int) string { return fmt.Sprintf("%s%08d", chunkPrefix, i) }

func (s *Store) chunkEntries() int {
	if s.ChunkEntries > 0 {
		return s.ChunkEntries
	}
	return DefaultChunkEntries
}

// Load reads every chunk, in order. A chunk that cannot be read, or entries
// whose sequence numbers do not follow on, are an error: the ledger is
// never rewritten to get past them.
func (s *Store) Load(ctx context.Context) ([]ledger.Entry, error) {
	s.last, s.count, s.index, s.total, s.unsure = nil, 0, 0, 0, false
	// A page at a time: one response of every chunk (megabytes on a busy
	// hub) failed again and again with stream errors on a saturated API
	// server.
	var chunks []corev1.ConfigMap
	for cont := ""; ; {
		var list corev1.ConfigMapList
		if err := s.Reader.List(ctx, &list, client.InNamespace(s.Namespace), client.HasLabels{ChunkLabel},
			client.Limit(loadPage), client.Continue(cont)); err != nil {
			return nil, fmt.Errorf("listing ledger chunks: %w", err)
		}
		chunks = append(chunks, list.Items...)
		if cont = list.Continue; cont == "" {
			break
		}
	}
	slices.SortFunc(chunks, func(a, b corev1.ConfigMap) int { return strings.Compare(a.Name, b.Name) })
	var all []ledger.Entry
	for i := range chunks {
		cm := &chunks[i]
		n, err := strconv.Atoi(strings.TrimPrefix(cm.Name, chunkPrefix))
		if err != nil || n != i+1 {
			return nil, fmt.Errorf("ledger chunk %s out of place: want %s", cm.Name, chunkName(i+1))
		}
		entries, err := readChunk(cm.Name, cm.Data[dataKey], len(all))
		if err != nil {
			return nil, err
		}
		all = append(all, entries...)
		s.last, s.count, s.index = cm.DeepCopy(), len(entries), n
	}
	s.total = len(all)
	return all, nil
}

// Append stores entries after the ones loaded or appended before. On any
// error what was stored is unknown: the caller must Recover (or Load)
// before it appends again.
func (s *Store) Append(ctx context.Context, entries []ledger.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if s.unsure {
		return fmt.Errorf("ledger store: an append failed and was not recovered")
	}
	if s.last == nil && s.total > 0 {
		return fmt.Errorf("ledger store not loaded")
	}
	if len(entries) > 0 && entries[0].Seq != uint64(s.total) {
		return fmt.Errorf("appending sequence number %d after %d entries", entries[0].Seq, s.total)
	}
	for len(entries) > 0 {
		if s.last == nil || s.count >= s.chunkEntries() || len(s.last.Data[dataKey]) >= MaxChunkBytes {
			if err := s.newChunk(ctx); err != nil {
				s.unsure = true
				return err
			}
		}
		var buf bytes.Buffer
		size, n := len(s.last.Data[dataKey]), 0
		for n < len(entries) && s.count+n < s.chunkEntries() {
			var line bytes.Buffer
			if err := ledger.WriteJSONL(&line, entries[n:n+1]); err != nil {
				return err
			}
			if n > 0 && size+buf.Len()+line.Len() > MaxChunkBytes {
				break
			}
			buf.Write(line.Bytes())
			n++
		}
		cm := s.last.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[dataKey] += buf.String()
		if err := s.Client.Update(ctx, cm); err != nil {
			s.unsure = true
			return fmt.Errorf("appending to ledger chunk %s: %w", cm.Name, err)
		}
		s.last, s.count, s.total = cm, s.count+n, s.total+n
		entries = entries[n:]
	}
	return nil
}

func (s *Store) newChunk(ctx context.Context) error {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: chunkName(s.index + 1), Namespace: s.Namespace,
			Labels:      map[string]string{ChunkLabel: "chunk"},
			Annotations: map[string]string{firstSeqKey: strconv.Itoa(s.total)}},
		Data: map[string]string{dataKey: ""},
	}
	if err := s.Client.Create(ctx, cm); err != nil {
		return fmt.Errorf("creating ledger chunk %s: %w", cm.Name, err)
	}
	s.last, s.count, s.index = cm, 0, s.index+1
	return nil
}

// Unsure reports whether an Append failed and has not been recovered.
func (s *Store) Unsure() bool { return s.unsure }

// Recover finds out what a failed Append stored by reading back only the
// chunks it could have written: the one it appended to and any it
// created. It returns the entries stored after those this store knew of,
// and appends go on after them. A timed-out append usually did store;
// before, the hub reloaded the whole ledger to learn that, and on the
// saturated API server that timed it out the reload failed for minutes.
//
// An error wrapping ErrRewritten means the chunks are not as this store
// left them; any other error is a failed read, and Recover may be tried
// again.
func (s *Store) Recover(ctx context.Context) ([]ledger.Entry, error) {
	if !s.unsure {
		return nil, nil
	}
	var found []ledger.Entry
	follow := func(cm *corev1.ConfigMap, data string) error {
		entries, err := readChunk(cm.Name, data, s.total+len(found))
		if err != nil {
			return fmt.Errorf("%w: %v", ErrRewritten, err)
		}
		found = append(found, entries...)
		return nil
	}
	count, index, last := s.count, s.index, s.last
	if last != nil {
		cm := &corev1.ConfigMap{}
		switch err := s.Reader.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: last.Name}, cm); {
		case apierrors.IsNotFound(err):
			return nil, fmt.Errorf("%w: ledger chunk %s is gone", ErrRewritten, last.Name)
		case err != nil:
			return nil, fmt.Errorf("reading back ledger chunk %s: %w", last.Name, err)
		}
		before, data := last.Data[dataKey], cm.Data[dataKey]
		if !strings.HasPrefix(data, before) {
			return nil, fmt.Errorf("%w: ledger chunk %s no longer begins with the entries stored in it", ErrRewritten, cm.Name)
		}
		if err := follow(cm, data[len(before):]); err != nil {
			return nil, err
		}
		count, last = count+len(found), cm
	}
	for {
		cm := &corev1.ConfigMap{}
		err := s.Reader.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: chunkName(index + 1)}, cm)
		if apierrors.IsNotFound(err) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading back ledger chunk %s: %w", chunkName(index+1), err)
		}
		if first := cm.Annotations[firstSeqKey]; first != strconv.Itoa(s.total+len(found)) {
			return nil, fmt.Errorf("%w: ledger chunk %s begins at entry %s, want %d", ErrRewritten, cm.Name, first, s.total+len(found))
		}
		n := len(found)
		if err := follow(cm, cm.Data[dataKey]); err != nil {
			return nil, err
		}
		count, index, last = len(found)-n, index+1, cm
	}
	s.last, s.count, s.index, s.total, s.unsure = last, count, index, s.total+len(found), false
	return found, nil
}

// readChunk reads a chunk's entries, which must be numbered on from first.
func readChunk(name, data string, first int) ([]ledger.Entry, error) {
	entries, err := ledger.ReadJSONL(strings.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("ledger chunk %s: %w", name, err)
	}
	for j := range entries {
		if want := uint64(first + j); entries[j].Seq != want {
			return nil, fmt.Errorf("ledger chunk %s: entry %d has sequence number %d, want %d", name, j, entries[j].Seq, want)
		}
	}
	return entries, nil
}
