package remote

import (
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// TokenKubeconfig writes a kubeconfig with one context: cluster at server,
// trusting caData, as user with a bearer token. Every credential Flotilla
// hands out (federation identities, join credentials) is one of these.
func TokenKubeconfig(cluster, server string, caData []byte, user, token string) ([]byte, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters[cluster] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caData}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts[cluster] = &clientcmdapi.Context{Cluster: cluster, AuthInfo: user}
	kc.CurrentContext = cluster
	return clientcmd.Write(*kc)
}
