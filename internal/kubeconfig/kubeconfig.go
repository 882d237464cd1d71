// Package kubeconfig reads a provider's kubeconfig as data, never as code.
//
// A kubeconfig can name programs to run (exec and auth-provider plugins),
// files to read (tokenFile, certificate files), proxies to go through and
// any server at all. A provider writes its kubeconfig Secret itself, so the
// hub must read it like any other hostile input: Parse accepts exactly one
// server URL, its CA data, and a bearer token or client certificate data,
// and refuses anything else with an error naming the field. It is pure: no
// file, environment or network is touched.
package kubeconfig

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"unicode"

	"sigs.k8s.io/yaml"
)

// Bounds of what Parse reads.
const (
	// MaxSize of a kubeconfig document.
	MaxSize = 64 << 10
	// MaxEntries of each list (clusters, users, contexts).
	MaxEntries = 8
	// MaxToken is the longest bearer token.
	MaxToken = 8 << 10
	// MaxPEM is the longest CA, certificate or key data.
	MaxPEM = 32 << 10
	// MaxServer is the longest server URL.
	MaxServer = 2048
)

// Credentials are everything the hub takes from a kubeconfig.
type Credentials struct {
	// Server is the API server URL, normalised (see NormalizeServer).
	Server string
	// CAData verifies the server; empty means the system's roots.
	CAData []byte
	// Token is a bearer token; or CertData and KeyData a client certificate.
	Token    string
	CertData []byte
	KeyData  []byte
}

// FieldError is a refusal naming the offending field, as a path in the
// document (users[0].user.exec).
type FieldError struct {
	Field string
	Why   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Why }

// Accepted lists, for messages, the only fields the hub reads.
const Accepted = "clusters[].cluster.server, clusters[].cluster.certificate-authority-data, " +
	"users[].user.token, users[].user.client-certificate-data, users[].user.client-key-data"

// The allow-list: every other key anywhere is refused.
var (
	topKeys     = []string{"apiVersion", "kind", "clusters", "users", "contexts", "current-context", "preferences"}
	clusterKeys = []string{"server", "certificate-authority-data"}
	userKeys    = []string{"token", "client-certificate-data", "client-key-data"}
	contextKeys = []string{"cluster", "user", "namespace"}
	entryKeys   = map[string][]string{"clusters": {"name", "cluster"}, "users": {"name", "user"}, "contexts": {"name", "context"}}
	innerKey    = map[string]string{"clusters": "cluster", "users": "user", "contexts": "context"}
)

// why names the danger of a few well-known refused fields; the rest get a
// generic reason.
var why = map[string]string{
	"exec":                  "exec plugins run a command on the hub",
	"auth-provider":         "auth-provider plugins run code on the hub",
	"tokenFile":             "the hub reads no files named by a provider",
	"client-certificate":    "the hub reads no files named by a provider",
	"client-key":            "the hub reads no files named by a provider",
	"certificate-authority": "the hub reads no files named by a provider",
	"proxy-url":             "the hub goes through no proxy named by a provider",
	"insecure-skip-tls-verify": "the hub always verifies the provider's " +
		"server certificate",
	"tls-server-name": "the certificate must name the server the administrator recorded",
	"as":              "impersonation is not accepted",
	"as-groups":       "impersonation is not accepted",
	"as-uid":          "impersonation is not accepted",
	"as-user-extra":   "impersonation is not accepted",
	"username":        "basic authentication is not accepted",
	"password":        "basic authentication is not accepted",
}

