package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/flap"
	"github.com/flotilla-dev/flotilla/internal/remote"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// kubeconfigFor serialises a kubeconfig reaching server with the test
// API server's credentials; a dead server stands for a provider that is down.
func kubeconfigFor(t *testing.T, server string) []byte {
	t.Helper()
	b, err := env.Kubeconfig(server)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pushOptions bend pushProvider's setup.
type pushOptions struct {
	// status, when set, is the Provider's status before the controller
	// starts: a previous manager's.
	status *flotillav1.ProviderStatus
	// wrap, when set, wraps the controller's client.
	wrap func(client.Client) client.Client
}

// pushProvider registers a Push-mode provider whose kubeconfig Secret holds
// kubeconfig, and runs r (its intervals and policies as given) in a
// manager of its own until the test ends. It returns the Secret and a
// getter of the Provider.
func pushProvider(t *testing.T, name string, kubeconfig []byte, r *ProviderReconciler, o pushOptions) (*corev1.Secret, func() *flotillav1.Provider) {
	t.Helper()
	ctx := context.Background()
	namespace(t, flotillav1.SystemNamespace)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-kubeconfig", Namespace: flotillav1.SystemNamespace},
		Data: map[string][]byte{"kubeconfig": kubeconfig}}
	if err := env.Client.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	p := &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: flotillav1.ProviderSpec{
		Owner: name, Region: "eu-west", APIServerURL: env.Config.Host, KubeconfigSecretRef: &flotillav1.SecretKeyReference{Name: sec.Name}}}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if o.status != nil {
		p.Status = *o.status
		if err := env.Client.Status().Update(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	mgr := newTestManager(t) // the manager's own cache options
	r.Client, r.Recorder, r.HubID, r.Now = mgr.GetClient(), mgr.GetEventRecorderFor("test"), name, time.Now
	if o.wrap != nil {
		r.Client = o.wrap(r.Client)
	}
	r.Remote = remote.NewCache(env.Scheme, remote.Options{RequestTimeout: time.Second})
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return sec, func() *flotillav1.Provider {
		got := &flotillav1.Provider{}
		_ = env.Client.Get(ctx, client.ObjectKey{Name: name}, got)
		return got
	}
}

// A provider that keeps getting Lost is held down, longer each time, before
// it takes work again; the first return is immediate.
func TestFlappingProviderIsHeldDown(t *testing.T) {
	ctx := context.Background()
	up, down := kubeconfigFor(t, env.Config.Host), kubeconfigFor(t, "https://127.0.0.1:1")
	sec, get := pushProvider(t, "flappy", up, &ProviderReconciler{GracePeriod: time.Second, ProbeInterval: 200 * time.Millisecond,
		Flap: flap.Policy{Window: time.Minute, Base: 3 * time.Second, Max: time.Minute}}, pushOptions{})
	setKubeconfig := func(kc []byte) {
		t.Helper()
		s := &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(sec), s); err != nil {
			t.Fatal(err)
		}
		s.Data["kubeconfig"] = kc
		if err := env.Client.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	awaitPhase := func(phase flotillav1.ProviderPhase, within time.Duration) *flotillav1.Provider {
		t.Helper()
		var got *flotillav1.Provider
		hubenv.Await(t, within, "provider "+string(phase), func() (bool, string) {
			got = get()
			return got.Status.Phase == phase, fmt.Sprintf("%s %+v", got.Status.Phase, got.Status.Conditions)
		})
		return got
	}

	awaitPhase(flotillav1.ProviderReady, 10*time.Second)
	setKubeconfig(down)
	if got := awaitPhase(flotillav1.ProviderLost, 10*time.Second); got.Status.RecentLosses != 1 {
		t.Errorf("after the first loss recentLosses = %d, want 1", got.Status.RecentLosses)
	}
	setKubeconfig(up)
	// First return: no hold-down.
	if got := awaitPhase(flotillav1.ProviderReady, 5*time.Second); got.Status.ReadmitTime != nil {
		t.Errorf("readmitTime set after a single loss: %v", got.Status.ReadmitTime)
	}

	setKubeconfig(down)
	if got := awaitPhase(flotillav1.ProviderLost, 10*time.Second); got.Status.RecentLosses != 2 {
		t.Errorf("after the second loss recentLosses = %d, want 2", got.Status.RecentLosses)
	}
	setKubeconfig(up)
	back := time.Now()
	held := awaitPhase(flotillav1.ProviderPending, 5*time.Second)
	ready := apimeta.FindStatusCondition(held.Status.Conditions, flotillav1.ConditionReady)
	if ready == nil || ready.Reason != flotillav1.ProviderReasonBackingOff || held.Status.ReadmitTime == nil {
		t.Fatalf("returning flapper: Ready %+v, readmitTime %v; want reason %s and a readmit time", ready, held.Status.ReadmitTime, flotillav1.ProviderReasonBackingOff)
	}
	if d := held.Status.ReadmitTime.Sub(back); d < 2*time.Second || d > 5*time.Second {
		t.Errorf("readmitTime %s after the return, want about the 3s hold-down", d)
	}
	awaitPhase(flotillav1.ProviderReady, 10*time.Second)
	if time.Since(back) < 2*time.Second {
		t.Errorf("readmitted %s after returning, before its 3s hold-down", time.Since(back))
	}
}
