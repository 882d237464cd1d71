// Package remote keeps one API client per provider cluster, built from the
// kubeconfig in the provider's Secret and rebuilt when that Secret changes.
// Each client has its own connect and request timeouts and its own rate
// limiter, and the cache's lock is never held across a network call, so a
// provider that hangs slows down only the work that talks to it.
package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
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

// ErrInvalidKubeconfig wraps kubeconfigs that cannot be parsed or used.
var ErrInvalidKubeconfig = errors.New("invalid kubeconfig")

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
// (identified by version, such as the Secret's resourceVersion) changed.
func (c *Cache) Get(provider, version string, kubeconfig []byte) (*Client, error) {
	c.mu.Lock()
	cl, ok := c.clients[provider]
	c.mu.Unlock()
	if ok && cl.version == version {
		return cl, nil
	}
	cl, err := c.build(provider, version, kubeconfig)
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

func (c *Cache) build(provider, version string, kubeconfig []byte) (*Client, error) {
	if len(kubeconfig) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrInvalidKubeconfig)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKubeconfig, err)
	}
	cfg.Timeout = c.opts.RequestTimeout
	cfg.QPS, cfg.Burst = c.opts.QPS, c.opts.Burst
	dialer := &net.Dialer{Timeout: c.opts.ConnectTimeout, KeepAlive: 30 * time.Second}
	cfg.Dial = dialer.DialContext
	cfg.UserAgent = "flotilla-hub"
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKubeconfig, err)
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

// Classify names why a request to a provider failed, for condition reasons:
// CredentialsRejected, Unreachable, Timeout or RequestFailed.
func Classify(err error) string {
	var netErr net.Error
	switch {
	case err == nil:
		return ""
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
