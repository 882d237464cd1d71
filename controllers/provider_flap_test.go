package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

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

// A provider that keeps getting Lost is held down, longer each time, before
// it takes work again; the first return is immediate.
func TestFlappingProviderIsHeldDown(t *testing.T) {
	ctx := context.Background()
	namespace(t, flotillav1.SystemNamespace)
	up, down := kubeconfigFor(t, env.Config.Host), kubeconfigFor(t, "https://127.0.0.1:1")
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "flappy-kubeconfig", Namespace: flotillav1.SystemNamespace},
		Data: map[string][]byte{"kubeconfig": up}}
	if err := env.Client.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	p := &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: "flappy"}, Spec: flotillav1.ProviderSpec{
		Owner: "flappy", Region: "eu-west", APIServerURL: env.Config.Host, KubeconfigSecretRef: &flotillav1.SecretKeyReference{Name: sec.Name}}}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		t.Fatal(err)
	}
	r := &ProviderReconciler{Client: mgr.GetClient(), Remote: remote.NewCache(env.Scheme, remote.Options{RequestTimeout: time.Second}),
		Recorder: mgr.GetEventRecorderFor("test"), HubID: "flap", GracePeriod: time.Second, ProbeInterval: 200 * time.Millisecond,
		Flap: flap.Policy{Window: time.Minute, Base: 3 * time.Second, Max: time.Minute}, Now: time.Now}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	defer func() { cancel(); <-done }()

	get := func() *flotillav1.Provider {
		got := &flotillav1.Provider{}
		_ = env.Client.Get(ctx, client.ObjectKey{Name: "flappy"}, got)
		return got
	}
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
