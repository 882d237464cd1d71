package main

import (
	"io"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args, err string
	}{
		{"--hub-id hub --count 100 --silent 10 --refuse 5", ""},
		{"--count 10", "--hub-id is required"},
		{"--hub-id hub --count 0", "between 1 and 10000"},
		{"--hub-id hub --count 20000", "between 1 and 10000"},
		{"--hub-id hub --count 10 --silent 6 --refuse 5", "at most --count 10 together"},
		{"--hub-id hub --silent -1", "at most --count"},
		{"--hub-id hub --heartbeat nonsense", "invalid value"},
	} {
		_, err := parseFlags(strings.Fields(tc.args), io.Discard)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.err)
		}
	}
}
