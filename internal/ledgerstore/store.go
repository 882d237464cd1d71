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
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
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
	// DefaultChunkEntries caps the entries of a chunk; typical entries take
	// about 400 bytes, so a chunk holds some 800 KB.
	DefaultChunkEntries = 2000
	// MaxChunkBytes keeps a chunk under the API server's 1 MiB object limit
	// whatever its entries: a payment carrying a provider's report with
	// the longest names takes about 1.3 KB.
	MaxChunkBytes = 800 << 10
	dataKey       = "entries.jsonl"
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
}

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
	s.last, s.count, s.index, s.total = nil, 0, 0, 0
	var list corev1.ConfigMapList
	if err := s.Reader.List(ctx, &list, client.InNamespace(s.Namespace), client.HasLabels{ChunkLabel}); err != nil {
		return nil, fmt.Errorf("listing ledger chunks: %w", err)
	}
	chunks := list.Items
	slices.SortFunc(chunks, func(a, b corev1.ConfigMap) int { return strings.Compare(a.Name, b.Name) })
	var all []ledger.Entry
	for i := range chunks {
		cm := &chunks[i]
		n, err := strconv.Atoi(strings.TrimPrefix(cm.Name, chunkPrefix))
		if err != nil || n != i+1 {
			return nil, fmt.Errorf("ledger chunk %s out of place: want %s", cm.Name, chunkName(i+1))
		}
		entries, err := ledger.ReadJSONL(strings.NewReader(cm.Data[dataKey]))
		if err != nil {
			return nil, fmt.Errorf("ledger chunk %s: %w", cm.Name, err)
		}
		for j := range entries {
			if entries[j].Seq != uint64(len(all)+j) {
				return nil, fmt.Errorf("ledger chunk %s: entry %d has sequence number %d, want %d", cm.Name, j, entries[j].Seq, len(all)+j)
			}
		}
		all = append(all, entries...)
		s.last, s.count, s.index = cm.DeepCopy(), len(entries), n
	}
	s.total = len(all)
	return all, nil
}

// Append stores entries after the ones loaded or appended before. On any
// error the caller must Load again: what was stored is unknown.
func (s *Store) Append(ctx context.Context, entries []ledger.Entry) error {
	if len(entries) == 0 {
		return nil
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
				s.last = nil
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
			s.last = nil
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
			Annotations: map[string]string{"flotilla.dev/first-seq": strconv.Itoa(s.total)}},
		Data: map[string]string{dataKey: ""},
	}
	if err := s.Client.Create(ctx, cm); err != nil {
		return fmt.Errorf("creating ledger chunk %s: %w", cm.Name, err)
	}
	s.last, s.count, s.index = cm, 0, s.index+1
	return nil
}
