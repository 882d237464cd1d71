// Package remote keeps one API client per provider cluster, built from the
// kubeconfig in the provider's Secret and rebuilt when that Secret or the
// administrator's record of the provider's API server changes. The
// kubeconfig is read through internal/kubeconfig's allow-list and must name
// the recorded server; redirects are not followed. Each client has its own
// connect and request timeouts and its own rate limiter, and the cache's
// lock is never held across a network call, so a provider that hangs slows
// down only the work that talks to it.
package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/kubeconfig"
)

// Options tune every provider client.
type Options struct {
	// ConnectTimeout bounds dialing a provider's API server.
	ConnectTimeout time.Duration
	// RequestTimeout bounds one request.
	RequestTimeout time.Duration
	// QPS and Burst rate-limit requests to one provider.
	QPS   float32
	Burst int
}

// DefaultOptions are used where Options leave a field zero.
var DefaultOptions = Options{ConnectTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second, QPS: 20, Burst: 40}

// Client talks to one provider.
type Client struct {
	Provider string
	client.Client
	Clientset kubernetes.Interface
	// Host is the provider's API server address.
	Host string
	// version identifies the kubeconfig the client was built from.
	version string
}

// ErrInvalidKubeconfig wraps kubeconfigs that cannot be parsed or used;
// a *kubeconfig.FieldError inside names the refused field.
var ErrInvalidKubeconfig = errors.New("invalid kubeconfig")

// ErrServerNotRecorded: the administrator has not recorded the provider's
// API server, so there is nothing a kubeconfig may name.
var ErrServerNotRecorded = errors.New("no API server URL is recorded for this provider")

// ErrServerMismatch: the kubeconfig names another server than the recorded one.
var ErrServerMismatch = errors.New("the kubeconfig names another server than the one recorded for this provider")

// Cache holds the clients.
type Cache struct {
	opts   Options
	scheme *runtime.Scheme

	mu      sync.Mutex // guards clients only; never held during I/O
	clients map[string]*Client
}

// NewCache returns an empty cache; zero fields of opts take DefaultOptions.
func NewCache(scheme *runtime.Scheme, opts Options) *Cache {
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultOptions.ConnectTimeout
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultOptions.RequestTimeout
	}
	if opts.QPS <= 0 {
		opts.QPS = DefaultOptions.QPS
	}
	if opts.Burst <= 0 {
		opts.Burst = DefaultOptions.Burst
	}
	return &Cache{opts: opts, scheme: scheme, clients: map[string]*Client{}}
}

// Get returns the client of a provider, building it when the kubeconfig
// (identified by version, such as the Secret's resourceVersion) or the
// recorded server changed.
func (c *Cache) Get(provider, version string, kubeconfig []byte, server string) (*Client, error) {
	version += "|" + server
	c.mu.Lock()
	cl, ok := c.clients[provider]
	c.mu.Unlock()
	if ok && cl.version == version {
		return cl, nil
	}
	cl, err := c.build(provider, version, kubeconfig, server)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.clients[provider] = cl
	c.mu.Unlock()
	return cl, nil
}

// Forget drops a provider's client.
func (c *Cache) Forget(provider string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.clients, provider)
}

func (c *Cache) build(provider, version string, data []byte, server string) (*Client, error) {
	cred, err := kubeconfig.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKubeconfig, err)
	}
	if server == "" {
		return nil, ErrServerNotRecorded
	}
	want, err := kubeconfig.NormalizeServer(server)
	if err != nil {
		return nil, fmt.Errorf("%w: the recorded URL %w", ErrServerNotRecorded, err)
	}
	if cred.Server != want {
		return nil, fmt.Errorf("%w: it names %s, the administrator recorded %s", ErrServerMismatch, cred.Server, want)
	}
	cfg := RESTConfig(cred)
	cfg.WrapTransport = guardBodies(MaxResponseBytes)
	cfg.Timeout = c.opts.RequestTimeout
	cfg.QPS, cfg.Burst = c.opts.QPS, c.opts.Burst
	dialer := &net.Dialer{Timeout: c.opts.ConnectTimeout, KeepAlive: 30 * time.Second}
	cfg.Dial = dialer.DialContext
	cfg.UserAgent = "flotilla-hub"
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKubeconfig, err)
	}
	// A provider's server may answer with a redirect to anywhere, which
	// would make the hub a forwarder of its own requests.
	hc.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		return fmt.Errorf("%w to %s", ErrRedirect, req.URL.Redacted())
	}
	cl, err := client.New(cfg, client.Options{Scheme: c.scheme, HTTPClient: hc})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKubeconfig, err)
	}
	cs, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKubeconfig, err)
	}
	return &Client{Provider: provider, Client: cl, Clientset: cs, Host: cfg.Host, version: version}, nil
}

