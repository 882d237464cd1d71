package money

import (
	"testing"
)

func TestParse(t *testing.T) {
	cases := map[string]struct {
		in      string
		want    Micro
		wantErr bool
	}{
		"zero":                 {in: "0", want: 0},
		"integer":              {in: "12", want: 12_000_000},
		"one micro":            {in: "0.000001", want: 1},
		"fraction":             {in: "0.0015", want: 1500},
		"full precision":       {in: "3.141592", want: 3_141_592},
		"largest":              {in: "999999999999.999999", want: 999_999_999_999_999_999},
		"empty":                {in: "", wantErr: true},
		"negative":             {in: "-1", wantErr: true},
		"two dots":             {in: "1.2.3", wantErr: true},
		"too precise":          {in: "0.0000001", wantErr: true},
		"exponent":             {in: "1e3", wantErr: true},
		"leading dot":          {in: ".5", wantErr: true},
		"trailing dot":         {in: "5.", wantErr: true},
		"leading zero":         {in: "01", wantErr: true},
		"too many int digits":  {in: "1000000000000", wantErr: true},
		"space":                {in: " 1", wantErr: true},
		"plus sign":            {in: "+1", wantErr: true},
		"unicode digit":        {in: "١", wantErr: true},
		"fraction with letter": {in: "1.0x", wantErr: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Parse(%q) = %d, want error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	cases := map[Micro]string{
		0: "0", 1: "0.000001", 1500: "0.0015", 12_000_000: "12", 12_500_000: "12.5", -2_500_000: "-2.5",
	}
	for in, want := range cases {
		if got := in.String(); got != want {
			t.Errorf("Micro(%d).String() = %q, want %q", in, got, want)
		}
	}
}

func TestAddOverflow(t *testing.T) {
	if _, ok := Add(1<<62, 1<<62); ok {
		t.Fatal("Add did not report overflow")
	}
	if s, ok := Add(5, -7); !ok || s != -2 {
		t.Fatalf("Add(5, -7) = %d, %v", s, ok)
	}
}

func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"0", "1", "0.5", "12.000001", "999999999999.999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := Parse(s)
		if err != nil {
			return
		}
		if m < 0 {
			t.Fatalf("Parse(%q) is negative: %d", s, m)
		}
		back, err := Parse(m.String())
		if err != nil || back != m {
			t.Fatalf("round trip of %q: %q -> %d, %v", s, m.String(), back, err)
		}
	})
}
