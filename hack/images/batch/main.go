// Command batch is the deterministic batch program of the local
// federation's images: it hashes its input through a fixed number of
// rounds and reports the result digest as its termination message, where
// the hub reads it to compare the copies of a verified Batch Workload.
// The same input gives the same digest on every honest node; a tampered
// build of this image (see the Makefile's images target) salts the hash,
// as a provider that cheats would.
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/flotilla-dev/flotilla/internal/batchdigest"
)

// salt is empty in the honest image; the tampered image is linked with
// -X main.salt=... so its copies compute a different digest.
var salt string

func main() {
	input := os.Getenv("INPUT")
	if len(os.Args) > 1 {
		input = os.Args[1]
	}
	rounds := batchdigest.DefaultRounds
	if r, err := strconv.Atoi(os.Getenv("ROUNDS")); err == nil && r > 0 && r <= 100_000_000 {
		rounds = r
	}
	d := batchdigest.Compute(input+salt, rounds)
	fmt.Println(d)
	path := os.Getenv("RESULT_FILE")
	if path == "" {
		path = "/dev/termination-log"
	}
	if err := os.WriteFile(path, []byte(d), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "writing the result:", err)
		os.Exit(1)
	}
}
