package envoy_test

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	credinjv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/credential_injector/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	genericv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/injected_credentials/generic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/virtualkeys/sidecar/internal/authz"
)

// Every extension the configs use must be linked in so protojson can
// resolve its @type; naming one type per package here does that.
var _ = []proto.Message{
	&hcmv3.HttpConnectionManager{}, &headermutationv3.HeaderMutation{}, &extauthzv3.ExtAuthz{}, &routerv3.Router{}, &credinjv3.CredentialInjector{},
	&extprocv3.ExternalProcessor{},
	&genericv3.Generic{}, &upstreamhttpv3.HttpProtocolOptions{}, &tlsv3.UpstreamTlsContext{}, &tlsv3.Secret{},
}

type validator interface{ ValidateAll() error }

// load decodes an Envoy YAML document into msg, rejecting unknown fields.
func load(data []byte, msg proto.Message) error {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	if err := protojson.Unmarshal(j, msg); err != nil {
		return fmt.Errorf("protojson: %w", err)
	}
	return nil
}

// validate runs Envoy's validation rules on m and, recursively, on every
// message packed in an Any below it (PGV's ValidateAll does not open Anys).
func validate(m proto.Message) error {
	var errs []error
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err))
		}
	}
	walkAnys(m.ProtoReflect(), func(a *anypb.Any) {
		inner, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.GetTypeUrl(), err))
			return
		}
		if err := validate(inner); err != nil {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

func walkAnys(m protoreflect.Message, fn func(*anypb.Any)) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		visit := func(v protoreflect.Value) {
			msg := v.Message()
			if a, ok := msg.Interface().(*anypb.Any); ok {
				fn(a)
				return
			}
			walkAnys(msg, fn)
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				visit(v.List().Get(i))
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool { visit(mv); return true })
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			visit(v)
		}
		return true
	})
}

