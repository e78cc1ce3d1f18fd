//go:build tools

// Package tools pins the etcd server that `make tools` builds into bin/etcd.
// etcd lives in its own module so its dependency graph never bends Kubernetes'.
package tools

import _ "go.etcd.io/etcd/server/v3"
