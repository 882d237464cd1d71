package market

import (
	"math"
	"math/bits"

	"github.com/flotilla-dev/flotilla/internal/money"
)

// unitSize is how many of a resource's quantities make the unit it is priced
// in: a core is 1000 millicores, a GiB is 2^30 bytes.
var unitSize = [NumResources]uint64{CPU: 1000, Memory: 1 << 30, EphemeralStorage: 1 << 30, GPU: 1, Pods: 1}

// PricePerReplicaHour is what one replica with request r costs for an hour at
// unit prices p: the sum over resources of request times price, each term
// rounded up to a whole micro-credit. The rounding is per resource so the
// result is exact integer arithmetic and the same everywhere. ok is false when
// the price does not fit in int64.
func PricePerReplicaHour(r *Vector, p *[NumResources]money.Micro) (money.Micro, bool) {
	var total uint64
	for i := range r {
		q, price := r[i], p[i]
		if q <= 0 || price <= 0 {
			continue
		}
		hi, lo := bits.Mul64(uint64(q), uint64(price))
		d := unitSize[i]
		if hi >= d {
			return 0, false
		}
		quo, rem := bits.Div64(hi, lo, d)
		if rem != 0 {
			quo++
		}
		var carry uint64
		total, carry = bits.Add64(total, quo, 0)
		if carry != 0 || total > math.MaxInt64 {
			return 0, false
		}
	}
	return money.Micro(total), true
}
