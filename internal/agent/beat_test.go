package agent

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestBeatLoopRetriesAFailedRenewalSoon: a failed renewal is tried again
// after the retry wait, doubling, not a whole interval later; once one
// succeeds the loop waits the interval again.
func TestBeatLoopRetriesAFailedRenewalSoon(t *testing.T) {
	const interval, retry = time.Hour, 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var at []time.Time
	calls := make(chan int, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		beatLoop(ctx, func() time.Duration { return interval }, retry, func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			at = append(at, time.Now())
			calls <- len(at)
			if len(at) <= 3 {
				return errors.New("the hub is busy")
			}
			return nil
		})
	}()
	for want := 1; want <= 4; want++ {
		select {
		case <-calls:
		case <-time.After(30 * time.Second):
			t.Fatalf("renewal %d never came: a failed renewal waited for the interval", want)
		}
	}
	select {
	case n := <-calls:
		t.Fatalf("renewal %d came after a successful one, before the interval", n)
	case <-time.After(200 * time.Millisecond):
	}
	mu.Lock()
	// The waits double: 20 ms, 40 ms, 80 ms (at least).
	for i, want := range []time.Duration{retry, 2 * retry, 4 * retry} {
		if got := at[i+1].Sub(at[i]); got < want {
			t.Errorf("wait %d after a failure: %s, want at least %s", i+1, got, want)
		}
	}
	mu.Unlock()
	cancel()
	<-done
}