// Parse reads data with the allow-list and returns the credentials of its
// current context.
func Parse(data []byte) (*Credentials, error) {
	if len(data) == 0 {
		return nil, &FieldError{Field: "kubeconfig", Why: "is empty"}
	}
	if len(data) > MaxSize {
		return nil, &FieldError{Field: "kubeconfig", Why: fmt.Sprintf("is %d bytes, more than the %d accepted", len(data), MaxSize)}
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &FieldError{Field: "kubeconfig", Why: "is not YAML: " + firstLine(err.Error())}
	}
	if err := onlyKeys("", doc, topKeys); err != nil {
		return nil, err
	}
	if p, ok := doc["preferences"]; ok && p != nil {
		if m, ok := p.(map[string]any); !ok || len(m) > 0 {
			return nil, &FieldError{Field: "preferences", Why: "must be empty"}
		}
	}
	tables := map[string]map[string]entry{}
	for _, list := range []string{"clusters", "users", "contexts"} {
		t, err := entries(doc, list)
		if err != nil {
			return nil, err
		}
		tables[list] = t
	}
	current, err := str(doc, "current-context", "current-context", 253)
	if err != nil {
		return nil, err
	}
	if current == "" {
		return nil, &FieldError{Field: "current-context", Why: "is required"}
	}
	ctx, ok := tables["contexts"][current]
	if !ok {
		return nil, &FieldError{Field: "current-context", Why: fmt.Sprintf("names context %q, which is not defined", current)}
	}
	clusterName, err := str(ctx.body, ctx.path+".cluster", "cluster", 253)
	if err != nil {
		return nil, err
	}
	userName, err := str(ctx.body, ctx.path+".user", "user", 253)
	if err != nil {
		return nil, err
	}
	clusterEntry, ok := tables["clusters"][clusterName]
	if !ok {
		return nil, &FieldError{Field: ctx.path + ".cluster", Why: fmt.Sprintf("names cluster %q, which is not defined", clusterName)}
	}
	userEntry, ok := tables["users"][userName]
	if !ok {
		return nil, &FieldError{Field: ctx.path + ".user", Why: fmt.Sprintf("names user %q, which is not defined", userName)}
	}
	cluster, user := clusterEntry.body, userEntry.body

	c := &Credentials{}
	cf := clusterEntry.path + "."
	server, err := str(cluster, cf+"server", "server", MaxServer)
	if err != nil {
		return nil, err
	}
	if c.Server, err = NormalizeServer(server); err != nil {
		return nil, &FieldError{Field: cf + "server", Why: err.Error()}
	}
	if c.CAData, err = pemData(cluster, cf+"certificate-authority-data", "certificate-authority-data"); err != nil {
		return nil, err
	}
	uf := userEntry.path + "."
	if c.Token, err = str(user, uf+"token", "token", MaxToken); err != nil {
		return nil, err
	}
	if strings.IndexFunc(c.Token, func(r rune) bool { return r <= ' ' || r == 0x7f || r > unicode.MaxASCII }) >= 0 {
		return nil, &FieldError{Field: uf + "token", Why: "must be printable ASCII without spaces"}
	}
	if c.CertData, err = pemData(user, uf+"client-certificate-data", "client-certificate-data"); err != nil {
		return nil, err
	}
	if c.KeyData, err = pemData(user, uf+"client-key-data", "client-key-data"); err != nil {
		return nil, err
	}
	hasCert := len(c.CertData) > 0 || len(c.KeyData) > 0
	switch {
	case c.Token != "" && hasCert:
		return nil, &FieldError{Field: uf + "token", Why: "give a bearer token or a client certificate, not both"}
	case c.Token == "" && !hasCert:
		return nil, &FieldError{Field: uf[:len(uf)-1], Why: "needs a token, or client-certificate-data with client-key-data"}
	case hasCert:
		if _, err := tls.X509KeyPair(c.CertData, c.KeyData); err != nil {
			return nil, &FieldError{Field: uf + "client-certificate-data", Why: "is not a certificate matching client-key-data: " + firstLine(err.Error())}
		}
	}
	return c, nil
}

