package agent

import (
	"fmt"
	"sync"
	"time"
)

// RoundStale is how long a Pull-mode agent keeps its heartbeat without a
// round that read its Assignments: one that cannot read them for longer is
// not serving the hub, and lets it fail the work over.
const RoundStale = 2 * time.Minute

// fenceState decides when a Pull-mode agent may renew its heartbeat. A
// round that fails (a slow or busy hub) does not stop the heartbeat: the
// hub moves work only from a provider it declared Lost, and it tells the
// agent so first, by marking the heartbeat Lease (flotilla.dev/lost) in a
// write that fails if the agent beat meanwhile. From the moment the agent
// sees the mark, only a round that began after it, and fenced, lets it
// beat again.
type fenceState struct {
	mu sync.Mutex
	// marker is the hub's mark the heartbeat last found ("" none).
	marker string
	// after is the mark in place when the last round that fenced began;
	// at is when that round ended; done once one has.
	after string
	at    time.Time
	done  bool
}

// begin starts a round: the mark it fences after, and whether that mark
// (or the first round) is still to be fenced after, for which the round
// must read the hub itself.
func (f *fenceState) begin() (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.marker, !f.done || f.marker != f.after
}

// fenced ends a round that removed what the hub, as read at read, no
// longer wants.
func (f *fenceState) fenced(round string, read time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.after, f.done = round, true
	if read.After(f.at) {
		f.at = read
	}
}

// observe notes the mark found on the heartbeat Lease.
func (f *fenceState) observe(marker string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.marker = marker
}

// cleared notes that a renewal removed the mark.
func (f *fenceState) cleared(marker string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.after == marker {
		f.after = ""
	}
	f.marker = ""
}

// blocked says why the heartbeat may not be renewed now; "" when it may.
func (f *fenceState) blocked(now time.Time) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case !f.done:
		return "pull mode: the heartbeat waits for a first round of reading the hub's assignments to fence stale work"
	case f.marker != f.after:
		return fmt.Sprintf("pull mode: the hub declared this provider Lost (at %s); the heartbeat waits for a round that fences what it may have moved", f.marker)
	case now.Sub(f.at) > RoundStale:
		return fmt.Sprintf("pull mode: no round has read the hub's assignments since %s; the heartbeat waits for one", f.at.UTC().Format(time.RFC3339))
	}
	return ""
}
