// Package money handles credits exactly: amounts are integer micro-credits,
// parsed from and formatted to the decimal strings of the API. No float ever
// touches a price.
package money

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Micro is an amount in micro-credits (10^-6 credit).
type Micro int64

// PerCredit is the number of micro-credits in one credit.
const PerCredit Micro = 1_000_000

// maxIntDigits bounds the integer part so any parsed amount fits in int64
// with room for sums.
const maxIntDigits = 12

// Parse reads a non-negative decimal with at most six fractional digits, the
// format of the API's Amount type ("0", "12", "0.0015").
func Parse(s string) (Micro, error) {
	if s == "" {
		return 0, fmt.Errorf("empty amount")
	}
	intPart, frac, hasDot := strings.Cut(s, ".")
	if intPart == "" || (hasDot && frac == "") {
		return 0, fmt.Errorf("amount %q: want digits on both sides of the decimal point", s)
	}
	if len(intPart) > maxIntDigits {
		return 0, fmt.Errorf("amount %q: more than %d integer digits", s, maxIntDigits)
	}
	if len(frac) > 6 {
		return 0, fmt.Errorf("amount %q: more than 6 fractional digits", s)
	}
	if len(intPart) > 1 && intPart[0] == '0' {
		return 0, fmt.Errorf("amount %q: leading zero", s)
	}
	for _, part := range []string{intPart, frac} {
		for _, c := range part {
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("amount %q: not a non-negative decimal number", s)
			}
		}
	}
	whole, _ := strconv.ParseInt(intPart, 10, 64)
	var f int64
	if frac != "" {
		f, _ = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
	}
	return Micro(whole)*PerCredit + Micro(f), nil
}

// MustParse is Parse for constants in tests and defaults; it panics on error.
func MustParse(s string) Micro {
	m, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return m
}

// String formats m as the API writes amounts: no trailing fractional zeros,
// no exponent.
func (m Micro) String() string {
	neg := m < 0
	u := uint64(m)
	if neg {
		u = uint64(-m)
		if m == math.MinInt64 {
			u = uint64(math.MaxInt64) + 1
		}
	}
	whole := u / uint64(PerCredit)
	frac := u % uint64(PerCredit)
	s := strconv.FormatUint(whole, 10)
	if frac != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%06d", frac), "0")
	}
	if neg {
		s = "-" + s
	}
	return s
}

// Add returns a+b and false if the sum overflows.
func Add(a, b Micro) (Micro, bool) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, false
	}
	return s, true
}
