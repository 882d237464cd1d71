// Package keys keeps an ed25519 key pair in a Secret, made on first use:
// the agent's, to sign usage reports, and the hub's, to sign the ledger.
package keys

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Data keys of the Secret.
const (
	PublicKey  = "ed25519.pub"
	PrivateKey = "ed25519.key"
)

// Ensure returns the key pair in Secret namespace/name, creating it if it
// does not exist. Two callers racing to create it end with the same key.
func Ensure(ctx context.Context, cs kubernetes.Interface, namespace, name string) (ed25519.PrivateKey, error) {
	secrets := cs.CoreV1().Secrets(namespace)
	for range 2 {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			pub, priv := s.Data[PublicKey], s.Data[PrivateKey]
			if len(pub) != ed25519.PublicKeySize || len(priv) != ed25519.PrivateKeySize {
				return nil, fmt.Errorf("Secret %s/%s does not hold an ed25519 key pair; delete it to generate a new one", namespace, name)
			}
			return ed25519.PrivateKey(priv), nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading key Secret %s/%s: %w", namespace, name, err)
		}
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
			Data:       map[string][]byte{PublicKey: pub, PrivateKey: priv},
		}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating key Secret %s/%s: %w", namespace, name, err)
		}
	}
	return nil, errors.New("key Secret vanished while it was being created")
}
