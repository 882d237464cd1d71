package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/quorum"
	"github.com/flotilla-dev/flotilla/internal/trust"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

func digestOf(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

func verifiedWorkload(ns, name, suite string, redundancy, q, extra int32) *flotillav1.Workload {
	w := newWorkload(ns, name, suite, 1, "1")
	w.Spec.Class = flotillav1.ClassBatch
	w.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever
	w.Spec.Verification = &flotillav1.VerificationSpec{Redundancy: redundancy, Quorum: q, MaxExtraCopies: &extra}
	return w
}

// completeLease does what the Lease controller does when a copy's Job
// completes on its provider with the digest as termination message.
func completeLease(t *testing.T, l *flotillav1.Lease, digest string) {
	t.Helper()
	l.Status.Phase = flotillav1.LeaseClosed
	l.Status.Outcome = flotillav1.OutcomeCompleted
	l.Status.Digest = digest
	l.Status.SucceededReplicas = 1
	apimeta.RemoveStatusCondition(&l.Status.Conditions, flotillav1.ConditionReady)
	apimeta.RemoveStatusCondition(&l.Status.Conditions, flotillav1.ConditionReconciling)
	apimeta.SetStatusCondition(&l.Status.Conditions, metav1.Condition{Type: flotillav1.LeaseConditionClosed, Status: metav1.ConditionTrue,
		Reason: flotillav1.LeaseReasonCompleted, Message: "1 replicas succeeded"})
	if err := env.Client.Status().Update(context.Background(), l); err != nil {
		t.Fatal(err)
	}
}

func leasesOfWorkload(t *testing.T, ns, name string) []flotillav1.Lease {
	t.Helper()
	var out []flotillav1.Lease
	for _, l := range leasesOf(t, ns) {
		if l.Spec.WorkloadRef.Name == name {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b flotillav1.Lease) int {
		return strings.Compare(a.Labels[flotillav1.LabelOwner], b.Labels[flotillav1.LabelOwner])
	})
	return out
}

// Copies of a verified Workload go to distinct owners, even when one owner
// has the cheapest two providers; when the results disagree an extra copy
// goes to an owner not asked before, and its result decides.
func TestVerifiedWorkloadRunsCopiesOnDistinctOwners(t *testing.T) {
	ctx := context.Background()
	const suite, ns = "verify", "tenant-verify"
	for _, p := range []struct{ name, owner, price string }{
		{"ver-a", "va", "0.01"}, {"ver-a2", "va", "0.01"}, {"ver-b", "vb", "0.02"}, {"ver-c", "vc", "0.03"}, {"ver-d", "vd", "0.04"},
	} {
		readyProvider(t, p.name, p.owner)
		createOffer(t, p.name, "std", suite, "8", p.price)
	}
	namespace(t, ns)
	w := verifiedWorkload(ns, "frames", suite, 3, 2, 1)
	if err := env.Client.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, testHooks{})
	defer m.stop(t)

	var leases []flotillav1.Lease
	hubenv.Await(t, 20*time.Second, "three copies", func() (bool, string) {
		leases = leasesOfWorkload(t, ns, "frames")
		return len(leases) == 3, fmt.Sprint(len(leases), " leases")
	})
	owners := []string{}
	for _, l := range leases {
		owners = append(owners, l.Labels[flotillav1.LabelOwner])
		if l.Spec.Replicas != 1 {
			t.Errorf("copy %s holds %d replicas, want 1", l.Name, l.Spec.Replicas)
		}
	}
	if !slices.Equal(owners, []string{"va", "vb", "vc"}) {
		t.Fatalf("copies on owners %v, want va, vb, vc: one each, cheapest first", owners)
	}
	// Three different results: no quorum, one extra copy.
	for i, l := range leases {
		completeLease(t, &l, digestOf("abc"[i]))
	}
	var extra flotillav1.Lease
	hubenv.Await(t, 20*time.Second, "an extra copy on the fourth owner", func() (bool, string) {
		all := leasesOfWorkload(t, ns, "frames")
		if len(all) != 4 {
			return false, fmt.Sprint(len(all), " leases")
		}
		extra = all[3]
		return true, ""
	})
	if extra.Spec.ProviderRef.Name != "ver-d" {
		t.Fatalf("extra copy on %s, want ver-d: ver-a2's owner already ran a copy", extra.Spec.ProviderRef.Name)
	}
	got := &flotillav1.Workload{}
	hubenv.Await(t, 10*time.Second, "status to show the vote", func() (bool, string) {
		_ = env.Client.Get(ctx, client.ObjectKeyFromObject(w), got)
		v := got.Status.Verification
		return v != nil && v.Copies == 4 && v.ExtraCopies == 1 && got.Status.Phase == flotillav1.WorkloadRunning, fmt.Sprintf("%+v", got.Status)
	})
	completeLease(t, &extra, digestOf('b'))

	hubenv.Await(t, 10*time.Second, "the workload to be verified", func() (bool, string) {
		_ = env.Client.Get(ctx, client.ObjectKeyFromObject(w), got)
		return got.Status.VerifiedDigest != "", fmt.Sprintf("%+v", got.Status)
	})
	if got.Status.VerifiedDigest != digestOf('b') || got.Status.Phase != flotillav1.WorkloadSucceeded {
		t.Errorf("verified %q, phase %s; want %s, Succeeded", got.Status.VerifiedDigest, got.Status.Phase, digestOf('b'))
	}
	c := apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.WorkloadVerified)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != flotillav1.WorkloadReasonQuorumReached {
		t.Errorf("Verified condition %+v", c)
	}
	want := map[string]flotillav1.Verdict{"va": flotillav1.VerdictDissented, "vb": flotillav1.VerdictAgreed,
		"vc": flotillav1.VerdictDissented, "vd": flotillav1.VerdictAgreed}
	for _, r := range got.Status.Verification.Results {
		if r.Verdict != want[r.Owner] || r.State != trust.CopyReported {
			t.Errorf("result %+v: want verdict %s", r, want[r.Owner])
		}
	}
	hubenv.Await(t, 10*time.Second, "verdicts on the leases", func() (bool, string) {
		var bad []string
		for _, l := range leasesOfWorkload(t, ns, "frames") {
			if l.Status.Verdict != want[l.Labels[flotillav1.LabelOwner]] {
				bad = append(bad, l.Name+"="+string(l.Status.Verdict))
			}
		}
		return len(bad) == 0, strings.Join(bad, " ")
	})
	hubenv.Await(t, 10*time.Second, "two dissent events", func() (bool, string) {
		var evs corev1.EventList
		_ = env.Client.List(ctx, &evs, client.InNamespace(ns))
		n := 0
		for _, e := range evs.Items {
			if e.Reason == "ResultDissented" && e.InvolvedObject.Name == "frames" {
				n++
			}
		}
		return n == 2, fmt.Sprint(n, " events")
	})
	if v := metricValue(t, "flotilla_verification_dissents_total"); v < 2 {
		t.Errorf("flotilla_verification_dissents_total = %v, want at least 2", v)
	}
}

