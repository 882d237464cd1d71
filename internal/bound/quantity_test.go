package bound

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

func TestQuantity(t *testing.T) {
	for _, ok := range []string{"0", "1", "100m", "1.5Gi", "64Mi", "1e3", "1E-9", "+12e99", "-.5", "1Ei"} {
		if err := Quantity(ok); err != nil {
			t.Errorf("Quantity(%q): %v", ok, err)
		}
		if _, err := resource.ParseQuantity(ok); err != nil {
			t.Errorf("%q passes the bound but is not a quantity: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "1e100", "1e-1000000000", "100000000000E1000040000", "1" + strings.Repeat("0", 64),
		"1.5e1.5", "Gi", "1 Gi", "0x10"} {
		if err := Quantity(bad); err == nil {
			t.Errorf("Quantity(%q) accepted", bad)
		}
	}
}

func TestSlowNumber(t *testing.T) {
	for name, tc := range map[string]struct{ doc, want string }{
		"plain pod":          {`{"resources":{"requests":{"cpu":"100m","memory":"64Mi"}},"n":1e10}`, ""},
		"hash with e":        {`{"pod-template-hash":"5e123abcd","id":"sha256:5e1234f0c9a1"}`, ""},
		"word ending in e":   {`{"name":"node1e1000x","msg":"see 1e1000 later"}`, ""},
		"small exponents":    {`{"cpu":"1e99","memory":1E-99}`, ""},
		"string exponent":    {`{"cpu":"1e-1000000000"}`, "1e-1000000000"},
		"bare exponent":      {`{"cpu": 1e1000}`, "1e1000"},
		"exponent in a list": {`[ 5.0E+999 ]`, "5.0E+999"},
		"long hex":           {`{"id":"` + strings.Repeat("1", 70) + `abc"}`, ""},
		"long digits":        {`{"cpu":"` + strings.Repeat("9", 100) + `"}`, strings.Repeat("9", 80)},
		"fuzz finding":       {`{"c":"100000000000E1000040000"}`, "100000000000E1000040000"},
	} {
		if got := SlowNumber([]byte(tc.doc)); got != tc.want {
			t.Errorf("%s: SlowNumber = %q, want %q", name, got, tc.want)
		}
	}
}

func BenchmarkSlowNumber(b *testing.B) {
	doc := []byte(strings.Repeat(`{"metadata":{"name":"web-5d8f9c7b6-x2x4z","uid":"0e3c1f0a-2b5e-4c1d-9e8f-7a6b5c4d3e2f"},"spec":{"containers":[{"resources":{"requests":{"cpu":"100m","memory":"64Mi"}}}]}},`, 8000))
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if SlowNumber(doc) != "" {
			b.Fatal("false positive")
		}
	}
}