func loadBootstrap(t *testing.T, data []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	b := &bootstrapv3.Bootstrap{}
	if err := load(data, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func unpack[T proto.Message](t *testing.T, a *anypb.Any) T {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	v, ok := m.(T)
	if !ok {
		t.Fatalf("%s is not the expected type", a.GetTypeUrl())
	}
	return v
}

// parts digs out what the assertions look at.
type parts struct {
	hcm      *hcmv3.HttpConnectionManager
	filters  []string
	authz    *extauthzv3.ExtAuthz
	extproc  *extprocv3.ExternalProcessor
	strip    *headermutationv3.HeaderMutation
	injector *credinjv3.CredentialInjector
	clusters map[string]*clusterv3.Cluster
	route    *routev3.RouteAction
}

func dig(t *testing.T, b *bootstrapv3.Bootstrap) parts {
	t.Helper()
	p := parts{clusters: map[string]*clusterv3.Cluster{}}
	ls := b.GetStaticResources().GetListeners()
	if len(ls) != 1 || len(ls[0].GetFilterChains()) != 1 {
		t.Fatalf("want one listener with one filter chain")
	}
	p.hcm = unpack[*hcmv3.HttpConnectionManager](t, ls[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig())
	for _, f := range p.hcm.GetHttpFilters() {
		p.filters = append(p.filters, f.GetName())
		if f.GetTypedConfig() == nil {
			t.Errorf("filter %s has no typed_config", f.GetName())
			continue
		}
		switch m := mustNew(t, f.GetTypedConfig()).(type) {
		case *extauthzv3.ExtAuthz:
			p.authz = m
		case *extprocv3.ExternalProcessor:
			p.extproc = m
		case *headermutationv3.HeaderMutation:
			p.strip = m
		case *credinjv3.CredentialInjector:
			p.injector = m
		}
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		p.clusters[c.GetName()] = c
	}
	p.route = p.hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute()
	return p
}

func mustNew(t *testing.T, a *anypb.Any) proto.Message {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestConfigsAreValidEnvoyBootstraps(t *testing.T) {
	for _, file := range []string{"envoy.yaml", "envoy-uds.yaml", "envoy-http.yaml"} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			b := loadBootstrap(t, data)
			if err := validate(b); err != nil {
				t.Fatalf("invalid: %v", err)
			}
			p := dig(t, b)

			want := []string{"envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", "envoy.filters.http.ext_proc", "envoy.filters.http.credential_injector", "envoy.filters.http.router"}
			if !slices.Equal(p.filters, want) {
				t.Errorf("filters = %v, want %v: client identity headers dropped, then ext_authz (strips the virtual key), ext_proc metering, credential injection, router last", p.filters, want)
			}
			checkExtProc(t, p)
			// A client must not be able to pass its own identity headers
			// upstream: the sidecar only sets those the key has.
			removed := map[string]bool{}
			for _, m := range p.strip.GetMutations().GetRequestMutations() {
				removed[m.GetRemove()] = true
			}
			for _, h := range []string{"key-hash", "key-alias", "user-id", "team-id", "model"} {
				if !removed[authz.DefaultIdentityPrefix+h] {
					t.Errorf("header_mutation does not remove the client's %s%s", authz.DefaultIdentityPrefix, h)
				}
			}
			if p.hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() != corev3.HttpProtocolOptions_DROP_HEADER {
				t.Error("headers with underscores are allowed: x_litellm_team_id would bypass the removal")
			}
			// The sidecar reads models from the path: it must see the path
			// the upstream serves (issue 8: dot segments, %2F in a model).
			if !p.hcm.GetNormalizePath().GetValue() || !p.hcm.GetMergeSlashes() ||
				p.hcm.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_REJECT_REQUEST {
				t.Errorf("normalize_path %v, merge_slashes %v, path_with_escaped_slashes_action %v: want true, true, REJECT_REQUEST",
					p.hcm.GetNormalizePath(), p.hcm.GetMergeSlashes(), p.hcm.GetPathWithEscapedSlashesAction())
			}
			if removed["x-litellm-api-key"] {
				t.Error("header_mutation removes x-litellm-api-key, a credential header the sidecar must see")
			}
			a := p.authz
			if a == nil {
				t.Fatal("no ext_authz filter")
			}
			if a.GetFailureModeAllow() {
				t.Error("failure_mode_allow must be false (fail closed)")
			}
			if a.GetStatusOnError().GetCode() != 503 {
				t.Errorf("status_on_error = %v, want 503", a.GetStatusOnError().GetCode())
			}
			body := a.GetWithRequestBody()
			if body == nil || !body.GetAllowPartialMessage() || body.GetMaxRequestBytes() == 0 {
				t.Errorf("with_request_body = %v: the sidecar needs the body (partial allowed) to read the model", body)
			}
			// A cut body denies keys with a model restriction: the limit must
			// hold long-context requests, and fit the sidecar's default
			// --max-body-bytes (its gRPC message limit), 1 MiB.
			if n := body.GetMaxRequestBytes(); n != 1<<20 {
				t.Errorf("max_request_bytes = %d, want 1 MiB (docs/benchmarks.md: the Check's cost per MB)", n)
			}
			if p.route.GetTimeout() == nil || p.route.GetTimeout().AsDuration() != 0 {
				t.Errorf("route timeout = %v, want 0s for long generations", p.route.GetTimeout())
			}
			ps := p.injector.GetCredential().GetTypedConfig()
			src := unpack[*genericv3.Generic](t, ps).GetCredential().GetSdsConfig().GetPathConfigSource()
			if src.GetWatchedDirectory().GetPath() == "" || !strings.HasPrefix(src.GetPath(), src.GetWatchedDirectory().GetPath()+"/") {
				t.Errorf("provider key SDS %v: want a file inside its watched_directory (Kubernetes swaps Secret symlinks)", src)
			}
			if c := p.clusters["openai"]; c.GetTransportSocket() == nil {
				t.Error("upstream LLM cluster is not TLS")
			}

			switch file {
			case "envoy-http.yaml":
				hs := a.GetHttpService()
				if hs == nil || hs.GetPathPrefix() != "/authz" || hs.GetServerUri().GetCluster() != "sidecar_http" {
					t.Fatalf("http_service = %v, want path_prefix /authz to cluster sidecar_http", hs)
				}
				if p.clusters["sidecar_http"] == nil {
					t.Fatal("no sidecar_http cluster")
				}
			default:
				if !body.GetPackAsBytes() {
					t.Error("gRPC mode should pack the body as bytes (raw_body)")
				}
				if a.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "sidecar_authz" {
					t.Fatal("ext_authz does not call cluster sidecar_authz")
				}
				c := p.clusters["sidecar_authz"]
				if c == nil {
					t.Fatal("no sidecar_authz cluster")
				}
				opts := unpack[*upstreamhttpv3.HttpProtocolOptions](t, c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"])
				if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
					t.Error("authz cluster is not HTTP/2: gRPC needs it")
				}
				hc := c.GetHealthChecks()
				if len(hc) != 1 || hc[0].GetGrpcHealthCheck() == nil {
					t.Error("authz cluster has no gRPC health check")
				}
				if c.GetCommonLbConfig().GetHealthyPanicThreshold().GetValue() != 0 || c.GetCommonLbConfig().GetHealthyPanicThreshold() == nil {
					t.Error("healthy_panic_threshold must be 0 for a single sidecar endpoint")
				}
				addr := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress()
				if file == "envoy-uds.yaml" && addr.GetPipe().GetPath() == "" {
					t.Error("UDS variant does not use a pipe address")
				}
				for _, h := range []string{"authorization", "x-api-key", "x-goog-api-key", "api-key", "x-litellm-api-key", "ocp-apim-subscription-key"} {
					found := false
					for _, m := range a.GetAllowedHeaders().GetPatterns() {
						if m.GetExact() == h {
							found = true
						}
					}
					if !found {
						t.Errorf("allowed_headers lacks credential header %s", h)
					}
				}
			}
		})
	}
}

// The validation must be able to fail: each mutation breaks a rule Envoy
// enforces, and the test proves validate notices.
func TestBrokenConfigsAreRejected(t *testing.T) {
	base, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		old, new string
		want     string
	}{
		{"missing health-check threshold", "      healthy_threshold: 1\n", "", "HealthyThreshold"},
		{"empty cluster name", "  - name: sidecar_authz\n", "  - name: \"\"\n", "Name"},
		{"status Empty on error", "status_on_error: { code: ServiceUnavailable }", "status_on_error: { code: Empty }", "Code"},
		{"health check without timeout", "    - timeout: 1s\n      interval: 5s\n", "    - interval: 5s\n", "Timeout"},
		{"ext_proc message timeout out of range", "message_timeout: 0.2s", "message_timeout: 3601s", "MessageTimeout"},
		{"ext_proc body mode out of range", "response_body_mode: STREAMED", "response_body_mode: 9", "ResponseBodyMode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(base), tt.old) {
				t.Fatalf("envoy.yaml no longer contains %q: update the mutation", tt.old)
			}
			b := loadBootstrap(t, []byte(strings.Replace(string(base), tt.old, tt.new, 1)))
			err := validate(b)
			if err == nil {
				t.Fatal("broken config passed validation")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %q", err, tt.want)
			}
		})
	}
	if err := load([]byte("static_resources: {clusterz: []}"), &bootstrapv3.Bootstrap{}); err == nil {
		t.Error("unknown field accepted")
	}
}

