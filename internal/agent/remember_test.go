package agent

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

// The watch can send a copy from before the agent's own report after the
// report's answer came: the agent keeps the later copy, or its next report
// is a Conflict.
func TestRememberKeepsTheLaterCopy(t *testing.T) {
	as := func(uid types.UID, rv string) *flotillav1.Assignment {
		return &flotillav1.Assignment{ObjectMeta: metav1.ObjectMeta{Name: "a", UID: uid, ResourceVersion: rv}}
	}
	for _, tc := range []struct {
		what       string
		kept, sent *flotillav1.Assignment
		want       string
	}{
		{"the watch lags the agent's report", as("u1", "120"), as("u1", "119"), "120"},
		{"a later change from the hub", as("u1", "120"), as("u1", "121"), "121"},
		{"more digits is later", as("u1", "99"), as("u1", "100"), "100"},
		{"the same version", as("u1", "120"), as("u1", "120"), "120"},
		{"not comparable: taken", as("u1", "120"), as("u1", "x7"), "x7"},
		{"another object of the same name: taken", as("u1", "120"), as("u2", "50"), "50"},
		{"nothing kept", nil, as("u1", "5"), "5"},
	} {
		a := &Agent{}
		if tc.kept != nil {
			a.remember(tc.kept)
		}
		a.remember(tc.sent)
		if got := a.known["a"].ResourceVersion; got != tc.want {
			t.Errorf("%s: kept version %s, want %s", tc.what, got, tc.want)
		}
	}
}
