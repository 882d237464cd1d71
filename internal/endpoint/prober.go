package endpoint

import (
	"context"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/flotilla-dev/flotilla/internal/bound"
)

// Prober checks the targets of every Lease registered with it on its own
// schedule, bounded so that slow or hostile endpoints cannot slow the hub:
// each check has a timeout, at most Concurrency run at once, at most
// PerProvider per provider, and each provider gets at most ProviderRate
// checks a second. A target turns reachable on one success and
// unreachable after FailureThreshold failures in a row.
type Prober struct {
	Interval         time.Duration
	Timeout          time.Duration
	FailureThreshold int
	Concurrency      int
	PerProvider      int
	ProviderRate     rate.Limit
	// OnChange is called, outside the Prober's lock, with the key of a
	// Lease whose verdicts changed.
	OnChange func(key string)
	// Check is the check; Check above unless a test swaps it.
	Check func(ctx context.Context, t Target, timeout time.Duration) error
	// Counted, when set, is told the result of every check: "answered",
	// "failed", or "refused" (a target the hub will not dial).
	Counted func(result string)

	mu       sync.Mutex
	leases   map[string]*entry
	inflight map[string]int
	limiters map[string]*rate.Limiter
	wake     chan struct{}
}

// Defaults of a Prober.
const (
	DefaultInterval         = 3 * time.Second
	DefaultTimeout          = time.Second
	DefaultFailureThreshold = 2
)

type entry struct {
	provider string
	targets  []Target
	states   []state
	next     time.Time
	busy     bool
}

type state struct {
	known, reachable bool
	fails            int
	message          string
}

// Verdict is the Prober's word on one target.
type Verdict struct {
	Port, Address string
	// Known is false until the first success or FailureThreshold
	// failures: the caller keeps its last verdict until then.
	Known, Reachable bool
	Message          string
}

// NewProber returns a Prober with the defaults.
func NewProber() *Prober {
	return &Prober{Interval: DefaultInterval, Timeout: DefaultTimeout, FailureThreshold: DefaultFailureThreshold,
		Concurrency: 32, PerProvider: 4, ProviderRate: 20, Check: Check,
		leases: map[string]*entry{}, inflight: map[string]int{}, limiters: map[string]*rate.Limiter{}, wake: make(chan struct{}, 1)}
}

func sameTargets(a, b []Target) bool {
	return slices.EqualFunc(a, b, func(x, y Target) bool {
		return x.Port == y.Port && x.Address == y.Address && x.Dial == y.Dial && x.Host == y.Host &&
			x.HTTP == y.HTTP && x.Path == y.Path && x.Invalid == y.Invalid && slices.Equal(x.Ranges, y.Ranges)
	})
}

// Set registers (or updates) the targets of a Lease; changed targets are
// checked at once, their verdicts unknown until then.
func (p *Prober) Set(key, provider string, targets []Target) {
	p.mu.Lock()
	e := p.leases[key]
	if e != nil && e.provider == provider && sameTargets(e.targets, targets) {
		p.mu.Unlock()
		return
	}
	if e == nil {
		e = &entry{}
		p.leases[key] = e
	}
	e.provider, e.targets, e.states, e.next = provider, slices.Clone(targets), make([]state, len(targets)), time.Time{}
	for i, t := range targets {
		if t.Invalid != "" {
			e.states[i] = state{known: true, message: t.Invalid}
		}
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Forget stops checking a Lease.
func (p *Prober) Forget(key string) {
	p.mu.Lock()
	delete(p.leases, key)
	p.mu.Unlock()
}

// Verdicts returns the verdicts on a Lease's targets, in their order, and
// false when it is not registered.
func (p *Prober) Verdicts(key string) ([]Verdict, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.leases[key]
	if e == nil {
		return nil, false
	}
	out := make([]Verdict, len(e.targets))
	for i, t := range e.targets {
		s := e.states[i]
		out[i] = Verdict{Port: t.Port, Address: t.Address, Known: s.known, Reachable: s.reachable, Message: s.message}
	}
	return out, true
}

// Known returns the Prober's word on the endpoint of a Lease with this port
// and address, and false while it has none (not registered, not checked
// enough yet, or registered at another address).
func (p *Prober) Known(key, port, address string) (Verdict, bool) {
	vs, _ := p.Verdicts(key)
	for _, v := range vs {
		if v.Known && v.Port == port && v.Address == address {
			return v, true
		}
	}
	return Verdict{}, false
}

// Start checks what is due until ctx ends.
func (p *Prober) Start(ctx context.Context) error {
	sem := make(chan struct{}, max(p.Concurrency, 1))
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-p.wake:
		}
		for _, key := range p.due(time.Now()) {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			wg.Go(func() {
				defer func() { <-sem }()
				p.probe(ctx, key)
			})
		}
	}
}

// due marks busy and returns the Leases whose checks are due and whose
// providers have room for them.
func (p *Prober) due(now time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for key, e := range p.leases {
		if e.busy || now.Before(e.next) || len(e.targets) == 0 || p.inflight[e.provider] >= max(p.PerProvider, 1) {
			continue
		}
		lim := p.limiters[e.provider]
		if lim == nil {
			lim = rate.NewLimiter(p.ProviderRate, max(int(p.ProviderRate), 1))
			p.limiters[e.provider] = lim
		}
		if !lim.AllowN(now, len(e.targets)) {
			continue
		}
		e.busy = true
		p.inflight[e.provider]++
		out = append(out, key)
	}
	return out
}

func (p *Prober) probe(ctx context.Context, key string) {
	p.mu.Lock()
	e := p.leases[key]
	if e == nil {
		p.mu.Unlock()
		return
	}
	targets, provider := e.targets, e.provider
	p.mu.Unlock()
	errs := make([]error, len(targets))
	for i, t := range targets {
		result := "refused"
		if t.Invalid == "" {
			errs[i] = p.Check(ctx, t, p.Timeout)
			result = "answered"
			if errs[i] != nil {
				result = "failed"
			}
		}
		if p.Counted != nil {
			p.Counted(result)
		}
	}
	p.mu.Lock()
	p.inflight[provider]--
	if p.inflight[provider] <= 0 {
		delete(p.inflight, provider)
	}
	changed := false
	if cur := p.leases[key]; cur == e && ctx.Err() == nil {
		e.busy, e.next = false, time.Now().Add(p.Interval)
		for i, t := range targets {
			if t.Invalid != "" {
				continue
			}
			s := e.states[i]
			if errs[i] == nil {
				s = state{known: true, reachable: true}
			} else {
				s.fails++
				s.message = bound.Text(errs[i].Error(), 200)
				if s.fails >= max(p.FailureThreshold, 1) {
					s.known, s.reachable = true, false
				}
			}
			if s.known != e.states[i].known || s.reachable != e.states[i].reachable {
				changed = true
			}
			e.states[i] = s
		}
	} else if cur == e {
		e.busy = false
	}
	p.mu.Unlock()
	if changed && p.OnChange != nil {
		p.OnChange(key)
	}
}
