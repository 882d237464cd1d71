package kubeconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// doc builds a kubeconfig with one context; cluster and user are the YAML
// bodies of the cluster and user entries.
func doc(cluster, user string) string {
	return "apiVersion: v1\nkind: Config\ncurrent-context: p\n" +
		"clusters:\n- name: c\n  cluster:\n" + indent(cluster) +
		"users:\n- name: u\n  user:\n" + indent(user) +
		"contexts:\n- name: p\n  context:\n    cluster: c\n    user: u\n"
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

const okCluster = "server: https://Provider.Example:6443/\ncertificate-authority-data: " + "Y2E="

func TestParseAccepts(t *testing.T) {
	cert, key := testCert(t)
	for name, tc := range map[string]struct {
		in   string
		want Credentials
	}{
		"token": {doc(okCluster, "token: abc.def"),
			Credentials{Server: "https://provider.example:6443", CAData: []byte("ca"), Token: "abc.def"}},
		"client certificate": {doc("server: https://10.0.0.1:6443", "client-certificate-data: "+b64(cert)+"\nclient-key-data: "+b64(key)),
			Credentials{Server: "https://10.0.0.1:6443", CertData: cert, KeyData: key}},
		"unused entries and a namespace": {"current-context: p\nclusters:\n- name: c\n  cluster:\n    server: https://h\n- name: other\n  cluster:\n    server: https://other\n" +
			"users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: p\n  context:\n    cluster: c\n    user: u\n    namespace: x\n- name: q\n  context:\n    cluster: other\n    user: u\n",
			Credentials{Server: "https://h", Token: "t"}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(&tc.want, got); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}

// TestParseRefuses plays a provider handing the hub a kubeconfig that
// would run code, read files, go through a proxy or reach elsewhere: each is
// refused with the field named.
func TestParseRefuses(t *testing.T) {
	cert, key := testCert(t)
	for id, tc := range map[string]struct {
		in, field string
	}{
		"P1.exec-plugin": {doc(okCluster, "exec:\n  apiVersion: client.authentication.k8s.io/v1\n  command: /bin/sh\n  args: [-c, 'curl evil']"),
			"users[0].user.exec"},
		"P1.auth-provider": {doc(okCluster, "auth-provider:\n  name: gcp"), "users[0].user.auth-provider"},
		"P1.token-file":    {doc(okCluster, "tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token"), "users[0].user.tokenFile"},
		"P1.cert-file":     {doc(okCluster, "client-certificate: /etc/hub.crt\nclient-key: /etc/hub.key"), "users[0].user.client-certificate"},
		"P1.ca-file":       {doc("server: https://h\ncertificate-authority: /etc/ca.crt", "token: t"), "clusters[0].cluster.certificate-authority"},
		"P1.proxy-url":     {doc("server: https://h\nproxy-url: http://evil:3128", "token: t"), "clusters[0].cluster.proxy-url"},
		"P1.skip-tls":      {doc("server: https://h\ninsecure-skip-tls-verify: true", "token: t"), "clusters[0].cluster.insecure-skip-tls-verify"},
		"P1.tls-server-name": {doc("server: https://h\ntls-server-name: kubernetes", "token: t"),
			"clusters[0].cluster.tls-server-name"},
		"P1.impersonation": {doc(okCluster, "token: t\nas: system:admin"), "users[0].user.as"},
		"P1.basic-auth":    {doc(okCluster, "username: admin\npassword: x"), "users[0].user.password"},
		"P1.extensions":    {"extensions: []\n" + doc(okCluster, "token: t"), "extensions"},
		"P1.plain-http":    {doc("server: http://h:8080", "token: t"), "clusters[0].cluster.server"},
		"P1.server-userinfo": {doc("server: https://u:p@h", "token: t"),
			"clusters[0].cluster.server"},
		"P1.server-query":    {doc("server: https://h/?x=1", "token: t"), "clusters[0].cluster.server"},
		"P1.no-credentials":  {doc(okCluster, "{}"), "users[0].user"},
		"P1.token-and-cert":  {doc(okCluster, "token: t\nclient-certificate-data: "+b64(cert)+"\nclient-key-data: "+b64(key)), "users[0].user.token"},
		"P1.mismatched-key":  {doc(okCluster, "client-certificate-data: "+b64(cert)+"\nclient-key-data: "+b64([]byte("junk"))), "users[0].user.client-certificate-data"},
		"P1.token-newline":   {doc(okCluster, "token: \"a\\nAuthorization: x\""), "users[0].user.token"},
		"P1.bad-base64":      {doc("server: https://h\ncertificate-authority-data: '%%%'", "token: t"), "clusters[0].cluster.certificate-authority-data"},
		"P1.no-context":      {"clusters: []\n", "current-context"},
		"P1.dangling":        {"current-context: x\n", "current-context"},
		"P1.not-yaml":        {"{{{", "kubeconfig"},
		"P1.empty":           {"", "kubeconfig"},
		"P1.huge":            {strings.Repeat("#", MaxSize+1), "kubeconfig"},
		"P1.many-clusters":   {"clusters:\n" + strings.Repeat("- name: x\n", MaxEntries+1), "clusters"},
		"P1.duplicate-names": {"clusters:\n- name: c\n- name: c\n", "clusters[1].name"},
		"P1.wrong-types":     {"clusters: 7\n", "clusters"},
		"P1.empty-key":       {"\"\": x\n", `""`},
		"P1.empty-inner-key": {"clusters:\n- name: c\n  cluster:\n    \"\": x\n", `clusters[0].cluster.""`},
	} {
		t.Run(id, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a FieldError naming %s", err, tc.field)
			}
			if fe.Field != tc.field {
				t.Errorf("refusal names %q (%v), want %q", fe.Field, err, tc.field)
			}
		})
	}
}

func TestNormalizeServer(t *testing.T) {
	for in, want := range map[string]string{
		"https://H.example:6443/": "https://h.example:6443",
		"https://h/prefix/":       "https://h/prefix",
		"https://[::1]:6443":      "https://[::1]:6443",
	} {
		got, err := NormalizeServer(in)
		if err != nil || got != want {
			t.Errorf("NormalizeServer(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "h:6443", "http://h", "https://", "https://u@h", "https://h#f", "https://h?", strings.Repeat("x", MaxServer+1)} {
		if _, err := NormalizeServer(in); err == nil {
			t.Errorf("NormalizeServer(%q) accepted", in)
		}
	}
}

func FuzzParse(f *testing.F) {
	cert, key := testCert(f)
	f.Add([]byte(doc(okCluster, "token: t")))
	f.Add([]byte(doc(okCluster, "client-certificate-data: "+b64(cert)+"\nclient-key-data: "+b64(key))))
	f.Add([]byte(doc(okCluster, "exec:\n  command: sh")))
	f.Add([]byte("current-context: &a [*a, *a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("refusal without a field: %v", err)
			}
			return
		}
		if !strings.HasPrefix(c.Server, "https://") || (c.Token == "") == (len(c.CertData) == 0) {
			t.Fatalf("accepted credentials out of the allow-list: %+v", c)
		}
	})
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func testCert(t testing.TB) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hub"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}
