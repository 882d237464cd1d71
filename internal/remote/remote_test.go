package remote

import (
	"errors"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
)

func TestInvalidKubeconfig(t *testing.T) {
	c := NewCache(runtime.NewScheme(), Options{})
	for name, kc := range map[string]string{
		"empty":    "",
		"garbage":  "{{{ not yaml",
		"no hosts": "apiVersion: v1\nkind: Config\n",
	} {
		if _, err := c.Get("p", "1", []byte(kc)); !errors.Is(err, ErrInvalidKubeconfig) {
			t.Errorf("%s: got %v, want ErrInvalidKubeconfig", name, err)
		}
	}
}

func TestClientRebuiltWhenKubeconfigChanges(t *testing.T) {
	kc := func(host string) []byte {
		return []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: " + host +
			"\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n")
	}
	c := NewCache(runtime.NewScheme(), Options{})
	a, err := c.Get("p", "1", kc("https://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.Get("p", "1", kc("https://ignored:2")); again != a {
		t.Fatal("same version must reuse the client")
	}
	b, err := c.Get("p", "2", kc("https://127.0.0.1:2"))
	if err != nil || b == a || b.Host != "https://127.0.0.1:2" {
		t.Fatalf("new version must rebuild the client: %v, host %s", err, b.Host)
	}
}
