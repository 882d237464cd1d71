package bound

import (
	"fmt"
	"regexp"
)

// Parsing a Kubernetes quantity costs time that grows with its exponent and
// its length: "1e-1000000000" or a million digits keep a decoder busy for
// minutes, and comparing "1e1000000000" with another quantity is as slow.
// Every quantity another party hands the hub is therefore held to a short,
// small-exponent form before anything parses it.

// MaxQuantityLen is the longest quantity text accepted.
const MaxQuantityLen = 64

// QuantityPattern is Kubernetes' quantity grammar with the decimal exponent
// cut to two digits. Every quantity in Flotilla's CRDs carries it (with
// maxLength MaxQuantityLen), so the API server refuses the rest before the
// hub decodes them.
const QuantityPattern = `^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,2}))?$`

var quantityRE = regexp.MustCompile(QuantityPattern)

// Quantity checks s against QuantityPattern and MaxQuantityLen.
func Quantity(s string) error {
	if len(s) > MaxQuantityLen {
		return fmt.Errorf("is %d characters, more than the %d accepted for a quantity", len(s), MaxQuantityLen)
	}
	if !quantityRE.MatchString(s) {
		return fmt.Errorf("%q is not a quantity with an exponent of at most two digits", s)
	}
	return nil
}

// SlowNumber reports the first value in a JSON document, a string or a
// bare number, that is wholly a number with an exponent of three digits or
// more, or with more than MaxQuantityLen digits and dots: the values a
// quantity decoder would spend unbounded time on. It returns "" when there
// is none, and at most 80 bytes of the value otherwise. A name or message
// that is nothing but such a number is refused with the rest; hashes and
// names that merely start with digits pass. It reads doc once.
func SlowNumber(doc []byte) string {
	for i := 0; i < len(doc); i++ {
		switch doc[i] {
		case '"':
		case ':', '[', ',':
			for i+1 < len(doc) && isSpace(doc[i+1]) {
				i++
			}
		default:
			continue
		}
		start := i + 1
		end, slow := scanNumber(doc, start)
		if slow && (end == len(doc) || isEnd(doc[end])) {
			return string(doc[start:min(end, start+80)])
		}
	}
	return ""
}

// scanNumber reads [+-]digits[.digits][eE[+-]digits][unit] from start and
// says where it stopped and whether the number is a slow one.
func scanNumber(doc []byte, start int) (end int, slow bool) {
	i := start
	if i < len(doc) && (doc[i] == '+' || doc[i] == '-') {
		i++
	}
	mantissa := i
	for i < len(doc) && (isDigit(doc[i]) || doc[i] == '.') {
		i++
	}
	if i == mantissa {
		return i, false
	}
	long := i-mantissa > MaxQuantityLen
	if i < len(doc) && (doc[i] == 'e' || doc[i] == 'E') {
		j := i + 1
		if j < len(doc) && (doc[j] == '+' || doc[j] == '-') {
			j++
		}
		digits := j
		for j < len(doc) && isDigit(doc[j]) {
			j++
		}
		if j-digits >= 3 {
			return j, true
		}
		if j > digits {
			return j, long
		}
	}
	// A unit suffix (Ki, m, G) may follow a long mantissa.
	for k := 0; k < 2 && i < len(doc) && isLetter(doc[i]); k++ {
		i++
	}
	return i, long
}

func isDigit(b byte) bool  { return b >= '0' && b <= '9' }
func isLetter(b byte) bool { return (b|0x20) >= 'a' && (b|0x20) <= 'z' }
func isSpace(b byte) bool  { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }
func isEnd(b byte) bool    { return b == '"' || b == ',' || b == '}' || b == ']' || isSpace(b) }
