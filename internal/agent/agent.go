// Package agent joins a provider cluster to a hub: it registers the
// Provider and the federation identity's kubeconfig, keeps the agent's
// signing key, publishes an Offer from idle capacity minus the owner's
// reserve, and heartbeats. cmd/agent runs it continuously; flotillactl
// provider join runs its registration once for owners who run no agent.
package agent

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/capacity"
	"github.com/flotilla-dev/flotilla/internal/keys"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/remote"
	"github.com/flotilla-dev/flotilla/internal/usage"
)

// UserAgent of the agent's requests, to the hub and to its own cluster:
// a provider's audit log tells them from the hub's ("flotilla-hub").
const UserAgent = "flotilla-agent"

// Names of the agent's objects on the provider, as the chart creates them.
const (
	ConfigMapName = "flotilla-agent-config"
	KeySecretName = "flotilla-agent-key"
)

// Config is the owner's settings, written by the chart as config.json.
type Config struct {
	HubID string `json:"hubID"`
	// HubLedgerPublicKey pins the hub's ledger key (base64 ed25519), as the
	// administrator gave it at join; empty pins the first one seen.
	HubLedgerPublicKey string `json:"hubLedgerPublicKey"`
	Provider           struct {
		Name         string            `json:"name"`
		Owner        string            `json:"owner"`
		Region       string            `json:"region"`
		Zone         string            `json:"zone"`
		Attributes   map[string]string `json:"attributes"`
		APIServerURL string            `json:"apiServerURL"`
		MaxLeases    int32             `json:"maxLeases"`
		// Mode is Push or Pull, as the hub's administrator recorded it
		// in the join credential.
		Mode string `json:"mode"`
	} `json:"provider"`
	Offer struct {
		Name            string         `json:"name"`
		Classes         []string       `json:"classes"`
		Prices          map[string]any `json:"prices"`
		Reserve         map[string]any `json:"reserve"`
		RefreshInterval string         `json:"refreshInterval"`
		AllowEgress     bool           `json:"allowEgress"`
		// Exposure is how the cluster exposes Workloads' ports; nil
		// when it does not.
		Exposure        *flotillav1.ExposureSpec `json:"exposure"`
		PriorityClasses []string                 `json:"priorityClasses"`
		RuntimeClasses  []string                 `json:"runtimeClasses"`
		Storage         []struct {
			ClassName string `json:"className"`
			MaxSize   string `json:"maxSize"`
		} `json:"storage"`
	} `json:"offer"`
	// Hubs this cluster serves, when more than the one above: each with
	// its own join credential and federation identity. A provider serving
	// several hubs serves them all in Pull mode, so that the agent decides
	// every placement on its capacity.
	Hubs []HubConfig `json:"hubs"`
	// WitnessConfigMap keeps what the agent witnessed of this hub's
	// ledger; flotilla-ledger-witness when empty.
	WitnessConfigMap string `json:"witnessConfigMap"`
	// WitnessInterval is how often the agent checks the hub's published
	// ledger head. A rewrite is caught at the first look after it is
	// published however long the interval: it only bounds how long the
	// agent may still take work from a hub that rewrote its ledger.
	WitnessInterval   string `json:"witnessInterval"`
	HeartbeatInterval string `json:"heartbeatInterval"`
	// PullInterval is how often a Pull-mode agent reads its cluster to
	// report on its Assignments and fence what none wants.
	PullInterval          string `json:"pullInterval"`
	FederationTokenSecret string `json:"federationTokenSecret"`
	HubJoinSecret         string `json:"hubJoinSecret"`

	heartbeat, refresh, pull, witness time.Duration
	storage                           []flotillav1.StorageOffer
	prices                            flotillav1.PriceList
	reserve                           corev1.ResourceList
	classes                           []flotillav1.WorkloadClass
}

var hubIDPattern = regexp.MustCompile(`^[a-z0-9]{1,20}$`)

// HubConfig is one hub of several, as the chart writes it.
type HubConfig struct {
	ID                    string `json:"id"`
	JoinSecret            string `json:"joinSecret"`
	LedgerPublicKey       string `json:"ledgerPublicKey"`
	FederationTokenSecret string `json:"federationTokenSecret"`
	WitnessConfigMap      string `json:"witnessConfigMap"`
	// ProviderName on this hub; provider.name when empty.
	ProviderName string `json:"providerName"`
	// Mode on this hub; provider.mode when empty.
	Mode string `json:"mode"`
}

// HubIDs are the hubs this cluster serves.
func (c *Config) HubIDs() []string {
	if len(c.Hubs) == 0 {
		return []string{c.HubID}
	}
	out := make([]string, len(c.Hubs))
	for i, h := range c.Hubs {
		out[i] = h.ID
	}
	return out
}

