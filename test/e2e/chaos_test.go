package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/keys"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/internal/market"
	"github.com/flotilla-dev/flotilla/internal/money"
	"github.com/flotilla-dev/flotilla/test/hubenv"
	"github.com/flotilla-dev/flotilla/test/testbed"
)

// The chaos run's length and seed: FLOTILLA_CHAOS_STEPS (default 6, a few
// minutes; `make chaos-soak` runs 60) and FLOTILLA_CHAOS_SEED (default: the
// time). A failing run prints its seed; run it again with that seed.
func chaosSettings(t *testing.T) (steps int, seed uint64) {
	steps, seed = 6, uint64(time.Now().UnixNano())
	if s := os.Getenv("FLOTILLA_CHAOS_STEPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("FLOTILLA_CHAOS_STEPS=%q: %v", s, err)
		}
		steps = n
	}
	if s := os.Getenv("FLOTILLA_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FLOTILLA_CHAOS_SEED=%q: %v", s, err)
		}
		seed = n
	}
	return steps, seed
}

// TestChaos runs a seeded sequence of faults against a local federation
// with the manager and agents as processes: provider stops and freezes,
// one-way partitions (the hub cannot reach a provider whose agent still
// heartbeats), agent stops, and manager kills. After each fault heals and
// the federation settles it checks the invariants: no more replicas
// running than asked, no Lease charged for time the hub did not observe,
// balances conserved in a ledger that verifies, no Offer booked past its
// capacity.
func TestChaos(t *testing.T) {
	steps, seed := chaosSettings(t)
	t.Logf("chaos seed %d, %d steps (replay: FLOTILLA_CHAOS_SEED=%d FLOTILLA_CHAOS_STEPS=%d go test -run TestChaos ./test/e2e/)", seed, steps, seed, steps)
	defer func() {
		if t.Failed() {
			t.Logf("chaos FAILED with seed %d: replay with FLOTILLA_CHAOS_SEED=%d FLOTILLA_CHAOS_STEPS=%d", seed, seed, steps)
		}
	}()
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	nodes := []localfed.NodeSet{{Count: 2, CPU: "4", Memory: "8Gi"}}
	fed := testbed.NewForTest(t, localfed.Options{Providers: []localfed.ProviderSpec{
		{Name: "alice-1", Owner: "alice", Region: "eu-west", Nodes: nodes},
		{Name: "bob-1", Owner: "bob", Region: "us-east", Nodes: nodes},
		{Name: "carol-1", Owner: "carol", Region: "eu-west", Nodes: nodes},
	}})
	h := installHub(t, fed)
	c := &chaos{t: t, h: h, proxies: map[string]*cutProxy{}, agents: map[string]*chaosAgent{}, down: map[string][]span{}}
	c.startManager()
	for _, p := range fed.Providers {
		cs, err := p.Clientset(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		h.providers[p.Name] = cs
		c.join(p)
	}
	h.awaitProvidersReady(t, 3, 120*time.Second)
	h.tenant(t, "chaos", "1000")
	for _, w := range []struct {
		name     string
		replicas int32
		spread   int32
	}{{"web", 4, 2}, {"api", 2, 1}} {
		wl := newWorkload("chaos", w.name, flotillav1.ClassService, w.replicas)
		wl.Spec.Placement.MaxReplicasPerProvider = ptr.To(w.spread)
		wl.Spec.Failover.GracePeriodSeconds = ptr.To[int32](2)
		mustCreate(t, h.client, wl)
	}
	c.settle("start")
	c.check("start")

	faults := []string{"stop", "freeze", "partition", "agent", "manager"}
	providers := []string{"alice-1", "bob-1", "carol-1"}
	for step := 1; step <= steps && !t.Failed(); step++ {
		fault := faults[rng.IntN(len(faults))]
		victim := providers[rng.IntN(len(providers))]
		hold := time.Duration(2+rng.IntN(9)) * time.Second // below and above the 4 s grace period
		killManagerToo := fault != "manager" && rng.IntN(4) == 0
		name := fmt.Sprintf("step %d: %s %s for %s", step, fault, victim, hold)
		if fault == "manager" {
			name = fmt.Sprintf("step %d: kill the manager for %s", step, hold)
		} else if killManagerToo {
			name += ", killing the manager meanwhile"
		}
		t.Log(name)
		c.fault(fault, victim, hold, killManagerToo)
		c.settle(name)
		c.check(name)
	}
}

type span struct{ from, to time.Time }

type chaos struct {
	t       *testing.T
	h       *hub
	proxies map[string]*cutProxy
	agents  map[string]*chaosAgent

	manager     *exec.Cmd
	managerLogs *lockedBuffer
	managerDown []span
	down        map[string][]span // when the hub could not reach each provider
}

// startManager runs the manager binary against the hub, with short grace
// periods so that faults longer than a few seconds fail work over.
func (c *chaos) startManager() {
	bin, err := buildManager()
	if err != nil {
		c.t.Fatal(err)
	}
	c.managerLogs = &lockedBuffer{}
	cmd := exec.Command(bin, "--hub-id="+joinHubID, "--provider-grace-period=4s", "--probe-interval=500ms", "--settlement-interval=2s",
		"--fee-bps=250", "--flap-hold-down=1s", "--flap-max-hold-down=4s", "--metrics-bind-address=0", "--health-probe-bind-address=0")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.h.fed.Hub.Kubeconfig)
	cmd.Stdout, cmd.Stderr = c.managerLogs, c.managerLogs
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.manager = cmd
	c.t.Cleanup(func() {
		c.killManager()
		if c.t.Failed() {
			out := c.managerLogs.String()
			c.t.Logf("manager (last lines):\n%s", out[max(0, len(out)-6000):])
		}
	})
}