// NormalizeServer checks an API server URL and returns it in the form the
// hub compares: https, a host, no user, query or fragment, no trailing
// slash, the host in lower case.
func NormalizeServer(s string) (string, error) {
	if len(s) > MaxServer {
		return "", fmt.Errorf("is longer than %d characters", MaxServer)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("is not a URL")
	}
	switch {
	case u.Scheme != "https":
		return "", fmt.Errorf("must be an https:// URL")
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("must name a host")
	case u.User != nil:
		return "", fmt.Errorf("must not carry a user or password")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", fmt.Errorf("must not have a query or fragment")
	case u.Opaque != "":
		return "", fmt.Errorf("is not a URL")
	}
	u.Host = strings.ToLower(u.Host)
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String(), nil
}

// entry is one named entry of a list: the body under its inner key, and
// that body's path for messages.
type entry struct {
	path string
	body map[string]any
}

func entries(doc map[string]any, list string) (map[string]entry, error) {
	out := map[string]entry{}
	raw, ok := doc[list]
	if !ok || raw == nil {
		return out, nil
	}
	items, ok := raw.([]any)
	if !ok {
		return nil, &FieldError{Field: list, Why: "must be a list"}
	}
	if len(items) > MaxEntries {
		return nil, &FieldError{Field: list, Why: fmt.Sprintf("has %d entries, more than the %d accepted", len(items), MaxEntries)}
	}
	for i, it := range items {
		path := fmt.Sprintf("%s[%d]", list, i)
		m, ok := it.(map[string]any)
		if !ok {
			return nil, &FieldError{Field: path, Why: "must be a mapping"}
		}
		if err := onlyKeys(path, m, entryKeys[list]); err != nil {
			return nil, err
		}
		name, err := str(m, path+".name", "name", 253)
		if err != nil {
			return nil, err
		}
		if name == "" {
			return nil, &FieldError{Field: path + ".name", Why: "is required"}
		}
		if _, dup := out[name]; dup {
			return nil, &FieldError{Field: path + ".name", Why: fmt.Sprintf("%q is defined twice", name)}
		}
		inner, _ := m[innerKey[list]].(map[string]any)
		if m[innerKey[list]] != nil && inner == nil {
			return nil, &FieldError{Field: path + "." + innerKey[list], Why: "must be a mapping"}
		}
		if inner == nil {
			inner = map[string]any{}
		}
		allowed := map[string][]string{"clusters": clusterKeys, "users": userKeys, "contexts": contextKeys}[list]
		if err := onlyKeys(path+"."+innerKey[list], inner, allowed); err != nil {
			return nil, err
		}
		out[name] = entry{path: path + "." + innerKey[list], body: inner}
	}
	return out, nil
}

// onlyKeys refuses the first key of m (in sorted order) not in allowed.
func onlyKeys(path string, m map[string]any, allowed []string) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if slices.Contains(allowed, k) {
			continue
		}
		// An empty key must still name a field, or the refusal says nothing.
		name := k
		if name == "" {
			name = `""`
		}
		field := name
		if path != "" {
			field = path + "." + name
		}
		reason, known := why[k]
		if !known {
			reason = "is not accepted"
		}
		if len(field) > 200 {
			field = field[:200] + "..."
		}
		return &FieldError{Field: field, Why: reason + "; the hub reads only " + Accepted}
	}
	return nil
}

func str(m map[string]any, field, key string, maxLen int) (string, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", &FieldError{Field: field, Why: "must be a string"}
	}
	if len(s) > maxLen {
		return "", &FieldError{Field: field, Why: fmt.Sprintf("is longer than %d characters", maxLen)}
	}
	return s, nil
}

// pemData reads base64 data as the YAML of a kubeconfig holds it ([]byte
// fields marshal as base64 strings).
func pemData(m map[string]any, field, key string) ([]byte, error) {
	s, err := str(m, field, key, MaxPEM*4/3+4)
	if err != nil || s == "" {
		return nil, err
	}
	b, err := decodeBase64(s)
	if err != nil {
		return nil, &FieldError{Field: field, Why: "is not base64"}
	}
	if len(b) > MaxPEM {
		return nil, &FieldError{Field: field, Why: fmt.Sprintf("is longer than %d bytes", MaxPEM)}
	}
	return b, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

func decodeBase64(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(strings.TrimSpace(s))
}
