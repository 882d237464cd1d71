// Package join issues and revokes the hub credentials providers join with.
//
// A join credential is a ServiceAccount of its own per provider, in the
// flotilla-join namespace, which holds join identities and nothing else.
// What every provider may do in shared places (its Provider, which is
// cluster-scoped, and its heartbeat Lease in flotilla-system; reading the
// published ledger) is granted once, to the group of that namespace's
// ServiceAccounts, and the admission policy flotilla-join-scope names the
// objects: each identity may change only the Provider named after it and
// the Lease provider-<name>. A binding per provider in those places would
// be walked by the RBAC authorizer at every request to the hub, whoever
// makes it. The rest is the provider's own: in its provider-<name>
// namespace it manages its Offers, writes its usage report, reads the
// hub's copy of its ledger entries and its Account, and, in Pull mode,
// reads its Assignments and writes their status; in Push mode a Role in
// flotilla-system names its kubeconfig Secret, which no other provider may
// read. issue-join creates the named objects first, because RBAC cannot
// limit creation by name. The hub's admission policy
// flotilla-join-identity keeps a join identity from changing what the
// administrator recorded (owner, region, zone, API server URL) or pointing
// its Provider at another provider's Secret.
package join

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/kubeconfig"
	"github.com/flotilla-dev/flotilla/internal/remote"
	"github.com/flotilla-dev/flotilla/internal/usage"
)

// Options describe the provider a credential is issued for.
type Options struct {
	Name, Owner, Region, Zone string
	// APIServerURL is the provider's API server as the administrator knows
	// it: the only address the hub will connect to for this provider.
	// Empty in Pull mode.
	APIServerURL string
	// Mode is Push (the default) or Pull: the hub never connects to a
	// Pull-mode provider, and holds no kubeconfig for it.
	Mode flotillav1.ProviderMode
	// EndpointRanges are the CIDRs where the provider's service endpoints
	// may be: the hub checks and forwards to no address outside them.
	EndpointRanges []string
	// Server and CAData: where and how the provider reaches the hub's API
	// server.
	Server string
	CAData []byte
}

// Username the hub's API server sees for a provider's join identity, the
// ServiceAccount named after the provider in flotilla-join.
func Username(provider string) string {
	return "system:serviceaccount:" + flotillav1.JoinNamespace + ":" + provider
}

// Group every join identity is in, and only they.
const Group = "system:serviceaccounts:" + flotillav1.JoinNamespace

// Groups the hub's API server sees for a join identity.
func Groups() []string {
	return []string{"system:serviceaccounts", Group, "system:authenticated"}
}

// shared names the Roles and bindings every join identity has through
// Group.
const shared = "flotilla-join"

func roleName(provider string) string { return "flotilla-join-" + provider }