// killManager kills the manager with SIGKILL: no graceful shutdown.
func (c *chaos) killManager() {
	if c.manager == nil {
		return
	}
	_ = c.manager.Process.Signal(syscall.SIGKILL)
	_ = c.manager.Wait()
	c.manager = nil
}

// join issues a join credential recording a proxy in front of the
// provider's API server as its address, installs the chart, and runs the
// agent, which reaches its own cluster and the hub directly.
func (c *chaos) join(p *localfed.Cluster) {
	real, err := p.APIServerURL()
	if err != nil {
		c.t.Fatal(err)
	}
	px := newCutProxy(c.t, strings.TrimPrefix(real, "https://"))
	c.proxies[p.Name] = px
	jp := joinProviderVia(c.t, c.h, p, p.Spec.Region, "https://"+px.addr)
	c.agents[p.Name] = &chaosAgent{start: jp.restartAgent, stop: jp.stopAgent}
}

// fault applies one fault, waits hold, and heals it.
func (c *chaos) fault(kind, victim string, hold time.Duration, killManager bool) {
	ctx := context.Background()
	p := c.h.fed.Provider(victim)
	from := time.Now()
	var heal func()
	switch kind {
	case "stop":
		if err := p.Stop(ctx); err != nil {
			c.t.Fatal(err)
		}
		heal = func() {
			if err := p.Start(ctx); err != nil {
				c.t.Fatal(err)
			}
		}
	case "freeze":
		if err := p.Freeze(); err != nil {
			c.t.Fatal(err)
		}
		heal = func() {
			if err := p.Thaw(); err != nil {
				c.t.Fatal(err)
			}
		}
	case "partition":
		c.proxies[victim].cut(true)
		heal = func() { c.proxies[victim].cut(false) }
	case "agent":
		c.agents[victim].stop()
		heal = c.agents[victim].start
	case "manager":
		c.killManager()
		time.Sleep(hold)
		c.startManager()
		c.managerDown = append(c.managerDown, span{from, time.Now()})
		return
	}
	if killManager {
		time.Sleep(hold / 2)
		mfrom := time.Now()
		c.killManager()
		time.Sleep(hold / 2)
		c.startManager()
		c.managerDown = append(c.managerDown, span{mfrom, time.Now()})
	} else {
		time.Sleep(hold)
	}
	heal()
	if kind != "agent" {
		c.down[victim] = append(c.down[victim], span{from, time.Now()})
	}
}