// ForHub is the configuration of the agent's work for one hub.
func (c *Config) ForHub(id string) (*Config, error) {
	if len(c.Hubs) == 0 {
		if id != c.HubID {
			return nil, fmt.Errorf("this cluster serves hub %q, not %q", c.HubID, id)
		}
		return c, nil
	}
	for _, h := range c.Hubs {
		if h.ID != id {
			continue
		}
		out := *c
		out.Hubs = nil
		out.HubID, out.HubJoinSecret, out.HubLedgerPublicKey = h.ID, h.JoinSecret, h.LedgerPublicKey
		out.FederationTokenSecret, out.WitnessConfigMap = h.FederationTokenSecret, h.WitnessConfigMap
		if h.ProviderName != "" {
			out.Provider.Name = h.ProviderName
		}
		if h.Mode != "" {
			out.Provider.Mode = h.Mode
		}
		return &out, nil
	}
	return nil, fmt.Errorf("this cluster does not serve hub %q", id)
}

// ParseConfig reads and checks config.json; every mistake is named.
func ParseConfig(b []byte) (*Config, error) {
	c := &Config{}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	var errs []error
	switch flotillav1.ProviderMode(c.Provider.Mode) {
	case "", flotillav1.ModePush:
		c.Provider.Mode = string(flotillav1.ModePush)
		if c.Provider.Name == "" || c.Provider.Owner == "" || c.Provider.APIServerURL == "" {
			errs = append(errs, errors.New("provider.name, provider.owner and provider.apiServerURL are required"))
		}
	case flotillav1.ModePull:
		if c.Provider.Name == "" || c.Provider.Owner == "" {
			errs = append(errs, errors.New("provider.name and provider.owner are required"))
		}
		if c.Provider.APIServerURL != "" {
			errs = append(errs, errors.New("provider.apiServerURL must be empty in Pull mode: the hub never connects to this cluster"))
		}
	default:
		errs = append(errs, fmt.Errorf("provider.mode: %q is neither Push nor Pull", c.Provider.Mode))
	}
	if c.Offer.Name == "" {
		c.Offer.Name = "standard"
	}
	seen := map[string]bool{}
	for i, h := range c.Hubs {
		if !hubIDPattern.MatchString(h.ID) || seen[h.ID] {
			errs = append(errs, fmt.Errorf("hubs[%d].id: %q must be a unique name of 1-20 lowercase letters and digits", i, h.ID))
		}
		seen[h.ID] = true
		if h.JoinSecret == "" || h.FederationTokenSecret == "" {
			errs = append(errs, fmt.Errorf("hubs[%d]: joinSecret and federationTokenSecret are required", i))
		}
		if mode := cmp.Or(h.Mode, c.Provider.Mode); len(c.Hubs) > 1 && mode != string(flotillav1.ModePull) {
			errs = append(errs, fmt.Errorf("hubs[%d]: a cluster serving %d hubs serves them all in Pull mode, so that no two hubs can oversell its capacity; %s is %s", i, len(c.Hubs), h.ID, mode))
		}
		if k := h.LedgerPublicKey; k != "" {
			if _, err := ledger.ParsePublicKey(k); err != nil {
				errs = append(errs, fmt.Errorf("hubs[%d].ledgerPublicKey: %w", i, err))
			}
		}
	}
	if k := c.HubLedgerPublicKey; k != "" {
		if _, err := ledger.ParsePublicKey(k); err != nil {
			errs = append(errs, fmt.Errorf("hubLedgerPublicKey: %w (flotillactl hub issue-join prints it)", err))
		}
	}
	dur := func(field, s string, def time.Duration) time.Duration {
		if s == "" {
			return def
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Second {
			errs = append(errs, fmt.Errorf("%s: %q is not a duration of at least 1s", field, s))
			return def
		}
		return d
	}
	c.heartbeat = dur("agent.heartbeatInterval", c.HeartbeatInterval, 10*time.Second)
	c.refresh = dur("offer.refreshInterval", c.Offer.RefreshInterval, 30*time.Second)
	c.pull = dur("agent.pullInterval", c.PullInterval, 2*time.Second)
	// Every agent reads the head and the index since its last look: at 30 s
	// a thousand agents' looks were most of the reads a hub served, and
	// timed out on a busy one.
	c.witness = dur("agent.witnessInterval", c.WitnessInterval, 2*time.Minute)
	c.prices = flotillav1.PriceList{}
	for k, v := range c.Offer.Prices {
		c.prices[corev1.ResourceName(k)] = flotillav1.Amount(fmt.Sprint(v))
	}
	c.reserve = corev1.ResourceList{}
	for k, v := range c.Offer.Reserve {
		q, err := resource.ParseQuantity(fmt.Sprint(v))
		if err != nil {
			errs = append(errs, fmt.Errorf("offer.reserve.%s: %w", k, err))
			continue
		}
		c.reserve[corev1.ResourceName(k)] = q
	}
	for _, cl := range c.Offer.Classes {
		c.classes = append(c.classes, flotillav1.WorkloadClass(cl))
	}
	if len(c.classes) == 0 {
		// The CRD's default, spelled out: an Offer written without classes
		// comes back with them, and never matched what the agent would
		// write, so it was rewritten at every refresh.
		c.classes = []flotillav1.WorkloadClass{flotillav1.ClassService, flotillav1.ClassBatch}
	}
	for _, pc := range c.Offer.PriorityClasses {
		if strings.HasPrefix(pc, "system-") {
			errs = append(errs, fmt.Errorf("offer.priorityClasses: %s preempts the cluster's own components and cannot be offered", pc))
		}
	}
	if e := c.Offer.Exposure; e != nil && *e == (flotillav1.ExposureSpec{}) {
		c.Offer.Exposure = nil // the chart's default, {}
	} else if e != nil {
		switch {
		case e.Type == flotillav1.ExposeNodePort && net.ParseIP(e.Address) == nil:
			errs = append(errs, fmt.Errorf("offer.exposure.address: %q is not an IP address; NodePort exposure needs the address clients reach node ports at", e.Address))
		case e.Type == flotillav1.ExposeIngress && (e.IngressClassName == "" || e.Domain == ""):
			errs = append(errs, errors.New("offer.exposure: type Ingress needs ingressClassName and domain"))
		case e.Type != flotillav1.ExposeNodePort && e.Type != flotillav1.ExposeLoadBalancer && e.Type != flotillav1.ExposeIngress:
			errs = append(errs, fmt.Errorf("offer.exposure.type: %q is none of NodePort, LoadBalancer, Ingress", e.Type))
		}
	}
	for i, st := range c.Offer.Storage {
		q, err := resource.ParseQuantity(st.MaxSize)
		if err != nil || st.ClassName == "" {
			errs = append(errs, fmt.Errorf("offer.storage[%d]: a className and a maxSize quantity are required", i))
			continue
		}
		c.storage = append(c.storage, flotillav1.StorageOffer{ClassName: st.ClassName, MaxSize: q})
	}
	return c, errors.Join(errs...)
}

// Pull reports whether the hub reaches this provider through its agent.
func (c *Config) Pull() bool { return c.Provider.Mode == string(flotillav1.ModePull) }

// Agent joins one provider cluster to a hub.
type Agent struct {
	Log       logr.Logger
	Namespace string
	Local     kubernetes.Interface
	Hub       client.Client
	Config    *Config
	// PublicKey is the agent's ed25519 public key, base64 encoded.
	PublicKey string
	// Key signs the agent's usage reports.
	Key ed25519.PrivateKey
	// Identity holds the heartbeat Lease.
	Identity string
	// Federation is this cluster's federation identity. In Pull mode the
	// agent applies Assignments with it, so the provider's admission
	// policy bounds them exactly as when the hub applies in Push mode.
	Federation client.Client
	// Shared, when the cluster serves several hubs, holds what each one's
	// Assignments hold, so that admission counts them all.
	Shared *Shared
	// HubWatch, when set, wakes a Pull-mode agent as soon as one of its
	// Assignments changes; without it, it reads them every pullInterval.
	HubWatch client.WithWatch
	// ClusterReady says whether the provider's own API server answers;
	// nil asks its /readyz. A hollow provider (internal/hollow) has no
	// API server to ask.
	ClusterReady func(context.Context) error
	// Resync is how often a round lists the Assignments although the
	// watch is open; 0 means resyncInterval.
	Resync time.Duration

	tracker *usage.Tracker
	// fence is what a Pull-mode agent knows of its fencing: until a round
	// of SyncAssignments has read the hub and removed what no Assignment
	// wants, after the hub last declared it Lost, it does not renew its
	// heartbeat, so the hub never sees it Ready with stale work running.
	fence fenceState
	// beat is the heartbeat Lease as this agent last wrote it.
	beatMu sync.Mutex
	beat   *coordinationv1.Lease
	// report is the usage report as this agent last wrote it, offer the
	// Offer and provider the Provider, with when: what is unchanged is not
	// written again, and a write needs no read first.
	pubMu      sync.Mutex
	report     *corev1.ConfigMap
	offer      *flotillav1.Offer
	offerAt    time.Time
	provider   *flotillav1.Provider
	providerAt time.Time
	appliedMu  sync.Mutex
	appliedAt  map[string]time.Time
	readAt     map[string]time.Time
	// known holds the Assignments as last read, written or sent by the
	// watch, by name, so that a round fetches whole only those that
	// changed, and between lists reads none.
	knownMu sync.Mutex
	known   map[string]*flotillav1.Assignment
	// touched names what the watch sent while a list ran.
	touched map[string]bool
	// listedAt is when the last list of Assignments that succeeded began;
	// watchEpoch counts the watch's (re)connections, watching says it is
	// open, and listedEpoch is the connection that was open through that
	// list: while it still is, the watch has sent every change since.
	listedAt    time.Time
	watchEpoch  uint64
	listedEpoch uint64
	watching    bool
	// diverged says why the hub's ledger stopped extending what this
	// agent witnessed: it then takes no new work from the hub.
	diverged atomic.Pointer[string]
	// hurry: the last round left an Assignment converging, so the pull
	// loop comes back in convergingReadInterval.
	hurry atomic.Bool
	// mu guards Config, which a reload swaps while the pull loop reads it.
	mu sync.Mutex
}

// config is the agent's current settings.
func (a *Agent) config() *Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.Config
}

