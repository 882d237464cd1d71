// Package hubenv starts a hub API server for integration tests: envtest's real
// etcd and kube-apiserver from bin/, with Flotilla's CRDs and admission
// policies installed exactly as config/ ships them.
package hubenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/internal/remote"
)

// Env is a running hub API server.
type Env struct {
	Config *rest.Config
	Client client.Client
	Scheme *runtime.Scheme
	env    *envtest.Environment
}

// RepoRoot returns the repository's top directory, found from the working
// directory: the Makefile builds with -trimpath, so source paths name no
// directory on this machine.
func RepoRoot() string { return localfed.RepoRoot() }

// Scheme returns a scheme with the built-in kinds and Flotilla's.
func Scheme() *runtime.Scheme { return remote.NewScheme() }

// Start brings up the API server, installs the CRDs and admission policies,
// and waits until the policies are enforced.
func Start(ctx context.Context) (*Env, error) {
	root := RepoRoot()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, "bin")
	}
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run 'make tools' first", bin, assets)
		}
	}
	e := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := e.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest: %w", err)
	}
	s := Scheme()
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("building client: %w", err)
	}
	env := &Env{Config: cfg, Client: c, Scheme: s, env: e}
	if err := env.ApplyDir(ctx, filepath.Join(root, "config", "admission")); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return env, nil
}

// Stop shuts the API server down.
func (e *Env) Stop() error { return e.env.Stop() }

// ApplyDir creates every object in the YAML files of dir, skipping
// kustomization.yaml.
func (e *Env) ApplyDir(ctx context.Context, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		objs, err := ReadObjects(f)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if err := e.Client.Create(ctx, o); err != nil {
				return fmt.Errorf("creating %s %s from %s: %w", o.GetKind(), o.GetName(), f, err)
			}
		}
	}
	return nil
}

// ReadObjects decodes every document of a multi-document YAML file.
func ReadObjects(path string) ([]*unstructured.Unstructured, error) {
	return localfed.ReadObjects(path)
}

// Eventually polls cond every 100ms until it returns true or timeout passes.
func Eventually(ctx context.Context, timeout time.Duration, cond func(context.Context) bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if cond(ctx) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// Kubeconfig is a kubeconfig for the API server at server with the Env's
// credentials.
func (e *Env) Kubeconfig(server string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: e.Config.CAData}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{ClientCertificateData: e.Config.CertData, ClientKeyData: e.Config.KeyData, Token: e.Config.BearerToken}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "c"
	return clientcmd.Write(*cfg)
}

// Kubectl runs bin/kubectl (make tools) against the API server, as a
// user would.
func (e *Env) Kubectl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(RepoRoot(), "bin", "kubectl")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("kubectl not found at %s: run 'make tools'", bin)
	}
	b, err := e.Kubeconfig(e.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, append([]string{"--kubeconfig", kc}, args...)...).CombinedOutput()
	return string(out), err
}

// Stage runs one stage of a scenario as a subtest and stops the scenario
// at the first that fails: each stage builds on the last.
func Stage(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, f) {
		t.FailNow()
	}
}

// Holds polls cond every 100ms for d and fails t, with what should have
// held and the state cond reported, the first time it does not: "this
// stays true for d", in place of a sleep and one look.
func Holds(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if ok, state := cond(); !ok {
			t.Fatalf("%s stopped holding after %s: %s", what, d-time.Until(deadline).Round(time.Millisecond), state)
		}
		if !time.Now().Before(deadline) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Await polls cond every 100ms until it holds, and fails t with what it was
// waiting for and the last state cond reported when timeout passes.
func Await(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, last)
}