// settle waits until every provider is Ready, every Workload Ready with
// exactly its replicas leased and running, and no namespace left over.
func (c *chaos) settle(after string) {
	ctx := context.Background()
	hubenv.Await(c.t, 240*time.Second, "the federation settled after "+after, func() (bool, string) {
		var ps flotillav1.ProviderList
		if err := c.h.client.List(ctx, &ps); err != nil {
			return false, err.Error()
		}
		for _, p := range ps.Items {
			if p.Status.Phase != flotillav1.ProviderReady {
				return false, p.Name + " is " + string(p.Status.Phase)
			}
		}
		var ws flotillav1.WorkloadList
		if err := c.h.client.List(ctx, &ws, client.InNamespace("chaos")); err != nil {
			return false, err.Error()
		}
		for i := range ws.Items {
			w := &ws.Items[i]
			if !ready(w) || w.Status.ReadyReplicas != w.Spec.Replicas {
				return false, fmt.Sprintf("%s: %s, %d of %d ready", w.Name, w.Status.Phase, w.Status.ReadyReplicas, w.Spec.Replicas)
			}
		}
		running, orphans, err := c.runningPerWorkload()
		if err != nil {
			return false, err.Error()
		}
		for i := range ws.Items {
			if w := &ws.Items[i]; running[w.Name] != int(w.Spec.Replicas) {
				return false, fmt.Sprintf("%s: %d pods running for %d replicas", w.Name, running[w.Name], w.Spec.Replicas)
			}
		}
		if orphans > 0 {
			return false, fmt.Sprintf("%d pods of no live Lease still running", orphans)
		}
		return true, ""
	})
}

// runningPerWorkload counts Running pods on every provider by the
// Workload of their live Lease; orphans are pods of no live Lease.
func (c *chaos) runningPerWorkload() (map[string]int, int, error) {
	ctx := context.Background()
	var ls flotillav1.LeaseList
	if err := c.h.client.List(ctx, &ls, client.InNamespace("chaos")); err != nil {
		return nil, 0, err
	}
	workloadOf := map[string]string{}
	for _, l := range ls.Items {
		if l.Status.Phase != flotillav1.LeaseClosed && l.DeletionTimestamp == nil {
			workloadOf[string(l.UID)] = l.Spec.WorkloadRef.Name
		}
	}
	running, orphans := map[string]int{}, 0
	for name, cs := range c.h.providers {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		pods, err := cs.CoreV1().Pods("").List(cctx, metav1.ListOptions{LabelSelector: flotillav1.LabelManaged + "=true"})
		cancel()
		if err != nil {
			return nil, 0, fmt.Errorf("listing pods on %s: %w", name, err)
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
				continue
			}
			if w, ok := workloadOf[p.Labels[flotillav1.LabelLease]]; ok {
				running[w]++
			} else {
				orphans++
			}
		}
	}
	return running, orphans, nil
}

// check asserts the invariants on the settled federation.
func (c *chaos) check(after string) {
	t, ctx := c.t, context.Background()
	running, orphans, err := c.runningPerWorkload()
	if err != nil {
		t.Fatal(err)
	}
	var ws flotillav1.WorkloadList
	if err := c.h.client.List(ctx, &ws, client.InNamespace("chaos")); err != nil {
		t.Fatal(err)
	}
	for _, w := range ws.Items {
		if running[w.Name] > int(w.Spec.Replicas) || orphans > 0 {
			t.Errorf("%s: %s runs %d pods for %d replicas (%d orphans)", after, w.Name, running[w.Name], w.Spec.Replicas, orphans)
		}
	}
	var ls flotillav1.LeaseList
	if err := c.h.client.List(ctx, &ls); err != nil {
		t.Fatal(err)
	}
	c.checkCharges(after, ls.Items)
	c.checkBooking(after, ls.Items)
	c.checkLedger(after)
}

// checkCharges: a Lease is never charged for more than its replicas ran
// while the hub could observe them, that is outside the times its
// provider was unreachable and the manager was down (with a few seconds
// per interruption for the hub's sync period).
func (c *chaos) checkCharges(after string, leases []flotillav1.Lease) {
	now := time.Now()
	for _, l := range leases {
		if l.Status.Usage.MeteredUntil == nil {
			continue
		}
		from, to := l.CreationTimestamp.Time, l.Status.Usage.MeteredUntil.Time.Add(time.Second)
		observable := to.Sub(from)
		interruptions := 1
		for _, s := range append(c.down[l.Spec.ProviderRef.Name], c.managerDown...) {
			if o := overlap(s, from, to); o > 0 {
				observable -= o
				interruptions++
			}
		}
		limit := int64(l.Spec.Replicas) * (int64(max(observable, 0)/time.Second) + 5*int64(interruptions))
		if got := l.Status.Usage.ReplicaSeconds; got > limit {
			c.t.Errorf("%s: lease %s charged %d replica-seconds, more than its %d replicas could run while observed (%s of %s, limit %d)",
				after, l.Name, got, l.Spec.Replicas, observable.Round(time.Second), now.Sub(from).Round(time.Second), limit)
		}
	}
}