// MaxResponseBytes bounds each response a provider's server sends: the hub
// reads no more of one than this.
const MaxResponseBytes = 32 << 20

// ErrResponseTooLarge: a provider's response went past MaxResponseBytes.
var ErrResponseTooLarge = errors.New("response from the provider is too large")

// ErrSlowNumber: a provider's response holds a number that would take the
// hub's decoder unbounded time (see bound.SlowNumber).
var ErrSlowNumber = errors.New("response from the provider holds a number the hub does not decode")

// ErrNotJSON: the hub asks providers for JSON only, whose numbers it can
// check before decoding.
var ErrNotJSON = errors.New("response from the provider is not JSON")

// guardBodies bounds every response to n bytes and checks each whole one
// (watches aside, which the hub does not open on providers) for numbers
// that would stall its decoder, before any decoder sees it.
func guardBodies(n int64) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err != nil || resp.Body == nil {
				return resp, err
			}
			body := &limitedBody{rc: resp.Body, left: n}
			if strings.Contains(resp.Header.Get("Content-Type"), "protobuf") {
				_ = body.Close()
				return nil, ErrNotJSON
			}
			if req.URL.Query().Get("watch") == "true" {
				resp.Body = body
				return resp, nil
			}
			b, err := io.ReadAll(body)
			_ = body.Close()
			if err != nil {
				return nil, err
			}
			if tok := bound.SlowNumber(b); tok != "" {
				return nil, fmt.Errorf("%w: %q", ErrSlowNumber, tok)
			}
			resp.Body = io.NopCloser(bytes.NewReader(b))
			return resp, nil
		})
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, ErrResponseTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// ErrRedirect: the provider's server answered with a redirect, which the
// hub does not follow.
var ErrRedirect = errors.New("redirect refused")

// RESTConfig is a client configuration with exactly the credentials given:
// no plugin, file, proxy or impersonation can come in through it.
func RESTConfig(c *kubeconfig.Credentials) *rest.Config {
	return &rest.Config{
		Host:        c.Server,
		BearerToken: c.Token,
		ContentConfig: rest.ContentConfig{
			ContentType: "application/json", AcceptContentTypes: "application/json",
		},
		TLSClientConfig: rest.TLSClientConfig{
			CAData: c.CAData, CertData: c.CertData, KeyData: c.KeyData,
		},
	}
}

// Classify names why a request to a provider failed, for condition reasons:
// CredentialsRejected, Unreachable, Timeout, ResponseRefused or RequestFailed.
func Classify(err error) string {
	var netErr net.Error
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrServerNotRecorded):
		return "APIServerNotRecorded"
	case errors.Is(err, ErrServerMismatch):
		return "APIServerMismatch"
	case errors.Is(err, ErrInvalidKubeconfig):
		return "KubeconfigRefused"
	case errors.Is(err, ErrRedirect):
		return "RedirectRefused"
	case errors.Is(err, ErrSlowNumber), errors.Is(err, ErrNotJSON), errors.Is(err, ErrResponseTooLarge):
		return "ResponseRefused"
	case apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err):
		return "CredentialsRejected"
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()) || apierrors.IsTimeout(err):
		return "Timeout"
	case errors.As(err, &netErr), errors.Is(err, http.ErrServerClosed):
		return "Unreachable"
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return "Unreachable"
	}
	return "RequestFailed"
}
