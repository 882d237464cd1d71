// Package status renders a readable summary of a federation: providers,
// workloads and where each replica runs at what price. Pure: the caller
// lists the objects (flotillactl status, the demo).
package status

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/money"
)

// Snapshot is what Render shows.
type Snapshot struct {
	Now       time.Time
	Providers []flotillav1.Provider
	Workloads []flotillav1.Workload
	Leases    []flotillav1.Lease
	// Accounts, when any are shown, add a table of credits.
	Accounts []flotillav1.Account
}

// Render writes the three tables.
func Render(w io.Writer, s Snapshot) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	owner := map[string]string{}
	live := map[string]int{}
	for i := range s.Leases {
		if s.Leases[i].Live() {
			live[s.Leases[i].Spec.ProviderRef.Name]++
		}
	}
	providers := slices.Clone(s.Providers)
	slices.SortFunc(providers, func(a, b flotillav1.Provider) int { return cmp.Compare(a.Name, b.Name) })
	fmt.Fprintln(tw, "PROVIDER\tOWNER\tREGION\tMODE\tPHASE\tFREE CPU\tFREE MEMORY\tGPUS\tREPUTATION\tLEASES")
	for _, p := range providers {
		owner[p.Name] = p.Spec.Owner
		free := p.Status.Capacity.Free
		mode := p.Spec.Mode
		if mode == "" {
			mode = flotillav1.ModePush
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", p.Name, p.Spec.Owner, dash(p.Spec.Region), mode, dash(string(p.Status.Phase)),
			qty(free, corev1.ResourceCPU), qty(free, corev1.ResourceMemory), qty(free, "nvidia.com/gpu"), dash(string(p.Status.Reputation.Score)), live[p.Name])
	}
	if len(providers) == 0 {
		fmt.Fprintln(tw, "(none)")
	}
	fmt.Fprintln(tw)

	workloads := slices.Clone(s.Workloads)
	slices.SortFunc(workloads, func(a, b flotillav1.Workload) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	leasesOf := map[string][]flotillav1.Lease{}
	for _, l := range s.Leases {
		k := l.Namespace + "/" + l.Spec.WorkloadRef.Name
		leasesOf[k] = append(leasesOf[k], l)
	}
	fmt.Fprintln(tw, "WORKLOAD\tCLASS\tPHASE\tREADY\tPLACEMENTS\tPRICE/HOUR\tCOST SO FAR")
	for _, wl := range workloads {
		k := wl.Namespace + "/" + wl.Name
		var places []string
		var perHour, cost money.Micro
		for _, l := range liveLeases(leasesOf[k]) {
			places = append(places, fmt.Sprintf("%s:%d", l.Spec.ProviderRef.Name, l.Spec.Replicas))
			perHour += leaseHourly(&l)
		}
		for _, l := range leasesOf[k] {
			cost += leaseCost(&l, s.Now)
		}
		ready := fmt.Sprintf("%d/%d", wl.Status.ReadyReplicas, wl.Spec.Replicas)
		switch {
		case wl.Spec.Verification != nil:
			// Copies on distinct owners: what counts is how many agree.
			ready = fmt.Sprintf("%d/%d agree", votes(&wl), wl.Spec.Verification.Quorum)
		case wl.Spec.Class == flotillav1.ClassBatch:
			ready = fmt.Sprintf("%d/%d done", wl.Status.SucceededReplicas, wl.Spec.Replicas)
		}
		slices.Sort(places)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k, wl.Spec.Class, dash(string(wl.Status.Phase)), ready,
			dash(strings.Join(places, ",")), perHour, cost)
	}
	if len(workloads) == 0 {
		fmt.Fprintln(tw, "(none)")
	}
	fmt.Fprintln(tw)

	leases := liveLeases(s.Leases)
	slices.SortFunc(leases, func(a, b flotillav1.Lease) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Spec.WorkloadRef.Name, b.Spec.WorkloadRef.Name),
			cmp.Compare(a.Spec.ProviderRef.Name, b.Spec.ProviderRef.Name))
	})
	fmt.Fprintln(tw, "REPLICAS OF\tPROVIDER\tOWNER\tREPLICAS\tREADY\tEPOCH\tPRICE/REPLICA-HOUR\tRUNNING FOR\tCOST SO FAR")
	for _, l := range leases {
		fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", l.Namespace, l.Spec.WorkloadRef.Name, l.Spec.ProviderRef.Name,
			dash(owner[l.Spec.ProviderRef.Name]), l.Spec.Replicas, l.Status.ReadyReplicas, l.Spec.Epoch, l.Spec.PricePerReplicaHour,
			s.Now.Sub(l.CreationTimestamp.Time).Round(time.Second), leaseCost(&l, s.Now))
	}
	if len(leases) == 0 {
		fmt.Fprintln(tw, "(no live leases)")
	}
	endpoints(tw, s.Workloads)
	if len(s.Accounts) > 0 {
		accounts := slices.Clone(s.Accounts)
		slices.SortFunc(accounts, func(a, b flotillav1.Account) int { return cmp.Compare(a.Namespace, b.Namespace) })
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "ACCOUNT\tAVAILABLE\tHELD\tSPENT\tEARNED")
		for _, a := range accounts {
			st := a.Status
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Namespace, dash(string(st.Available)), dash(string(st.Held)),
				dash(string(st.Spent)), dash(string(st.Earned)))
		}
	}
	return tw.Flush()
}

