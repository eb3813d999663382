//go:build tools

// Package tools only records which main package e2e/helm/build.sh compiles,
// so that `go mod tidy` keeps its dependencies in go.mod/go.sum. It is never
// built itself.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm" // helm, used by the chart tests (lint, template)
)
