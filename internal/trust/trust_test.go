package trust

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/reputation"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func lease(name string, outcome flotillav1.LeaseOutcome, verdict flotillav1.Verdict, recorded string) *flotillav1.Lease {
	l := &flotillav1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), CreationTimestamp: metav1.Time{Time: t0},
		Labels: map[string]string{flotillav1.LabelOwner: "owner-" + name}},
		Spec: flotillav1.LeaseSpec{ProviderRef: flotillav1.ProviderReference{Name: "p-" + name}}}
	if outcome != "" {
		l.Status.Phase, l.Status.Outcome = flotillav1.LeaseClosed, outcome
	}
	l.Status.Verdict = verdict
	if recorded != "" {
		l.Annotations = map[string]string{flotillav1.AnnotationReputationRecorded: recorded}
	}
	return l
}

type counted struct {
	Completed, Failed, Passed, Dissented, Unreachable int64
	Recorded                                          []string
	Marks                                             []string
}

func TestUpdateCountsEachEventOnce(t *testing.T) {
	for name, tc := range map[string]struct {
		rep    flotillav1.Reputation
		leases []*flotillav1.Lease
		want   counted
	}{
		"a completed lease": {leases: []*flotillav1.Lease{lease("a", flotillav1.OutcomeCompleted, "", "")},
			want: counted{Completed: 1, Recorded: []string{"uid-a/outcome"}, Marks: []string{"a/outcome"}}},
		"failed, failed over and missed deadlines count as failures": {leases: []*flotillav1.Lease{
			lease("f", flotillav1.OutcomeFailed, "", ""), lease("o", flotillav1.OutcomeFailedOver, "", ""),
			lease("d", flotillav1.OutcomeProgressDeadlineExceeded, "", "")},
			want: counted{Failed: 3, Recorded: []string{"uid-f/outcome", "uid-o/outcome", "uid-d/outcome"},
				Marks: []string{"f/outcome", "o/outcome", "d/outcome"}}},
		"verdicts": {leases: []*flotillav1.Lease{
			lease("y", flotillav1.OutcomeCompleted, flotillav1.VerdictAgreed, "outcome"), lease("n", flotillav1.OutcomeCompleted, flotillav1.VerdictDissented, "outcome")},
			want: counted{Passed: 1, Dissented: 1, Recorded: []string{"uid-y/verdict", "uid-n/verdict"}, Marks: []string{"y/verdict", "n/verdict"}}},
		"counted before a restart, only the mark was missing": {
			rep:    flotillav1.Reputation{Recorded: []string{"uid-a/outcome"}, LeasesCompleted: 1},
			leases: []*flotillav1.Lease{lease("a", flotillav1.OutcomeCompleted, "", "")},
			want:   counted{Completed: 1, Recorded: []string{"uid-a/outcome"}, Marks: []string{"a/outcome"}}},
		"an endpoint that stopped answering while reported ready, once per lease": {leases: []*flotillav1.Lease{
			func() *flotillav1.Lease { l := lease("u", "", "", ""); l.Status.UnreachableCount = 3; return l }(),
			func() *flotillav1.Lease {
				l := lease("v", "", "", "unreachable")
				l.Status.UnreachableCount = 1
				return l
			}()},
			want: counted{Unreachable: 1, Recorded: []string{"uid-u/unreachable"}, Marks: []string{"u/unreachable"}}},
		"already marked":          {leases: []*flotillav1.Lease{lease("a", flotillav1.OutcomeCompleted, "", "outcome")}, want: counted{}},
		"scaled down: no outcome": {leases: []*flotillav1.Lease{lease("s", "", "", "")}, want: counted{}},
	} {
		t.Run(name, func(t *testing.T) {
			rep, marks, _, reset := Update(tc.rep, flotillav1.ProviderReady, tc.leases, t0, t0, reputation.DefaultHalfLife)
			if reset != nil {
				t.Fatal(reset)
			}
			got := counted{Completed: rep.LeasesCompleted, Failed: rep.LeasesFailed, Passed: rep.VerificationsPassed,
				Dissented: rep.VerificationsFailed, Unreachable: rep.EndpointsUnreachable, Recorded: rep.Recorded}
			for _, m := range marks {
				got.Marks = append(got.Marks, m.Lease.Name+"/"+m.Event)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}

// Time since the last update is credited in the phase the provider had,
// however long, but none from before the hub began watching.
func TestUpdateCreditsTheTimeWatched(t *testing.T) {
	ago := func(d time.Duration) time.Time { return t0.Add(-d) }
	for name, tc := range map[string]struct {
		was              flotillav1.ProviderPhase
		updated          time.Time
		watched          time.Time
		wantUp, wantDown int64
	}{
		"ready, watched throughout":     {flotillav1.ProviderReady, ago(10 * time.Minute), ago(time.Hour), 600, 0},
		"cordoned counts as up":         {flotillav1.ProviderCordoned, ago(5 * time.Minute), ago(time.Hour), 300, 0},
		"lost, watched throughout":      {flotillav1.ProviderLost, ago(5 * time.Minute), ago(time.Hour), 0, 300},
		"a manager outage in between":   {flotillav1.ProviderReady, ago(10 * time.Minute), ago(2 * time.Minute), 120, 0},
		"watching begins now":           {flotillav1.ProviderReady, ago(10 * time.Minute), t0, 0, 0},
		"the last update in the future": {flotillav1.ProviderReady, t0.Add(time.Minute), ago(time.Hour), 0, 0},
		"pending is neither":            {flotillav1.ProviderPending, ago(10 * time.Minute), ago(time.Hour), 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			rep := flotillav1.Reputation{UpdatedTime: &metav1.Time{Time: tc.updated}}
			got, _, _, reset := Update(rep, tc.was, nil, t0, tc.watched, reputation.DefaultHalfLife)
			if reset != nil {
				t.Fatal(reset)
			}
			if got.UpSeconds != tc.wantUp || got.DownSeconds != tc.wantDown {
				t.Errorf("up %d s, down %d s; want %d s and %d s", got.UpSeconds, got.DownSeconds, tc.wantUp, tc.wantDown)
			}
		})
	}
}

func TestUpdateResetsUnreadableEvidence(t *testing.T) {
	rep, _, score, reset := Update(flotillav1.Reputation{Positive: "lots"}, "", nil, t0, t0, reputation.DefaultHalfLife)
	if reset == nil || score != 0.5 || rep.Score != "0.500" {
		t.Errorf("unreadable evidence: reset %v, score %v %q; want a reset to neutral", reset, score, rep.Score)
	}
}

func TestVerify(t *testing.T) {
	digest := "sha256:" + strings.Repeat("a", 64)
	w := &flotillav1.Workload{Spec: flotillav1.WorkloadSpec{Class: flotillav1.ClassBatch,
		Verification: &flotillav1.VerificationSpec{Redundancy: 3, Quorum: 2, MaxExtraCopies: ptr.To[int32](1)}}}
	done := func(name, d string) *flotillav1.Lease {
		l := lease(name, flotillav1.OutcomeCompleted, "", "")
		l.Status.Digest = d
		return l
	}
	replaced := lease("r", flotillav1.OutcomeFailedOver, "", "")
	d, results := Verify(w, []*flotillav1.Lease{done("a", digest), done("b", digest), replaced, lease("c", "", "", "")})
	if d.Verified != digest || d.Votes != 2 {
		t.Fatalf("decision %+v, want %s verified by 2", d, digest)
	}
	states := map[string]string{}
	for _, r := range results {
		states[r.Lease] = r.State + "/" + string(r.Verdict)
	}
	want := map[string]string{"a": "Reported/Agreed", "b": "Reported/Agreed", "r": "Replaced/", "c": "Running/"}
	if diff := cmp.Diff(want, states); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}
