//go:build tools

// Package tools pins etcd. It is a module of its own because k8s.io/kubernetes
// in ../go.mod requires newer etcd client modules, and minimal version
// selection would otherwise move the server past the pinned release.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
