// Package envoy holds the Envoy configurations shipped with the sidecar
// (envoy.yaml, envoy-uds.yaml, envoy-http.yaml and the SDS secret file) and
// the test that keeps them valid: no Envoy binary runs here, so each file is
// decoded into go-control-plane's Bootstrap proto and checked with Envoy's
// own validation rules, embedded Anys included.
package envoy
