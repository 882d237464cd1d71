package hostile

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/render"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// reachable returns the Provider's Reachable condition once it has one
// with the reason.
func awaitReachable(t *testing.T, name, reason string) *metav1.Condition {
	t.Helper()
	var c *metav1.Condition
	hubenv.Await(t, 20*time.Second, name+" Reachable reason "+reason, func() (bool, string) {
		p := get(t, &flotillav1.Provider{}, "", name)
		c = apimeta.FindStatusCondition(p.Status.Conditions, flotillav1.ProviderReachable)
		return c != nil && c.Reason == reason, fmt.Sprintf("%+v", c)
	})
	return c
}

// registerProvider registers a provider with its kubeconfig Secret and the
// API server URL the administrator recorded.
func registerProvider(t *testing.T, name, recorded string, kc []byte) {
	t.Helper()
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.SystemNamespace}})
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-kubeconfig", Namespace: flotillav1.SystemNamespace},
		Data: map[string][]byte{"kubeconfig": kc}})
	create(t, &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: flotillav1.ProviderSpec{
		Owner: name, APIServerURL: recorded, KubeconfigSecretRef: &flotillav1.SecretKeyReference{Name: name + "-kubeconfig"}}})
	forgetProvider(t, name)
}

// TestKubeconfigIsReadNotRun plays providers handing the hub kubeconfigs
// that would run a command on the hub, send its requests elsewhere, or
// flood its status with a server's error page.
func TestKubeconfigIsReadNotRun(t *testing.T) {
	startHub(t, "kc", nil)
	marker := filepath.Join(t.TempDir(), "pwned")

	// P1.exec-plugin: the command never runs; the condition names the field.
	registerProvider(t, "kc-exec", env.Config.Host, kubeconfig(t, env.Config.Host, func(c *clientcmdapi.Config) {
		c.AuthInfos["u"] = &clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{APIVersion: "client.authentication.k8s.io/v1",
			Command: "/bin/sh", Args: []string{"-c", "touch " + marker}, InteractiveMode: clientcmdapi.NeverExecInteractiveMode}}
	}))
	c := awaitReachable(t, "kc-exec", "KubeconfigRefused")
	if !strings.Contains(c.Message, "users[0].user.exec") {
		t.Errorf("P1.exec-plugin: the condition does not name the field: %q", c.Message)
	}

	// P1.other-server: a kubeconfig naming a server the administrator did
	// not record is refused, whatever its credentials.
	registerProvider(t, "kc-elsewhere", "https://provider.example:6443", kubeconfig(t, env.Config.Host, nil))
	c = awaitReachable(t, "kc-elsewhere", "APIServerMismatch")
	if !strings.Contains(c.Message, "https://provider.example:6443") {
		t.Errorf("P1.other-server: the condition does not say what was recorded: %q", c.Message)
	}

	// P1.long-error: a "server" answering with a huge error page; the
	// status still gets written, with the text cut.
	page := strings.Repeat("<h1>not an API server</h1>\n", 40000)
	evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte(page))
	}))
	defer evil.Close()
	registerProvider(t, "kc-noisy", evil.URL, kubeconfig(t, evil.URL, func(c *clientcmdapi.Config) {
		c.Clusters["c"].CertificateAuthorityData = pemOf(evil.Certificate().Raw)
	}))
	hubenv.Await(t, 20*time.Second, "kc-noisy's probe failure in status", func() (bool, string) {
		p := get(t, &flotillav1.Provider{}, "", "kc-noisy")
		c := apimeta.FindStatusCondition(p.Status.Conditions, flotillav1.ProviderReachable)
		return c != nil && c.Status == metav1.ConditionFalse && len(c.Message) > 0, fmt.Sprintf("%+v", c)
	})
	p := get(t, &flotillav1.Provider{}, "", "kc-noisy")
	for _, c := range p.Status.Conditions {
		if len(c.Message) > bound.MaxMessage || strings.Contains(c.Message, "\n") {
			t.Errorf("P1.long-error: condition %s holds %d bytes of the provider's text", c.Type, len(c.Message))
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("P1.exec-plugin: the provider's command ran on the hub")
	}
}

