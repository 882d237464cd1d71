package remote

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/kubeconfig"
)

func tokenKubeconfig(server string, ca []byte) []byte {
	return []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: " + server +
		"\n    certificate-authority-data: " + base64.StdEncoding.EncodeToString(ca) +
		"\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n")
}

func TestInvalidKubeconfig(t *testing.T) {
	c := NewCache(runtime.NewScheme(), Options{})
	for name, kc := range map[string]string{
		"empty":    "",
		"garbage":  "{{{ not yaml",
		"no hosts": "apiVersion: v1\nkind: Config\n",
		"exec":     string(tokenKubeconfig("https://h", nil)) + "    exec: {command: sh}\n",
	} {
		if _, err := c.Get("p", "1", []byte(kc), "https://h"); !errors.Is(err, ErrInvalidKubeconfig) {
			t.Errorf("%s: got %v, want ErrInvalidKubeconfig", name, err)
		}
	}
	var fe *kubeconfig.FieldError
	_, err := c.Get("p", "1", []byte(string(tokenKubeconfig("https://h", nil))+"    exec: {command: sh}\n"), "https://h")
	if !errors.As(err, &fe) || fe.Field != "users[0].user.exec" || Classify(err) != "KubeconfigRefused" {
		t.Errorf("an exec plugin: %v (%s), want a refusal naming users[0].user.exec", err, Classify(err))
	}
}

// TestServerIsPinned plays a provider that points its kubeconfig at another
// server than the administrator recorded.
func TestServerIsPinned(t *testing.T) { t.Run("P1.server-mismatch", testServerIsPinned) }

func testServerIsPinned(t *testing.T) {
	c := NewCache(runtime.NewScheme(), Options{})
	kc := tokenKubeconfig("https://evil.example:443", nil)
	if _, err := c.Get("p", "1", kc, "https://provider.example:6443"); !errors.Is(err, ErrServerMismatch) || Classify(err) != "APIServerMismatch" {
		t.Errorf("another server: %v, want ErrServerMismatch", err)
	}
	if _, err := c.Get("p", "1", kc, ""); !errors.Is(err, ErrServerNotRecorded) {
		t.Errorf("nothing recorded: %v, want ErrServerNotRecorded", err)
	}
	// The administrator changes the record: the same kubeconfig is taken.
	cl, err := c.Get("p", "1", kc, "https://EVIL.example:443/")
	if err != nil || cl.Host != "https://evil.example:443" {
		t.Fatalf("after the record changed: %v", err)
	}
}

func TestClientRebuiltWhenKubeconfigChanges(t *testing.T) {
	c := NewCache(runtime.NewScheme(), Options{})
	a, err := c.Get("p", "1", tokenKubeconfig("https://127.0.0.1:1", nil), "https://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.Get("p", "1", tokenKubeconfig("https://127.0.0.1:1", nil), "https://127.0.0.1:1"); again != a {
		t.Fatal("same version must reuse the client")
	}
	b, err := c.Get("p", "2", tokenKubeconfig("https://127.0.0.1:2", nil), "https://127.0.0.1:2")
	if err != nil || b == a || b.Host != "https://127.0.0.1:2" {
		t.Fatalf("new version must rebuild the client: %v, host %s", err, b.Host)
	}
}

// TestRedirectsAreNotFollowed plays a provider whose server redirects the
// hub's probe to a third party: the hub refuses and the third party is
// never reached.
func TestRedirectsAreNotFollowed(t *testing.T) { t.Run("P1.redirect", testRedirectsAreNotFollowed) }

func testRedirectsAreNotFollowed(t *testing.T) {
	var hits atomic.Int32
	victim := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer victim.Close()
	evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, victim.URL+"/internal/admin", http.StatusFound)
	}))
	defer evil.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: evil.Certificate().Raw})
	c := NewCache(NewScheme(), Options{})
	cl, err := c.Get("p", "1", tokenKubeconfig(evil.URL, ca), evil.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.Probe(context.Background())
	if !errors.Is(err, ErrRedirect) || Classify(err) != "RedirectRefused" {
		t.Errorf("probe: %v (%s), want the redirect refused", err, Classify(err))
	}
	if hits.Load() != 0 {
		t.Errorf("the redirect target was reached %d times", hits.Load())
	}
	if !strings.Contains(err.Error(), "redirect refused") {
		t.Errorf("error %q does not say why", err)
	}
}

// TestResponsesAreBounded plays a provider whose server answers a probe
// with an endless body: the hub stops reading at MaxResponseBytes.
func TestResponsesAreBounded(t *testing.T) { t.Run("P1.huge-response", testResponsesAreBounded) }

