package endpoint

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Lookup returns the reachable targets behind a Workload's stable
// address, or false when it has none (no such Workload, or it did not ask
// for one).
type Lookup func(namespace, name string) ([]Target, bool)

// Entry is the hub's stable entry point: /<namespace>/<workload>/<path>
// is forwarded to <path> on one of the Workload's endpoints that answer
// the hub's checks, the next one tried when a connection cannot be made,
// so that a tenant's URL survives a failover. It dials nothing outside the
// endpoint ranges of the target's provider.
type Entry struct {
	Lookup Lookup
	// DialTimeout bounds how long a dead endpoint holds a request before
	// the next is tried.
	DialTimeout time.Duration
	// SuspectFor is how long an endpoint that could not be dialled is
	// tried last, before the hub's checks have their say.
	SuspectFor time.Duration
	next       atomic.Uint64
	proxy      *httputil.ReverseProxy

	mu      sync.Mutex
	suspect map[string]time.Time // dial address -> until when
}

type candidatesKey struct{}

// NewEntry returns an Entry over lookup.
func NewEntry(lookup Lookup) *Entry {
	e := &Entry{Lookup: lookup, DialTimeout: time.Second, SuspectFor: 5 * time.Second, suspect: map[string]time.Time{}}
	tr := &http.Transport{
		DialContext:           e.dial,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		Proxy:                 nil,
	}
	e.proxy = &httputil.ReverseProxy{
		Rewrite:   func(*httputil.ProxyRequest) {}, // the URL is set in ServeHTTP
		Transport: &failover{base: tr, failed: e.markSuspect},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "no endpoint of this workload answered: "+err.Error(), http.StatusBadGateway)
		},
	}
	return e
}

// dial connects to the address only when it lies in the ranges of the
// target it belongs to (passed along in the context).
func (e *Entry) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	t, _ := ctx.Value(targetKey{}).(*Target)
	if t == nil {
		return nil, errors.New("no target")
	}
	d := &net.Dialer{Timeout: e.DialTimeout, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !Allowed(ap.Addr(), t.Ranges) {
			return fmt.Errorf("%s is outside the provider's endpoint ranges", address)
		}
		return nil
	}}
	return d.DialContext(ctx, network, addr)
}

type targetKey struct{}

// ServeHTTP forwards one request.
func (e *Entry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		http.Error(w, "the stable address of a Workload is /<namespace>/<workload>/", http.StatusNotFound)
		return
	}
	targets, ok := e.Lookup(parts[0], parts[1])
	if !ok {
		http.Error(w, "no Workload "+parts[0]+"/"+parts[1]+" with a stable address", http.StatusNotFound)
		return
	}
	if len(targets) == 0 {
		http.Error(w, "no endpoint of "+parts[0]+"/"+parts[1]+" answers the hub's checks now", http.StatusServiceUnavailable)
		return
	}
	// Spread requests: each starts at the next endpoint; one that lately
	// could not be dialled goes last.
	start := int(e.next.Add(1) % uint64(len(targets)))
	order := append(targets[start:len(targets):len(targets)], targets[:start]...)
	now := time.Now()
	slices.SortStableFunc(order, func(a, b Target) int { return cmp.Compare(e.suspected(a.Dial, now), e.suspected(b.Dial, now)) })
	out := r.Clone(context.WithValue(r.Context(), candidatesKey{}, order))
	out.URL.Scheme, out.URL.Host = "http", order[0].Dial
	out.URL.Path = "/"
	if len(parts) == 3 {
		out.URL.Path += parts[2]
	}
	out.URL.RawPath = ""
	out.Host = order[0].Host
	e.proxy.ServeHTTP(w, out)
}

func (e *Entry) markSuspect(dial string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	for k, until := range e.suspect {
		if now.After(until) {
			delete(e.suspect, k)
		}
	}
	e.suspect[dial] = now.Add(e.SuspectFor)
}

// suspected is 1 for an endpoint lately not dialled, else 0.
func (e *Entry) suspected(dial string, now time.Time) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if until, ok := e.suspect[dial]; ok && now.Before(until) {
		return 1
	}
	return 0
}

// failover sends a request to its first candidate and, when no
// connection could be made (nothing was sent), to the next; a request
// with a body that cannot be replayed gets one try.
type failover struct {
	base   http.RoundTripper
	failed func(dial string)
}

func (f *failover) RoundTrip(r *http.Request) (*http.Response, error) {
	order, _ := r.Context().Value(candidatesKey{}).([]Target)
	if len(order) == 0 {
		return nil, errors.New("no endpoint")
	}
	var errs []error
	for i := range order {
		t := &order[i]
		// A pooled connection skips the dial's check: check here too.
		if ap, err := netip.ParseAddrPort(t.Dial); err == nil && !Allowed(ap.Addr(), t.Ranges) {
			errs = append(errs, fmt.Errorf("%s is outside the provider's endpoint ranges", t.Dial))
			continue
		}
		req := r.Clone(context.WithValue(r.Context(), targetKey{}, t))
		req.URL.Host, req.Host = t.Dial, t.Host
		if i > 0 && r.Body != nil && r.Body != http.NoBody {
			if r.GetBody == nil {
				break
			}
			body, err := r.GetBody()
			if err != nil {
				break
			}
			req.Body = body
		}
		resp, err := f.base.RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", t.Address, err))
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			break // something may have been sent: not retried
		}
		f.failed(t.Dial)
	}
	return nil, errors.Join(errs...)
}