// LoadConfig reads the chart's ConfigMap.
func LoadConfig(ctx context.Context, cs kubernetes.Interface, namespace string) (*Config, error) {
	cm, err := cs.CoreV1().ConfigMaps(namespace).Get(ctx, ConfigMapName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading ConfigMap %s/%s: %w", namespace, ConfigMapName, err)
	}
	return ParseConfig([]byte(cm.Data["config.json"]))
}

// loadHubConfig reads the chart's settings for one hub.
func loadHubConfig(ctx context.Context, cs kubernetes.Interface, namespace, hub string) (*Config, error) {
	cfg, err := LoadConfig(ctx, cs, namespace)
	if err != nil {
		return nil, err
	}
	return cfg.ForHub(hub)
}

// EnsureKey returns the agent's public key, generating the pair on first
// start. The private key never leaves the provider.
func EnsureKey(ctx context.Context, cs kubernetes.Interface, namespace string) (string, error) {
	priv, err := keys.Ensure(ctx, cs, namespace, KeySecretName)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)), nil
}

// federationToken waits for the token controller to fill the chart's
// federation ServiceAccount token Secret and returns it.
func federationToken(ctx context.Context, cs kubernetes.Interface, namespace string, cfg *Config) (*corev1.Secret, error) {
	for {
		s, err := cs.CoreV1().Secrets(namespace).Get(ctx, cfg.FederationTokenSecret, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading federation token Secret %s/%s: %w", namespace, cfg.FederationTokenSecret, err)
		}
		if len(s.Data["token"]) > 0 {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("federation token Secret %s/%s was never filled: %w", namespace, cfg.FederationTokenSecret, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// FederationKubeconfig builds the kubeconfig the hub uses, from the token
// the chart's ServiceAccount token Secret holds, once the token controller
// has filled it.
func FederationKubeconfig(ctx context.Context, cs kubernetes.Interface, namespace string, cfg *Config) ([]byte, error) {
	s, err := federationToken(ctx, cs, namespace, cfg)
	if err != nil {
		return nil, err
	}
	return remote.TokenKubeconfig("provider", cfg.Provider.APIServerURL, s.Data["ca.crt"], "flotilla-federation", string(s.Data["token"]))
}

// FederationConfig is local with the federation identity's token in
// place of the agent's own credentials: what a Pull-mode agent applies
// Assignments as.
func FederationConfig(ctx context.Context, cs kubernetes.Interface, namespace string, cfg *Config, local *rest.Config) (*rest.Config, error) {
	s, err := federationToken(ctx, cs, namespace, cfg)
	if err != nil {
		return nil, err
	}
	fc := rest.AnonymousClientConfig(local)
	fc.BearerToken = string(s.Data["token"])
	fc.UserAgent = UserAgent
	fc.QPS, fc.Burst = 50, 100
	return fc, nil
}

// Register puts the provider's kubeconfig Secret and Provider on the hub.
// With a join credential both exist already (issue-join made them) and only
// their content is updated.
func (a *Agent) Register(ctx context.Context, kubeconfig []byte) error {
	if a.Config.Pull() {
		// The hub holds no credential for a Pull-mode provider.
		return a.SyncProvider(ctx)
	}
	name := a.Config.Provider.Name
	secret := &corev1.Secret{}
	key := client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: name + "-kubeconfig"}
	switch err := a.Hub.Get(ctx, key, secret); {
	case apierrors.IsNotFound(err):
		secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace},
			Data: map[string][]byte{"kubeconfig": kubeconfig}}
		if err := a.Hub.Create(ctx, secret); err != nil {
			return fmt.Errorf("creating kubeconfig Secret on the hub: %w", err)
		}
	case err != nil:
		return fmt.Errorf("reading kubeconfig Secret on the hub: %w", err)
	case string(secret.Data["kubeconfig"]) != string(kubeconfig):
		secret.Data = map[string][]byte{"kubeconfig": kubeconfig}
		if err := a.Hub.Update(ctx, secret); err != nil {
			return fmt.Errorf("updating kubeconfig Secret on the hub: %w", err)
		}
	}
	return a.SyncProvider(ctx)
}

// providerSpec is the spec the agent wants, starting from old. What the
// administrator recorded at join (owner, region, zone, API server URL) is
// kept: the agent sets it only when it registers the Provider itself, with
// an administrator's credential.
func (a *Agent) providerSpec(old flotillav1.ProviderSpec) flotillav1.ProviderSpec {
	spec := old
	if old.Owner == "" {
		spec.Owner = a.Config.Provider.Owner
		spec.Region = a.Config.Provider.Region
		spec.Zone = a.Config.Provider.Zone
		spec.APIServerURL = a.Config.Provider.APIServerURL
		spec.Mode = flotillav1.ProviderMode(a.Config.Provider.Mode)
	}
	spec.Attributes = maps.Clone(a.Config.Provider.Attributes)
	if len(spec.Attributes) == 0 {
		spec.Attributes = nil
	}
	spec.KubeconfigSecretRef = nil
	if spec.Mode != flotillav1.ModePull {
		spec.KubeconfigSecretRef = &flotillav1.SecretKeyReference{Name: a.Config.Provider.Name + "-kubeconfig", Key: "kubeconfig"}
	}
	spec.PublicKey = a.PublicKey
	spec.MaxLeases = a.Config.Provider.MaxLeases
	return spec
}

// SyncProvider makes the Provider's spec match the owner's settings. A
// spec this agent found or wrote in place less than a resync ago, and
// would write the same, is not read again.
func (a *Agent) SyncProvider(ctx context.Context) error {
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	if last := a.provider; last != nil && last.Name == a.Config.Provider.Name && time.Since(a.providerAt) < a.resync() &&
		equality.Semantic.DeepEqual(a.providerSpec(last.Spec), last.Spec) {
		return nil
	}
	a.provider = nil
	p := &flotillav1.Provider{}
	switch err := a.Hub.Get(ctx, client.ObjectKey{Name: a.Config.Provider.Name}, p); {
	case apierrors.IsNotFound(err):
		p = &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: a.Config.Provider.Name}, Spec: a.providerSpec(flotillav1.ProviderSpec{})}
		if err := a.Hub.Create(ctx, p); err != nil {
			return fmt.Errorf("registering Provider %s: %w", p.Name, err)
		}
		a.Log.Info("Registered provider", "provider", p.Name)
		a.provider, a.providerAt = p, time.Now()
		return nil
	case err != nil:
		return fmt.Errorf("reading Provider %s: %w", a.Config.Provider.Name, err)
	}
	if want := flotillav1.ProviderMode(a.Config.Provider.Mode); p.Spec.Mode != "" && p.Spec.Mode != want {
		return fmt.Errorf("the hub recorded provider %s in %s mode but this chart is set to %s mode; set provider.mode=%s or ask the hub administrator",
			p.Name, p.Spec.Mode, want, p.Spec.Mode)
	}
	if spec := a.providerSpec(p.Spec); !equality.Semantic.DeepEqual(spec, p.Spec) {
		p.Spec = spec
		if err := a.Hub.Update(ctx, p); err != nil {
			return fmt.Errorf("updating Provider %s: %w", p.Name, err)
		}
	}
	a.provider, a.providerAt = p, time.Now()
	return nil
}