// When the results cannot reach a quorum within the extra copies allowed,
// the Workload fails with a reason and verifies nothing.
func TestVerifiedWorkloadFailsWithoutQuorum(t *testing.T) {
	ctx := context.Background()
	const suite, ns = "noquorum", "tenant-noquorum"
	for _, p := range []string{"nq-a", "nq-b", "nq-c"} {
		readyProvider(t, p, p)
		createOffer(t, p, "std", suite, "8", "0.01")
	}
	namespace(t, ns)
	w := verifiedWorkload(ns, "sum", suite, 2, 2, 0)
	if err := env.Client.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, testHooks{})
	defer m.stop(t)

	var leases []flotillav1.Lease
	hubenv.Await(t, 20*time.Second, "two copies", func() (bool, string) {
		leases = leasesOfWorkload(t, ns, "sum")
		return len(leases) == 2, fmt.Sprint(len(leases), " leases")
	})
	completeLease(t, &leases[0], digestOf('a'))
	completeLease(t, &leases[1], "not a digest")

	got := &flotillav1.Workload{}
	hubenv.Await(t, 10*time.Second, "the workload to fail", func() (bool, string) {
		_ = env.Client.Get(ctx, client.ObjectKeyFromObject(w), got)
		return got.Status.Phase == flotillav1.WorkloadFailed, fmt.Sprintf("%+v", got.Status)
	})
	awaitKStatus(t, got, "Failed") // short of a quorum: a person must act
	c := apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.WorkloadVerified)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != quorum.ReasonNoQuorum || !strings.Contains(c.Message, "2 needed") {
		t.Errorf("Verified condition %+v, want False %s saying how many were needed", c, quorum.ReasonNoQuorum)
	}
	if got.Status.VerifiedDigest != "" {
		t.Errorf("verified %q without a quorum", got.Status.VerifiedDigest)
	}
	// No further copy is started for a failed run.
	hubenv.Holds(t, 500*time.Millisecond, "two leases after the run failed", func() (bool, string) {
		n := len(leasesOfWorkload(t, ns, "sum"))
		return n == 2, fmt.Sprint(n, " leases")
	})
}
