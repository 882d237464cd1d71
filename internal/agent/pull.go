package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/assign"
	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/capacity"
	"github.com/flotilla-dev/flotilla/internal/remote"
)

// FieldManager owns what the agent applies for the hub: the same as the
// hub's own in Push mode, so that a provider switching modes leaves no
// second owner behind.
const FieldManager = "flotilla"

// Reasons the agent gives when it refuses an Assignment.
const (
	ReasonInsufficientCapacity = "InsufficientCapacity"
	ReasonInvalidAssignment    = "InvalidAssignment"
)

// reapplyInterval bounds how long drift on this cluster (an object of a
// Lease edited or deleted by hand) may last.
const reapplyInterval = 2 * time.Minute

// How often an Assignment is read back: one whose replicas are all ready
// every 5 s, one converging every second. A round comes with every new
// Assignment, and reading back all the others each time made new work
// wait behind the reads.
const (
	settledReadInterval    = 5 * time.Second
	convergingReadInterval = time.Second
)

// convergeWindow is how long after applying an Assignment whose replicas
// are not all ready the pull loop comes back every convergingReadInterval
// instead of every pullInterval: nothing on the hub wakes it when pods
// start, and waiting for the next pull held every new replica's "ready"
// for half a pull interval on average. One that never gets ready is read
// at the pull interval after that.
const convergeWindow = time.Minute

// resyncInterval is how often a round lists the Assignments on the hub
// while the watch sends every change: what a silently stalled watch can
// hide lasts at most this long. Listing every round (every 2 s by
// default) was most of what a thousand idle agents asked of the hub.
const resyncInterval = time.Minute