// Heartbeat renews the agent's coordination Lease on the hub, but only
// while the provider's own API server answers: the heartbeat tells the hub
// the cluster is alive, and an agent that cannot reach its cluster must not
// keep a dead provider from failing over.
func (a *Agent) Heartbeat(ctx context.Context) error {
	// Its own loop: the settings are read under the lock the refresh
	// writes them with.
	cfg := a.config()
	if cfg.Pull() {
		if why := a.fence.blocked(time.Now()); why != "" {
			return errors.New(why)
		}
	}
	ready := a.ClusterReady
	if ready == nil {
		ready = func(ctx context.Context) error {
			return a.Local.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
		}
	}
	if err := ready(ctx); err != nil {
		return fmt.Errorf("provider API server not ready, heartbeat not renewed: %w", err)
	}
	now := metav1.NewMicroTime(time.Now())
	duration := ptr.To(int32(3 * cfg.heartbeat / time.Second))
	// The Lease as this agent last wrote it is renewed without reading it
	// first (a read per beat was half of a thousand agents' heartbeat
	// requests). Anything else that wrote it since, the hub's Lost mark
	// included, makes this a Conflict, and it is read.
	a.beatMu.Lock()
	defer a.beatMu.Unlock()
	if last := a.beat; last != nil {
		l, ok, err := rewrite(ctx, a.Hub, last, func(l *coordinationv1.Lease) {
			l.Spec.RenewTime, l.Spec.LeaseDurationSeconds = &now, duration
		})
		if err != nil {
			// Most likely a timeout on a busy hub: the copy is still the
			// one to renew (a renewal that landed after all makes the
			// next one a Conflict). Reading it again doubled the
			// requests of the beats that were already late.
			return err
		}
		a.beat = nil
		if ok {
			a.beat = l
			return nil
		}
	}
	l := &coordinationv1.Lease{}
	key := client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: "provider-" + cfg.Provider.Name}
	switch err := a.Hub.Get(ctx, key, l); {
	case apierrors.IsNotFound(err):
		l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &a.Identity, RenewTime: &now, LeaseDurationSeconds: duration}}
		if err := a.Hub.Create(ctx, l); err != nil {
			return err
		}
		a.beat = l
		return nil
	case err != nil:
		return err
	}
	marker := l.Annotations[flotillav1.AnnotationLost]
	if cfg.Pull() {
		// The hub marks the heartbeat when it declares this provider Lost,
		// and may then move its work: a round must fence after that first.
		a.fence.observe(marker)
		if why := a.fence.blocked(time.Now()); why != "" {
			return errors.New(why)
		}
		delete(l.Annotations, flotillav1.AnnotationLost)
	}
	l.Spec.HolderIdentity, l.Spec.RenewTime, l.Spec.LeaseDurationSeconds = &a.Identity, &now, duration
	if err := a.Hub.Update(ctx, l); err != nil {
		return err
	}
	a.beat = l
	if cfg.Pull() && marker != "" {
		a.fence.cleared(marker)
	}
	return nil
}