func testResponsesAreBounded(t *testing.T) {
	evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		chunk := []byte(strings.Repeat(" ", 1<<20))
		for i := 0; i < 64; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer evil.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: evil.Certificate().Raw})
	cl, err := NewCache(NewScheme(), Options{}).Get("p", "1", tokenKubeconfig(evil.URL, ca), evil.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Probe(context.Background()); !errors.Is(err, ErrResponseTooLarge) && !strings.Contains(fmt.Sprint(err), ErrResponseTooLarge.Error()) {
		t.Errorf("probe of a 64 MiB answer: %v, want ErrResponseTooLarge", err)
	}
}

// probeServer probes a server that answers the node list with nodes, of
// the given content type, and everything else as an API server would.
func probeServer(t *testing.T, contentType, nodes string) (*Client, error) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/readyz":
			_, _ = w.Write([]byte("ok"))
		case "/version":
			_, _ = w.Write([]byte(`{"major":"1","minor":"37","gitVersion":"v1.37.2"}`))
		case "/api/v1/nodes":
			w.Header().Set("Content-Type", contentType)
			_, _ = w.Write([]byte(nodes))
		default:
			_, _ = w.Write([]byte(`{"kind":"PodList","apiVersion":"v1","items":[]}`))
		}
	}))
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return NewCache(NewScheme(), Options{}).Get("p", "1", tokenKubeconfig(srv.URL, ca), srv.URL)
}

// TestSlowNumbersAreNotDecoded plays a provider whose server lists a node
// with a quantity that would keep the hub's decoder busy for minutes: the
// answer is refused before anything decodes it.
func TestSlowNumbersAreNotDecoded(t *testing.T) {
	for name, tc := range map[string]struct {
		contentType, nodes string
		want               error
	}{
		"P1.slow-quantity": {"application/json", `{"kind":"NodeList","apiVersion":"v1","items":[{"metadata":{"name":"n"},` +
			`"status":{"allocatable":{"cpu":"1e-1000000000","memory":"1Gi"}}}]}`, ErrSlowNumber},
		"P1.huge-mantissa": {"application/json", `{"kind":"NodeList","apiVersion":"v1","items":[{"metadata":{"name":"n"},` +
			`"status":{"allocatable":{"memory":` + strings.Repeat("9", 1<<20) + `}}}]}`, ErrSlowNumber},
		"P1.protobuf": {"application/vnd.kubernetes.protobuf", "k8s\x00", ErrNotJSON},
	} {
		t.Run(name, func(t *testing.T) {
			cl, err := probeServer(t, tc.contentType, tc.nodes)
			if err != nil {
				t.Fatal(err)
			}
			_, err = cl.Probe(context.Background())
			if !errors.Is(err, tc.want) || Classify(err) != "ResponseRefused" {
				t.Errorf("probe: %v (%s), want %v, ResponseRefused", err, Classify(err), tc.want)
			}
		})
	}
}

// TestHonestAnswersAreDecoded: the guard passes a provider's ordinary
// answers, numbers with small exponents included.
func TestHonestAnswersAreDecoded(t *testing.T) {
	cl, err := probeServer(t, "application/json", `{"kind":"NodeList","apiVersion":"v1","items":[{"metadata":{"name":"n"},`+
		`"status":{"allocatable":{"cpu":"4","memory":"8e9","pods":"110"},"conditions":[{"type":"Ready","status":"True"}]}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := cl.Probe(context.Background())
	if err != nil {
		t.Fatalf("probe of an honest server: %v", err)
	}
	if obs.KubernetesVersion != "v1.37.2" || obs.Nodes != 1 {
		t.Errorf("probe read %+v, want one node of v1.37.2", obs)
	}
}

// What the agent reports of a Service is its
// node ports and first load-balancer IP, at most eight ports.
func TestServiceEndpoints(t *testing.T) {
	svc := &corev1.Service{}
	for i := range 12 {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", i), NodePort: int32(30000 + i)})
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: "lb.example"}, {IP: "203.0.113.9"}, {IP: "203.0.113.10"}}
	got := ServiceEndpoints(svc)
	if len(got) != 8 {
		t.Fatalf("P9.too-many-reports: %d endpoints reported, want at most 8", len(got))
	}
	if got[0] != (flotillav1.ReportedEndpoint{Port: "p0", NodePort: 30000, IP: "203.0.113.9"}) {
		t.Errorf("first endpoint %+v", got[0])
	}
}
