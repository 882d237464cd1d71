// Package endpoint turns what a provider reports about a Lease's exposed
// ports into addresses the hub may check, and checks them from outside the
// provider. The provider's word is hostile input: an address is composed
// by the hub from the Offer's exposure and the Workload's ports, every
// reported number is bounded, and no address outside the endpoint ranges
// the hub administrator recorded for the provider is ever dialled.
package endpoint

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/render"
)

// DefaultNodePorts is Kubernetes' default NodePort range, used when an
// Offer does not state its own.
var DefaultNodePorts = flotillav1.PortRange{Min: 30000, Max: 32767}

// Target is one exposed port of one Lease as the hub checks it.
type Target struct {
	// Port is the exposed port's name.
	Port string
	// Address is what clients use: ip:port, or a host name (Ingress).
	Address string
	// Dial is host:port to connect to; a host name is resolved and every
	// address it gives must lie in Ranges.
	Dial string
	// Host is the HTTP Host header (Ingress); empty means Dial's.
	Host string
	// HTTP ports are checked with a GET of Path; others by a TCP connect.
	HTTP bool
	Path string
	// Ranges are where the provider's endpoints may be.
	Ranges []netip.Prefix
	// Invalid says why the hub will not check it (the report is out of
	// bounds); such a target is never dialled and never reachable.
	Invalid string
}

// Ranges parses the Provider's endpoint ranges; an unparsable one (the
// API server validates them) is left out.
func Ranges(cidrs []string) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Allowed reports whether ip lies in one of ranges.
func Allowed(ip netip.Addr, ranges []netip.Prefix) bool {
	ip = ip.Unmap()
	for _, r := range ranges {
		if r.Contains(ip) {
			return true
		}
	}
	return false
}

// Compose returns the targets of a Lease in namespace ns (its namespace on
// the provider) of w on an Offer with spec o, from the provider's reports,
// in the order of w's ports. A port the provider has not reported yet has
// no target. Nil when the Lease exposes nothing.
func Compose(w *flotillav1.Workload, o *flotillav1.OfferSpec, ns string, reported []flotillav1.ReportedEndpoint, ranges []netip.Prefix) []Target {
	if !render.Exposes(w, o) {
		return nil
	}
	e := o.Exposure
	byPort := map[string]flotillav1.ReportedEndpoint{}
	for i, r := range reported {
		if i >= 8 {
			break // the API bounds it; so does the hub
		}
		if _, dup := byPort[r.Port]; !dup {
			byPort[r.Port] = r
		}
	}
	var out []Target
	for _, p := range w.Spec.Expose.Ports {
		t := Target{Port: p.Name, HTTP: p.Protocol == flotillav1.ExposeHTTP, Path: p.HealthPath, Ranges: ranges}
		if t.HTTP && t.Path == "" {
			t.Path = "/"
		}
		r, ok := byPort[p.Name]
		switch e.Type {
		case flotillav1.ExposeIngress:
			if !t.HTTP {
				continue // an Ingress serves HTTP only; matching keeps TCP ports away
			}
			t.Host = render.IngressHost(p.Name, ns, e.Domain)
			t.Address, t.Dial = t.Host, net.JoinHostPort(t.Host, "80")
		case flotillav1.ExposeNodePort:
			if !ok || r.NodePort == 0 {
				continue
			}
			rng := DefaultNodePorts
			if e.NodePorts != nil {
				rng = *e.NodePorts
			}
			t.Address = net.JoinHostPort(e.Address, strconv.Itoa(int(r.NodePort)))
			if r.NodePort < rng.Min || r.NodePort > rng.Max {
				t.Invalid = fmt.Sprintf("node port %d is outside the Offer's range %d-%d", r.NodePort, rng.Min, rng.Max)
			}
		case flotillav1.ExposeLoadBalancer:
			if !ok || r.IP == "" {
				continue
			}
			ip, err := netip.ParseAddr(r.IP)
			if err != nil {
				t.Address = "invalid"
				t.Invalid = "the reported load-balancer address is not an IP"
				break
			}
			t.Address = net.JoinHostPort(ip.String(), strconv.Itoa(int(p.Port)))
		default:
			continue
		}
		if t.Dial == "" {
			t.Dial = t.Address
		}
		if t.Invalid == "" && t.Host == "" {
			ap, err := netip.ParseAddrPort(t.Dial)
			if err != nil {
				t.Invalid = "not an address"
			} else if !Allowed(ap.Addr(), ranges) {
				t.Invalid = fmt.Sprintf("%s is outside the endpoint ranges the hub administrator recorded for the provider", ap.Addr())
			}
		}
		out = append(out, t)
	}
	return out
}

// Wanted is how many targets a Lease of w on o has once everything is
// reported: its exposed ports (HTTP ones only behind an Ingress).
func Wanted(w *flotillav1.Workload, o *flotillav1.OfferSpec) int {
	if !render.Exposes(w, o) {
		return 0
	}
	n := 0
	for _, p := range w.Spec.Expose.Ports {
		if o.Exposure.Type != flotillav1.ExposeIngress || p.Protocol == flotillav1.ExposeHTTP {
			n++
		}
	}
	return n
}
