package market

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

type rejectKind uint8

// The filters, in the order they are checked; an offer is explained by the
// first one it fails.
const (
	accepted rejectKind = iota
	providerMissing
	providerNotReady
	providerCordoned
	providerSilent
	reputationLow
	providerRefused
	notValidNow
	classRejected
	priorityClassNotOffered
	runtimeClassNotOffered
	storageNotOffered
	egressNotOffered
	exposureNotOffered
	attributesMismatch
	priceAbove
	priceOverflow
	offerShort
	providerShort
	noChunk
	spreadProvider
	spreadOwner
	rateLimited
	leaseCap
)

// reasonCodes name the filters for metrics and condition reasons; the set is
// fixed so label cardinality stays bounded.
var reasonCodes = [...]string{
	accepted:                "Accepted",
	providerMissing:         "ProviderNotRegistered",
	providerNotReady:        "ProviderNotReady",
	providerCordoned:        "ProviderCordoned",
	providerSilent:          "ProviderSilent",
	reputationLow:           "ReputationBelowMinimum",
	providerRefused:         "ProviderRefused",
	notValidNow:             "OfferNotValid",
	classRejected:           "ClassNotAccepted",
	priorityClassNotOffered: "PriorityClassNotOffered",
	runtimeClassNotOffered:  "RuntimeClassNotOffered",
	storageNotOffered:       "StorageNotOffered",
	egressNotOffered:        "EgressNotOffered",
	exposureNotOffered:      "ExposureNotOffered",
	attributesMismatch:      "AttributesMismatch",
	priceAbove:              "PriceAboveCeiling",
	priceOverflow:           "PriceOverflow",
	offerShort:              "InsufficientCapacity",
	providerShort:           "InsufficientProviderCapacity",
	noChunk:                 "NoNodeFits",
	spreadProvider:          "SpreadPerProvider",
	spreadOwner:             "SpreadPerOwner",
	rateLimited:             "ProviderRateLimited",
	leaseCap:                "ProviderAtMaxLeases",
}

// ReasonCodes lists every Reason.Code Match can return.
func ReasonCodes() []string {
	return append(slices.Clone(reasonCodes[1:]), "NoOffers")
}

type rejection struct {
	kind rejectKind
	res  Resource
}

// staticReject applies the filters whose outcome cannot change during a cycle.
// It uses the prices and selector verdicts prepare computed for w.
func (m *matcher) staticReject(w *workloadState, i int32) rejection {
	o := &m.offers[i]
	p := o.provider
	switch {
	case p == nil:
		return rejection{kind: providerMissing}
	case !p.Ready:
		return rejection{kind: providerNotReady}
	case p.Cordoned:
		return rejection{kind: providerCordoned}
	case p.Silent:
		return rejection{kind: providerSilent}
	case p.Reputation < w.MinReputation:
		return rejection{kind: reputationLow}
	case w.Refused[p.Name] != "":
		return rejection{kind: providerRefused}
	case !o.validNow:
		return rejection{kind: notValidNow}
	case o.Classes&w.Class == 0:
		return rejection{kind: classRejected}
	case w.Needs.PriorityClass != "" && !slices.Contains(o.Allows.PriorityClasses, w.Needs.PriorityClass):
		return rejection{kind: priorityClassNotOffered}
	case w.Needs.RuntimeClass != "" && !slices.Contains(o.Allows.RuntimeClasses, w.Needs.RuntimeClass):
		return rejection{kind: runtimeClassNotOffered}
	case !storageAllowed(w.Needs.Storage, o.Allows.Storage):
		return rejection{kind: storageNotOffered}
	case w.Needs.Egress && !o.Allows.Egress:
		return rejection{kind: egressNotOffered}
	case w.Needs.Expose > o.Allows.Expose:
		return rejection{kind: exposureNotOffered}
	case w.matches != nil && !w.matches[i]:
		return rejection{kind: attributesMismatch}
	}
	// A price beyond int64 could be neither charged nor held, so such an
	// Offer is out of reach even for a Workload without a ceiling.
	switch price := w.prices[i]; {
	case price == unpriceable:
		return rejection{kind: priceOverflow}
	case w.MaxPrice >= 0 && price > w.MaxPrice:
		return rejection{kind: priceAbove}
	}
	return rejection{}
}

func storageAllowed(needs []StorageNeed, allowed map[string]int64) bool {
	for _, n := range needs {
		if most, ok := allowed[n.Class]; !ok || n.Bytes > most {
			return false
		}
	}
	return true
}

// dynamicReject applies the filters that depend on what was placed so far.
func (m *matcher) dynamicReject(w *workloadState, oi int32) rejection {
	o := &m.offers[oi]
	p := o.provider
	if r, short := o.available.firstShort(&w.Request); short {
		return rejection{kind: offerShort, res: r}
	}
	if p.free != nil {
		if r, short := p.free.firstShort(&w.Request); short {
			return rejection{kind: providerShort, res: r}
		}
	}
	if p.LargestChunk != nil && !p.LargestChunk.Fits(&w.Request) {
		return rejection{kind: noChunk}
	}
	if p.chunks != nil && !slices.ContainsFunc(p.chunks, func(c Vector) bool { return c.Fits(&w.Request) }) {
		return rejection{kind: noChunk}
	}
	if w.MaxPerProvider > 0 && w.perProv[p.Name] >= w.MaxPerProvider {
		return rejection{kind: spreadProvider}
	}
	if w.MaxPerOwner > 0 && w.perOwner[p.Owner] >= w.MaxPerOwner {
		return rejection{kind: spreadOwner}
	}
	if _, has := w.assignment[oi]; !has {
		if p.roomLeft == 0 {
			return rejection{kind: leaseCap}
		}
		if p.leasesLeft == 0 {
			return rejection{kind: rateLimited}
		}
	}
	return rejection{}
}

