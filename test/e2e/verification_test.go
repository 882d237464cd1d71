package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/internal/reputation"
	"github.com/flotilla-dev/flotilla/test/hubenv"
	"github.com/flotilla-dev/flotilla/test/testbed"
)

var (
	truth = "sha256:" + strings.Repeat("0", 63) + "1"
	lieA  = "sha256:" + strings.Repeat("a", 64)
	lieB  = "sha256:" + strings.Repeat("b", 64)
)

// verifiedJob is a Batch Workload whose pod asks for the true result, run as
// redundancy copies with the quorum.
func verifiedJob(ns, name string, redundancy, quorum, extra int32, owners ...string) *flotillav1.Workload {
	w := newWorkload(ns, name, flotillav1.ClassBatch, 1)
	w.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever
	w.Spec.Template.Annotations = map[string]string{localfed.ResultAnnotation: truth}
	if redundancy > 0 {
		w.Spec.Verification = &flotillav1.VerificationSpec{Redundancy: redundancy, Quorum: quorum, MaxExtraCopies: ptr.To(extra)}
	}
	if len(owners) > 0 {
		w.Spec.Placement.AttributeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "owner", Operator: metav1.LabelSelectorOpIn, Values: owners}}}
	}
	return w
}

func (h *hub) provider(t *testing.T, name string) *flotillav1.Provider {
	t.Helper()
	p := &flotillav1.Provider{}
	if err := h.client.Get(context.Background(), client.ObjectKey{Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func score(p *flotillav1.Provider) int64 {
	m, err := reputation.ParseMilli(string(p.Status.Reputation.Score))
	if err != nil {
		return -1
	}
	return m
}

// Five owners, two of them lying about results, the liars cheapest: copies
// of verified Workloads run on distinct owners, the honest digest wins,
// the liars lose reputation and a Workload asking for more avoids them.
func TestVerifiedResultsWithLyingProviders(t *testing.T) {
	ctx := context.Background()
	nodes := []localfed.NodeSet{{Count: 1, CPU: "4", Memory: "8Gi"}}
	fed := testbed.NewForTest(t, localfed.Options{Providers: []localfed.ProviderSpec{
		{Name: "kim-1", Owner: "kim", Region: "eu-west", Nodes: nodes, WrongDigest: lieA},
		{Name: "lou-1", Owner: "lou", Region: "eu-west", Nodes: nodes, WrongDigest: lieB},
		{Name: "hana-1", Owner: "hana", Region: "eu-west", Nodes: nodes},
		{Name: "ivan-1", Owner: "ivan", Region: "us-east", Nodes: nodes},
		{Name: "jay-1", Owner: "jay", Region: "us-east", Nodes: nodes},
	}})
	prices := map[string]string{"kim-1": "0.010", "lou-1": "0.011", "hana-1": "0.020", "ivan-1": "0.030", "jay-1": "0.040"}
	h := setupHub(t, fed, prices, controllers.Options{HubID: "e2e"})
	h.awaitProvidersReady(t, 5, 60*time.Second)
	h.tenant(t, "science", "100")

	awaitDecided := func(t *testing.T, name string) *flotillav1.Workload {
		t.Helper()
		var w *flotillav1.Workload
		hubenv.Await(t, 120*time.Second, name+" decided", func() (bool, string) {
			w = h.workload(t, "science", name)
			return w.Status.Phase == flotillav1.WorkloadSucceeded || w.Status.Phase == flotillav1.WorkloadFailed,
				fmt.Sprintf("phase %s %+v", w.Status.Phase, w.Status.Verification)
		})
		return w
	}
	results := func(w *flotillav1.Workload) map[string]flotillav1.CopyResult {
		out := map[string]flotillav1.CopyResult{}
		for _, r := range w.Status.Verification.Results {
			out[r.Provider] = r
		}
		return out
	}

	// Each stage builds on the last one's reputation.
	var liar int64
	hubenv.Stage(t, "redundancy 3, quorum 2, one liar among kim, hana and ivan: the truth wins, kim's reputation drops", func(t *testing.T) {
		mustCreate(t, h.client, verifiedJob("science", "render", 3, 2, 2, "kim", "hana", "ivan"))
		w := awaitDecided(t, "render")
		if w.Status.Phase != flotillav1.WorkloadSucceeded || w.Status.VerifiedDigest != truth {
			t.Fatalf("render: phase %s, verified %q; want Succeeded with %s", w.Status.Phase, w.Status.VerifiedDigest, truth)
		}
		c := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadVerified)
		if c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("render: Verified condition %+v", c)
		}
		// The third copy may still run when two agree; wait for its report.
		hubenv.Await(t, 60*time.Second, "every render copy reported with a verdict", func() (bool, string) {
			w = h.workload(t, "science", "render")
			rs := results(w)
			return len(rs) == 3 && rs["kim-1"].Verdict != "" && rs["hana-1"].Verdict != "" && rs["ivan-1"].Verdict != "", fmt.Sprintf("%+v", rs)
		})
		rs := results(w)
		for prov, want := range map[string]struct {
			digest  string
			verdict flotillav1.Verdict
		}{"kim-1": {lieA, flotillav1.VerdictDissented}, "hana-1": {truth, flotillav1.VerdictAgreed}, "ivan-1": {truth, flotillav1.VerdictAgreed}} {
			if rs[prov].Digest != want.digest || rs[prov].Verdict != want.verdict {
				t.Errorf("render copy on %s: %+v; want digest %s, %s", prov, rs[prov], want.digest, want.verdict)
			}
		}
		var honest int64
		hubenv.Await(t, 30*time.Second, "kim's reputation below hana's and ivan's", func() (bool, string) {
			k, hn, iv := h.provider(t, "kim-1"), h.provider(t, "hana-1"), h.provider(t, "ivan-1")
			liar, honest = score(k), min(score(hn), score(iv))
			return k.Status.Reputation.VerificationsFailed == 1 && hn.Status.Reputation.VerificationsPassed == 1 &&
					iv.Status.Reputation.VerificationsPassed == 1 && liar >= 0 && liar < honest,
				fmt.Sprintf("kim %+v; hana %+v; ivan %+v", k.Status.Reputation, hn.Status.Reputation, iv.Status.Reputation)
		})
		t.Logf("reputation after render: kim %s, honest at least %s", reputation.FormatMilli(liar), reputation.FormatMilli(honest))
	})

	// A Workload asking for more than kim's score avoids kim, though kim
	// is the cheapest it may use.
	hubenv.Stage(t, "a minimum reputation keeps the liar out", func(t *testing.T) {
		floor := flotillav1.Score(reputation.FormatMilli(liar + 1))
		safe := verifiedJob("science", "safe", 0, 0, 0, "kim", "hana")
		safe.Spec.Placement.MinReputation = &floor
		mustCreate(t, h.client, safe)
		if w := awaitDecided(t, "safe"); w.Status.Phase != flotillav1.WorkloadSucceeded {
			t.Fatalf("safe: phase %s", w.Status.Phase)
		}
		var ls flotillav1.LeaseList
		if err := h.client.List(ctx, &ls, client.InNamespace("science"), client.MatchingLabels{flotillav1.LabelWorkload: "safe"}); err != nil {
			t.Fatal(err)
		}
		if len(ls.Items) != 1 || ls.Items[0].Spec.ProviderRef.Name != "hana-1" {
			t.Errorf("safe ran on %d leases, first on %v; want one on hana-1, not kim-1 (score %s, minReputation %s)",
				len(ls.Items), ls.Items, reputation.FormatMilli(liar), floor)
		}

	})

	// Two liars with different digests among the three cheapest owners:
	// no quorum, an extra copy on another owner, the honest digest wins.
	hubenv.Stage(t, "two liars: an extra copy on another owner, the truth wins, the ledger records both", func(t *testing.T) {
		mustCreate(t, h.client, verifiedJob("science", "consensus", 3, 2, 2))
		w := awaitDecided(t, "consensus")
		if w.Status.Phase != flotillav1.WorkloadSucceeded || w.Status.VerifiedDigest != truth {
			t.Fatalf("consensus: phase %s, verified %q; want Succeeded with %s (never a liar's digest)", w.Status.Phase, w.Status.VerifiedDigest, truth)
		}
		rs := results(w)
		owners := map[string]bool{}
		for _, r := range w.Status.Verification.Results {
			if owners[r.Owner] {
				t.Errorf("consensus: two copies on owner %s", r.Owner)
			}
			owners[r.Owner] = true
		}
		if w.Status.Verification.ExtraCopies < 1 || len(rs) < 4 {
			t.Errorf("consensus: %d extra copies, %d copies; want at least one extra beyond 3", w.Status.Verification.ExtraCopies, len(rs))
		}
		for _, prov := range []string{"kim-1", "lou-1"} {
			if r := rs[prov]; r.Digest == truth || r.Verdict != flotillav1.VerdictDissented {
				t.Errorf("consensus copy on liar %s: %+v; want its own digest, Dissented", prov, r)
			}
		}
		hubenv.Await(t, 30*time.Second, "both liars below every honest provider", func() (bool, string) {
			var ps flotillav1.ProviderList
			_ = h.client.List(ctx, &ps)
			worstHonest, bestLiar := int64(1000), int64(0)
			var s []string
			for _, p := range ps.Items {
				sc := score(&p)
				s = append(s, p.Name+"="+string(p.Status.Reputation.Score))
				if p.Name == "kim-1" || p.Name == "lou-1" {
					bestLiar = max(bestLiar, sc)
				} else {
					worstHonest = min(worstHonest, sc)
				}
			}
			return h.provider(t, "lou-1").Status.Reputation.VerificationsFailed == 1 && bestLiar < worstHonest, strings.Join(s, " ")
		})

		// Each dissent is in the ledger too: kim twice, lou once, nobody else.
		hubenv.Await(t, 30*time.Second, "the dissents recorded in the ledger", func() (bool, string) {
			store := &ledgerstore.Store{Client: h.client, Reader: h.client, Namespace: flotillav1.SystemNamespace}
			entries, err := store.Load(ctx)
			if err != nil {
				return false, err.Error()
			}
			disputes := map[string]int{}
			for _, e := range entries {
				if e.Kind == ledger.Dispute {
					disputes[e.To]++
				}
			}
			return len(disputes) == 2 && disputes["provider:kim-1"] == 2 && disputes["provider:lou-1"] == 1, fmt.Sprint(disputes)
		})
	})
}
