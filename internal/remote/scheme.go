package remote

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

// NewScheme returns a scheme with the built-in kinds and Flotilla's, the one
// every client of a hub or provider here uses. Registering these static
// types cannot fail, so an error is a programming mistake and panics.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := flotillav1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