// endpoints lists where exposed Workloads answer, when any does.
func endpoints(tw io.Writer, ws []flotillav1.Workload) {
	header := false
	for _, w := range ws {
		if len(w.Status.Endpoints) == 0 && w.Status.Address == "" {
			continue
		}
		if !header {
			fmt.Fprintln(tw)
			fmt.Fprintln(tw, "ENDPOINTS OF\tPORT\tPROVIDER\tADDRESS\tREACHABLE")
			header = true
		}
		k := w.Namespace + "/" + w.Name
		if w.Status.Address != "" {
			fmt.Fprintf(tw, "%s\t-\t(stable address)\t%s\t-\n", k, w.Status.Address)
		}
		for _, e := range w.Status.Endpoints {
			reachable := "no"
			if e.Reachable {
				reachable = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k, e.Port, e.Provider, e.Address, reachable)
		}
	}
}

func votes(w *flotillav1.Workload) int32 {
	if w.Status.Verification == nil {
		return 0
	}
	return w.Status.Verification.Votes
}

func liveLeases(ls []flotillav1.Lease) []flotillav1.Lease {
	var out []flotillav1.Lease
	for i := range ls {
		if ls[i].Live() {
			out = append(out, ls[i])
		}
	}
	return out
}

func leaseHourly(l *flotillav1.Lease) money.Micro {
	p, err := money.Parse(string(l.Spec.PricePerReplicaHour))
	if err != nil {
		return 0
	}
	return p * money.Micro(l.Spec.Replicas)
}

// leaseCost is the metered cost when the hub has metered the Lease, and
// otherwise an estimate: its price for its replicas since it was created
// (until now, or until it closed as far as status says).
func leaseCost(l *flotillav1.Lease, now time.Time) money.Micro {
	if c, err := money.Parse(string(l.Status.Usage.Cost)); err == nil && c > 0 {
		return c
	}
	end := now
	if l.Status.Phase == flotillav1.LeaseClosed && l.Status.LastSyncTime != nil {
		end = l.Status.LastSyncTime.Time
	}
	d := end.Sub(l.CreationTimestamp.Time)
	if d <= 0 {
		return 0
	}
	// micro-credits per hour times milliseconds, in integers: no floats.
	return leaseHourly(l) * money.Micro(d.Milliseconds()) / money.Micro(time.Hour.Milliseconds())
}

func qty(l corev1.ResourceList, name corev1.ResourceName) string {
	q, ok := l[name]
	if !ok {
		return "-"
	}
	if name == corev1.ResourceMemory {
		return fmt.Sprintf("%.1fGi", float64(q.Value())/float64(1<<30))
	}
	return q.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
