// Package deploy holds the Kubernetes and Istio manifests and the proxy
// examples shipped with the sidecar, and the tests that keep them true: each
// manifest is decoded into the real API types (k8s.io/api, istio.io/api)
// with unknown fields rejected, and checked for what the sidecar needs.
package deploy