// PublishOffer measures idle capacity and writes the Offer.
func (a *Agent) PublishOffer(ctx context.Context) error {
	if why := a.Diverged(); why != "" {
		// A hub whose books cannot be trusted gets no capacity.
		a.pubMu.Lock()
		a.offer = nil
		a.pubMu.Unlock()
		o := &flotillav1.Offer{ObjectMeta: metav1.ObjectMeta{Name: a.Config.Offer.Name, Namespace: flotillav1.ProviderNamespace(a.Config.Provider.Name)}}
		if err := a.Hub.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("withdrawing Offer %s: %w", o.Name, err)
		}
		return nil
	}
	nodes, err := a.Local.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	pods, err := a.Local.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "status.phase!=Succeeded,status.phase!=Failed"})
	if err != nil {
		return fmt.Errorf("listing pods: %w", err)
	}
	spec := flotillav1.OfferSpec{
		ProviderRef:     flotillav1.ProviderReference{Name: a.Config.Provider.Name},
		Resources:       capacity.Offer(nodes.Items, pods.Items, a.Config.reserve),
		Prices:          a.Config.prices,
		Classes:         slices.Clone(a.Config.classes),
		AllowEgress:     a.Config.Offer.AllowEgress,
		Exposure:        a.Config.Offer.Exposure.DeepCopy(),
		PriorityClasses: slices.Clone(a.Config.Offer.PriorityClasses),
		RuntimeClasses:  slices.Clone(a.Config.Offer.RuntimeClasses),
		Storage:         slices.Clone(a.Config.storage),
	}
	if a.Shared != nil {
		// What another hub holds is not for sale here.
		spec.Resources = lessHeld(spec.Resources, a.Shared.held(a.Config.HubID))
	}
	key := client.ObjectKey{Namespace: flotillav1.ProviderNamespace(a.Config.Provider.Name), Name: a.Config.Offer.Name}
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	// Unchanged since this agent wrote it, not long ago: nothing to ask the
	// hub. A read now and then catches an Offer changed or deleted by
	// someone else.
	if o := a.offer; o != nil && o.Name == key.Name && time.Since(a.offerAt) < a.resync() {
		spec.Attributes, spec.ValidFrom, spec.ValidUntil = o.Spec.Attributes, o.Spec.ValidFrom, o.Spec.ValidUntil
		if equality.Semantic.DeepEqual(spec, o.Spec) {
			return nil
		}
	}
	a.offer = nil
	o := &flotillav1.Offer{}
	switch err := a.Hub.Get(ctx, key, o); {
	case apierrors.IsNotFound(err):
		o = &flotillav1.Offer{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}, Spec: spec}
		if err := a.Hub.Create(ctx, o); err != nil {
			return fmt.Errorf("creating Offer %s: %w", key, err)
		}
		a.offer, a.offerAt = o, time.Now()
		a.Log.Info("Published offer", "offer", key.String(), "resources", spec.Resources)
		return nil
	case err != nil:
		return fmt.Errorf("reading Offer %s: %w", key, err)
	}
	spec.Attributes, spec.ValidFrom, spec.ValidUntil = o.Spec.Attributes, o.Spec.ValidFrom, o.Spec.ValidUntil
	if !equality.Semantic.DeepEqual(spec, o.Spec) {
		o.Spec = spec
		if err := a.Hub.Update(ctx, o); err != nil {
			return fmt.Errorf("updating Offer %s: %w", key, err)
		}
	}
	a.offer, a.offerAt = o, time.Now()
	return nil
}

