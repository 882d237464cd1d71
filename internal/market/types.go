// Package market decides where pending replicas run. It is pure: Match takes
// a snapshot of providers, offers and workloads and returns assignments and,
// for what it could not place, reasons a user can act on. No API client, no
// clock but the one in the snapshot; the same snapshot always gives the same
// result.
package market

import (
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/flotilla-dev/flotilla/internal/money"
)

// Resource indexes a Vector.
type Resource int

// The resources the market knows. Quantities are in the units below.
const (
	CPU              Resource = iota // millicores
	Memory                           // bytes
	EphemeralStorage                 // bytes
	GPU                              // devices
	Pods                             // pods
	NumResources
)

var resourceNames = [NumResources]string{"cpu", "memory", "ephemeral-storage", "nvidia.com/gpu", "pods"}

func (r Resource) String() string { return resourceNames[r] }

// Vector is an amount of each resource.
type Vector [NumResources]int64

// Unlimited stands for a resource an offer does not bound (pods, when it
// does not list them).
const Unlimited int64 = 1 << 62

// Fits reports whether v is at least r in every resource.
func (v *Vector) Fits(r *Vector) bool {
	for i := range v {
		if r[i] > v[i] {
			return false
		}
	}
	return true
}

// firstShort returns the first resource where v is below r.
func (v *Vector) firstShort(r *Vector) (Resource, bool) {
	for i := range v {
		if r[i] > v[i] {
			return Resource(i), true
		}
	}
	return 0, false
}

// Sub subtracts n copies of r from v, leaving Unlimited entries alone.
func (v *Vector) Sub(r *Vector, n int64) {
	for i := range v {
		if v[i] < Unlimited {
			v[i] -= r[i] * n
		}
	}
}

// Classes is a set of workload classes.
type Classes uint8

// The classes.
const (
	ClassService Classes = 1 << iota
	ClassBatch
)

// Provider is one provider cluster as the market sees it.
type Provider struct {
	Name   string
	Owner  string
	Region string
	// Ready is false for providers that are Pending or Lost.
	Ready bool
	// Cordoned providers take no new replicas.
	Cordoned bool
	// Silent providers have not been heard from for most of their grace
	// period: still Ready, but likely about to be Lost, so they take no
	// new replicas either. A replica placed there would be moved twice.
	Silent bool
	// LeaseLimit is how many new Leases (assignments to an offer a workload
	// does not use yet) the provider may take this cycle; nil means no
	// limit. The hub's per-provider rate limit sets it.
	LeaseLimit *int32
	// LeaseRoom is how many more Leases the provider may hold at once
	// (its owner's maximum minus its live Leases); nil means no maximum.
	LeaseRoom *int32
	// Reputation in thousandths, 0..1000.
	Reputation int32
	// Free is the capacity observed on the provider's nodes; nil when not
	// measured, in which case only the offers bound placement.
	Free *Vector
	// Chunks are the free capacity of each node; a replica must fit in one.
	// Nil when not measured.
	Chunks []Vector
	// LargestChunk is, per resource, the most any one node has free; a
	// replica must fit within it. It is what Provider status reports when
	// per-node Chunks are not known. Nil when not measured.
	LargestChunk *Vector
}

// Offer is a priced block of capacity on one provider.
type Offer struct {
	// Key identifies the offer ("namespace/name"); it orders ties.
	Key      string
	Provider string
	// Available is the offer's capacity not held by live Leases.
	Available Vector
	// Prices per unit-hour in micro-credits: per core, per GiB (memory and
	// ephemeral storage), per GPU, per pod.
	Prices  [NumResources]money.Micro
	Classes Classes
	// Attributes include the provider's region, zone and owner.
	Attributes labels.Set
	// ValidFrom and ValidUntil bound when new replicas may be placed; zero
	// means unbounded.
	ValidFrom, ValidUntil time.Time
	// Allows is what the owner opted into beyond plain pods.
	Allows Features
}

// Features are what a pod may use beyond plain compute, each only where
// its owner opted in: a priority class, a runtime class, ephemeral volumes
// of a storage class up to a size, egress to public addresses.
type Features struct {
	PriorityClasses []string
	RuntimeClasses  []string
	// Storage is the largest volume, in bytes, of each storage class.
	Storage map[string]int64
	Egress  bool
	// Expose is how far the Offer can expose a Workload's ports.
	Expose Exposure
}

// Exposure is how much of a Workload's exposed ports an Offer can serve,
// or a Workload needs served.
type Exposure uint8

// The exposures, each including the one before.
const (
	// ExposeNothing: no port is exposed.
	ExposeNothing Exposure = iota
	// ExposeHTTP: HTTP ports only (an Ingress).
	ExposeHTTP
	// ExposeTCP: any TCP port (a NodePort or LoadBalancer Service).
	ExposeTCP
)

// Needs is what one replica of a Workload uses that an Offer must allow.
type Needs struct {
	PriorityClass string
	RuntimeClass  string
	// Storage lists each volume's storage class and size in bytes.
	Storage []StorageNeed
	Egress  bool
	Expose  Exposure
}

// StorageNeed is one ephemeral volume a replica claims.
type StorageNeed struct {
	Class string
	Bytes int64
}

// Workload is a tenant's request with replicas still to place.
type Workload struct {
	// Key identifies the workload ("namespace/name").
	Key       string
	Namespace string
	Class     Classes
	// Pending replicas to place in this cycle.
	Pending int32
	// Request of one replica; Pods should be 1.
	Request Vector
	// Selector over offer attributes; nil matches everything.
	Selector labels.Selector
	// MaxPrice per replica-hour; negative means no ceiling.
	MaxPrice money.Micro
	// MaxPerProvider and MaxPerOwner bound replicas on one provider or one
	// owner's providers, counting Placed; 0 means no bound.
	MaxPerProvider, MaxPerOwner int32
	// MinReputation in thousandths.
	MinReputation int32
	// PreferredRegions, best first.
	PreferredRegions []string
	// Needs must each be allowed by an Offer for it to take a replica.
	Needs    Needs
	Priority int32
	Created  time.Time
	// Placed counts replicas already running per provider; they stay where
	// they are and count towards the spread limits.
	Placed map[string]int32
	// Refused maps the providers whose agents lately refused this
	// Workload to their reasons: they get none of its replicas for now.
	Refused map[string]string
}

// Snapshot is the market's whole input.
type Snapshot struct {
	Now       time.Time
	Providers []Provider
	Offers    []Offer
	Workloads []Workload
}

// Assignment places some replicas of one workload on one offer.
type Assignment struct {
	Workload string
	Offer    string
	Provider string
	Replicas int32
	// PricePerReplicaHour at the offer's prices, to lock into the Lease.
	PricePerReplicaHour money.Micro
}

// Reason explains why some offers could not take a replica. Reasons come
// ordered by how far their offers got through the filters, closest first.
type Reason struct {
	// Code is a stable, CamelCase name of the filter (for metrics labels).
	Code string
	// Count of offers the reason applies to.
	Count   int
	Message string

	stage rejectKind
}

// Unplaced is what a workload still waits for.
type Unplaced struct {
	Pending int32
	Reasons []Reason
}

// Result is Match's answer.
type Result struct {
	// Assignments in the order they were made.
	Assignments []Assignment
	// Unplaced by workload key, for workloads with replicas left pending.
	Unplaced map[string]Unplaced
}
