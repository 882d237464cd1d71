package lease

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/metering"
)

// Held is a usage flush the hub put off: what a look at a Lease charged
// over the status written at resource version RV. Kept in the hub's meter
// checkpoint, it lets a restarted manager charge what was observed before
// it stopped, which the flush would have written.
type Held struct {
	RV             string
	ReplicaSeconds int64
	Until          time.Time
}

// HeldShards is how many ConfigMaps the meter checkpoint spreads over: at
// about 60 bytes a Lease, 16 shards of at most 1 MiB hold some 250,000.
const HeldShards = 16

// HeldShard is the checkpoint shard a Lease's entry goes in.
func HeldShard(uid types.UID) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(uid))
	return int(h.Sum32() % HeldShards)
}

// HeldOf is what a put-off flush of st holds, st computed over the status
// written at rv.
func HeldOf(rv string, st *flotillav1.LeaseStatus) (Held, bool) {
	if rv == "" || st.Usage.MeteredUntil == nil {
		return Held{}, false
	}
	return Held{RV: rv, ReplicaSeconds: st.Usage.ReplicaSeconds, Until: st.Usage.MeteredUntil.Time}, true
}

// String is how an entry is stored: "rv replicaSeconds unixSeconds".
func (h Held) String() string {
	return fmt.Sprintf("%s %d %d", h.RV, h.ReplicaSeconds, h.Until.Unix())
}

// ParseHeld reads a stored entry back; anything else is an error, and the
// entry is not charged.
func ParseHeld(s string) (Held, error) {
	f := strings.Fields(s)
	if len(f) != 3 || len(f[0]) > 64 {
		return Held{}, fmt.Errorf("want %q, got %d fields", "rv replicaSeconds unixSeconds", len(f))
	}
	rs, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || rs < 0 {
		return Held{}, fmt.Errorf("replica-seconds %q: not a count", f[1])
	}
	until, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || until <= 0 || until > 1<<40 {
		return Held{}, fmt.Errorf("until %q: not a time", f[2])
	}
	return Held{RV: f[0], ReplicaSeconds: rs, Until: time.Unix(until, 0).UTC()}, nil
}

// Restore charges st, the status of l as written, what h holds, when h was
// computed over this very status and goes further: only then did the hub
// watch the Lease, unchanged, up to h.Until. It returns the look h stands
// for, from which metering goes on.
func Restore(st *flotillav1.LeaseStatus, l *flotillav1.Lease, h Held) (time.Time, bool) {
	m := st.Usage.MeteredUntil
	if h.RV != l.ResourceVersion || m == nil || !h.Until.After(m.Time) || h.ReplicaSeconds < st.Usage.ReplicaSeconds {
		return time.Time{}, false
	}
	// A look charges at most the count written for each second since m;
	// an entry that claims more is not the hub's own.
	secs := int64(h.Until.Sub(m.Time) / time.Second)
	if secs > 1<<31 || h.ReplicaSeconds-st.Usage.ReplicaSeconds > int64(st.RunningReplicas)*secs {
		return time.Time{}, false
	}
	charge(st, l, func(u metering.Usage) (metering.Usage, bool) {
		u.ReplicaSeconds, u.Until = h.ReplicaSeconds, h.Until
		return u, true
	})
	return h.Until, true
}
