package agent

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
)

// WitnessConfigMap is where the agent keeps, on its own cluster, the last
// ledger head of the hub it accepted and its verdict (one per hub, named
// by the chart, when the cluster serves several). The hub cannot touch
// it. Deleting it is how an owner accepts a hub's new key or new books.
const WitnessConfigMap = "flotilla-ledger-witness"

// Witness verdicts, in the ConfigMap's "status" and "reason".
const (
	WitnessConsistent = "Consistent"
	WitnessDiverged   = "Diverged"
	// ReasonLedgerDiverged refuses new Assignments from a hub whose ledger
	// no longer extends what the agent saw.
	ReasonLedgerDiverged = "LedgerDiverged"
)

var (
	witnessChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flotilla_agent_ledger_witness_checks_total",
		Help: "Looks at a hub's published ledger head, by hub and result (consistent, diverged, error).",
	}, []string{"hub", "result"})
	witnessDiverged = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flotilla_agent_ledger_diverged",
		Help: "1 while a hub's ledger does not extend the head this agent last accepted: it takes no new work from that hub.",
	}, []string{"hub"})
)

// Metrics are the agent's collectors, for its metrics endpoint.
func Metrics() []prometheus.Collector { return []prometheus.Collector{witnessChecks, witnessDiverged} }

// witnessState is what the ConfigMap holds.
type witnessState struct {
	pinned ed25519.PublicKey
	seen   ledger.Seen
	// diverged is why, once the hub's ledger stopped extending seen.
	diverged string
	rv       string
	// since: when the verdict last changed.
	since metav1.Time
	was   string
}

// ConditionLedgerConsistent is the condition the witness ConfigMap holds
// (key "condition", JSON): True while the hub's ledger extends what the
// agent accepted, False with reason LedgerDiverged once it does not.
const ConditionLedgerConsistent = "LedgerConsistent"

// Diverged says why the agent stopped taking work from its hub, or "".
func (a *Agent) Diverged() string {
	if p := a.diverged.Load(); p != nil {
		return *p
	}
	return ""
}

// Witness looks at the hub's published ledger head once: it must be
// signed with the pinned key and extend the last head accepted through the
// index published since. A ledger truncated, rewritten or forked is
// recorded on this cluster (the ConfigMap's status, a Warning event, a
// metric) and stops new work from the hub until the owner deletes the
// ConfigMap.
func (a *Agent) Witness(ctx context.Context) error {
	hub := a.config().HubID
	st, err := a.loadWitness(ctx)
	if err != nil {
		witnessChecks.WithLabelValues(hub, "error").Inc()
		return err
	}
	if st.diverged != "" {
		a.diverged.Store(&st.diverged)
		witnessDiverged.WithLabelValues(hub).Set(1)
		return nil
	}
	pinned := st.pinned
	if k := a.config().HubLedgerPublicKey; pinned == nil && k != "" {
		// Pinned at join; without it, trusted on first use below.
		pinned, _ = ledger.ParsePublicKey(k) // checked by ParseConfig
	}
	head, err := ledgerstore.Observe(ctx, a.Hub, pinned, st.seen)
	if pinned == nil {
		pinned = head.PublicKey
	}
	var d *ledger.Divergence
	switch {
	case errors.As(err, &d):
		witnessChecks.WithLabelValues(hub, "diverged").Inc()
		witnessDiverged.WithLabelValues(hub).Set(1)
		why := bound.Message(d.Error())
		a.diverged.Store(&why)
		st.pinned, st.diverged = pinned, why
		a.Log.Error(err, "The hub's ledger no longer extends the head this agent accepted; taking no new work from it")
		if err := a.saveWitness(ctx, st); err != nil {
			return err
		}
		a.event(ctx, ReasonLedgerDiverged, why)
		return nil
	case err != nil:
		witnessChecks.WithLabelValues(hub, "error").Inc()
		return fmt.Errorf("witnessing the hub's ledger: %w", err)
	}
	witnessChecks.WithLabelValues(hub, "consistent").Inc()
	witnessDiverged.WithLabelValues(hub).Set(0)
	next := ledger.Seen{Entries: head.Entries, Hash: head.Hash, Witness: head.Witness}
	if next == st.seen && st.pinned != nil {
		return nil
	}
	st.pinned, st.seen = pinned, next
	return a.saveWitness(ctx, st)
}

