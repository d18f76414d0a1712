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
	case "kustomize.config.k8s.io/v1beta1/Kustomization":
		return nil // checked by TestKustomization
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

	mesh := meshSnippets(t)
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
	sc := container(t, pod, "virtual-keys")
	if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("the sidecar should be a native sidecar (init container, restartPolicy Always), so the app gets no traffic before it is up")
	}
	if !strings.Contains(d.Spec.Template.Annotations["proxy.istio.io/config"], `"holdApplicationUntilProxyStarts": true`) {
		t.Error("the app should wait for istio-proxy (holdApplicationUntilProxyStarts)")
	}
	checkSidecarContainer(t, o, pod, sc)
	checkMeteringFilter(t, o, se, d.Spec.Template.Labels["app"])
}

// meshSnippets decodes the three forms of the mesh config the repo ships
// (a snippet to merge, IstioOperator, Helm values) and requires them to
// agree; none is a whole istio ConfigMap, which would replace the mesh's.
func meshSnippets(t *testing.T) *meshv1alpha1.MeshConfig {
	t.Helper()
	var out *meshv1alpha1.MeshConfig
	for _, f := range []struct {
		file string
		path []string // where meshConfig sits in the document
	}{
		{"istio/mesh/extension-provider.yaml", nil},
		{"istio/mesh/istio-operator.yaml", []string{"spec", "meshConfig"}},
		{"istio/mesh/helm-values.yaml", []string{"meshConfig"}},
	} {
		b, err := os.ReadFile(f.file)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f.file, err)
		}
		if k, _ := doc["kind"].(string); k == "ConfigMap" {
			t.Fatalf("%s is a whole ConfigMap: applying it would replace the mesh config", f.file)
		}
		var node any = doc
		for _, p := range f.path {
			m, _ := node.(map[string]any)
			node = m[p]
		}
		j, err := json.Marshal(node)
		if err != nil {
			t.Fatal(err)
		}
		mesh := &meshv1alpha1.MeshConfig{}
		if err := protojson.Unmarshal(j, mesh); err != nil {
			t.Fatalf("%s: mesh config: %v", f.file, err)
		}
		if out != nil && !proto.Equal(out, mesh) {
			t.Errorf("%s disagrees with istio/mesh/extension-provider.yaml", f.file)
		}
		if out == nil {
			out = mesh
		}
	}
	return out
}

// kubectl apply -k applies what kustomization.yaml lists: the namespace
// first, every manifest of the directory, and no placeholder Secret.
func TestKustomization(t *testing.T) {
	b, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatal(err)
	}
	if k.Kind != "Kustomization" || len(k.Resources) == 0 || k.Resources[0] != "namespace.yaml" {
		t.Fatalf("kustomization %+v: want a Kustomization applying namespace.yaml first", k)
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		if _, err := os.Stat(filepath.Join("kubernetes", r)); err != nil {
			t.Errorf("resource %s: %v", r, err)
		}
		if strings.Contains(r, "secret") {
			t.Errorf("resource %s: placeholder Secrets must not be applied by default", r)
		}
		listed[r] = true
	}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range files {
		base := filepath.Base(f)
		if base == "kustomization.yaml" || strings.HasSuffix(base, ".example.yaml") {
			continue
		}
		if !listed[base] {
			t.Errorf("%s is not in kustomization.yaml (name it *.example.yaml if it must not be applied)", base)
		}
	}
}

// A Service must target numeric ports: a named port of a native sidecar
// container resolves only from Kubernetes 1.32, and the README says 1.29+.
func TestServiceTargetsNumericPorts(t *testing.T) {
	o := decodeAll(t, "kubernetes")
	pod := o.deployments["llm-gateway"].Spec.Template.Spec
	ports := map[int32]bool{}
	for _, c := range append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...) {
		for _, p := range c.Ports {
			ports[p.ContainerPort] = true
		}
	}
	for _, svc := range o.services {
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.Type != 0 { // intstr.Int
				t.Errorf("Service %s port %s targets the named port %q", svc.Name, p.Name, p.TargetPort.StrVal)
			} else if !ports[p.TargetPort.IntVal] {
				t.Errorf("Service %s port %s targets %d, which no container exposes", svc.Name, p.Name, p.TargetPort.IntVal)
			}
		}
	}
}

// The image and the manifests agree: the user the image runs as is the one
// the pods run as, and the data dir the image names exists in the image,
// owned by that user, and is the volume the manifests mount.
func TestDockerfileAndManifestsAgree(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	user := regexp.MustCompile(`(?m)^USER (\d+):(\d+)\s*$`).FindStringSubmatch(df)
	if user == nil {
		t.Fatal("Dockerfile: want a numeric USER uid:gid (runAsNonRoot can only verify a numeric user)")
	}
	dataDir := regexp.MustCompile(`SIDECAR_DATA_DIR=(\S+)`).FindStringSubmatch(df)
	if dataDir == nil {
		t.Fatal("Dockerfile sets no SIDECAR_DATA_DIR")
	}
	if !regexp.MustCompile(`COPY --from=build --chown=` + user[1] + `:` + user[2] + ` \S+ ` + regexp.QuoteMeta(dataDir[1]) + `\s`).MatchString(df) {
		t.Errorf("Dockerfile does not create %s owned by %s:%s (distroless has no writable %s otherwise)", dataDir[1], user[1], user[2], dataDir[1])
	}
	k := decodeAll(t, "kubernetes")
	if got := k.configMaps["virtual-keys-settings"].Data["SIDECAR_DATA_DIR"]; got != dataDir[1] {
		t.Errorf("ConfigMap SIDECAR_DATA_DIR %q, Dockerfile %q", got, dataDir[1])
	}
	for _, dir := range []string{"kubernetes", "istio"} {
		o := decodeAll(t, dir)
		pod := o.deployments["llm-gateway"].Spec.Template.Spec
		if sc := pod.SecurityContext; sc == nil || sc.RunAsUser == nil || fmt.Sprint(*sc.RunAsUser) != user[1] ||
			sc.RunAsGroup == nil || fmt.Sprint(*sc.RunAsGroup) != user[2] || sc.FSGroup == nil || fmt.Sprint(*sc.FSGroup) != user[2] {
			t.Errorf("%s: pod security context %+v: want runAsUser %s, runAsGroup and fsGroup %s as the image", dir, sc, user[1], user[2])
		}
		mounted := false
		for _, m := range container(t, pod, "virtual-keys").VolumeMounts {
			mounted = mounted || m.MountPath == dataDir[1]
		}
		if !mounted {
			t.Errorf("%s: the sidecar does not mount a volume at the data dir %s", dir, dataDir[1])
		}
	}
}

// .ci/run installs nginx and caddy without starting them and ends only the
// processes its tests start: stopping processes by name would end other
// people's nginx on a shared machine.
func TestCIStopsNothingByName(t *testing.T) {
	b, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") {
			continue
		}
		for _, bad := range []string{"pkill", "killall", "systemctl stop"} {
			if strings.Contains(l, bad) {
				t.Errorf(".ci/run: %q stops processes by name", l)
			}
		}
	}
	if !bytes.Contains(b, []byte("policy-rc.d")) {
		t.Error(".ci/run installs packages without a policy-rc.d, so Debian starts their services")
	}
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
	for _, want := range []string{"CGO_ENABLED=0", "distroless/static", "USER 65532:65532", "./cmd/sidecar"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
