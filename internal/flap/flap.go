// Package flap damps providers that keep coming and going. Each loss within
// a window of the previous one counts; a provider that returns is readmitted
// at once after its first loss and after an exponentially longer hold-down
// after each further one, so a flapping provider cannot drag Workloads back
// and forth faster than the hold-down allows.
package flap

import "time"

// Policy sets the back-off. The zero value is replaced by Default.
type Policy struct {
	// Window: a loss more than Window after the previous one starts the
	// count again.
	Window time.Duration
	// Base is the hold-down after the second loss in a row; it doubles
	// with each further loss.
	Base time.Duration
	// Max caps the hold-down.
	Max time.Duration
}

// Default is the hub's policy: losses within 10 minutes count together;
// hold-downs of 30s, 1m, 2m, ... up to 10m.
var Default = Policy{Window: 10 * time.Minute, Base: 30 * time.Second, Max: 10 * time.Minute}

func (p Policy) orDefault() Policy {
	if p.Window <= 0 || p.Base <= 0 || p.Max <= 0 {
		return Default
	}
	return p
}

// Lost returns the loss count after a loss at now, given the count so far
// and the time of the previous loss (nil for none).
func (p Policy) Lost(losses int32, previous *time.Time, now time.Time) int32 {
	p = p.orDefault()
	if previous == nil || losses <= 0 || now.Sub(*previous) > p.Window {
		return 1
	}
	if losses >= 1<<20 {
		return losses
	}
	return losses + 1
}

// HoldDown is how long a provider with this many recent losses waits,
// once reachable again, before it takes work.
func (p Policy) HoldDown(losses int32) time.Duration {
	p = p.orDefault()
	if losses <= 1 {
		return 0
	}
	d := p.Base
	for i := int32(2); i < losses; i++ {
		d *= 2
		if d >= p.Max {
			return p.Max
		}
	}
	return min(d, p.Max)
}