func (a *Agent) witnessName() string {
	if n := a.config().WitnessConfigMap; n != "" {
		return n
	}
	return WitnessConfigMap
}

func (a *Agent) loadWitness(ctx context.Context) (*witnessState, error) {
	cm, err := a.Local.CoreV1().ConfigMaps(a.Namespace).Get(ctx, a.witnessName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return &witnessState{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", a.witnessName(), err)
	}
	st := &witnessState{rv: cm.ResourceVersion}
	d := cm.Data
	if d["publicKey"] != "" {
		if st.pinned, err = ledger.ParsePublicKey(d["publicKey"]); err != nil {
			return nil, fmt.Errorf("%s: publicKey: %w; delete it to pin the hub's key again", a.witnessName(), err)
		}
	}
	if d["entries"] != "" {
		if st.seen.Entries, err = strconv.ParseUint(d["entries"], 10, 64); err != nil {
			return nil, fmt.Errorf("%s: entries: %w", a.witnessName(), err)
		}
		if st.seen.Hash, err = ledger.ParseHash(d["head"]); err != nil {
			return nil, fmt.Errorf("%s: head: %w", a.witnessName(), err)
		}
		if st.seen.Witness, err = ledger.ParseHash(d["witness"]); err != nil {
			return nil, fmt.Errorf("%s: witness: %w", a.witnessName(), err)
		}
	}
	if d["status"] == WitnessDiverged {
		st.diverged = d["message"]
	}
	var c metav1.Condition
	if json.Unmarshal([]byte(d["condition"]), &c) == nil {
		st.since, st.was = c.LastTransitionTime, string(c.Status)
	}
	return st, nil
}

func (a *Agent) saveWitness(ctx context.Context, st *witnessState) error {
	status, reason, msg := WitnessConsistent, "HeadExtended", "the hub's ledger extends every head this agent accepted"
	cond := metav1.ConditionTrue
	if st.diverged != "" {
		status, reason, msg, cond = WitnessDiverged, ReasonLedgerDiverged, st.diverged, metav1.ConditionFalse
	}
	if st.was != string(cond) {
		st.since, st.was = metav1.Now(), string(cond)
	}
	c, err := json.Marshal(metav1.Condition{Type: ConditionLedgerConsistent, Status: cond, Reason: reason, Message: msg, LastTransitionTime: st.since})
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: a.witnessName(), Namespace: a.Namespace, ResourceVersion: st.rv},
		Data: map[string]string{
			"publicKey": base64.StdEncoding.EncodeToString(st.pinned),
			"entries":   strconv.FormatUint(st.seen.Entries, 10),
			"head":      st.seen.Hash.String(),
			"witness":   st.seen.Witness.String(),
			"status":    status, "reason": reason, "message": msg,
			"time":      time.Now().UTC().Format(time.RFC3339),
			"condition": string(c),
		}}
	var out *corev1.ConfigMap
	if st.rv == "" {
		out, err = a.Local.CoreV1().ConfigMaps(a.Namespace).Create(ctx, cm, metav1.CreateOptions{})
	} else {
		out, err = a.Local.CoreV1().ConfigMaps(a.Namespace).Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", a.witnessName(), err)
	}
	st.rv = out.ResourceVersion
	return nil
}

// event records a Warning on the witness ConfigMap, on the provider's own
// cluster, where its owner looks.
func (a *Agent) event(ctx context.Context, reason, msg string) {
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: a.witnessName() + ".", Namespace: a.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "ConfigMap", APIVersion: "v1", Namespace: a.Namespace, Name: a.witnessName()},
		Reason:         reason, Message: bound.Message(msg), Type: corev1.EventTypeWarning,
		FirstTimestamp: now, LastTimestamp: now, Count: 1, Source: corev1.EventSource{Component: UserAgent},
	}
	if _, err := a.Local.CoreV1().Events(a.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		a.Log.Error(err, "Recording the ledger divergence as an event")
	}
}