func overlap(s span, from, to time.Time) time.Duration {
	lo, hi := s.from, s.to
	if from.After(lo) {
		lo = from
	}
	if to.Before(hi) {
		hi = to
	}
	return max(hi.Sub(lo), 0)
}

// checkBooking: no Offer holds live Leases beyond what it sells.
func (c *chaos) checkBooking(after string, leases []flotillav1.Lease) {
	var offers flotillav1.OfferList
	if err := c.h.client.List(context.Background(), &offers); err != nil {
		c.t.Fatal(err)
	}
	used := map[string]market.Vector{}
	for _, l := range leases {
		if l.Status.Phase == flotillav1.LeaseClosed || l.DeletionTimestamp != nil {
			continue
		}
		k := l.Spec.OfferRef.Namespace + "/" + l.Spec.OfferRef.Name
		per := market.FromList(l.Spec.ResourcesPerReplica)
		u := used[k]
		for r := range u {
			u[r] += per[r] * int64(l.Spec.Replicas)
		}
		used[k] = u
	}
	for _, o := range offers.Items {
		have := market.FromList(o.Spec.Resources)
		u := used[o.Namespace+"/"+o.Name]
		for _, r := range []market.Resource{market.CPU, market.Memory} {
			if u[r] > have[r] {
				c.t.Errorf("%s: offer %s/%s holds %d %s in live leases, more than the %d it sells", after, o.Namespace, o.Name, u[r], r, have[r])
			}
		}
	}
}

// checkLedger: the stored ledger verifies against the published head and
// the hub's key, and the balances it implies sum to what was deposited.
func (c *chaos) checkLedger(after string) {
	ctx := context.Background()
	var key corev1.Secret
	if err := c.h.client.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: ledgerstore.KeySecret}, &key); err != nil {
		c.t.Fatal(err)
	}
	pub := ed25519.PublicKey(key.Data[keys.PublicKey])
	var entries []ledger.Entry
	var head ledger.Head
	hubenv.Await(c.t, 20*time.Second, "a consistent read of the ledger", func() (bool, string) {
		var err error
		if head, err = ledgerstore.ReadHead(ctx, c.h.client); err != nil {
			return false, err.Error()
		}
		store := &ledgerstore.Store{Client: c.h.client, Reader: c.h.client, Namespace: flotillav1.SystemNamespace}
		if entries, err = store.Load(ctx); err != nil {
			return false, err.Error()
		}
		// The head is written after the entries: read it first, and use
		// the entries it covers.
		if len(entries) < int(head.Entries) {
			return false, fmt.Sprintf("%d entries, head covers %d", len(entries), head.Entries)
		}
		entries = entries[:int(head.Entries)]
		return true, ""
	})
	if err := ledger.Verify(entries, pub, head.Hash); err != nil {
		c.t.Errorf("%s: the ledger does not verify: %v", after, err)
		return
	}
	bal, err := ledger.Balances(entries)
	if err != nil {
		c.t.Errorf("%s: %v", after, err)
		return
	}
	var total, deposited money.Micro
	for acct, v := range bal {
		total += v
		if v < 0 {
			c.t.Errorf("%s: account %s is negative: %s", after, acct, v)
		}
	}
	for _, e := range entries {
		if e.Kind == ledger.Deposit {
			deposited += e.Amount
		}
	}
	if total != deposited {
		c.t.Errorf("%s: balances sum to %s, deposits to %s", after, total, deposited)
	}
}

// cutProxy forwards TCP to a provider's API server until cut; cut, it
// closes every connection and refuses new ones, while the agent, which
// reaches its cluster directly, carries on.
type cutProxy struct {
	addr   string
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: ln.Addr().String(), target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { _ = ln.Close(); p.cut(true) })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(in)
		}
	}()
	return p
}

func (p *cutProxy) serve(in net.Conn) {
	p.mu.Lock()
	down := p.down
	if !down {
		p.conns[in] = true
	}
	p.mu.Unlock()
	if down {
		_ = in.Close()
		return
	}
	out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = in.Close()
		return
	}
	p.mu.Lock()
	p.conns[out] = true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(out, in); _ = out.Close() }()
	_, _ = io.Copy(in, out)
	_ = in.Close()
	p.mu.Lock()
	delete(p.conns, in)
	delete(p.conns, out)
	p.mu.Unlock()
}

func (p *cutProxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
	}
}

type chaosAgent struct{ start, stop func() }

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
