package httpauthz_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/httpauthz"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/ratelimit"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

const providerKey = "provider-secret-key"

// recorder is the upstream stub: it records what reached it.
type recorder struct {
	mu   sync.Mutex
	last http.Header
	path string
	n    int
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	rec.last, rec.path = r.Header.Clone(), r.URL.RequestURI()
	rec.n++
	rec.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"choices":[]}`)
}

func (rec *recorder) snapshot() (http.Header, string, int) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.last, rec.path, rec.n
}

// stack is a real sidecar decision stack (embedded store, cache,
// Authorizer) behind the HTTP authz handler, plus the upstream stub.
type stack struct {
	st       *sqlite.Store
	cache    *cache.Cache
	sidecar  *httptest.Server
	upstream *httptest.Server
	rec      *recorder
}

func newStack(t *testing.T) *stack {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "keys.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := cache.New(cache.Config{Loader: st, MaxKeys: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	detach := c.Attach(st)
	t.Cleanup(detach)
	rl, err := ratelimit.New(ratelimit.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rl.Close)
	a, err := authz.New(authz.Config{Cache: c, MasterKey: "sk-master-e2e", RateLimiter: rl})
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpauthz.New(httpauthz.Config{Decider: a, TrustForwarded: true, Releaser: rl})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(h.Prefix(), h)
	mux.Handle(h.Prefix()+"/", h)
	s := &stack{st: st, cache: c, sidecar: httptest.NewServer(mux), rec: &recorder{}}
	s.upstream = httptest.NewServer(s.rec)
	t.Cleanup(s.sidecar.Close)
	t.Cleanup(s.upstream.Close)
	return s
}

func (s *stack) addKey(t *testing.T, k *keys.Key) string {
	t.Helper()
	raw := keys.Generate()
	k.Token = keys.HashHex(raw)
	if err := s.st.Create(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	return raw
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// render fills a deploy/ template's placeholders.
func render(t *testing.T, tmpl string, vars map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for k, v := range vars {
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	if i := strings.Index(s, "{{"); i >= 0 && !strings.HasPrefix(strings.TrimSpace(s[strings.LastIndex(s[:i], "\n")+1:]), "#") {
		t.Fatalf("%s: unfilled placeholder near %q", tmpl, s[i:min(len(s), i+20)])
	}
	return s
}

// lookPath finds a proxy binary; without it the test skips, except in CI.
func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return filepath.Join(dir, name)
			}
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed, and CI is set (.ci/run installs it)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func startProxy(t *testing.T, cmd *exec.Cmd, addr string, logs *strings.Builder) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = logWriter{logs}, logWriter{logs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy did not listen on %s: %s", addr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type logWriter struct{ b *strings.Builder }

var logMu sync.Mutex

func (w logWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	return w.b.Write(p)
}

type result struct {
	status int
	body   string
	errTyp string
	header http.Header
}

func call(t *testing.T, base, method, path string, hdr map[string]string) result {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(`{"messages":[]}`))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, body: string(b), header: resp.Header}
	var env struct {
		Error struct{ Type string } `json:"error"`
	}
	if json.Unmarshal(b, &env) == nil {
		r.errTyp = env.Error.Type
	}
	return r
}

func runProxyCases(t *testing.T, s *stack, base string) {
	past := time.Now().Add(-time.Hour)
	zero, spent := 0.0, 5.0
	blocked := true
	alias := "e2e-alias"
	user, team := "user-1", "team-1"
	good := s.addKey(t, &keys.Key{KeyAlias: &alias, UserID: &user, TeamID: &team, Models: []string{"gpt-4o"}})
	blockedKey := s.addKey(t, &keys.Key{Blocked: &blocked})
	expired := s.addKey(t, &keys.Key{Expires: &past})
	broke := s.addKey(t, &keys.Key{MaxBudget: &zero, Spend: spent})
	azure := func(model string) string {
		return "/openai/deployments/" + model + "/chat/completions?api-version=2024-06-01"
	}

	tests := []struct {
		name    string
		method  string
		path    string
		hdr     map[string]string
		status  int
		errType string
	}{
		{"allow", "POST", azure("gpt-4o"), map[string]string{"Authorization": "Bearer " + good}, 200, ""},
		{"allow via api-key header", "POST", azure("gpt-4o"), map[string]string{"Api-Key": good}, 200, ""},
		{"no key", "POST", azure("gpt-4o"), nil, 401, "auth_error"},
		{"unknown key", "POST", azure("gpt-4o"), map[string]string{"Authorization": "Bearer sk-not-a-real-key-at-all00"}, 401, "token_not_found_in_db"},
		{"not a virtual key", "POST", azure("gpt-4o"), map[string]string{"Authorization": "Bearer hello"}, 401, "auth_error"},
		{"blocked", "POST", azure("gpt-4o"), map[string]string{"Authorization": "Bearer " + blockedKey}, 401, "auth_error"},
		{"model not allowed (path)", "POST", azure("gpt-4"), map[string]string{"Authorization": "Bearer " + good}, 401, "key_model_access_denied"},
		{"expired", "POST", azure("gpt-4o"), map[string]string{"Authorization": "Bearer " + expired}, 401, "expired_key"},
		{"over budget", "POST", azure("gpt-4o"), map[string]string{"Authorization": "Bearer " + broke}, 400, "budget_exceeded"},
		// Model carriers the HTTP mode must check (issue 8). The proxy sends
		// no body: a body-model route names no model the check can see.
		{"body-model route, body not sent", "POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + good}, 401, "key_model_access_denied"},
		{"Azure dot segments", "POST", "/openai/deployments/gpt-4o/../gpt-4-32k/chat/completions", map[string]string{"Authorization": "Bearer " + good}, 401, "key_model_access_denied"},
		{"Azure encoded slash", "POST", "/openai/deployments/gpt-4o%2F..%2Fgpt-4-32k/chat/completions", map[string]string{"Authorization": "Bearer " + good}, 401, "key_model_access_denied"},
		{"Gemini path", "POST", "/v1beta/models/gemini-2.5-pro:generateContent", map[string]string{"Authorization": "Bearer " + good}, 401, "key_model_access_denied"},
		{"Bedrock path", "POST", "/model/gpt-4-32k/converse", map[string]string{"Authorization": "Bearer " + good}, 401, "key_model_access_denied"},
		{"query model", "GET", "/v1/realtime?model=gpt-4-32k", map[string]string{"Authorization": "Bearer " + good}, 401, "key_model_access_denied"},
		{"query key cannot be stripped", "POST", "/v1beta/models/gpt-4o:generateContent?key=" + good, nil, 400, "bad_request_error"},
		{"query key beside a header key", "POST", "/v1beta/models/gpt-4o:generateContent?key=" + good, map[string]string{"Authorization": "Bearer " + good}, 400, "bad_request_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, before := s.rec.snapshot()
			r := call(t, base, tt.method, tt.path, tt.hdr)
			if r.status != tt.status || r.errTyp != tt.errType {
				t.Fatalf("got %d %q (%s), want %d %q", r.status, r.errTyp, r.body, tt.status, tt.errType)
			}
			hdr, path, after := s.rec.snapshot()
			if tt.status != 200 {
				if after != before {
					t.Error("a denied request reached the upstream")
				}
				return
			}
			if after != before+1 {
				t.Fatal("allowed request did not reach the upstream")
			}
			if path != tt.path {
				t.Errorf("upstream got path %q, want %q", path, tt.path)
			}
			for k, v := range hdr {
				for _, x := range v {
					if strings.Contains(x, good) {
						t.Errorf("the virtual key reached the upstream in %s", k)
					}
				}
			}
			if got := hdr.Get("Authorization"); got != "Bearer "+providerKey {
				t.Errorf("upstream Authorization = %q, want the provider key", got)
			}
			want := map[string]string{"X-Litellm-Key-Hash": keys.HashHex(good), "X-Litellm-Key-Alias": alias, "X-Litellm-User-Id": user, "X-Litellm-Team-Id": team, "X-Litellm-Model": "gpt-4o"}
			for k, v := range want {
				if hdr.Get(k) != v {
					t.Errorf("upstream %s = %q, want %q", k, hdr.Get(k), v)
				}
			}
		})
	}

	// Identity headers are the sidecar's: a caller whose key has no alias,
	// user or team cannot supply its own, nor overwrite the hash or model.
	t.Run("client identity headers are not passed on", func(t *testing.T) {
		bare := s.addKey(t, &keys.Key{})
		forged := map[string]string{
			"Authorization": "Bearer " + bare, "X-Litellm-Key-Hash": "forged", "X-Litellm-Key-Alias": "forged",
			"X-Litellm-User-Id": "forged", "X-Litellm-Team-Id": "forged", "X-Litellm-Model": "forged",
		}
		if r := call(t, base, "POST", azure("gpt-4o"), forged); r.status != 200 {
			t.Fatalf("got %d %s, want 200", r.status, r.body)
		}
		hdr, _, _ := s.rec.snapshot()
		want := map[string]string{"X-Litellm-Key-Hash": keys.HashHex(bare), "X-Litellm-Key-Alias": "", "X-Litellm-User-Id": "", "X-Litellm-Team-Id": "", "X-Litellm-Model": "gpt-4o"}
		for k, v := range want {
			if got := hdr.Values(k); (v == "" && len(got) != 0) || (v != "" && (len(got) != 1 || got[0] != v)) {
				t.Errorf("upstream %s = %q, want %q", k, got, v)
			}
		}
	})

	// A rate-limit denial reaches the client as LiteLLM's 429 with its
	// message and retry-after, through either proxy.
	t.Run("rate limit", func(t *testing.T) {
		rpm := int64(1)
		k := s.addKey(t, &keys.Key{RPMLimit: &rpm})
		hdr := map[string]string{"Authorization": "Bearer " + k}
		if r := call(t, base, "POST", azure("gpt-4o"), hdr); r.status != 200 {
			t.Fatalf("first: %d %s", r.status, r.body)
		}
		_, _, before := s.rec.snapshot()
		r := call(t, base, "POST", azure("gpt-4o"), hdr)
		want := "Rate limit exceeded for api_key: " + keys.HashHex(k) + ". Limit type: requests. Current limit: 1, Remaining: 0. Limit resets at: "
		if r.status != 429 || r.errTyp != "None" || !strings.Contains(r.body, want) {
			t.Fatalf("second: %d %s, want 429 with %q", r.status, r.body, want)
		}
		if r.header.Get("Retry-After") != "60" || r.header.Get("Rate_limit_type") != "requests" || !strings.HasSuffix(r.header.Get("Reset_at"), " UTC") {
			t.Fatalf("denial headers %v", r.header)
		}
		if _, _, after := s.rec.snapshot(); after != before {
			t.Fatal("a rate-limited request reached the upstream")
		}
		// Other denials carry no retry-after.
		if r := call(t, base, "POST", azure("gpt-4o"), nil); r.status != 401 || r.header.Get("Retry-After") != "" {
			t.Fatalf("no key: %d %v", r.status, r.header)
		}
	})

	// A second virtual key in another credential header never reaches the
	// upstream either.
	t.Run("second key in another header", func(t *testing.T) {
		other := s.addKey(t, &keys.Key{})
		hdr := map[string]string{"Authorization": "Bearer " + good, "X-Api-Key": other, "Api-Key": other, "X-Goog-Api-Key": other}
		if r := call(t, base, "POST", azure("gpt-4o"), hdr); r.status != 200 {
			t.Fatalf("got %d %s, want 200", r.status, r.body)
		}
		got, _, _ := s.rec.snapshot()
		for k, v := range got {
			for _, x := range v {
				if strings.Contains(x, other) || strings.Contains(x, good) {
					t.Errorf("a virtual key reached the upstream in %s", k)
				}
			}
		}
	})

	t.Run("block takes effect at once", func(t *testing.T) {
		k := s.addKey(t, &keys.Key{})
		if r := call(t, base, "POST", azure("gpt-4o"), map[string]string{"Authorization": "Bearer " + k}); r.status != 200 {
			t.Fatalf("before block: %d %s", r.status, r.body)
		}
		if _, err := s.st.SetBlocked(t.Context(), keys.HashHex(k), true); err != nil {
			t.Fatal(err)
		}
		if r := call(t, base, "POST", azure("gpt-4o"), map[string]string{"Authorization": "Bearer " + k}); r.status != 401 || r.errTyp != "auth_error" {
			t.Fatalf("after block: %d %s", r.status, r.body)
		}
	})
}

// TestHTTPModeRateLimits: the HTTP answer carries the x-ratelimit-*
// headers, and a max_parallel_requests slot is given back with the answer
// (no proxy here reports the response's end).
func TestHTTPModeRateLimits(t *testing.T) {
	s := newStack(t)
	one := int64(1)
	big := int64(100)
	k := s.addKey(t, &keys.Key{MaxParallelRequests: &one, RPMLimit: &big})
	for i := range 3 {
		r := call(t, s.sidecar.URL, "POST", "/authz/v1/chat/completions", map[string]string{"Authorization": "Bearer " + k})
		if r.status != 200 {
			t.Fatalf("request %d: %d %s (a parallel slot was kept)", i, r.status, r.body)
		}
		if got, want := r.header.Get("X-Ratelimit-Remaining-Requests"), fmt.Sprint(99-i); got != want || r.header.Get("X-Ratelimit-Limit-Requests") != "100" {
			t.Fatalf("request %d: x-ratelimit headers %v", i, r.header)
		}
	}
}

func TestNginxAuthRequest(t *testing.T) {
	bin := lookPath(t, "nginx")
	s := newStack(t)
	dir := t.TempDir()
	for _, d := range []string{"tmp", "logs"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	listen := freePort(t)
	conf := render(t, "../../deploy/nginx/nginx.conf", map[string]string{
		"LISTEN": listen, "SIDECAR": strings.TrimPrefix(s.sidecar.URL, "http://"),
		"UPSTREAM": strings.TrimPrefix(s.upstream.URL, "http://"), "PROVIDER_KEY": providerKey,
	})
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "logs", "error.log"),
		"-g", fmt.Sprintf("daemon off; master_process off; pid %s; error_log %s warn;", filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "logs", "error.log")))
	startProxy(t, cmd, listen, &logs)
	runProxyCases(t, s, "http://"+listen)
}

func TestCaddyForwardAuth(t *testing.T) {
	bin := lookPath(t, "caddy")
	s := newStack(t)
	dir := t.TempDir()
	listen := freePort(t)
	conf := render(t, "../../deploy/caddy/Caddyfile", map[string]string{
		"LISTEN": listen, "SIDECAR": strings.TrimPrefix(s.sidecar.URL, "http://"),
		"UPSTREAM": s.upstream.URL, "PROVIDER_KEY": providerKey,
	})
	confPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	cmd := exec.CommandContext(context.Background(), bin, "run", "--config", confPath, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	startProxy(t, cmd, listen, &logs)
	runProxyCases(t, s, "http://"+listen)
}
