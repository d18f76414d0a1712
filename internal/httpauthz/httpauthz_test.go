package httpauthz_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/httpauthz"
)

// fakeDecider records what the handler asked and answers with a fixed
// decision, so the tests see exactly how the HTTP face translates.
type fakeDecider struct {
	mu        sync.Mutex
	d         authz.Decision
	identity  [][2]string
	method    string
	path      string
	body      string
	auth      string
	truncated bool
	calls     int
}

func (f *fakeDecider) Decide(_ context.Context, r *authz.Request) authz.Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.method, f.path, f.body, f.truncated = r.Method, r.Path, string(r.Body), r.Truncated
	if r.Header != nil {
		f.auth = r.Header("authorization")
	}
	return f.d
}

func (f *fakeDecider) Identity(d *authz.Decision) [][2]string {
	if !d.Allowed {
		return nil
	}
	return f.identity
}

func newHandler(t *testing.T, f *fakeDecider, cfg httpauthz.Config) (*httpauthz.Handler, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Decider, cfg.Registerer = f, reg
	h, err := httpauthz.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h, reg
}

// Where the original request is read from, per caller.
func TestOriginalRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		trust      bool
		method     string
		target     string
		hdr        map[string]string
		body       string
		maxBody    int64
		wantMethod string
		wantPath   string
		wantBody   string
	}{
		{name: "envoy http_service: prefix + original path and query, body", method: "POST", target: "/authz/v1/chat/completions?x=1",
			body: `{"model":"gpt-4o"}`, wantMethod: "POST", wantPath: "/v1/chat/completions?x=1", wantBody: `{"model":"gpt-4o"}`},
		{name: "envoy http_service: root path", method: "GET", target: "/authz/", wantMethod: "GET", wantPath: "/"},
		{name: "prefix alone is /", method: "GET", target: "/authz", wantMethod: "GET", wantPath: "/"},
		{name: "query on the prefix alone", method: "GET", target: "/authz?a=b", wantMethod: "GET", wantPath: "/?a=b"},
		{name: "forwarded headers ignored unless trusted", method: "GET", target: "/authz",
			hdr:        map[string]string{"X-Original-URI": "/openai/deployments/gpt-4/chat/completions", "X-Original-Method": "POST"},
			wantMethod: "GET", wantPath: "/"},
		{name: "nginx X-Original-*", trust: true, method: "GET", target: "/authz",
			hdr:        map[string]string{"X-Original-URI": "/openai/deployments/gpt-4/chat/completions?api-version=1", "X-Original-Method": "POST"},
			wantMethod: "POST", wantPath: "/openai/deployments/gpt-4/chat/completions?api-version=1"},
		{name: "caddy/traefik X-Forwarded-*", trust: true, method: "GET", target: "/authz",
			hdr:        map[string]string{"X-Forwarded-Uri": "/v1beta/models/gemini-pro:generateContent", "X-Forwarded-Method": "POST"},
			wantMethod: "POST", wantPath: "/v1beta/models/gemini-pro:generateContent"},
		{name: "X-Original-* wins over X-Forwarded-*", trust: true, method: "GET", target: "/authz",
			hdr:        map[string]string{"X-Original-URI": "/a", "X-Original-Method": "PUT", "X-Forwarded-Uri": "/b", "X-Forwarded-Method": "DELETE"},
			wantMethod: "PUT", wantPath: "/a"},
		{name: "URI without method keeps the request's method", trust: true, method: "GET", target: "/authz",
			hdr: map[string]string{"X-Forwarded-Uri": "/v1/models"}, wantMethod: "GET", wantPath: "/v1/models"},
		{name: "trusted but no headers: Envoy's path", trust: true, method: "POST", target: "/authz/v1/embeddings",
			wantMethod: "POST", wantPath: "/v1/embeddings"},
		{name: "body read up to the cap (partial, like allow_partial_message)", method: "POST", target: "/authz/v1/chat/completions",
			body: `{"model":"gpt-4o","messages":[]}`, maxBody: 10, wantMethod: "POST", wantPath: "/v1/chat/completions", wantBody: `{"model":"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeDecider{d: authz.Decision{Allowed: true}}
			h, _ := newHandler(t, f, httpauthz.Config{TrustForwarded: tt.trust, MaxBodyBytes: tt.maxBody})
			r := httptest.NewRequestWithContext(t.Context(), tt.method, tt.target, strings.NewReader(tt.body))
			r.Header.Set("Authorization", "Bearer sk-abc")
			for k, v := range tt.hdr {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", w.Code, w.Body)
			}
			if f.method != tt.wantMethod || f.path != tt.wantPath || f.body != tt.wantBody {
				t.Errorf("decided on %s %q body %q, want %s %q body %q", f.method, f.path, f.body, tt.wantMethod, tt.wantPath, tt.wantBody)
			}
			if f.auth != "Bearer sk-abc" {
				t.Errorf("decider saw authorization %q: headers must be looked up by lower-case name", f.auth)
			}
		})
	}
}

func TestBadOriginalURI(t *testing.T) {
	t.Parallel()
	for _, uri := range []string{"not a uri", "relative/path", "%zz"} {
		t.Run(uri, func(t *testing.T) {
			t.Parallel()
			f := &fakeDecider{d: authz.Decision{Allowed: true}}
			h, _ := newHandler(t, f, httpauthz.Config{TrustForwarded: true})
			r := httptest.NewRequestWithContext(t.Context(), "GET", "/authz", nil)
			r.Header.Set("X-Original-URI", uri)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusBadRequest || f.calls != 0 {
				t.Fatalf("status %d after %d decisions, want 400 without asking the decider", w.Code, f.calls)
			}
			checkEnvelope(t, w, apierr.TypeBadRequest)
		})
	}
}

func checkEnvelope(t *testing.T, w *httptest.ResponseRecorder, wantType string) {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("content-type %q, want application/json", ct)
	}
	var env struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
		t.Fatalf("body is not the JSON envelope: %v: %s", err, w.Body)
	}
	if env.Error.Type != wantType || env.Error.Message == "" {
		t.Errorf("error %+v, want type %q with a message", env.Error, wantType)
	}
	if got := w.Header().Get(httpauthz.HeaderDenyReason); got != wantType {
		t.Errorf("%s = %q, want %q", httpauthz.HeaderDenyReason, got, wantType)
	}
}

func TestAnswers(t *testing.T) {
	t.Parallel()
	deny := func(status int, typ string) authz.Decision {
		return authz.Decision{Err: apierr.New(status, typ, "", "denied: "+typ)}
	}
	tests := []struct {
		name       string
		d          authz.Decision
		nginx      bool
		wantStatus int
		// nginx: the real status and error travel in headers.
		wantDenyStatus string
		wantType       string
	}{
		{name: "401 unknown key", d: deny(401, apierr.TypeTokenNotFound), wantStatus: 401, wantType: apierr.TypeTokenNotFound},
		{name: "400 over budget", d: deny(400, apierr.TypeBudgetExceeded), wantStatus: 400, wantType: apierr.TypeBudgetExceeded},
		{name: "429 stays 429 for forward_auth and Envoy", d: deny(429, apierr.TypeRateLimit), wantStatus: 429, wantType: apierr.TypeRateLimit},
		{name: "nginx: 401 stays 401", d: deny(401, apierr.TypeAuth), nginx: true, wantStatus: 401, wantDenyStatus: "401", wantType: apierr.TypeAuth},
		{name: "nginx: 429 becomes 403 (nginx would make it 500)", d: deny(429, apierr.TypeRateLimit), nginx: true, wantStatus: 403, wantDenyStatus: "429", wantType: apierr.TypeRateLimit},
		{name: "nginx: 400 becomes 403", d: deny(400, apierr.TypeBudgetExceeded), nginx: true, wantStatus: 403, wantDenyStatus: "400", wantType: apierr.TypeBudgetExceeded},
		{name: "store outage is an authz error: 503", d: deny(503, apierr.TypeInternal), wantStatus: 503, wantType: apierr.TypeInternal},
		{name: "nginx: 503 stays an error", d: deny(503, apierr.TypeInternal), nginx: true, wantStatus: 503, wantType: apierr.TypeInternal},
		{name: "denied without an error fails closed", d: authz.Decision{}, wantStatus: 503, wantType: apierr.TypeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeDecider{d: tt.d}
			h, reg := newHandler(t, f, httpauthz.Config{})
			r := httptest.NewRequestWithContext(t.Context(), "POST", "/authz/v1/chat/completions", nil)
			if tt.nginx {
				r.Header.Set(httpauthz.HeaderClient, "nginx")
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d", w.Code, tt.wantStatus)
			}
			checkEnvelope(t, w, tt.wantType)
			if got := w.Header().Get(httpauthz.HeaderDenyStatus); got != tt.wantDenyStatus {
				t.Errorf("%s = %q, want %q", httpauthz.HeaderDenyStatus, got, tt.wantDenyStatus)
			}
			if tt.wantDenyStatus != "" && w.Header().Get(httpauthz.HeaderError) != w.Body.String() {
				t.Errorf("%s = %q, want the body %q", httpauthz.HeaderError, w.Header().Get(httpauthz.HeaderError), w.Body)
			}
			if w.Header().Get(httpauthz.HeaderHeadersRemove) != "" {
				t.Error("a denial names headers to remove")
			}
			if n := testutil.CollectAndCount(reg, "sidecar_httpauthz_responses_total"); n != 1 {
				t.Errorf("%d response series, want 1", n)
			}
			if got := answered(t, reg, strconv.Itoa(tt.wantStatus)); got != 1 {
				t.Errorf("responses_total{code=%d} = %v, want 1", tt.wantStatus, got)
			}
		})
	}
}

func TestAllow(t *testing.T) {
	t.Parallel()
	f := &fakeDecider{
		d:        authz.Decision{Allowed: true, RemoveHeaders: []string{"x-api-key"}},
		identity: [][2]string{{"x-litellm-key-hash", "abc123"}, {"x-litellm-team-id", "team-1"}},
	}
	h, reg := newHandler(t, f, httpauthz.Config{})
	for range 2 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequestWithContext(t.Context(), "POST", "/authz/v1/chat/completions", nil))
		if w.Code != http.StatusOK {
			t.Fatalf("status %d, want exactly 200 (Envoy denies any other 2xx)", w.Code)
		}
		want := map[string]string{"X-Litellm-Key-Hash": "abc123", "X-Litellm-Team-Id": "team-1", httpauthz.HeaderHeadersRemove: "x-api-key", httpauthz.HeaderDenyReason: ""}
		for k, v := range want {
			if got := w.Header().Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		if w.Body.Len() != 0 {
			t.Errorf("allow has a body: %q", w.Body)
		}
	}
	if got := answered(t, reg, "200"); got != 2 {
		t.Errorf("responses_total{code=200} = %v, want 2", got)
	}
}

// answered reads the handler's responses_total for one status code.
func answered(t *testing.T, reg *prometheus.Registry, code string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sidecar_httpauthz_responses_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == code {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	f := &fakeDecider{}
	reg := prometheus.NewRegistry()
	tests := []struct {
		name string
		cfg  httpauthz.Config
	}{
		{"no decider", httpauthz.Config{}},
		{"prefix without /", httpauthz.Config{Decider: f, Prefix: "authz"}},
		{"prefix with trailing /", httpauthz.Config{Decider: f, Prefix: "/authz/"}},
		{"metric registered twice", httpauthz.Config{Decider: f, Registerer: reg}},
	}
	if _, err := httpauthz.New(httpauthz.Config{Decider: f, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := httpauthz.New(tt.cfg); err == nil {
				t.Error("accepted")
			}
		})
	}
	h, err := httpauthz.New(httpauthz.Config{Decider: f, Prefix: "/check"})
	if err != nil || h.Prefix() != "/check" {
		t.Fatalf("custom prefix: %v %q", err, h.Prefix())
	}
}

// The original URI comes from the proxy's client: no value makes the
// handler panic or answer a 5xx; a URI it accepts reaches the decider
// unchanged, and one it rejects is a 400 before any decision.
func FuzzOriginalURI(f *testing.F) {
	for _, s := range []string{
		"/openai/deployments/gpt-4/chat/completions?api-version=1", "/v1beta/models/gemini-pro:generateContent?key=sk-x",
		"", "not a uri", "%zz", "http://evil.example/v1/chat", "*", "//x", "/a?b=%", "/\x00", "?x",
	} {
		f.Add(s, "POST", "/authz/v1/chat")
	}
	f.Fuzz(func(t *testing.T, uri, method, target string) {
		d := &fakeDecider{d: authz.Decision{Allowed: true}}
		h, err := httpauthz.New(httpauthz.Config{Decider: d, TrustForwarded: true})
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("GET", "/authz", nil)
		if !strings.HasPrefix(target, "/authz") || strings.ContainsAny(target, " \r\n#\x00") {
			target = "/authz"
		}
		r.URL.Path, r.URL.RawQuery, _ = strings.Cut(target, "?")
		r.URL.RawPath = ""
		r.Header.Set("X-Original-URI", uri)
		r.Header.Set("X-Original-Method", method)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusOK:
			if d.path == "" {
				t.Fatalf("decider got an empty path for %q", uri)
			}
			if uri != "" && d.path != uri {
				t.Fatalf("decider got %q, want the original URI %q", d.path, uri)
			}
		case http.StatusBadRequest:
			if d.calls != 0 {
				t.Fatal("rejected the URI after deciding")
			}
		default:
			t.Fatalf("status %d for %q", w.Code, uri)
		}
	})
}

func (f *fakeDecider) Unset(*authz.Decision) []string { return nil }

// A body longer than the cap is passed on cut, and said to be cut (the
// model check cannot trust it); one that fits is not.
func TestBodyCutIsReported(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		body    string
		maxBody int64
		cut     bool
	}{{`{"model":"gpt-4o"}`, 18, false}, {`{"model":"gpt-4o"}`, 17, true}, {"", 10, false}} {
		f := &fakeDecider{d: authz.Decision{Allowed: true}}
		h, _ := newHandler(t, f, httpauthz.Config{MaxBodyBytes: tt.maxBody})
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(t.Context(), "POST", "/authz/v1/chat/completions", strings.NewReader(tt.body)))
		if f.truncated != tt.cut || int64(len(f.body)) > tt.maxBody {
			t.Errorf("body %q cap %d: decided on %q truncated=%v, want truncated=%v", tt.body, tt.maxBody, f.body, f.truncated, tt.cut)
		}
	}
}

// An allowed request carrying ?key= is denied: the proxies behind this
// endpoint cannot remove a query parameter, so the key would go upstream.
func TestQueryKeyDenied(t *testing.T) {
	t.Parallel()
	f := &fakeDecider{d: authz.Decision{Allowed: true, RemoveQuery: []string{"key"}}}
	h, _ := newHandler(t, f, httpauthz.Config{})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequestWithContext(t.Context(), "POST", "/authz/v1beta/models/m:generateContent?key=sk-x", nil))
	if w.Code != http.StatusBadRequest || w.Header().Get(httpauthz.HeaderDenyReason) != "bad_request_error" ||
		!strings.Contains(w.Body.String(), "cannot remove before forwarding") {
		t.Fatalf("got %d %q %s", w.Code, w.Header().Get(httpauthz.HeaderDenyReason), w.Body)
	}
}
