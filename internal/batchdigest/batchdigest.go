// Package batchdigest is the computation of the local federation's batch
// image (hack/images/batch): SHA-256 of an input, then of its own hash,
// rounds times. The demo uses it to know the honest result in advance.
package batchdigest

import (
	"crypto/sha256"
	"encoding/hex"
)

// DefaultRounds is what the batch program runs when ROUNDS is not set.
const DefaultRounds = 100000

// Compute hashes input, then its own hash, rounds times (at least once),
// and returns "sha256:<hex>".
func Compute(input string, rounds int) string {
	sum := sha256.Sum256([]byte(input))
	for i := 1; i < rounds; i++ {
		sum = sha256.Sum256(sum[:])
	}
	return "sha256:" + hex.EncodeToString(sum[:])
}
