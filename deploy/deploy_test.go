package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1 "istio.io/api/networking/v1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1 "istio.io/api/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// istioCR is the Kubernetes envelope of an Istio resource; Spec is decoded
// into the Istio proto separately.
type istioCR struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              json.RawMessage `json:"spec"`
}

// objects is every document of every manifest, decoded.
type objects struct {
	namespaces  []*corev1.Namespace
	secrets     map[string]*corev1.Secret
	configMaps  map[string]*corev1.ConfigMap
	deployments map[string]*appsv1.Deployment // by directory/name
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	entries     []*networkingv1.ServiceEntry
	policies    []*securityv1.AuthorizationPolicy
	filters     []*networkingv1alpha3.EnvoyFilter
}

func decodeAll(t *testing.T, dir string) *objects {
	t.Helper()
	o := &objects{secrets: map[string]*corev1.Secret{}, configMaps: map[string]*corev1.ConfigMap{}, deployments: map[string]*appsv1.Deployment{}}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			if err := o.decode([]byte(doc)); err != nil {
				t.Errorf("%s document %d: %v", f, i, err)
			}
		}
	}
	return o
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func (o *objects) decode(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	strict := func(v any) error { return yaml.UnmarshalStrict(doc, v) }
	switch tm.APIVersion + "/" + tm.Kind {
	case "v1/Namespace":
		v := &corev1.Namespace{}
		o.namespaces = append(o.namespaces, v)
		return strict(v)
	case "v1/Secret":
		v := &corev1.Secret{}
		if err := strict(v); err != nil {
			return err
		}
		o.secrets[v.Name] = v
	case "v1/ConfigMap":
		v := &corev1.ConfigMap{}
		if err := strict(v); err != nil {
			return err
		}
		o.configMaps[v.Name] = v
	case "apps/v1/Deployment":
		v := &appsv1.Deployment{}
		if err := strict(v); err != nil {
			return err
		}
		o.deployments[v.Name] = v
	case "v1/Service":
		v := &corev1.Service{}
		o.services = append(o.services, v)
		return strict(v)
	case "policy/v1/PodDisruptionBudget":
		v := &policyv1.PodDisruptionBudget{}
		o.pdbs = append(o.pdbs, v)
		return strict(v)
	case "networking.istio.io/v1/ServiceEntry":
		v := &networkingv1.ServiceEntry{}
		o.entries = append(o.entries, v)
		return decodeIstio(doc, v)
	case "networking.istio.io/v1alpha3/EnvoyFilter":
		v := &networkingv1alpha3.EnvoyFilter{}
		o.filters = append(o.filters, v)
		return decodeIstio(doc, v)
	case "security.istio.io/v1/AuthorizationPolicy":
		v := &securityv1.AuthorizationPolicy{}
		o.policies = append(o.policies, v)
		return decodeIstio(doc, v)
	default:
		return fmt.Errorf("unexpected kind %s/%s", tm.APIVersion, tm.Kind)
	}
	return nil
}