// SyncAssignments is one round of the agent's half of pull mode: read this
// provider's Assignments on the hub; delete every namespace of the hub on
// this cluster that no Assignment wants (self-fencing, before anything is
// reported); accept each new Assignment only if it fits what the cluster
// has free now, or refuse it with the reason; apply what was accepted
// through the federation identity, whose admission policy bounds it; and
// report on each. A hub that cannot be read leaves everything running as
// it is (workloads survive a hub outage) and the heartbeat unrenewed until
// the next round succeeds.
func (a *Agent) SyncAssignments(ctx context.Context) error {
	if a.Federation == nil {
		return errors.New("pull mode needs the federation identity's client")
	}
	cfg := a.config()
	round, pending := a.fence.begin()
	var list flotillav1.AssignmentList
	var err error
	var read time.Time
	if list.Items, read, err = a.assignments(ctx, flotillav1.ProviderNamespace(cfg.Provider.Name), pending); err != nil {
		return fmt.Errorf("listing assignments on the hub: %w", err)
	}
	// First come, first admitted.
	slices.SortFunc(list.Items, func(x, y flotillav1.Assignment) int {
		return cmp.Or(x.CreationTimestamp.Compare(y.CreationTimestamp.Time), cmp.Compare(x.Name, y.Name))
	})
	wanted := map[string]int64{}
	for i := range list.Items {
		as := &list.Items[i]
		if as.DeletionTimestamp == nil && as.Status.State != flotillav1.AssignmentRefused {
			wanted[as.Spec.LeaseRef.UID] = as.Spec.Epoch
		}
	}
	// Free capacity is measured only when something waits for an answer
	// (listing every pod of the cluster each round would cost for
	// nothing), beside fencing: both only read the cluster until fencing
	// deletes, and nothing is applied before both are done.
	var free corev1.ResourceList
	var ferr error
	var wg sync.WaitGroup
	var fallback map[string][]*flotillav1.AssignmentSpec
	if slices.ContainsFunc(list.Items, func(as flotillav1.Assignment) bool { return as.Status.State == "" && as.DeletionTimestamp == nil }) {
		wg.Go(func() {
			free, ferr = a.freeCapacity(ctx, cfg)
			if a.Shared != nil && ferr == nil {
				fallback, ferr = a.quotaHeld(ctx, a.Shared.unread())
			}
		})
	}
	if err := a.fenceStale(ctx, cfg, wanted); err != nil {
		wg.Wait()
		return err
	}
	wg.Wait()
	a.fence.fenced(round, read)

	// Admission is decided one Assignment after another, oldest first,
	// counting what every other hub this cluster serves holds; applying
	// and reading back run side by side.
	var accepted []*flotillav1.AssignmentSpec
	for i := range list.Items {
		if list.Items[i].Status.State == flotillav1.AssignmentAccepted {
			accepted = append(accepted, &list.Items[i].Spec)
		}
	}
	type job struct {
		as   *flotillav1.Assignment
		st   *flotillav1.AssignmentStatus
		objs []*unstructured.Unstructured
	}
	var jobs []job
	decide := func(others []*flotillav1.AssignmentSpec) []*flotillav1.AssignmentSpec {
		for i := range list.Items {
			as := &list.Items[i]
			if as.DeletionTimestamp != nil || as.Status.State == flotillav1.AssignmentRefused {
				continue
			}
			st, objs := a.admit(as, cfg, free, ferr, others, &accepted)
			jobs = append(jobs, job{as, st, objs})
		}
		return accepted
	}
	if a.Shared != nil {
		a.Shared.admit(cfg.HubID, fallback, decide)
	} else {
		decide(nil)
	}
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, 8)
	var converging atomic.Bool
	for i, j := range jobs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			st := j.st
			if st.State == flotillav1.AssignmentAccepted {
				a.run(ctx, cfg, j.as, st, j.objs)
				if a.converging(j.as, st) {
					converging.Store(true)
				}
			}
			if equality.Semantic.DeepEqual(st, &j.as.Status) {
				return
			}
			st.ReportTime = &metav1.Time{Time: time.Now()}
			j.as.Status = *st
			if err := a.Hub.Status().Update(ctx, j.as); err != nil && !apierrors.IsNotFound(err) {
				errs[i] = fmt.Errorf("reporting on assignment %s: %w", j.as.Name, err)
			} else if err == nil {
				a.remember(j.as)
			}
		})
	}
	wg.Wait()
	a.hurry.Store(converging.Load())
	a.appliedMu.Lock()
	for name := range a.appliedAt {
		if !slices.ContainsFunc(list.Items, func(as flotillav1.Assignment) bool { return as.Name == name }) {
			delete(a.appliedAt, name)
			delete(a.readAt, name)
		}
	}
	a.appliedMu.Unlock()
	return errors.Join(errs...)
}

