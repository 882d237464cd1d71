//go:build tools

// Package tools pins every binary the build and tests need. The Makefile
// builds each import below into bin/ with the versions locked in go.mod;
// the Kubernetes components are one binary, ./kube.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
	_ "sigs.k8s.io/kwok/cmd/kwok"
	_ "sigs.k8s.io/kwok/cmd/kwokctl"
)