// decodeIstio decodes the envelope strictly and the spec into the Istio
// proto with unknown fields rejected.
func decodeIstio(doc []byte, spec proto.Message) error {
	var cr istioCR
	if err := yaml.UnmarshalStrict(doc, &cr); err != nil {
		return err
	}
	return protojson.UnmarshalOptions{DiscardUnknown: false}.Unmarshal(cr.Spec, spec)
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

// checkSidecarContainer asserts what every deployment of the sidecar needs.
func checkSidecarContainer(t *testing.T, o *objects, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.IntValue() != 4000 {
		t.Errorf("liveness probe = %+v, want GET /healthz on 4000", p)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.IntValue() != 4000 {
		t.Errorf("readiness probe = %+v, want GET /readyz on 4000", p)
	}
	if p := c.StartupProbe; p == nil || p.GRPC == nil || p.GRPC.Port != 9001 || p.GRPC.Service == nil || *p.GRPC.Service != "envoy.service.auth.v3.Authorization" {
		t.Errorf("startup probe = %+v, want gRPC health of the Authorization service on 9001", p)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("security context %+v: want a read-only root fs and no privilege escalation", sc)
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("pod does not require non-root")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Error("sidecar has no CPU request or memory limit")
	}
	wantEnv := map[string]bool{"SIDECAR_MASTER_KEY": false, "DATABASE_URL": false}
	for _, e := range c.Env {
		if _, ok := wantEnv[e.Name]; ok && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			if s := o.secrets[ref.Name]; s == nil || s.StringData[ref.Key] == "" {
				t.Errorf("%s comes from secret %s key %s, which the manifests do not define", e.Name, ref.Name, ref.Key)
			}
			wantEnv[e.Name] = true
		}
	}
	for name, ok := range wantEnv {
		if !ok {
			t.Errorf("%s is not taken from a Secret", name)
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil && o.configMaps[ef.ConfigMapRef.Name] == nil {
			t.Errorf("envFrom names missing ConfigMap %s", ef.ConfigMapRef.Name)
		}
	}
	var dataMounted bool
	for _, m := range c.VolumeMounts {
		dataMounted = dataMounted || m.MountPath == "/data"
	}
	if !dataMounted {
		t.Error("no writable /data volume for the data dir (the root fs is read-only)")
	}
}

func TestKubernetesManifests(t *testing.T) {
	o := decodeAll(t, "kubernetes")
	d := o.deployments["llm-gateway"]
	if d == nil {
		t.Fatal("no llm-gateway Deployment")
	}
	pod := d.Spec.Template.Spec
	sc := container(t, pod, "virtual-keys")
	if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("the sidecar should be a native sidecar (init container, restartPolicy Always) so it starts before Envoy and stops after it")
	}
	checkSidecarContainer(t, o, pod, sc)
	envoy := container(t, pod, "envoy")
	if envoy.SecurityContext == nil || envoy.SecurityContext.ReadOnlyRootFilesystem == nil || !*envoy.SecurityContext.ReadOnlyRootFilesystem {
		t.Error("envoy container does not have a read-only root fs")
	}

	// Volumes name objects that exist; Envoy's config is envoy/envoy.yaml verbatim.
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap != nil && o.configMaps[v.ConfigMap.Name] == nil:
			t.Errorf("volume %s: no ConfigMap %s", v.Name, v.ConfigMap.Name)
		case v.Secret != nil && o.secrets[v.Secret.SecretName] == nil:
			t.Errorf("volume %s: no Secret %s", v.Name, v.Secret.SecretName)
		}
	}
	want, err := os.ReadFile("../envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := o.configMaps["envoy-config"].Data["envoy.yaml"]; got != string(want) {
		t.Error("ConfigMap envoy-config's envoy.yaml differs from envoy/envoy.yaml: copy it again")
	}
	sds, err := os.ReadFile("../envoy/secrets/openai-key.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := o.secrets["provider-credentials"].StringData["openai-key.yaml"]; !strings.Contains(string(sds), strings.TrimSpace(got)) {
		t.Error("Secret provider-credentials differs from envoy/secrets/openai-key.yaml")
	}

	// Every setting in the ConfigMap is a documented variable.
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	settings := o.configMaps["virtual-keys-settings"]
	if settings == nil {
		t.Fatal("no virtual-keys-settings ConfigMap")
	}
	for k := range settings.Data {
		if !bytes.Contains(readme, []byte("`"+k+"`")) {
			t.Errorf("ConfigMap setting %s is not in the README's configuration table", k)
		}
	}
	if settings.Data["SIDECAR_GRPC_ADDR"] != "0.0.0.0:9001" || settings.Data["SIDECAR_HTTP_ADDR"] != "0.0.0.0:4000" {
		t.Error("the sidecar must listen on the pod address for the kubelet's probes")
	}

	labels := d.Spec.Template.Labels
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	if len(o.services) != 1 || !matches(o.services[0].Spec.Selector) {
		t.Error("Service does not select the pods")
	}
	if len(o.pdbs) != 1 || o.pdbs[0].Spec.Selector == nil || !matches(o.pdbs[0].Spec.Selector.MatchLabels) || o.pdbs[0].Spec.MinAvailable == nil {
		t.Error("PodDisruptionBudget does not protect the pods")
	}
}