// assignments reads this provider's Assignments, and says as of when the
// hub was read. While the watch has been open since the last list, for at
// most resyncInterval, it has sent every change since: the round takes
// them as the watch left them and asks the hub nothing. Otherwise, and
// always when the hub declared this provider Lost since the last fencing
// (mustList: fencing then needs the hub's word, fresh), it lists their
// metadata (which exist, and at which version) and gets whole only those
// that changed since the agent last read, wrote or was sent them. Listing
// them whole every round moved every tenant object they carry, for each
// provider, every few seconds.
func (a *Agent) assignments(ctx context.Context, ns string, mustList bool) ([]flotillav1.Assignment, time.Time, error) {
	start := time.Now()
	a.knownMu.Lock()
	if !mustList && a.watching && a.watchEpoch == a.listedEpoch && start.Sub(a.listedAt) < a.resync() {
		defer a.knownMu.Unlock()
		out := make([]flotillav1.Assignment, 0, len(a.known))
		for _, as := range a.known {
			out = append(out, *as.DeepCopy())
		}
		return out, a.listedAt, nil
	}
	epoch := a.watchEpoch
	// What the watch sends while the list runs is newer than the list.
	a.touched = map[string]bool{}
	a.knownMu.Unlock()

	var meta metav1.PartialObjectMetadataList
	meta.SetGroupVersionKind(flotillav1.GroupVersion.WithKind("AssignmentList"))
	if err := a.Hub.List(ctx, &meta, client.InNamespace(ns)); err != nil {
		return nil, time.Time{}, err
	}
	a.knownMu.Lock()
	defer a.knownMu.Unlock()
	if a.known == nil {
		a.known = map[string]*flotillav1.Assignment{}
	}
	seen := make(map[string]bool, len(meta.Items))
	out := make([]flotillav1.Assignment, 0, len(meta.Items))
	for _, m := range meta.Items {
		seen[m.Name] = true
		as := a.known[m.Name]
		if as == nil || as.ResourceVersion != m.ResourceVersion {
			as = &flotillav1.Assignment{}
			if err := a.Hub.Get(ctx, client.ObjectKey{Namespace: ns, Name: m.Name}, as); apierrors.IsNotFound(err) {
				continue
			} else if err != nil {
				return nil, time.Time{}, err
			}
			a.known[m.Name] = as
		}
		out = append(out, *as.DeepCopy())
	}
	for name, as := range a.known {
		switch {
		case seen[name]:
		case a.touched[name]:
			// Created after the list was taken: the watch knows better.
			out = append(out, *as.DeepCopy())
		default:
			delete(a.known, name)
		}
	}
	a.touched = nil
	// Only a watch open through the whole list vouches for what changed
	// after it (one that opened meanwhile has a later epoch).
	a.listedAt, a.listedEpoch = start, 0
	if a.watching && a.watchEpoch == epoch {
		a.listedEpoch = epoch
	}
	return out, start, nil
}

// remember keeps an Assignment the agent just wrote, or the watch sent,
// at its new version, unless it already keeps a later one: the watch lags
// the agent's own writes on a busy hub, and the copy it sent from before a
// report made the next report a Conflict (6,077 in one make bench-scale
// run), each costing the agent a round. Resource versions are compared as
// the API server defines them; one it cannot compare is taken.
func (a *Agent) remember(as *flotillav1.Assignment) {
	a.knownMu.Lock()
	defer a.knownMu.Unlock()
	if a.known == nil {
		a.known = map[string]*flotillav1.Assignment{}
	}
	if old, ok := a.known[as.Name]; ok && old.UID == as.UID {
		if c, err := resourceversion.CompareResourceVersion(old.ResourceVersion, as.ResourceVersion); err == nil && c > 0 {
			return
		}
	}
	a.known[as.Name] = as.DeepCopy()
	if a.touched != nil {
		a.touched[as.Name] = true
	}
}

// forget drops an Assignment the watch says is gone.
func (a *Agent) forget(name string) {
	a.knownMu.Lock()
	defer a.knownMu.Unlock()
	delete(a.known, name)
	if a.touched != nil {
		a.touched[name] = true
	}
}

// watchState notes the watch opening or closing: each opening is a new
// epoch, which no earlier list is vouched for by.
func (a *Agent) watchState(open bool) {
	a.knownMu.Lock()
	defer a.knownMu.Unlock()
	a.watching = open
	if open {
		a.watchEpoch++
	}
}

// admit decides whether the agent takes an Assignment it has not answered
// yet, and returns its report so far and its checked objects.
func (a *Agent) admit(as *flotillav1.Assignment, cfg *Config, free corev1.ResourceList, ferr error,
	others []*flotillav1.AssignmentSpec, accepted *[]*flotillav1.AssignmentSpec) (*flotillav1.AssignmentStatus, []*unstructured.Unstructured) {
	st := as.Status.DeepCopy()
	refuse := func(reason, msg string) *flotillav1.AssignmentStatus {
		a.Log.Info("Refused an assignment", "assignment", as.Name, "reason", reason, "message", msg)
		return &flotillav1.AssignmentStatus{State: flotillav1.AssignmentRefused, Reason: reason, Message: bound.Message(msg)}
	}
	if why := a.Diverged(); why != "" && st.State == "" {
		return refuse(ReasonLedgerDiverged, "the hub's ledger no longer extends the head this provider witnessed: "+why), nil
	}
	objs, err := assign.Check(as, cfg.HubID)
	if err != nil {
		return refuse(ReasonInvalidAssignment, err.Error()), nil
	}
	if st.State == "" {
		if ferr != nil {
			st.LastError = bound.Message("measuring free capacity: " + ferr.Error())
			return st, objs
		}
		if why := assign.Admit(free, append(slices.Clip(others), *accepted...), &as.Spec); why != "" {
			return refuse(ReasonInsufficientCapacity, why), nil
		}
		st.State, st.Reason, st.Message = flotillav1.AssignmentAccepted, "Accepted", "fits the cluster's free capacity"
		*accepted = append(*accepted, &as.Spec)
	}
	return st, objs
}

