package controllers

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/lease"
)

// LabelMeterCheckpoint marks the ConfigMaps of the meter checkpoint; the
// manager's cache leaves them out (it reads them once, at start).
const LabelMeterCheckpoint = "flotilla.dev/meter-checkpoint"

// meterCheckpointInterval is how often the put-off flushes are saved: what
// a manager restart may forgo, as with a flush on time (lease.MeterFlush).
const meterCheckpointInterval = 30 * time.Second

// MeterCheckpoint keeps the usage flushes the Lease controller put off in a
// few ConfigMaps of the hub's namespace, and gives them back after a
// restart. With thousands of Leases a flush per Lease every few minutes
// took the Lease workers and the API server from a failover; a handful of
// writes every interval bound what a restart forgoes instead.
type MeterCheckpoint struct {
	Client    client.Client
	Reader    client.Reader
	Namespace string
	Log       logr.Logger
	// Interval between two saves; meterCheckpointInterval when zero.
	Interval time.Duration

	mu sync.Mutex
	// held is every entry to save, by Lease; restored the entries read at
	// start that no look has taken yet.
	held, restored map[types.UID]lease.Held
	// saved is each shard's data as the API server holds it, nil when not
	// known.
	saved  [lease.HeldShards]map[string]string
	loaded chan struct{}
	once   sync.Once
}

func (m *MeterCheckpoint) init() {
	m.once.Do(func() {
		m.held, m.restored = map[types.UID]lease.Held{}, map[types.UID]lease.Held{}
		m.loaded = make(chan struct{})
	})
}

// Hold keeps a Lease's put-off flush until it is written or the next one.
func (m *MeterCheckpoint) Hold(uid types.UID, h lease.Held) {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held[uid] = h
}

// Drop forgets a Lease's held flush: its status was written, or it ended.
func (m *MeterCheckpoint) Drop(uid types.UID) {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.held, uid)
	delete(m.restored, uid)
}

// Take returns, once, the entry a Lease had when the checkpoint was read,
// after waiting for that read.
func (m *MeterCheckpoint) Take(ctx context.Context, uid types.UID) (lease.Held, bool, error) {
	m.init()
	select {
	case <-m.loaded:
	case <-ctx.Done():
		return lease.Held{}, false, ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.restored[uid]
	delete(m.restored, uid)
	if ok {
		// Charged now or never: a look that puts its flush off holds again.
		delete(m.held, uid)
	}
	return h, ok, nil
}

// NeedLeaderElection: only the leader meters, and only it may save.
func (m *MeterCheckpoint) NeedLeaderElection() bool { return true }

// Start reads the checkpoint, then saves it every interval and once more
// on the way out.
func (m *MeterCheckpoint) Start(ctx context.Context) error {
	m.init()
	if err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		err := m.load(ctx)
		if err != nil {
			m.Log.Error(err, "reading the meter checkpoint")
		}
		return err == nil, nil
	}); err != nil {
		return nil // stopped before it could read: nothing held to save
	}
	close(m.loaded)
	interval := m.Interval
	if interval <= 0 {
		interval = meterCheckpointInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			last, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			m.save(last)
			return nil
		case <-t.C:
			m.save(ctx)
		}
	}
}

func (m *MeterCheckpoint) load(ctx context.Context) error {
	var list corev1.ConfigMapList
	if err := m.Reader.List(ctx, &list, client.InNamespace(m.Namespace), client.HasLabels{LabelMeterCheckpoint}); err != nil {
		return err
	}
	bad := 0
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, cm := range list.Items {
		for uid, v := range cm.Data {
			h, err := lease.ParseHeld(v)
			if err != nil {
				bad++
				continue
			}
			m.restored[types.UID(uid)] = h
			m.held[types.UID(uid)] = h
		}
	}
	if bad > 0 {
		m.Log.Info("meter checkpoint entries not charged: unreadable", "entries", bad)
	}
	m.Log.Info("meter checkpoint read", "leases", len(m.restored))
	return nil
}

// save writes the shards that changed since the last save, after leaving
// out the Leases that are gone.
func (m *MeterCheckpoint) save(ctx context.Context) {
	var live flotillav1.LeaseList
	listed := m.Client.List(ctx, &live, client.UnsafeDisableDeepCopy) == nil
	alive := make(map[types.UID]bool, len(live.Items))
	for i := range live.Items {
		alive[live.Items[i].UID] = true
	}
	var shards [lease.HeldShards]map[string]string
	m.mu.Lock()
	for uid, h := range m.held {
		if listed && !alive[uid] {
			delete(m.held, uid)
			delete(m.restored, uid)
			continue
		}
		i := lease.HeldShard(uid)
		if shards[i] == nil {
			shards[i] = map[string]string{}
		}
		shards[i][string(uid)] = h.String()
	}
	m.mu.Unlock()
	for i, data := range shards {
		if data == nil {
			data = map[string]string{}
		}
		if m.saved[i] != nil && maps.Equal(m.saved[i], data) {
			continue
		}
		if err := m.write(ctx, i, data); err != nil {
			m.saved[i] = nil
			m.Log.Error(err, "saving the meter checkpoint", "shard", i)
			continue
		}
		m.saved[i] = data
	}
}

func (m *MeterCheckpoint) write(ctx context.Context, shard int, data map[string]string) error {
	cm := &corev1.ConfigMap{}
	key := client.ObjectKey{Namespace: m.Namespace, Name: fmt.Sprintf("flotilla-meter-%02d", shard)}
	if err := m.Reader.Get(ctx, key, cm); apierrors.IsNotFound(err) {
		if len(data) == 0 {
			return nil
		}
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace,
			Labels: map[string]string{LabelMeterCheckpoint: "true"}}, Data: data}
		return m.Client.Create(ctx, cm)
	} else if err != nil {
		return err
	}
	cm.Data = data
	return m.Client.Update(ctx, cm)
}
