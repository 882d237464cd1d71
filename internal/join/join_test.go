package join

import (
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

// TestNoBindingPerProviderInSharedPlaces: the RBAC authorizer walks every
// ClusterRoleBinding, and every RoleBinding of the request's namespace, at
// each request, so a join adds bindings only in the provider's own
// namespace (and, in Push mode, the one naming its kubeconfig Secret);
// everything else is shared and the same for every provider.
func TestNoBindingPerProviderInSharedPlaces(t *testing.T) {
	sharedKeys := map[string]bool{}
	for _, o := range SharedObjects() {
		sharedKeys[key(o.GetNamespace(), o.GetName(), o)] = true
	}
	for _, tc := range []struct {
		mode flotillav1.ProviderMode
		// shared-namespace bindings a join of this mode may add
		want []string
	}{
		{flotillav1.ModePull, nil},
		{flotillav1.ModePush, []string{"flotilla-system/flotilla-join-p1"}},
	} {
		o := Options{Name: "p1", Owner: "o", Mode: tc.mode}
		if tc.mode == flotillav1.ModePush {
			o.APIServerURL = "https://p1.example:6443"
		}
		objs, err := Objects(o)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, obj := range objs {
			switch b := obj.(type) {
			case *rbacv1.ClusterRoleBinding:
				if !sharedKeys[key("", b.Name, b)] {
					t.Errorf("%s: a ClusterRoleBinding of its own (%s)", tc.mode, b.Name)
				}
			case *rbacv1.RoleBinding:
				if b.Namespace == flotillav1.ProviderNamespace("p1") || sharedKeys[key(b.Namespace, b.Name, b)] {
					continue
				}
				got = append(got, b.Namespace+"/"+b.Name)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: bindings of its own in shared namespaces %v, want %v", tc.mode, got, tc.want)
		}
	}
	for _, obj := range SharedObjects() {
		if b, ok := obj.(*rbacv1.ClusterRoleBinding); ok && (len(b.Subjects) != 1 || b.Subjects[0].Name != Group) {
			t.Errorf("shared binding %s is for %v, want only %s", b.Name, b.Subjects, Group)
		}
		if b, ok := obj.(*rbacv1.RoleBinding); ok && (len(b.Subjects) != 1 || b.Subjects[0].Name != Group) {
			t.Errorf("shared binding %s/%s is for %v, want only %s", b.Namespace, b.Name, b.Subjects, Group)
		}
	}
}

func key(ns, name string, o any) string {
	switch o.(type) {
	case *rbacv1.ClusterRoleBinding:
		return "crb/" + name
	case *rbacv1.RoleBinding:
		return "rb/" + ns + "/" + name
	}
	return ""
}

// TestUsernameIsInGroup: the admission policies match join identities by
// the username prefix and RBAC by the group; both must name the same
// namespace.
func TestUsernameIsInGroup(t *testing.T) {
	if got, want := Username("p1"), "system:serviceaccount:flotilla-join:p1"; got != want {
		t.Errorf("Username = %s, want %s", got, want)
	}
	if !slices.Contains(Groups(), Group) || Group != "system:serviceaccounts:"+flotillav1.JoinNamespace {
		t.Errorf("Groups() = %v, Group = %s", Groups(), Group)
	}
}
