package bound

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestText(t *testing.T) {
	for name, tc := range map[string]struct {
		in    string
		limit int
		want  string
	}{
		"short":           {"provider answered", 20, "provider answered"},
		"newlines folded": {"line one\n\nline two\r\n", 40, "line one line two"},
		"escapes dropped": {"red \x1b[31mtext\x07", 40, "red [31mtext"},
		"cut with dots":   {strings.Repeat("a", 30), 10, "aaaaaaa..."},
		"rune boundary":   {"ééééééé", 10, "ééé..."},
		"invalid bytes":   {"a\xff\xfeb", 10, "a b"},
		"exact":           {"12345678", 8, "12345678"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := Text(tc.in, tc.limit); got != tc.want {
				t.Errorf("Text(%q, %d) = %q, want %q", tc.in, tc.limit, got, tc.want)
			}
		})
	}
}

func FuzzMessage(f *testing.F) {
	f.Add("an error on the server (\"<html>...\") has prevented the request")
	f.Add(strings.Repeat("\xe2\x82", 600))
	f.Fuzz(func(t *testing.T, s string) {
		m := Message(s)
		if len(m) > MaxMessage || !utf8.ValidString(m) || strings.ContainsAny(m, "\n\r\x00") {
			t.Fatalf("Message(%q) = %q: too long, invalid or multi-line", s, m)
		}
		plain := strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r > '~' }) < 0
		if plain && len(s) <= MaxMessage && strings.TrimSpace(s) == s && !strings.Contains(s, "  ") && m != s {
			t.Fatalf("Message changed a short printable line: %q -> %q", s, m)
		}
	})
}