// ObserveUsage counts the running pods (bound to a node, not finished) of
// each Lease of the hub on this cluster, for the usage report: what the
// hub charges.
func (a *Agent) ObserveUsage(ctx context.Context) error {
	if a.tracker == nil {
		a.tracker = usage.NewTracker(a.lastReport(ctx))
	}
	sel := flotillav1.LabelManaged + "=true"
	if a.Config.HubID != "" {
		sel += "," + flotillav1.LabelHub + "=" + a.Config.HubID
	}
	pods, err := a.Local.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return fmt.Errorf("listing lease pods: %w", err)
	}
	running := map[string]int32{}
	for i := range pods.Items {
		p := &pods.Items[i]
		lease := p.Labels[flotillav1.LabelLease]
		if lease == "" {
			continue
		}
		if _, seen := running[lease]; !seen {
			running[lease] = 0
		}
		if p.Spec.NodeName != "" && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			running[lease]++
		}
	}
	a.tracker.Observe(time.Now(), running)
	return nil
}

// lastReport reads the report the agent published last, if any.
func (a *Agent) lastReport(ctx context.Context) *usage.Report {
	cm := &corev1.ConfigMap{}
	key := client.ObjectKey{Namespace: flotillav1.ProviderNamespace(a.Config.Provider.Name), Name: usage.ConfigMapName}
	if err := a.Hub.Get(ctx, key, cm); err != nil {
		return nil
	}
	r, err := usage.Parse([]byte(cm.Data[usage.DataKey]))
	if err != nil || r.Provider != a.Config.Provider.Name {
		return nil
	}
	return r
}

