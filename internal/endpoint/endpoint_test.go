package endpoint

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

func web(ports ...flotillav1.ExposedPort) *flotillav1.Workload {
	w := &flotillav1.Workload{Spec: flotillav1.WorkloadSpec{Class: flotillav1.ClassService,
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}}}
	w.Spec.Expose = &flotillav1.ExposeSpec{Ports: ports}
	return w
}

var (
	httpPort = flotillav1.ExposedPort{Name: "http", Port: 8080, Protocol: flotillav1.ExposeHTTP, HealthPath: "/healthz"}
	tcpPort  = flotillav1.ExposedPort{Name: "db", Port: 5432, Protocol: flotillav1.ExposeTCP}
	lab      = Ranges([]string{"203.0.113.0/24", "not a cidr"})
)

func offer(e flotillav1.ExposureSpec) *flotillav1.OfferSpec {
	return &flotillav1.OfferSpec{Exposure: &e}
}

func TestCompose(t *testing.T) {
	nodePort := offer(flotillav1.ExposureSpec{Type: flotillav1.ExposeNodePort, Address: "203.0.113.7"})
	cases := map[string]struct {
		w        *flotillav1.Workload
		o        *flotillav1.OfferSpec
		reported []flotillav1.ReportedEndpoint
		want     []string // address, then "!" and the reason it is not checked
	}{
		"node ports": {web(httpPort, tcpPort), nodePort,
			[]flotillav1.ReportedEndpoint{{Port: "db", NodePort: 31000}, {Port: "http", NodePort: 30080}},
			[]string{"203.0.113.7:30080", "203.0.113.7:31000"}},
		"not reported yet": {web(httpPort, tcpPort), nodePort, []flotillav1.ReportedEndpoint{{Port: "http", NodePort: 30080}},
			[]string{"203.0.113.7:30080"}},
		"P9.node-port-out-of-range": {web(httpPort), nodePort, []flotillav1.ReportedEndpoint{{Port: "http", NodePort: 22}},
			[]string{"203.0.113.7:22!outside the Offer's range 30000-32767"}},
		"node port of the Offer's own range": {web(httpPort), offer(flotillav1.ExposureSpec{Type: flotillav1.ExposeNodePort, Address: "203.0.113.7",
			NodePorts: &flotillav1.PortRange{Min: 40000, Max: 40010}}), []flotillav1.ReportedEndpoint{{Port: "http", NodePort: 40001}},
			[]string{"203.0.113.7:40001"}},
		"P9.offer-address-outside-the-ranges": {web(httpPort), offer(flotillav1.ExposureSpec{Type: flotillav1.ExposeNodePort, Address: "10.0.0.1"}),
			[]flotillav1.ReportedEndpoint{{Port: "http", NodePort: 30080}}, []string{"10.0.0.1:30080!outside the endpoint ranges"}},
		"P9.unknown-and-duplicate-ports": {web(httpPort), nodePort,
			[]flotillav1.ReportedEndpoint{{Port: "admin", NodePort: 30001}, {Port: "http", NodePort: 30080}, {Port: "http", NodePort: 30081}},
			[]string{"203.0.113.7:30080"}},
		"load balancer": {web(tcpPort), offer(flotillav1.ExposureSpec{Type: flotillav1.ExposeLoadBalancer}),
			[]flotillav1.ReportedEndpoint{{Port: "db", IP: "203.0.113.9"}}, []string{"203.0.113.9:5432"}},
		"P9.load-balancer-on-the-metadata-address": {web(tcpPort), offer(flotillav1.ExposureSpec{Type: flotillav1.ExposeLoadBalancer}),
			[]flotillav1.ReportedEndpoint{{Port: "db", IP: "169.254.169.254"}}, []string{"169.254.169.254:5432!outside the endpoint ranges"}},
		"P9.load-balancer-name": {web(tcpPort), offer(flotillav1.ExposureSpec{Type: flotillav1.ExposeLoadBalancer}),
			[]flotillav1.ReportedEndpoint{{Port: "db", IP: "evil.example"}}, []string{"invalid!not an IP"}},
		"ingress, HTTP ports only": {web(httpPort, tcpPort), offer(flotillav1.ExposureSpec{Type: flotillav1.ExposeIngress, IngressClassName: "nginx", Domain: "apps.example.org"}),
			nil, []string{"http-flotilla-hub-0011.apps.example.org"}},
		"offer does not expose": {web(httpPort), &flotillav1.OfferSpec{}, []flotillav1.ReportedEndpoint{{Port: "http", NodePort: 30080}}, nil},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got := Compose(c.w, c.o, "flotilla-hub-0011", c.reported, lab)
			if len(got) != len(c.want) {
				t.Fatalf("got %+v, want %v", got, c.want)
			}
			for i, want := range c.want {
				addr, why, _ := strings.Cut(want, "!")
				if got[i].Address != addr || (why == "") != (got[i].Invalid == "") || !strings.Contains(got[i].Invalid, why) {
					t.Errorf("target %d: %s (invalid: %q), want %s", i, got[i].Address, got[i].Invalid, want)
				}
			}
		})
	}
	if n := Wanted(web(httpPort, tcpPort), cases["ingress, HTTP ports only"].o); n != 1 {
		t.Errorf("wanted behind an Ingress: %d", n)
	}
	many := make([]flotillav1.ReportedEndpoint, 20)
	for i := range many {
		many[i] = flotillav1.ReportedEndpoint{Port: "x", NodePort: 30000}
	}
	many[19].Port = "http"
	if got := Compose(web(httpPort), nodePort, "ns", many, lab); len(got) != 0 {
		t.Errorf("P9.too-many-reports: read past the eighth report: %+v", got)
	}
}