// Issue creates, idempotently, the provider's objects on the hub and its
// join identity, and returns a kubeconfig for that identity.
func Issue(ctx context.Context, c client.Client, o Options) ([]byte, error) {
	objs, err := Objects(o)
	if err != nil {
		return nil, err
	}
	for _, obj := range objs {
		if err := c.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	token, err := awaitToken(ctx, c, client.ObjectKey{Namespace: flotillav1.JoinNamespace, Name: o.Name + "-token"})
	if err != nil {
		return nil, err
	}
	return remote.TokenKubeconfig("flotilla-hub", o.Server, o.CAData, "join-"+o.Name, token)
}

// Objects are what Issue creates on the hub for a provider: its Provider
// as the administrator records it, the objects RBAC names, and the join
// identity with its roles.
func Objects(o Options) ([]client.Object, error) {
	if errs := validation.IsDNS1123Label(o.Name); len(errs) > 0 {
		return nil, fmt.Errorf("provider name %q: %v", o.Name, errs)
	}
	if o.Owner == "" {
		return nil, errors.New("an owner is required")
	}
	name, sys, ns := o.Name, flotillav1.SystemNamespace, flotillav1.ProviderNamespace(o.Name)
	secretName, leaseName := name+"-kubeconfig", "provider-"+name
	self := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: flotillav1.JoinNamespace}
	provider := &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: flotillav1.ProviderSpec{
		Owner: o.Owner, Region: o.Region, Zone: o.Zone, Mode: flotillav1.ModePush, EndpointRanges: o.EndpointRanges}}
	// In Pull mode the hub holds no credential of the provider's: there is
	// no kubeconfig Secret to write, and the identity may read its
	// Assignments and report on them instead.
	var pullRules []rbacv1.PolicyRule
	var push []client.Object
	switch o.Mode {
	case flotillav1.ModePull:
		if o.APIServerURL != "" {
			return nil, errors.New("a Pull-mode provider has no API server URL: the hub never connects to it")
		}
		provider.Spec.Mode = flotillav1.ModePull
		pullRules = []rbacv1.PolicyRule{
			{APIGroups: []string{flotillav1.GroupVersion.Group}, Resources: []string{"assignments"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{flotillav1.GroupVersion.Group}, Resources: []string{"assignments/status"}, Verbs: []string{"get", "update", "patch"}},
		}
	case "", flotillav1.ModePush:
		server, err := kubeconfig.NormalizeServer(o.APIServerURL)
		if err != nil {
			return nil, fmt.Errorf("the provider's API server URL %q %w", o.APIServerURL, err)
		}
		provider.Spec.APIServerURL = server
		provider.Spec.KubeconfigSecretRef = &flotillav1.SecretKeyReference{Name: secretName, Key: "kubeconfig"}
		// Secrets are read by name, so this one stays a Role of the
		// provider's own: RBAC cannot share a rule that reads only one's
		// own Secret.
		push = []client.Object{
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: sys, Labels: map[string]string{flotillav1.LabelProvider: name}}},
			&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: roleName(name), Namespace: sys, Labels: map[string]string{flotillav1.LabelProvider: name}},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secretName}, Verbs: []string{"get", "update", "patch", "delete"}}}},
			&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: roleName(name), Namespace: sys, Labels: map[string]string{flotillav1.LabelProvider: name}},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: roleName(name)},
				Subjects: []rbacv1.Subject{self}},
		}
	default:
		return nil, fmt.Errorf("mode %q: Push or Pull", o.Mode)
	}
	objs := append(SharedObjects(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{flotillav1.LabelProvider: name}}},
		provider,
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: leaseName, Namespace: sys, Labels: map[string]string{flotillav1.LabelProvider: name}}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: flotillav1.JoinNamespace, Labels: map[string]string{flotillav1.LabelProvider: name}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-token", Namespace: flotillav1.JoinNamespace, Labels: map[string]string{flotillav1.LabelProvider: name},
			Annotations: map[string]string{corev1.ServiceAccountNameKey: name}}, Type: corev1.SecretTypeServiceAccountToken},
		// The agent's signed usage report; made here because RBAC cannot
		// limit create to one name.
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: usage.ConfigMapName, Namespace: ns, Labels: map[string]string{flotillav1.LabelProvider: name}}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: shared, Namespace: ns},
			Rules: append([]rbacv1.PolicyRule{
				{APIGroups: []string{flotillav1.GroupVersion.Group}, Resources: []string{"offers"},
					Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
				{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{usage.ConfigMapName},
					Verbs: []string{"update", "patch"}},
				// Its namespace's ConfigMaps: its usage report and the
				// hub's copy of the ledger entries that concern it.
				{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch"}},
				// What it earned, as the hub mirrors it.
				{APIGroups: []string{flotillav1.GroupVersion.Group}, Resources: []string{"accounts"}, ResourceNames: []string{flotillav1.AccountName},
					Verbs: []string{"get"}},
			}, pullRules...)},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: shared, Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: shared},
			Subjects: []rbacv1.Subject{self}},
	)
	objs = append(objs, push...)
	return objs, nil
}

// Heartbeats names the API priority level, and the flow schema that puts
// join identities' heartbeats in it.
const Heartbeats = "flotilla-heartbeats"

