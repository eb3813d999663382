//go:build tools

// Package tools only records which main packages build.sh compiles, so that
// `go mod tidy` keeps their dependencies in go.mod/go.sum. It is never built
// itself: build.sh runs `go build <package>` for each import below.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"            // etcd (package main at the module root)
	_ "k8s.io/kubernetes/cmd/kube-apiserver" // kube-apiserver
	_ "k8s.io/kubernetes/cmd/kubectl"        // kubectl, same minor as the API server
)