// TestHeartbeatDoesNotOutrankReality plays an agent that heartbeats with a
// time far in the future while the hub cannot reach its cluster: the
// provider is Lost after the grace period all the same, and the time the
// hub shows is its own.
func TestHeartbeatDoesNotOutrankReality(t *testing.T) {
	startHub(t, "hb", nil)
	for id, cut := range map[string]func(*clientcmdapi.Config){
		// One-way partition: the hub can no longer reach the provider's API
		// server (its kubeconfig names a dead address), while the agent
		// heartbeats on.
		"P3.future-heartbeat": func(c *clientcmdapi.Config) { c.Clusters["c"].Server = "https://127.0.0.1:1" },
		// The owner revoked the federation token, the documented way to
		// leave, and the agent still runs.
		"P3.revoked-token": func(c *clientcmdapi.Config) {
			c.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "revoked"}
		},
	} {
		t.Run(id, func(t *testing.T) {
			name := "hb-" + strings.TrimPrefix(id, "P3.")
			provider(t, name, "hb", nil)
			hubenv.Await(t, 20*time.Second, name+" Ready", func() (bool, string) {
				p := get(t, &flotillav1.Provider{}, "", name)
				return p.Status.Phase == flotillav1.ProviderReady, string(p.Status.Phase)
			})
			hb := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "provider-" + name, Namespace: flotillav1.SystemNamespace},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("agent"), RenewTime: ptr.To(metav1.NewMicroTime(time.Now().Add(365 * 24 * time.Hour)))}}
			create(t, hb)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			go func() { // the agent keeps renewing, always a year ahead
				for ctx.Err() == nil {
					l := &coordinationv1.Lease{}
					if env.Client.Get(ctx, client.ObjectKeyFromObject(hb), l) == nil {
						l.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now().Add(365 * 24 * time.Hour)))
						_ = env.Client.Update(ctx, l)
					}
					time.Sleep(300 * time.Millisecond)
				}
			}()
			s := get(t, &corev1.Secret{}, flotillav1.SystemNamespace, name+"-kubeconfig")
			s.Data["kubeconfig"] = kubeconfig(t, env.Config.Host, cut)
			if err := env.Client.Update(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			from := time.Now()
			hubenv.Await(t, 15*time.Second, id+": "+name+" Lost while its agent heartbeats", func() (bool, string) {
				p := get(t, &flotillav1.Provider{}, "", name)
				return p.Status.Phase == flotillav1.ProviderLost, string(p.Status.Phase)
			})
			p := get(t, &flotillav1.Provider{}, "", name)
			if hbt := p.Status.LastHeartbeatTime; hbt == nil || hbt.After(time.Now().Add(time.Minute)) {
				t.Errorf("%s: lastHeartbeatTime %v is the agent's clock, not the hub's", id, hbt)
			}
			if took := time.Since(from); took < 2*time.Second {
				t.Errorf("%s: Lost %s after the cut, before the 3s grace period", id, took)
			}
		})
	}
}