// PublishUsage signs and publishes the usage report on the hub, where the
// hub compares it with its own metering.
func (a *Agent) PublishUsage(ctx context.Context) error {
	if a.tracker == nil || a.Key == nil {
		return nil
	}
	r := a.tracker.Report(a.Key, a.Config.Provider.Name)
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	key := client.ObjectKey{Namespace: flotillav1.ProviderNamespace(a.Config.Provider.Name), Name: usage.ConfigMapName}
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	// Only this agent writes its report: the copy it last wrote is current
	// unless the write conflicts, and an unchanged report (an idle
	// provider's) is not written again.
	if last := a.report; last != nil {
		if last.Data[usage.DataKey] == string(b) {
			return nil
		}
		cm, ok, err := rewrite(ctx, a.Hub, last, func(cm *corev1.ConfigMap) { cm.Data = map[string]string{usage.DataKey: string(b)} })
		if err != nil {
			return fmt.Errorf("publishing the usage report: %w", err) // the copy stays, as the heartbeat's
		}
		a.report = nil
		if ok {
			a.report = cm
			return nil
		}
	}
	cm := &corev1.ConfigMap{}
	switch err := a.Hub.Get(ctx, key, cm); {
	case apierrors.IsNotFound(err):
		// issue-join makes it; an administrator's credential may not have.
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace},
			Data: map[string]string{usage.DataKey: string(b)}}
		if err := a.Hub.Create(ctx, cm); err != nil {
			return err
		}
		a.report = cm
		return nil
	case err != nil:
		return fmt.Errorf("reading the usage report: %w", err)
	}
	cm.Data = map[string]string{usage.DataKey: string(b)}
	if err := a.Hub.Update(ctx, cm); err != nil {
		return fmt.Errorf("publishing the usage report: %w", err)
	}
	a.report = cm
	return nil
}

// rewrite writes last, the copy of an object this agent last wrote, with
// change applied, without reading it first: only this agent writes it, so
// its copy is current unless someone else wrote or deleted it since. ok is
// false when that happened (a Conflict, or NotFound), for the caller to
// read it again.
func rewrite[T client.Object](ctx context.Context, c client.Client, last T, change func(T)) (next T, ok bool, err error) {
	next = last.DeepCopyObject().(T)
	change(next)
	switch err := c.Update(ctx, next); {
	case err == nil:
		return next, true, nil
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		return next, false, nil
	default:
		return next, false, err
	}
}