// run applies an accepted Assignment when it changed (or drifted) and
// reads it back into st.
func (a *Agent) run(ctx context.Context, cfg *Config, as *flotillav1.Assignment, st *flotillav1.AssignmentStatus, objs []*unstructured.Unstructured) {
	a.appliedMu.Lock()
	last := a.appliedAt[as.Name]
	a.appliedMu.Unlock()
	if st.AppliedHash != as.Spec.Hash || time.Since(last) >= reapplyInterval {
		if err := remote.ApplyLease(ctx, a.Federation, objs, FieldManager); err != nil {
			st.LastError = bound.Error(err)
			return
		}
		// A changed Assignment may no longer hold an optional object
		// (an exposed port closed, egress withdrawn).
		if st.AppliedHash != "" && st.AppliedHash != as.Spec.Hash {
			if err := remote.PruneLease(ctx, a.Federation, as.Spec.Namespace, objs); err != nil {
				st.LastError = bound.Error(err)
				return
			}
		}
		st.AppliedHash, st.LastError = as.Spec.Hash, ""
		// Nothing runs yet: the first read waits for the next round.
		a.appliedMu.Lock()
		if a.appliedAt == nil {
			a.appliedAt = map[string]time.Time{}
		}
		if a.readAt == nil {
			a.readAt = map[string]time.Time{}
		}
		a.appliedAt[as.Name], a.readAt[as.Name] = time.Now(), time.Now()
		a.appliedMu.Unlock()
		return
	}
	// Read back at most every settledReadInterval when settled (applied,
	// every replica ready) and every convergingReadInterval otherwise, so
	// that a round stays short and new work is applied promptly.
	every := convergingReadInterval
	if st.AppliedHash == as.Spec.Hash && st.ReadyReplicas >= as.Spec.Replicas && as.Spec.Class != flotillav1.ClassBatch {
		every = settledReadInterval
	}
	a.appliedMu.Lock()
	read := a.readAt[as.Name]
	a.appliedMu.Unlock()
	if time.Since(read) < every {
		return
	}
	exposed := slices.ContainsFunc(objs, func(u *unstructured.Unstructured) bool { return u.GetKind() == "Service" })
	obs, err := remote.ReadLease(ctx, a.Federation, cfg.HubID, as.Spec.LeaseRef.UID, as.Spec.Class == flotillav1.ClassBatch, exposed, as.Spec.Replicas)
	a.appliedMu.Lock()
	if a.readAt == nil {
		a.readAt = map[string]time.Time{}
	}
	a.readAt[as.Name] = time.Now()
	a.appliedMu.Unlock()
	if err != nil {
		st.LastError = bound.Error(err)
		return
	}
	st.RunningReplicas, st.ReadyReplicas = obs.Running, obs.Ready
	st.SucceededReplicas, st.FailedReplicas = obs.Succeeded, min(obs.Failed, 1_000_000)
	st.Complete, st.JobFailed, st.Digest = obs.Complete, obs.JobFailed, obs.Digest
	st.Endpoints = obs.Endpoints
	if obs.JobFailed {
		st.Message = bound.Message(obs.Message)
	}
}

