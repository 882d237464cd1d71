package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	cases := map[string]struct {
		args       []string
		code       int
		stdout     string
		stderrHint string
	}{
		"no args":                  {nil, 2, "", "Commands:"},
		"version":                  {[]string{"version"}, 0, "dev", ""},
		"help":                     {[]string{"--help"}, 0, "Commands:", ""},
		"unknown command":          {[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		"hub without verb":         {[]string{"hub"}, 2, "", "issue-join|revoke-join"},
		"issue-join without name":  {[]string{"hub", "issue-join", "--owner", "o"}, 2, "", "a provider NAME is required"},
		"unknown hub verb":         {[]string{"hub", "frob"}, 2, "", `unknown hub command "frob"`},
		"join without kubeconfigs": {[]string{"provider", "join", "p1"}, 2, "", "--hub-kubeconfig and --provider-kubeconfig are required"},
		"bad flag":                 {[]string{"provider", "leave", "p1", "--nope"}, 2, "", "flag provided but not defined"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(tc.args, &out, &errOut); code != tc.code {
				t.Fatalf("exit code %d, want %d", code, tc.code)
			}
			if !strings.Contains(out.String(), tc.stdout) {
				t.Errorf("stdout %q does not contain %q", out.String(), tc.stdout)
			}
			if !strings.Contains(errOut.String(), tc.stderrHint) {
				t.Errorf("stderr %q does not contain %q", errOut.String(), tc.stderrHint)
			}
		})
	}
}