func TestIstioManifests(t *testing.T) {
	o := decodeAll(t, "istio")
	k := decodeAll(t, "kubernetes") // the Istio deployment reuses the settings and secrets
	o.secrets, o.configMaps = k.secrets, k.configMaps

	cm, err := os.ReadFile("istio/mesh-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var meshCM corev1.ConfigMap
	if err := yaml.UnmarshalStrict(cm, &meshCM); err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON([]byte(meshCM.Data["mesh"]))
	if err != nil {
		t.Fatal(err)
	}
	mesh := &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(j, mesh); err != nil {
		t.Fatalf("mesh config: %v", err)
	}
	if len(mesh.ExtensionProviders) != 1 {
		t.Fatalf("want one extension provider, got %d", len(mesh.ExtensionProviders))
	}
	prov := mesh.ExtensionProviders[0]
	g := prov.GetEnvoyExtAuthzGrpc()
	if g == nil || g.Timeout == nil || g.Timeout.AsDuration() <= 0 || g.FailOpen || g.IncludeRequestBodyInCheck == nil || !g.IncludeRequestBodyInCheck.AllowPartialMessage {
		t.Fatalf("provider %+v: want gRPC ext_authz with a timeout, fail closed, partial body", g)
	}

	if len(o.policies) != 1 {
		t.Fatal("want one AuthorizationPolicy")
	}
	p := o.policies[0]
	if p.Action != securityv1.AuthorizationPolicy_CUSTOM || p.GetProvider().GetName() != prov.Name {
		t.Errorf("policy action %v provider %q, want CUSTOM %q", p.Action, p.GetProvider().GetName(), prov.Name)
	}
	if len(o.entries) != 1 {
		t.Fatal("want one ServiceEntry")
	}
	se := o.entries[0]
	if len(se.Hosts) != 1 || se.Hosts[0] != g.Service || len(se.Ports) != 1 || se.Ports[0].Number != g.Port {
		t.Errorf("ServiceEntry %v:%v does not match the provider %s:%d", se.Hosts, se.Ports, g.Service, g.Port)
	}
	if len(se.Endpoints) != 1 || se.Endpoints[0].Address != "127.0.0.1" {
		t.Error("ServiceEntry must resolve to the sidecar in the same pod (127.0.0.1)")
	}

	d := o.deployments["llm-gateway"]
	if d == nil {
		t.Fatal("no llm-gateway Deployment")
	}
	if d.Spec.Template.Labels["app"] != p.Selector.MatchLabels["app"] {
		t.Error("AuthorizationPolicy does not select the Deployment's pods")
	}
	pod := d.Spec.Template.Spec
	checkSidecarContainer(t, o, pod, container(t, pod, "virtual-keys"))
	checkMeteringFilter(t, o, se, d.Spec.Template.Labels["app"])
}

func TestBrokenManifestsAreRejected(t *testing.T) {
	tests := []struct{ name, doc string }{
		{"unknown k8s field", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicaz: 2}\n"},
		{"unknown istio field", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {actionz: CUSTOM}\n"},
		{"bad istio enum", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {action: MAYBE}\n"},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &objects{secrets: map[string]*corev1.Secret{}, configMaps: map[string]*corev1.ConfigMap{}, deployments: map[string]*appsv1.Deployment{}}
			if err := o.decode([]byte(tt.doc)); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CGO_ENABLED=0", "distroless/static", "USER nonroot", "./cmd/sidecar"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
