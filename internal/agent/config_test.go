package agent

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

func TestParseConfig(t *testing.T) {
	const ok = `{"hubID":"hub","provider":{"name":"a","owner":"o","apiServerURL":"https://a:6443"},
		"offer":{"prices":{"cpu":"0.01","memory":0.001},"reserve":{"cpu":1,"memory":"2Gi"},"classes":["Service"]},"heartbeatInterval":"5s"}`
	c, err := ParseConfig([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if c.heartbeat != 5*time.Second || c.refresh != 30*time.Second || c.witness != 2*time.Minute || c.Offer.Name != "standard" {
		t.Errorf("defaults: heartbeat %s refresh %s witness %s offer %q", c.heartbeat, c.refresh, c.witness, c.Offer.Name)
	}
	if c.prices["memory"] != "0.001" || c.prices["cpu"] != "0.01" {
		t.Errorf("prices %v: numbers and strings must both be read", c.prices)
	}
	if q := c.reserve["cpu"]; q.String() != "1" {
		t.Errorf("reserve cpu %s", q.String())
	}
	if c.Offer.Exposure != nil {
		t.Errorf("exposure %+v without any configured", c.Offer.Exposure)
	}
	if !slices.Equal(c.classes, []flotillav1.WorkloadClass{flotillav1.ClassService}) {
		t.Errorf("classes %v, want the configured Service", c.classes)
	}
	// No classes: the Offer CRD's default, so that what the agent writes
	// is what the hub stores.
	d, err := ParseConfig([]byte(strings.Replace(ok, `,"classes":["Service"]`, ``, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.classes, []flotillav1.WorkloadClass{flotillav1.ClassService, flotillav1.ClassBatch}) {
		t.Errorf("classes without any configured: %v, want Service and Batch", d.classes)
	}
	for in, want := range map[string]bool{`{}`: false, `{"type":"NodePort","address":"203.0.113.7"}`: true} {
		e, err := ParseConfig([]byte(strings.Replace(ok, `"classes"`, `"exposure":`+in+`,"classes"`, 1)))
		if err != nil || (e.Offer.Exposure != nil) != want {
			t.Errorf("exposure %s: %v, exposes %v", in, err, e != nil && e.Offer.Exposure != nil)
		}
	}
	p, err := ParseConfig([]byte(`{"provider":{"name":"a","owner":"o","mode":"Pull"}}`))
	if err != nil || !p.Pull() || p.pull != 2*time.Second {
		t.Errorf("pull mode without a URL: %v, pull %v every %s", err, p != nil && p.Pull(), p.pull)
	}
	if c.Pull() || c.Provider.Mode != "Push" {
		t.Errorf("mode defaults to %q", c.Provider.Mode)
	}
	for name, c := range map[string]struct{ in, want string }{
		"not json":                   {`{`, "config.json"},
		"no provider name":           {`{"provider":{"owner":"o","apiServerURL":"u"}}`, "provider.name"},
		"bad interval":               {strings.Replace(ok, `"5s"`, `"5 parsecs"`, 1), "agent.heartbeatInterval"},
		"witness interval too short": {strings.Replace(ok, `"heartbeatInterval"`, `"witnessInterval":"10ms","heartbeatInterval"`, 1), "agent.witnessInterval"},
		"too short":                  {strings.Replace(ok, `"5s"`, `"10ms"`, 1), "at least 1s"},
		"bad reserve":                {strings.Replace(ok, `"2Gi"`, `"lots"`, 1), "offer.reserve.memory"},
		"push without URL":           {`{"provider":{"name":"a","owner":"o"}}`, "provider.apiServerURL are required"},
		"pull with a URL":            {`{"provider":{"name":"a","owner":"o","mode":"Pull","apiServerURL":"https://a:6443"}}`, "must be empty in Pull mode"},
		"unknown mode":               {`{"provider":{"name":"a","owner":"o","mode":"pull"}}`, "neither Push nor Pull"},
		"bad pull interval":          {`{"provider":{"name":"a","owner":"o","mode":"Pull"},"pullInterval":"0s"}`, "agent.pullInterval"},
		"node port without address":  {strings.Replace(ok, `"classes"`, `"exposure":{"type":"NodePort","address":"my-host"},"classes"`, 1), "offer.exposure.address"},
		"ingress without domain":     {strings.Replace(ok, `"classes"`, `"exposure":{"type":"Ingress","ingressClassName":"nginx"},"classes"`, 1), "ingressClassName and domain"},
		"unknown exposure":           {strings.Replace(ok, `"classes"`, `"exposure":{"type":"HostPort"},"classes"`, 1), "offer.exposure.type"},
	} {
		if _, err := ParseConfig([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %q", name, err, c.want)
		}
	}
}

func TestParseConfigRefusesBadLedgerKey(t *testing.T) {
	for _, k := range []string{"not base64!", "c2hvcnQ=", strings.Repeat("A", 100)} {
		_, err := ParseConfig([]byte(`{"hubID":"hub","hubLedgerPublicKey":"` + k + `","provider":{"name":"a","owner":"o","mode":"Pull"}}`))
		if err == nil || !strings.Contains(err.Error(), "hubLedgerPublicKey") {
			t.Errorf("%q: %v", k, err)
		}
	}
}

// An agent whose hub's ledger diverged refuses new Assignments, whatever
// they carry, and keeps the ones it accepted before.
func TestDivergedAgentRefusesNewWork(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"hubID":"hub","provider":{"name":"a","owner":"o","mode":"Pull"}}`))
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{Log: logr.Discard(), Config: cfg}
	why := "the ledger diverges at entry 3"
	a.diverged.Store(&why)
	var accepted []*flotillav1.AssignmentSpec
	st, _ := a.admit(&flotillav1.Assignment{}, cfg, corev1.ResourceList{}, nil, nil, &accepted)
	if st.State != flotillav1.AssignmentRefused || st.Reason != ReasonLedgerDiverged || !strings.Contains(st.Message, why) {
		t.Errorf("a new assignment: %+v", st)
	}
	old := &flotillav1.Assignment{Status: flotillav1.AssignmentStatus{State: flotillav1.AssignmentAccepted}}
	if st, _ := a.admit(old, cfg, corev1.ResourceList{}, nil, nil, &accepted); st.Reason == ReasonLedgerDiverged {
		t.Errorf("an accepted assignment was refused: %+v", st)
	}
}

// The chart's hubs, as an owner (or a hand-edited ConfigMap) may get them
// wrong: each mistake is refused and named.
func TestParseConfigHubs(t *testing.T) {
	const base = `{"hubID":"hub","provider":{"name":"a","owner":"o","mode":"%s"},"hubs":%s}`
	ok := `[{"id":"eu1","joinSecret":"j1","federationTokenSecret":"f1"},{"id":"us1","joinSecret":"j2","federationTokenSecret":"f2","providerName":"a-us"}]`
	c, err := ParseConfig([]byte(fmt.Sprintf(base, "Pull", ok)))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.HubIDs(); !slices.Equal(got, []string{"eu1", "us1"}) {
		t.Errorf("hubs %v", got)
	}
	us, err := c.ForHub("us1")
	if err != nil || us.Provider.Name != "a-us" || us.HubID != "us1" || us.HubJoinSecret != "j2" || us.FederationTokenSecret != "f2" || len(us.Hubs) != 0 {
		t.Errorf("us1: %+v %v", us, err)
	}
	if _, err := c.ForHub("ap1"); err == nil {
		t.Error("a hub the cluster does not serve was configured")
	}
	for name, tc := range map[string]struct{ mode, hubs, want string }{
		"two hubs in Push mode": {"Push", ok, "Pull mode"},
		"a duplicate id":        {"Pull", `[{"id":"eu1","joinSecret":"j","federationTokenSecret":"f"},{"id":"eu1","joinSecret":"j","federationTokenSecret":"f"}]`, "unique"},
		"an id with capitals":   {"Pull", `[{"id":"EU1","joinSecret":"j","federationTokenSecret":"f"}]`, "hubs[0].id"},
		"an id too long":        {"Pull", `[{"id":"` + strings.Repeat("a", 21) + `","joinSecret":"j","federationTokenSecret":"f"}]`, "hubs[0].id"},
		"no join secret":        {"Pull", `[{"id":"eu1","federationTokenSecret":"f"}]`, "joinSecret"},
		"a bad ledger key":      {"Pull", `[{"id":"eu1","joinSecret":"j","federationTokenSecret":"f","ledgerPublicKey":"xyz"}]`, "ledgerPublicKey"},
		"one hub in Push mode":  {"Pull", `[{"id":"eu1","joinSecret":"j","federationTokenSecret":"f","mode":"Push"},{"id":"us1","joinSecret":"j","federationTokenSecret":"f"}]`, "Pull mode"},
	} {
		_, err := ParseConfig([]byte(fmt.Sprintf(base, tc.mode, tc.hubs)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, tc.want)
		}
	}
}