// explain records why w's remaining replicas found no offer.
func (m *matcher) explain(w *workloadState) {
	if w.pending <= 0 {
		return
	}
	if w.ranking == nil {
		m.prepare(w)
	}
	type key struct {
		kind     rejectKind
		res      Resource
		provider string
	}
	// Counted in an array but for the reasons that name a provider: a
	// cycle explains every workload that stays pending, over every offer.
	var plain [leaseCap + 1][NumResources]int
	counts := map[key]int{}
	for i := range m.offers {
		r := m.staticReject(w, int32(i))
		if r.kind == accepted {
			r = m.dynamicReject(w, int32(i))
		}
		if r.kind <= providerRefused || r.kind >= rateLimited {
			counts[key{kind: r.kind, res: r.res, provider: m.offers[i].Provider}]++
		} else {
			plain[r.kind][r.res]++
		}
	}
	for kind := range plain {
		for res, n := range plain[kind] {
			if n > 0 {
				counts[key{kind: rejectKind(kind), res: Resource(res)}] = n
			}
		}
	}
	var reasons []Reason
	for k, n := range counts {
		var msg string
		switch k.kind {
		case providerMissing:
			msg = fmt.Sprintf("provider %s: not registered", k.provider)
		case providerNotReady:
			msg = fmt.Sprintf("provider %s: not Ready", k.provider)
		case providerCordoned:
			msg = fmt.Sprintf("provider %s: cordoned", k.provider)
		case providerSilent:
			msg = fmt.Sprintf("provider %s: not heard from lately", k.provider)
		case leaseCap:
			msg = fmt.Sprintf("provider %s: runs as many leases as its owner allows", k.provider)
		case rateLimited:
			msg = fmt.Sprintf("provider %s: took as many new leases as its rate limit allows for now", k.provider)
		case reputationLow:
			msg = fmt.Sprintf("provider %s: reputation %s below the minimum %s", k.provider,
				formatScore(m.providers[k.provider].Reputation), formatScore(w.MinReputation))
		case providerRefused:
			msg = fmt.Sprintf("provider %s: refused it lately: %s", k.provider, w.Refused[k.provider])
		default:
			msg = offers(n) + offerMessage(w, k.kind, k.res)
		}
		reasons = append(reasons, Reason{Code: reasonCodes[k.kind], Count: n, Message: msg, stage: k.kind})
	}
	if len(reasons) == 0 {
		reasons = append(reasons, Reason{Code: "NoOffers", Count: 0, Message: "no offers on the market"})
	}
	// Offers that passed more filters come first: what stops the closest
	// candidates is what the user most likely wants to change.
	slices.SortFunc(reasons, func(a, b Reason) int {
		if c := cmp.Compare(b.stage, a.stage); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Message, b.Message)
	})
	m.result.Unplaced[w.Key] = Unplaced{Pending: w.pending, Reasons: reasons}
}

func offers(n int) string {
	if n == 1 {
		return "1 offer: "
	}
	return fmt.Sprintf("%d offers: ", n)
}

func offerMessage(w *workloadState, k rejectKind, r Resource) string {
	switch k {
	case notValidNow:
		return "not valid now"
	case classRejected:
		if w.Class == ClassBatch {
			return "do not accept class Batch"
		}
		return "do not accept class Service"
	case priorityClassNotOffered:
		return fmt.Sprintf("do not offer priority class %q", w.Needs.PriorityClass)
	case runtimeClassNotOffered:
		return fmt.Sprintf("do not offer runtime class %q", w.Needs.RuntimeClass)
	case storageNotOffered:
		return "do not offer the storage classes and sizes the template claims"
	case egressNotOffered:
		return "do not allow egress to the internet"
	case exposureNotOffered:
		if w.Needs.Expose == ExposeHTTP {
			return "do not expose services (spec.expose), or their provider has no endpoint range on the hub"
		}
		return "do not expose TCP ports (spec.expose; an Ingress serves HTTP only), or their provider has no endpoint range on the hub"
	case attributesMismatch:
		return "attributes do not match the selector"
	case priceAbove:
		return fmt.Sprintf("price above the ceiling of %s per replica-hour", w.MaxPrice)
	case priceOverflow:
		return "price per replica-hour too large to be charged"
	case offerShort:
		return fmt.Sprintf("not enough %s for one replica", r)
	case providerShort:
		return fmt.Sprintf("provider has not enough %s free for one replica", r)
	case noChunk:
		return "no node has room for one replica"
	case spreadProvider:
		return fmt.Sprintf("maxReplicasPerProvider (%d) reached", w.MaxPerProvider)
	case spreadOwner:
		return fmt.Sprintf("maxReplicasPerOwner (%d) reached", w.MaxPerOwner)
	}
	return "no room left in this cycle"
}

func formatScore(milli int32) string { return fmt.Sprintf("%d.%03d", milli/1000, milli%1000) }

// Summary joins the reasons in one line for a condition message.
func (u Unplaced) Summary() string {
	msgs := make([]string, len(u.Reasons))
	for i, r := range u.Reasons {
		msgs[i] = r.Message
	}
	return strings.Join(msgs, "; ")
}