// converging reports an Assignment applied within convergeWindow whose
// replicas are not all ready yet. A batch Assignment's pods run to their
// end, however long: it is read at the pull interval.
func (a *Agent) converging(as *flotillav1.Assignment, st *flotillav1.AssignmentStatus) bool {
	if as.Spec.Class == flotillav1.ClassBatch || st.AppliedHash != as.Spec.Hash || st.ReadyReplicas >= as.Spec.Replicas {
		return false
	}
	a.appliedMu.Lock()
	defer a.appliedMu.Unlock()
	return time.Since(a.appliedAt[as.Name]) < convergeWindow
}

// fenceStale deletes every namespace of this hub on the cluster that no
// Assignment wants, or wants at another epoch.
func (a *Agent) fenceStale(ctx context.Context, cfg *Config, wanted map[string]int64) error {
	var nss corev1.NamespaceList
	if err := a.Federation.List(ctx, &nss, client.MatchingLabels{flotillav1.LabelManaged: "true", flotillav1.LabelHub: cfg.HubID}); err != nil {
		return fmt.Errorf("listing the hub's namespaces: %w", err)
	}
	var errs []error
	for i := range nss.Items {
		ns := &nss.Items[i]
		if ns.DeletionTimestamp != nil {
			continue
		}
		why := assign.Stale(ns.Labels, wanted)
		if why == "" {
			continue
		}
		if err := a.Federation.Delete(ctx, ns); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("deleting namespace %s: %w", ns.Name, err))
			continue
		}
		a.Log.Info("Fenced a namespace of the hub", "namespace", ns.Name, "why", why)
	}
	return errors.Join(errs...)
}

// freeCapacity is what the cluster has free for Flotilla now: schedulable
// nodes' allocatable minus the owner's reserve and the requests of every
// pod that is not Flotilla's (Flotilla's are counted by their Assignments).
func (a *Agent) freeCapacity(ctx context.Context, cfg *Config) (corev1.ResourceList, error) {
	nodes, err := a.Local.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	pods, err := a.Local.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "status.phase!=Succeeded,status.phase!=Failed"})
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	return capacity.Offer(nodes.Items, pods.Items, cfg.reserve), nil
}

// WatchAssignments wakes the agent whenever the hub adds, changes or
// withdraws one of its Assignments, so that new work does not wait for the
// next round, and keeps what it sends for the rounds (see assignments),
// until ctx ends. The agent's own reports (status only, the generation
// unchanged) wake nothing. The pull loop of Run starts it.
func (a *Agent) WatchAssignments(ctx context.Context, wake chan<- struct{}) {
	ns := flotillav1.ProviderNamespace(a.config().Provider.Name)
	for ctx.Err() == nil {
		w, err := a.HubWatch.Watch(ctx, &flotillav1.AssignmentList{}, client.InNamespace(ns))
		if err == nil {
			a.watchState(true)
			gen := map[string]int64{}
			for ev := range w.ResultChan() {
				if as, ok := ev.Object.(*flotillav1.Assignment); ok {
					switch ev.Type {
					case watch.Added, watch.Modified:
						// What the watch brings whole, the round need not
						// get again (see assignments).
						a.remember(as)
					case watch.Deleted:
						a.forget(as.Name)
					}
					if ev.Type == watch.Modified && gen[as.Name] == as.Generation {
						continue
					}
					gen[as.Name] = as.Generation
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			}
			a.watchState(false)
			w.Stop()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// pullLoop runs SyncAssignments every pullInterval and whenever the hub
// changes an Assignment, until ctx ends.
func (a *Agent) pullLoop(ctx context.Context) {
	t := time.NewTimer(a.config().pull)
	defer t.Stop()
	wake := make(chan struct{}, 1)
	if a.HubWatch != nil {
		go a.WatchAssignments(ctx, wake)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := a.SyncAssignments(rctx); err != nil {
			a.Log.Error(err, "Syncing assignments")
		}
		cancel()
		next := a.config().pull
		if a.hurry.Load() {
			next = min(next, convergingReadInterval)
		}
		t.Reset(next)
	}
}