// TestRunningPodsAreChargedUntilTheDeadline plays a provider that binds a
// Lease's pods to nodes but never lets them turn ready, and reports more
// pods than were leased: it is paid for what it ran (at most what was
// leased) and only until the progress deadline closes the Lease, whose
// replicas are then placed again under a new epoch.
func TestRunningPodsAreChargedUntilTheDeadline(t *testing.T) {
	startHub(t, "run", nil)
	tenant(t, "runner", "100")
	provider(t, "run-1", "run", nil)
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: "runner"}, Data: map[string]string{"k": "v"}})
	w := workload("runner", "stuck", "run")
	w.Spec.ProgressDeadlineSeconds = ptr.To[int32](30)
	w.Spec.Template.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}}
	create(t, w)
	var l flotillav1.Lease
	hubenv.Await(t, 20*time.Second, "the Lease Active on run-1", func() (bool, string) {
		ls := leasesOf(t, "runner", "stuck")
		if len(ls) == 1 {
			l = ls[0]
		}
		return len(ls) == 1 && l.Status.Phase == flotillav1.LeaseActive, fmt.Sprint(len(ls), " leases ", l.Status.Phase)
	})
	ns := render.Namespace("run", l.UID)
	// The tenant's ConfigMap was read by reference and copied.
	if cm := (&corev1.ConfigMap{}); env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "settings"}, cm) != nil || cm.Data["k"] != "v" {
		t.Errorf("the referenced ConfigMap is not on the provider")
	}
	// The provider's admin drops the quota and runs three pods for one
	// leased replica, bound to a node, never ready.
	if err := env.Client.Delete(context.Background(), &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "lease", Namespace: ns}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("p", i), Namespace: ns, Labels: map[string]string{flotillav1.LabelLease: string(l.UID)}},
			Spec: corev1.PodSpec{NodeName: "node-run-1", SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
				Containers: []corev1.Container{{Name: "app", Image: "i", SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}}}}
		create(t, pod)
		pod.Status.Phase = corev1.PodRunning
		if err := env.Client.Status().Update(context.Background(), pod); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	hubenv.Await(t, 10*time.Second, "P4.lying-counts: one running replica charged, not three", func() (bool, string) {
		got := get(t, &flotillav1.Lease{}, "runner", l.Name)
		return got.Status.RunningReplicas == 1 && got.Status.ReadyReplicas == 0, fmt.Sprintf("running %d ready %d", got.Status.RunningReplicas, got.Status.ReadyReplicas)
	})
	var closed *flotillav1.Lease
	hubenv.Await(t, 45*time.Second, "P4.bound-not-ready: the Lease closed at its progress deadline", func() (bool, string) {
		closed = get(t, &flotillav1.Lease{}, "runner", l.Name)
		return closed.Status.Outcome == flotillav1.OutcomeProgressDeadlineExceeded, fmt.Sprintf("%s %s", closed.Status.Phase, closed.Status.Outcome)
	})
	ran := time.Since(start).Seconds()
	rs := closed.Status.Usage.ReplicaSeconds
	if rs < 20 || float64(rs) > ran+2 {
		t.Errorf("P4.bound-not-ready: charged %d replica-seconds for one replica bound about %.0f s", rs, ran)
	}
	hubenv.Holds(t, 3*time.Second, "no charge after the Lease closed", func() (bool, string) {
		again := get(t, &flotillav1.Lease{}, "runner", l.Name).Status.Usage.ReplicaSeconds
		return again == rs, fmt.Sprintf("%d, then %d replica-seconds", rs, again)
	})
	hubenv.Await(t, 20*time.Second, "a replacement under a new epoch", func() (bool, string) {
		for _, x := range leasesOf(t, "runner", "stuck") {
			if x.Name != l.Name && x.Spec.Epoch > l.Spec.Epoch {
				return true, ""
			}
		}
		return false, fmt.Sprint(len(leasesOf(t, "runner", "stuck")), " leases")
	})
}

// TestRefusedObjectsBackOff plays a provider that refuses what the hub
// applies: the hub tries again less and less often, not every few
// seconds forever, and says why on the Lease.
func TestRefusedObjectsBackOff(t *testing.T) {
	startHub(t, "refuse", nil)
	tenant(t, "refused", "100")
	provider(t, "refuse-1", "refuse", nil)
	w := workload("refused", "bad", "refuse")
	// The hub's schema takes any container name; a provider's API server
	// refuses a Deployment whose container name is not a DNS label.
	w.Spec.Template.Spec.Containers[0].Name = "Not_A_Label"
	create(t, w)
	start := time.Now()
	var l flotillav1.Lease
	hubenv.Await(t, 60*time.Second, "the Lease failing to apply", func() (bool, string) {
		ls := leasesOf(t, "refused", "bad")
		if len(ls) == 1 {
			l = ls[0]
		}
		c := apimeta.FindStatusCondition(l.Status.Conditions, flotillav1.ConditionReady)
		return c != nil && c.Reason == "ApplyFailed" && l.Status.FailedSyncs >= 1, fmt.Sprintf("%+v", c)
	})
	time.Sleep(max(0, 30*time.Second-time.Since(start)))
	l = *get(t, &flotillav1.Lease{}, "refused", l.Name)
	// Every 3 s that would be 10 tries; waiting 3, 6, 12 s, about 4.
	if n := l.Status.FailedSyncs; n < 2 || n > 6 {
		t.Errorf("P8.apply-backoff: %d failed syncs in 30 s, want the waits to grow (about 4)", n)
	}
	if !strings.Contains(l.Status.LastError, "Not_A_Label") || len(l.Status.LastError) > bound.MaxMessage {
		t.Errorf("P8.apply-backoff: lastError %q does not say what the provider refused", l.Status.LastError)
	}
	if l.Status.ObservedGeneration == l.Generation {
		t.Errorf("observedGeneration %d claims the Lease's generation while its provider refuses it", l.Status.ObservedGeneration)
	}
}