func TestSecretFileIsAValidSDSResponse(t *testing.T) {
	data, err := os.ReadFile("secrets/openai-key.yaml")
	if err != nil {
		t.Fatal(err)
	}
	resp := &discoveryv3.DiscoveryResponse{}
	if err := load(data, resp); err != nil {
		t.Fatal(err)
	}
	if err := validate(resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 1 {
		t.Fatalf("want one secret, got %d", len(resp.GetResources()))
	}
	s := unpack[*tlsv3.Secret](t, resp.GetResources()[0])
	if s.GetName() != "openai-key" || s.GetGenericSecret().GetSecret().GetInlineString() == "" {
		t.Errorf("secret = %v, want generic secret openai-key referenced by envoy.yaml", s)
	}
}

// checkExtProc: the metering filter talks gRPC to the sidecar over HTTP/2,
// gets the Check's identity, answers per the documented processing mode,
// and fails open.
func checkExtProc(t *testing.T, p parts) {
	t.Helper()
	x := p.extproc
	if x == nil {
		t.Fatal("no ext_proc filter")
	}
	cl := p.clusters[x.GetGrpcService().GetEnvoyGrpc().GetClusterName()]
	if cl == nil {
		t.Fatalf("ext_proc cluster %q does not exist", x.GetGrpcService().GetEnvoyGrpc().GetClusterName())
	}
	opts := unpack[*upstreamhttpv3.HttpProtocolOptions](t, cl.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"])
	if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("ext_proc cluster is not HTTP/2: gRPC needs it")
	}
	if !slices.Contains(x.GetMetadataOptions().GetForwardingNamespaces().GetUntyped(), "envoy.filters.http.ext_authz") {
		t.Error("ext_proc does not get the ext_authz dynamic metadata (metadata_options.forwarding_namespaces.untyped)")
	}
	if !x.GetFailureModeAllow() {
		t.Error("metering must fail open (failure_mode_allow: true)")
	}
	if !x.GetAllowModeOverride() {
		t.Error("allow_mode_override is needed for include_usage injection (request body BUFFERED on demand)")
	}
	m := x.GetProcessingMode()
	if m.GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND || m.GetResponseHeaderMode() != extprocv3.ProcessingMode_SEND ||
		m.GetRequestBodyMode() != extprocv3.ProcessingMode_NONE || m.GetResponseBodyMode() != extprocv3.ProcessingMode_STREAMED ||
		m.GetRequestTrailerMode() != extprocv3.ProcessingMode_SKIP || m.GetResponseTrailerMode() != extprocv3.ProcessingMode_SKIP {
		t.Errorf("processing_mode = %v, want headers SEND, request body NONE, response body STREAMED, trailers SKIP", m)
	}
	if x.GetObservabilityMode() {
		t.Error("observability_mode would drop the include_usage injection")
	}
	if d := x.GetMessageTimeout().AsDuration(); d <= 0 || d > time.Second {
		t.Errorf("message_timeout = %v, want a bound under 1s", d)
	}
}
