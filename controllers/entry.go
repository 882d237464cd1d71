package controllers

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/endpoint"
)

// EntryServer serves the hub's stable addresses (internal/endpoint.Entry)
// from the manager's cache. It writes nothing, so every replica of the
// manager serves, leader or not; the prober's verdicts, fresher than the
// Leases' status, are used where this replica has them.
type EntryServer struct {
	Client client.Reader
	Prober *endpoint.Prober
	Addr   string
}

// NeedLeaderElection is false: the entry point only reads.
func (s *EntryServer) NeedLeaderElection() bool { return false }

// Start serves until ctx ends.
func (s *EntryServer) Start(ctx context.Context) error {
	srv := &http.Server{Addr: s.Addr, Handler: endpoint.NewEntry(s.lookup), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return err
	}
	ctrl.LoggerFrom(ctx).Info("Serving stable addresses", "address", ln.Addr().String())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// lookup returns the endpoints of a Workload's first HTTP port, on Active
// Leases, that answer the hub's checks.
func (s *EntryServer) lookup(ns, name string) ([]endpoint.Target, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	w := &flotillav1.Workload{}
	if err := s.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, w); err != nil || w.Spec.Expose == nil || !w.Spec.Expose.StableAddress {
		return nil, false
	}
	i := slices.IndexFunc(w.Spec.Expose.Ports, func(p flotillav1.ExposedPort) bool { return p.Protocol == flotillav1.ExposeHTTP })
	if i < 0 {
		return nil, false
	}
	port := w.Spec.Expose.Ports[i].Name
	var leases flotillav1.LeaseList
	if err := s.Client.List(ctx, &leases, client.InNamespace(ns), client.MatchingFields{indexLeaseWorkload: name}); err != nil {
		return nil, true
	}
	var out []endpoint.Target
	for _, l := range leases.Items {
		if l.Status.Phase != flotillav1.LeaseActive || l.DeletionTimestamp != nil {
			continue
		}
		j := slices.IndexFunc(l.Status.Endpoints, func(e flotillav1.LeaseEndpoint) bool { return e.Port == port })
		if j < 0 {
			continue
		}
		e := l.Status.Endpoints[j]
		reachable := e.Reachable
		if s.Prober != nil {
			if v, ok := s.Prober.Known(l.Namespace+"/"+l.Name, port, e.Address); ok {
				reachable = v.Reachable
			}
		}
		if !reachable {
			continue
		}
		p := &flotillav1.Provider{}
		if err := s.Client.Get(ctx, client.ObjectKey{Name: l.Spec.ProviderRef.Name}, p); err != nil {
			continue
		}
		t := endpoint.Target{Port: port, Address: e.Address, Dial: e.Address, HTTP: true, Ranges: endpoint.Ranges(p.Spec.EndpointRanges)}
		if _, err := netip.ParseAddrPort(e.Address); err != nil {
			t.Host, t.Dial = e.Address, net.JoinHostPort(e.Address, "80") // an Ingress host
		}
		out = append(out, t)
	}
	return out, true
}
