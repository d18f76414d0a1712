package deploy_test

import (
	"fmt"
	"slices"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	networkingv1 "istio.io/api/networking/v1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
)

// checkMeteringFilter: the EnvoyFilter puts a valid ext_proc filter right
// after ext_authz in the gateway pods' inbound chain, calling the sidecar
// through the ServiceEntry's cluster, with the Check's metadata forwarded.
func checkMeteringFilter(t *testing.T, o *objects, se *networkingv1.ServiceEntry, app string) {
	t.Helper()
	if len(o.filters) != 1 {
		t.Fatalf("want one EnvoyFilter (ext_proc metering), got %d", len(o.filters))
	}
	f := o.filters[0]
	if f.GetWorkloadSelector().GetLabels()["app"] != app {
		t.Error("EnvoyFilter does not select the gateway pods")
	}
	if len(f.ConfigPatches) != 1 {
		t.Fatalf("want one config patch, got %d", len(f.ConfigPatches))
	}
	p := f.ConfigPatches[0]
	if p.ApplyTo != networkingv1alpha3.EnvoyFilter_HTTP_FILTER || p.GetMatch().GetContext() != networkingv1alpha3.EnvoyFilter_SIDECAR_INBOUND ||
		p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_INSERT_AFTER ||
		p.GetMatch().GetListener().GetFilterChain().GetFilter().GetSubFilter().GetName() != "envoy.filters.http.ext_authz" {
		t.Errorf("patch %v: want an HTTP filter inserted after ext_authz in the inbound chain", p)
	}
	j, err := protojson.Marshal(p.GetPatch().GetValue())
	if err != nil {
		t.Fatal(err)
	}
	hf := &hcmv3.HttpFilter{}
	if err := protojson.Unmarshal(j, hf); err != nil {
		t.Fatalf("patch value is not an Envoy HTTP filter: %v", err)
	}
	if err := hf.ValidateAll(); err != nil {
		t.Fatalf("patch value: %v", err)
	}
	x := &extprocv3.ExternalProcessor{}
	if err := hf.GetTypedConfig().UnmarshalTo(x); err != nil {
		t.Fatalf("typed_config is not ext_proc: %v", err)
	}
	if err := x.ValidateAll(); err != nil {
		t.Fatalf("ext_proc: %v", err)
	}
	want := fmt.Sprintf("outbound|%d||%s", se.Ports[0].Number, se.Hosts[0])
	if got := x.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != want {
		t.Errorf("ext_proc cluster %q, want the ServiceEntry's %q", got, want)
	}
	if !slices.Contains(x.GetMetadataOptions().GetForwardingNamespaces().GetUntyped(), "envoy.filters.http.ext_authz") {
		t.Error("ext_authz metadata not forwarded")
	}
	m := x.GetProcessingMode()
	if !x.GetFailureModeAllow() || !x.GetAllowModeOverride() || m.GetResponseBodyMode() != extprocv3.ProcessingMode_STREAMED ||
		m.GetRequestBodyMode() != extprocv3.ProcessingMode_NONE {
		t.Errorf("ext_proc settings differ from envoy/envoy.yaml's: %v", x)
	}
}
