// Package bound keeps text that came from elsewhere (error bodies of a
// provider's server, a provider's Job condition, an agent's report) to a
// size and a form that status can always hold: a status write must never
// fail, or grow without end, because another party sent a long or odd
// message.
package bound

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxMessage is the longest message written into a condition or a status
// field. The API allows more, but an object holds many of them and must
// stay far below the API server's size limit.
const MaxMessage = 1024

const ellipsis = "..."

// Message returns s on one line of printable characters, cut to
// MaxMessage bytes on a rune boundary, with an ellipsis when cut.
func Message(s string) string { return Text(s, MaxMessage) }

// Text is Message with another limit (at least 8).
func Text(s string, limit int) string {
	limit = max(limit, 8)
	var b strings.Builder
	b.Grow(min(len(s), limit+utf8.UTFMax))
	pendingSpace := false
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			// Control characters, newlines and invalid bytes fold into one
			// space: no forged log lines or terminal escapes.
			pendingSpace = b.Len() > 0
			continue
		}
		if pendingSpace {
			b.WriteByte(' ')
			pendingSpace = false
		}
		b.WriteRune(r)
		if b.Len() > limit {
			break // enough to know it must be cut
		}
	}
	out := b.String()
	if len(out) <= limit {
		return out
	}
	cut := limit - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(out[cut]) {
		cut--
	}
	return strings.TrimRight(out[:cut], " ") + ellipsis
}

// Error is Message of err's text; "" for nil.
func Error(err error) string {
	if err == nil {
		return ""
	}
	return Message(err.Error())
}