// local is a target on this machine with the loopback range allowed.
func local(addr string, http bool, path string) Target {
	return Target{Port: "p", Address: addr, Dial: addr, HTTP: http, Path: path, Ranges: Ranges([]string{"127.0.0.0/8"})}
}

func TestCheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.WriteHeader(http.StatusOK)
		case "/moved":
			http.Redirect(w, r, "http://169.254.169.254/", http.StatusFound)
		case "/slow":
			time.Sleep(time.Second)
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := closed.Addr().String()
	_ = closed.Close()
	outside := local(addr, true, "/healthz")
	outside.Ranges = Ranges([]string{"203.0.113.0/24"})
	name := local(strings.Replace(addr, "127.0.0.1", "localhost", 1), false, "")
	name.Ranges = Ranges([]string{"203.0.113.0/24"})
	for n, c := range map[string]struct {
		t    Target
		want string
	}{
		"healthy":                         {local(addr, true, "/healthz"), ""},
		"tcp":                             {local(addr, false, ""), ""},
		"a redirect is an answer":         {local(addr, true, "/moved"), ""},
		"unhealthy":                       {local(addr, true, "/broken"), "answered 500"},
		"nothing listens":                 {local(dead, false, ""), "refused"},
		"slow":                            {local(addr, true, "/slow"), "no answer within 500ms"},
		"P9.probe-outside-ranges":         {outside, "outside the provider's endpoint ranges"},
		"P9.probe-name-resolving-outside": {name, "outside the provider's endpoint ranges"},
		"invalid":                         {Target{Invalid: "no"}, "no"},
	} {
		err := Check(context.Background(), c.t, 500*time.Millisecond)
		if (err == nil) != (c.want == "") || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", n, err, c.want)
		}
	}
}

func TestProber(t *testing.T) {
	var failing atomic.Bool
	p := NewProber()
	p.Interval, p.FailureThreshold = 50*time.Millisecond, 2
	p.Check = func(context.Context, Target, time.Duration) error {
		if failing.Load() {
			return context.DeadlineExceeded
		}
		return nil
	}
	changes := make(chan string, 16)
	p.OnChange = func(k string) { changes <- k }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = p.Start(ctx) }()
	bad := local("127.0.0.1:1", false, "")
	bad.Invalid = "outside"
	p.Set("ns/l1", "bob", []Target{local("127.0.0.1:1", false, ""), bad})
	if v, ok := p.Verdicts("ns/l1"); !ok || v[0].Known || !v[1].Known || v[1].Reachable {
		t.Fatalf("before the first check: %+v", v)
	}
	await := func(want bool) {
		t.Helper()
		select {
		case k := <-changes:
			if v, _ := p.Verdicts(k); k != "ns/l1" || !v[0].Known || v[0].Reachable != want {
				t.Fatalf("change on %s: %+v, want reachable %v", k, v, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no change to reachable=%v", want)
		}
	}
	await(true)
	failing.Store(true)
	await(false)
	failing.Store(false)
	await(true)
	p.Forget("ns/l1")
	if _, ok := p.Verdicts("ns/l1"); ok {
		t.Error("a forgotten Lease still has verdicts")
	}
}

func BenchmarkCompose(b *testing.B) {
	w := web(httpPort, tcpPort)
	o := offer(flotillav1.ExposureSpec{Type: flotillav1.ExposeNodePort, Address: "203.0.113.7"})
	rep := []flotillav1.ReportedEndpoint{{Port: "http", NodePort: 30080}, {Port: "db", NodePort: 31000}}
	for b.Loop() {
		Compose(w, o, "ns", rep, lab)
	}
}
