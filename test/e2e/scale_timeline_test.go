package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/assign"
)

// timeline stamps, as they arrive, the watch events a failover is made
// of: each Lease's phase and ready count, and each Assignment's creation
// (the hub writing it) and changes (its agent's reports), so that the
// bench can say how long each step of a replacement took. The Assignments
// are watched by their metadata only: they carry the rendered objects.
type timeline struct {
	hubID   string
	stopped map[string]bool

	mu      sync.Mutex
	leases  map[string]*leaseSteps // by Lease name
	byName  map[string]*leaseSteps // by Assignment name
	pending map[string][]time.Time // reports of Assignments not matched to a Lease yet
}

// leaseSteps is when the watches showed each step of one Lease.
type leaseSteps struct {
	stopped bool // on a stopped provider
	// Of a stopped provider's Lease.
	closed time.Time
	// Of a replacement: created, its Assignment written, its agent's
	// reports, its first status and its ready status.
	created, assigned time.Time
	reports           []time.Time
	firstStatus       time.Time
	ready             time.Time
}

// watchTimeline starts the watches, from the current state, until ctx
// ends; only what changes after the call is recorded.
func watchTimeline(ctx context.Context, t *testing.T, c client.WithWatch, hubID string, stopped map[string]bool) *timeline {
	t.Helper()
	tl := &timeline{hubID: hubID, stopped: stopped, leases: map[string]*leaseSteps{}, byName: map[string]*leaseSteps{},
		pending: map[string][]time.Time{}}
	var ls flotillav1.LeaseList
	if err := c.List(ctx, &ls, client.InNamespace("scale")); err != nil {
		t.Logf("timeline: listing Leases: %v", err)
		return tl
	}
	known := map[string]bool{}
	for _, l := range ls.Items {
		known[l.Name] = true
		if stopped[l.Spec.ProviderRef.Name] {
			tl.leases[l.Name] = &leaseSteps{stopped: true}
		}
	}
	as := &metav1.PartialObjectMetadataList{}
	as.SetGroupVersionKind(flotillav1.GroupVersion.WithKind("AssignmentList"))
	if err := c.List(ctx, as); err != nil {
		t.Logf("timeline: listing Assignments: %v", err)
		return tl
	}
	lw, err := c.Watch(ctx, &flotillav1.LeaseList{}, client.InNamespace("scale"), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: ls.ResourceVersion}})
	if err != nil {
		t.Logf("timeline: watching Leases: %v", err)
		return tl
	}
	aw, err := c.Watch(ctx, as, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: as.ResourceVersion}})
	if err != nil {
		lw.Stop()
		t.Logf("timeline: watching Assignments: %v", err)
		return tl
	}
	go func() {
		defer lw.Stop()
		for ev := range lw.ResultChan() {
			if l, ok := ev.Object.(*flotillav1.Lease); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				tl.lease(l, known[l.Name], time.Now())
			}
		}
	}()
	go func() {
		defer aw.Stop()
		for ev := range aw.ResultChan() {
			if m, ok := ev.Object.(*metav1.PartialObjectMetadata); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				tl.assignment(m.Name, ev.Type == watch.Added, time.Now())
			}
		}
	}()
	return tl
}

func (tl *timeline) lease(l *flotillav1.Lease, known bool, now time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	s, ok := tl.leases[l.Name]
	if !ok {
		if known || tl.stopped[l.Spec.ProviderRef.Name] {
			return
		}
		s = &leaseSteps{created: now}
		tl.leases[l.Name] = s
		name := assign.Name(tl.hubID, l.UID)
		tl.byName[name] = s
		// The Assignment can be seen before its Lease.
		for _, at := range tl.pending[name] {
			s.assignment(at, s.assigned.IsZero())
		}
		delete(tl.pending, name)
	}
	switch {
	case s.stopped:
		if s.closed.IsZero() && l.Status.Phase == flotillav1.LeaseClosed {
			s.closed = now
		}
	default:
		if s.firstStatus.IsZero() && l.Status.Phase != "" {
			s.firstStatus = now
		}
		if s.ready.IsZero() && l.Status.ReadyReplicas >= l.Spec.Replicas {
			s.ready = now
		}
	}
}

func (tl *timeline) assignment(name string, added bool, now time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	s, ok := tl.byName[name]
	if !ok {
		tl.pending[name] = append(tl.pending[name], now)
		return
	}
	s.assignment(now, added)
}

func (s *leaseSteps) assignment(at time.Time, added bool) {
	if added || s.assigned.IsZero() {
		s.assigned = at
		return
	}
	s.reports = append(s.reports, at)
}

// timelineSteps are the steps of steps, in order, with what each means.
var timelineSteps = []struct{ key, what string }{
	{"stopToClosed", "stop to a stopped provider's Lease closed"},
	{"stopToReplacementCreated", "stop to a replacement created"},
	{"createdToAssignment", "replacement created to its Assignment written"},
	{"assignmentToAnswer", "Assignment to the agent's answer"},
	{"answerToFirstStatus", "the agent's answer to the Lease's first status"},
	{"lastReportToReady", "the agent's last report to the Lease ready"},
	{"stopToReplacementReady", "stop to a replacement ready"},
}

// stepStats is one step of the failover over every Lease it applies to.
type stepStats struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50Seconds"`
	P90 float64 `json:"p90Seconds"`
	Max float64 `json:"maxSeconds"`
}

// steps summarizes the timeline: from the providers' stop (start) to each
// stopped Lease closed and each replacement created, then each step of a
// replacement from the one before it.
func (tl *timeline) steps(start time.Time) map[string]stepStats {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	d := map[string][]time.Duration{}
	add := func(step string, from, to time.Time) {
		if !from.IsZero() && !to.IsZero() {
			d[step] = append(d[step], to.Sub(from))
		}
	}
	for _, s := range tl.leases {
		if s.stopped {
			add("stopToClosed", start, s.closed)
			continue
		}
		add("stopToReplacementCreated", start, s.created)
		add("createdToAssignment", s.created, s.assigned)
		var answer, lastReport time.Time
		if len(s.reports) > 0 {
			answer = s.reports[0]
		}
		for _, r := range s.reports {
			if !s.ready.IsZero() && r.Before(s.ready) {
				lastReport = r
			}
		}
		add("assignmentToAnswer", s.assigned, answer)
		add("answerToFirstStatus", answer, s.firstStatus)
		add("lastReportToReady", lastReport, s.ready)
		add("stopToReplacementReady", start, s.ready)
	}
	out := map[string]stepStats{}
	for step, xs := range d {
		out[step] = stepStats{N: len(xs), P50: percentile(xs, 0.5), P90: percentile(xs, 0.9), Max: percentile(xs, 1)}
	}
	return out
}
