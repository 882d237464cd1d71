package batchdigest

import "testing"

func TestComputeIsDeterministic(t *testing.T) {
	tests := []struct {
		name         string
		a, b         string
		rounds       int
		wantSameHash bool
	}{
		{"same input, same digest", "frames 1-240", "frames 1-240", 1000, true},
		{"other input, other digest", "frames 1-240", "frames 1-241", 1000, false},
		{"a salt changes the digest", "frames 1-240", "frames 1-240" + "tampered", 1000, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Compute(tc.a, tc.rounds) == Compute(tc.b, tc.rounds); got != tc.wantSameHash {
				t.Errorf("Compute(%q) == Compute(%q): %v, want %v", tc.a, tc.b, got, tc.wantSameHash)
			}
		})
	}
	// One round is plain SHA-256, so the digest can be checked by hand.
	if got, want := Compute("abc", 1), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("Compute(abc, 1) = %s, want %s", got, want)
	}
}

func BenchmarkCompute(b *testing.B) {
	for b.Loop() {
		Compute("frames 1-240", DefaultRounds)
	}
}