// SharedObjects are what every join identity is granted through Group,
// made once (Issue creates them when missing): reading Providers (the
// market already shows them) and writing them, reading and renewing Leases
// in flotilla-system, and reading the published ledger head and index.
// The admission policy flotilla-join-scope keeps the writes to each
// identity's own Provider and heartbeat Lease.
//
// Heartbeats also get a priority level of their own in the API server's
// priority and fairness, as nodes' do: among the service-account requests
// of a thousand agents (reading the ledger, reporting), a busy hub let
// heartbeats wait until it declared live providers Lost.
func SharedObjects() []client.Object {
	group := []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: Group}}
	sys := flotillav1.SystemNamespace
	return []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sys}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.JoinNamespace}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.LedgerNamespace}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: shared},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{flotillav1.GroupVersion.Group}, Resources: []string{"providers"},
				Verbs: []string{"get", "update", "patch", "delete"}}}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: shared},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: shared},
			Subjects: group},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: shared, Namespace: sys},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{coordinationv1.GroupName}, Resources: []string{"leases"},
				Verbs: []string{"get", "update", "patch", "delete"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: shared, Namespace: sys},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: shared},
			Subjects: group},
		LedgerReaderRole(),
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: shared, Namespace: flotillav1.LedgerNamespace},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: LedgerReader},
			Subjects: group},
		&flowcontrolv1.PriorityLevelConfiguration{ObjectMeta: metav1.ObjectMeta{Name: Heartbeats},
			Spec: flowcontrolv1.PriorityLevelConfigurationSpec{Type: flowcontrolv1.PriorityLevelEnablementLimited,
				Limited: &flowcontrolv1.LimitedPriorityLevelConfiguration{NominalConcurrencyShares: ptr.To[int32](20),
					LimitResponse: flowcontrolv1.LimitResponse{Type: flowcontrolv1.LimitResponseTypeQueue,
						Queuing: &flowcontrolv1.QueuingConfiguration{Queues: 64, HandSize: 6, QueueLengthLimit: 50}}}}},
		// Ahead of the service-accounts schema (9000) every agent's other
		// requests fall in.
		&flowcontrolv1.FlowSchema{ObjectMeta: metav1.ObjectMeta{Name: Heartbeats},
			Spec: flowcontrolv1.FlowSchemaSpec{
				PriorityLevelConfiguration: flowcontrolv1.PriorityLevelConfigurationReference{Name: Heartbeats},
				MatchingPrecedence:         1000,
				DistinguisherMethod:        &flowcontrolv1.FlowDistinguisherMethod{Type: flowcontrolv1.FlowDistinguisherMethodByUserType},
				Rules: []flowcontrolv1.PolicyRulesWithSubjects{{
					Subjects: []flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindGroup, Group: &flowcontrolv1.GroupSubject{Name: Group}}},
					ResourceRules: []flowcontrolv1.ResourcePolicyRule{{Verbs: []string{"get", "update", "patch"},
						APIGroups: []string{coordinationv1.GroupName}, Resources: []string{"leases"}, Namespaces: []string{sys}}},
				}}}},
	}
}

// LedgerReader is the Role in flotilla-ledger that reads what the hub
// publishes there (the hub binds it to every authenticated user too).
const LedgerReader = "flotilla-ledger-reader"

// LedgerReaderRole reads the published ledger head and index.
func LedgerReaderRole() *rbacv1.Role {
	return &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: LedgerReader, Namespace: flotillav1.LedgerNamespace},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list"}}}}
}

// awaitToken waits for the token controller to fill a token Secret.
func awaitToken(ctx context.Context, c client.Client, key client.ObjectKey) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		s := &corev1.Secret{}
		if err := c.Get(ctx, key, s); err == nil && len(s.Data[corev1.ServiceAccountTokenKey]) > 0 {
			return string(s.Data[corev1.ServiceAccountTokenKey]), nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("token Secret %s was not filled (is the hub's token controller running?): %w", key, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Revoke deletes a provider's join identity; its Provider and Offers stay.
// The ServiceAccount goes first: with it goes the token, and with the
// token every right the identity had through Group.
func Revoke(ctx context.Context, c client.Client, provider string) error {
	sys := flotillav1.SystemNamespace
	objs := []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: provider, Namespace: flotillav1.JoinNamespace}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: provider + "-token", Namespace: flotillav1.JoinNamespace}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: roleName(provider), Namespace: sys}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: roleName(provider), Namespace: sys}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: shared, Namespace: flotillav1.ProviderNamespace(provider)}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: shared, Namespace: flotillav1.ProviderNamespace(provider)}},
	}
	var errs []error
	for _, o := range objs {
		if err := c.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("deleting %T %s: %w", o, o.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// CAData is the CA bundle of cfg, inline or read from its CA file: what a
// join credential carries for the provider to trust the hub.
func CAData(cfg *rest.Config) ([]byte, error) {
	if len(cfg.CAData) > 0 || cfg.CAFile == "" {
		return cfg.CAData, nil
	}
	return os.ReadFile(cfg.CAFile)
}