// resync is how long what the agent last read or wrote on the hub is
// trusted before it is read again.
func (a *Agent) resync() time.Duration { return cmp.Or(a.Resync, resyncInterval) }

// Run joins, then heartbeats and refreshes the Offer until ctx ends.
// Failures are logged and retried on the next tick: a hub that is away for
// a while must not stop the agent.
func (a *Agent) Run(ctx context.Context) error {
	var kc []byte
	var err error
	if !a.Config.Pull() {
		if kc, err = FederationKubeconfig(ctx, a.Local, a.Namespace, a.Config); err != nil {
			return err
		}
	}
	for {
		if err = a.Register(ctx, kc); err == nil {
			break
		}
		a.Log.Error(err, "Registering on the hub; retrying")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(a.Config.heartbeat):
		}
	}
	a.Log.Info("Joined the hub", "provider", a.Config.Provider.Name)
	refresh := time.NewTicker(a.Config.refresh)
	defer refresh.Stop()
	do := func(what string, f func(context.Context) error) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := f(cctx)
		if err != nil {
			a.Log.Error(err, what)
		}
		return err
	}
	if a.Config.Pull() {
		// Assignments in a loop of their own: a long round must not hold
		// up the heartbeat.
		do("Syncing assignments", a.SyncAssignments)
		go a.pullLoop(ctx)
	}
	// The heartbeat too: on a slow hub the refresh below (witness, usage,
	// provider, Offer) took long enough to make a live provider Lost.
	go beatLoop(ctx, func() time.Duration { return a.config().heartbeat }, beatRetry, func(context.Context) error {
		return do("Heartbeat", a.Heartbeat)
	})
	observe := time.NewTicker(a.Config.heartbeat)
	defer observe.Stop()
	witness := time.NewTicker(a.Config.witness)
	defer witness.Stop()
	do("Witnessing the ledger", a.Witness)
	do("Publishing offer", a.PublishOffer)
	do("Observing usage", a.ObserveUsage)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-observe.C:
			do("Observing usage", a.ObserveUsage)
		case <-witness.C:
			do("Witnessing the ledger", a.Witness)
		case <-refresh.C:
			do("Publishing usage", a.PublishUsage)
			if cfg, err := loadHubConfig(ctx, a.Local, a.Namespace, a.Config.HubID); err != nil {
				a.Log.Error(err, "Reloading settings; keeping the previous ones")
			} else {
				a.mu.Lock()
				a.Config = cfg
				a.mu.Unlock()
				do("Updating provider", a.SyncProvider)
			}
			do("Publishing offer", a.PublishOffer)
		}
	}
}

// beatRetry is the first wait after a failed renewal of the heartbeat.
const beatRetry = time.Second

// beatLoop renews the heartbeat every interval, and after a renewal that
// failed, again after retry, doubling up to the interval. The hub's grace
// period is a couple of intervals: waiting a whole interval after a renewal
// lost to a busy API server left one more chance, and live providers were
// found Lost.
func beatLoop(ctx context.Context, interval func() time.Duration, retry time.Duration, beat func(context.Context) error) {
	backoff := time.Duration(0)
	for {
		start := time.Now()
		wait := interval()
		if err := beat(ctx); err != nil {
			backoff = min(max(2*backoff, retry), wait)
			wait = backoff
		} else {
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait - time.Since(start)):
		}
	}
}

// Leave takes the provider off the market: its Offers go at once, then its
// Provider, which the hub keeps until every Lease on it has been drained
// elsewhere; once it is gone, its kubeconfig Secret and heartbeat go too.
// It waits at most until ctx ends.
func Leave(ctx context.Context, hub client.Client, provider string) error {
	var offers flotillav1.OfferList
	if err := hub.List(ctx, &offers, client.InNamespace(flotillav1.ProviderNamespace(provider))); err != nil {
		return fmt.Errorf("listing Offers: %w", err)
	}
	for i := range offers.Items {
		if err := hub.Delete(ctx, &offers.Items[i]); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting Offer %s: %w", offers.Items[i].Name, err)
		}
	}
	p := &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: provider}}
	if err := hub.Delete(ctx, p); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting Provider %s: %w", provider, err)
	}
	for {
		err := hub.Get(ctx, client.ObjectKeyFromObject(p), p)
		if apierrors.IsNotFound(err) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("provider %s is still draining its Leases: %w", provider, ctx.Err())
		case <-time.After(time.Second):
		}
	}
	for _, o := range []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: provider + "-kubeconfig", Namespace: flotillav1.SystemNamespace}},
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "provider-" + provider, Namespace: flotillav1.SystemNamespace}},
	} {
		if err := hub.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting %s: %w", o.GetName(), err)
		}
	}
	return nil
}
