package authz_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const master = "sk-master-key-1234"

// Raw test keys.
const (
	kAll     = "sk-allmodels-0001"
	kLimited = "sk-limited-0002"
	kBlocked = "sk-blocked-0003"
	kExpired = "sk-expired-0004"
	kBudget  = "sk-budget-0005"
	kZero    = "sk-zero-0006"
	kTemp    = "sk-temp-0007"
	kReset   = "sk-reset-0008"
	kResetNo = "sk-reset-noduration-0012"
	kFrac    = "sk-frac-0009"
	kOld     = "sk-rotated-old-0010"
	kNew     = "sk-rotated-new-0011"
)

func ptr[T any](v T) *T { return &v }

// Variables, not constants: Go folds 0.1 + 0.2 exactly.
var pointOne, pointTwo = 0.1, 0.2

// countingLoader counts the store queries the cache makes; fail makes
// them fail as a store outage would.
type countingLoader struct {
	cache.Loader
	calls atomic.Int64
	fail  atomic.Bool
}

func (l *countingLoader) Lookup(ctx context.Context, hash string) (*keys.Key, error) {
	l.calls.Add(1)
	if l.fail.Load() {
		return nil, errors.New("dial tcp: connection refused")
	}
	return l.Loader.Lookup(ctx, hash)
}

type env struct {
	store  *sqlite.Store
	loader *countingLoader
	cache  *cache.Cache
	authz  *authz.Authorizer
	srv    *authz.Server
	client authv3.AuthorizationClient
	now    time.Time // the Authorizer's clock (base)
	skew   atomic.Int64
}

func newEnv(t testing.TB, cfg authz.Config) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "keys.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := &env{store: st, loader: &countingLoader{Loader: st}}
	e.now = time.Now().UTC().Truncate(time.Second).Add(500 * time.Millisecond)
	c, err := cache.New(cache.Config{Loader: e.loader, LookupTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	t.Cleanup(c.Attach(st))
	e.cache = c
	cfg.Cache, cfg.MasterKey = c, master
	cfg.Now = func() time.Time { return e.now.Add(time.Duration(e.skew.Load())) }
	if cfg.AccessGroups == nil {
		cfg.AccessGroups = keys.AccessGroups{"grp-claude": {"claude-3"}}
	}
	if e.authz, err = authz.New(cfg); err != nil {
		t.Fatal(err)
	}
	e.srv = authz.NewServer(e.authz)
	e.client = authv3.NewAuthorizationClient(serveCheck(t, e.srv))
	e.seed(t)
	return e
}

func (e *env) seed(t testing.TB) {
	t.Helper()
	now := e.now
	for raw, k := range map[string]keys.Key{
		kAll:     {KeyAlias: ptr("team-a-key"), UserID: ptr("user-1"), TeamID: ptr("team-1")},
		kLimited: {Models: []string{"gpt-4o", "openai/*", "grp-claude"}, Aliases: map[string]any{"my-gpt": "gpt-4o"}},
		kBlocked: {Blocked: ptr(true), Models: []string{"gpt-4o"}},
		kExpired: {Expires: ptr(now.Add(-time.Hour).Truncate(time.Second)), Models: []string{"gpt-4o"}},
		kBudget:  {MaxBudget: ptr(10.0), Spend: 10},
		kZero:    {MaxBudget: ptr(0.0)},
		kTemp: {MaxBudget: ptr(10.0), Spend: 12, Metadata: map[string]any{
			"temp_budget_increase": 5.0, "temp_budget_expiry": now.Add(time.Hour).Format("2006-01-02T15:04:05")}},
		kReset: {MaxBudget: ptr(10.0), Spend: 20, BudgetResetAt: ptr(now.Add(-time.Minute)), BudgetDuration: ptr("1d")},
		// No budget_duration: nothing can reset it (keys.ResetDue), so /key/info and the job keep its spend, and so does the Check.
		kResetNo: {MaxBudget: ptr(10.0), Spend: 20, BudgetResetAt: ptr(now.Add(-time.Minute))},
		kFrac:    {MaxBudget: ptr(0.3), Spend: pointOne + pointTwo},
		kOld:     {KeyAlias: ptr("rotated")},
	} {
		k.Token = keys.HashHex(raw)
		if err := e.store.Create(context.Background(), &k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.store.Regenerate(context.Background(), keys.HashHex(kOld), keys.HashHex(kNew), ptr(now.Add(time.Hour)), nil); err != nil {
		t.Fatal(err)
	}
}

// req builds a CheckRequest; body goes to body, or raw_body when raw.
func req(path string, headers map[string]string, body string, raw bool) *authv3.CheckRequest {
	h := &authv3.AttributeContext_HttpRequest{Method: "POST", Path: path, Headers: headers}
	if raw {
		h.RawBody = []byte(body)
	} else {
		h.Body = body
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: h}}}
}

func bearer(k string) map[string]string { return map[string]string{"authorization": "Bearer " + k} }

const chat = "/v1/chat/completions"

func body(model string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
}

type want struct {
	allow   bool
	status  int    // denial HTTP status
	typ     string // denial type
	param   any    // nil = JSON null
	msg     string
	code    codes.Code // deny RPC status code
	remove  []string
	removeQ []string
	model   string
	// msgPrefix: the message must start with msg (the fail-closed
	// denials end with advice that their own tests pin).
	msgPrefix bool
}

func unknownMsg(raw string) string {
	return "Authentication Error, Invalid proxy server token passed. Received API Key = sk-..." + raw[len(raw)-4:] +
		", Key Hash (Token) =" + keys.HashHex(raw) + ". Unable to find token in cache or `LiteLLM_VerificationTokenTable`"
}

const limitedModels = "['gpt-4o', 'openai/*', 'grp-claude']"

func modelDenied(m string) want {
	return want{status: 401, typ: "key_model_access_denied", param: "model", code: codes.PermissionDenied,
		msg: "key not allowed to access model. This key can only access models=" + limitedModels + ". Tried to access " + m}
}

// modelUnknown is the fail-closed denial of a restricted key whose
// request's model cannot be known; the message must contain has.
func modelUnknown(has string) want {
	return want{status: 401, typ: "key_model_access_denied", param: "model", code: codes.PermissionDenied,
		msg: "key not allowed to access model. This key can only access models=" + limitedModels + ", and " + has, msgPrefix: true}
}

func allowed(model string, remove ...string) want {
	return want{allow: true, model: model, remove: remove}
}

func TestCheckTable(t *testing.T) {
	e := newEnv(t, authz.Config{})
	expNow := e.now
	expired := expNow.Add(-time.Hour).Truncate(time.Second)
	pyT := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000000") + "+00:00" }
	tests := []struct {
		name    string
		path    string
		headers map[string]string
		body    string
		raw     bool
		want    want
	}{
		// 1, 2: credentials.
		{"no credential", chat, nil, body("gpt-4o"), false, want{status: 401, typ: "auth_error", param: "None", code: codes.Unauthenticated, msg: "Authentication Error, No api key passed in."}},
		{"empty bearer", chat, map[string]string{"authorization": "Bearer "}, "", false, want{status: 401, typ: "auth_error", param: "None", code: codes.Unauthenticated, msg: "Authentication Error, No api key passed in."}},
		{"malformed scheme", chat, map[string]string{"authorization": "Token " + kAll}, "", false, want{status: 401, typ: "auth_error", param: "None", code: codes.Unauthenticated, msg: "Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix."}},
		{"malformed no scheme", chat, map[string]string{"authorization": kAll}, "", false, want{status: 401, typ: "auth_error", param: "None", code: codes.Unauthenticated, msg: "Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix."}},
		{"bearer", chat, bearer(kAll), body("gpt-4o"), false, allowed("gpt-4o", "authorization")},
		{"bearer lower-case scheme", chat, map[string]string{"authorization": "bearer " + kAll}, body("gpt-4o"), false, allowed("gpt-4o", "authorization")},
		{"basic takes the value as is", chat, map[string]string{"authorization": "Basic " + kAll}, "", false, allowed("", "authorization")},
		{"x-litellm-api-key", chat, map[string]string{"x-litellm-api-key": kAll}, "", false, allowed("", "x-litellm-api-key")},
		{"x-litellm-api-key wins over a malformed authorization", chat, map[string]string{"x-litellm-api-key": kAll, "authorization": "Token x"}, "", false, allowed("", "x-litellm-api-key", "authorization")},
		{"api-key (Azure)", "/openai/deployments/gpt-4o/chat/completions?api-version=2024-02-01", map[string]string{"api-key": kAll}, "", false, allowed("gpt-4o", "api-key")},
		{"x-api-key (Anthropic)", "/v1/messages", map[string]string{"x-api-key": kAll}, body("claude-3"), false, allowed("claude-3", "x-api-key")},
		{"x-goog-api-key", "/v1beta/models/gemini-pro:generateContent", map[string]string{"x-goog-api-key": kAll}, "", false, allowed("gemini-pro", "x-goog-api-key")},
		{"ocp-apim-subscription-key", chat, map[string]string{"ocp-apim-subscription-key": kAll}, "", false, allowed("", "ocp-apim-subscription-key")},
		{"gemini query key", "/v1beta/models/gemini-pro:generateContent?alt=sse&key=" + kAll, nil, "", false, want{allow: true, model: "gemini-pro", removeQ: []string{"key"}}},
		{"gemini stream query key", "/v1beta/models/gemini-pro:streamGenerateContent?key=" + kAll, nil, "", false, want{allow: true, model: "gemini-pro", removeQ: []string{"key"}}},
		{"query key ignored off Gemini paths", chat + "?key=" + kAll, nil, "", false, want{status: 401, typ: "auth_error", param: "None", code: codes.Unauthenticated, msg: "Authentication Error, No api key passed in."}},
		// 3: master key.
		{"master key", chat, bearer(master), body("anything-at-all"), false, allowed("anything-at-all", "authorization")},
		{"master key via x-api-key", chat, map[string]string{"x-api-key": master}, "", false, allowed("", "x-api-key")},
		// 4, 5.
		{"not sk-", chat, bearer("abcdefgh12345"), "", false, want{status: 401, typ: "auth_error", param: "None", code: codes.Unauthenticated, msg: "LiteLLM Virtual Key expected. Received=abcd****2345, expected to start with 'sk-'."}},
		{"unknown", chat, bearer("sk-unknown-9999"), "", false, want{status: 401, typ: "token_not_found_in_db", param: "key", code: codes.Unauthenticated, msg: unknownMsg("sk-unknown-9999")}},
		// 6 before 7.
		{"blocked (before model)", chat, bearer(kBlocked), body("gpt-3.5"), false, want{status: 401, typ: "auth_error", param: "None", code: codes.Unauthenticated, msg: "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin."}},
		// 7: models.
		{"model exact", chat, bearer(kLimited), body("gpt-4o"), false, allowed("gpt-4o", "authorization")},
		{"model glob", chat, bearer(kLimited), body("openai/gpt-4o-mini"), false, allowed("openai/gpt-4o-mini", "authorization")},
		{"model access group", chat, bearer(kLimited), body("claude-3"), false, allowed("claude-3", "authorization")},
		{"model alias (not resolved downstream)", chat, bearer(kLimited), body("my-gpt"), false, modelDenied("my-gpt")},
		{"model denied", chat, bearer(kLimited), body("gpt-3.5"), false, modelDenied("gpt-3.5")},
		{"model denied raw_body", chat, bearer(kLimited), body("gpt-3.5"), true, modelDenied("gpt-3.5")},
		{"model allowed raw_body", chat, bearer(kLimited), body("gpt-4o"), true, allowed("gpt-4o", "authorization")},
		{"model case-sensitive", chat, bearer(kLimited), body("GPT-4o"), false, modelDenied("GPT-4o")},
		{"comma list", chat, bearer(kLimited), body("gpt-4o, gpt-3.5"), false, modelDenied("gpt-3.5")},
		{"JSON list", chat, bearer(kLimited), `{"model":["gpt-4o","gpt-3.5"]}`, false, modelDenied("gpt-3.5")},
		{"JSON list allowed", chat, bearer(kLimited), `{"model":["gpt-4o","claude-3"]}`, false, allowed("gpt-4o", "authorization")},
		{"target_model_names", chat, bearer(kLimited), `{"target_model_names":"gpt-4o,gpt-3.5"}`, false, modelDenied("gpt-3.5")},
		{"fallbacks string", chat, bearer(kLimited), `{"model":"gpt-4o","fallbacks":["gpt-3.5"]}`, false, modelDenied("gpt-3.5")},
		{"fallbacks object", chat, bearer(kLimited), `{"fallbacks":[{"model":"gpt-3.5"}],"model":"gpt-4o"}`, false, modelDenied("gpt-3.5")},
		{"fallbacks allowed", chat, bearer(kLimited), `{"model":"gpt-4o","fallbacks":["claude-3",{"model":"openai/x"}]}`, false, allowed("gpt-4o", "authorization")},
		{"nested model ignored", chat, bearer(kLimited), `{"messages":[{"model":"gpt-3.5","x":{"model":"y"}}],"model":"gpt-4o"}`, false, allowed("gpt-4o", "authorization")},
		{"escaped model", chat, bearer(kLimited), `{"model":"gpt\u002d3.5"}`, false, modelDenied("gpt-3.5")},
		{"azure path", "/openai/deployments/gpt-3.5/chat/completions", bearer(kLimited), "", false, modelDenied("gpt-3.5")},
		{"gemini path", "/v1beta/models/gpt-3.5:generateContent", bearer(kLimited), "", false, modelDenied("gpt-3.5")},
		{"beta path", "/beta/models/gpt-3.5:generateContent", bearer(kLimited), "", false, modelDenied("gpt-3.5")},
		{"models path", "/models/gpt-3.5:countTokens", bearer(kLimited), "", false, modelDenied("gpt-3.5")},
		{"vertex path", "/vertex_ai/v1/projects/p/locations/us/publishers/google/models/gpt-3.5:generateContent", bearer(kLimited), "", false, modelDenied("gpt-3.5")},
		{"vertex path no verb", "/vertex_ai/v1/projects/p/locations/us/publishers/google/models/gpt-3.5", bearer(kLimited), "", false, modelDenied("gpt-3.5")},
		{"path model checked beside the body's", "/openai/deployments/gpt-3.5/chat/completions", bearer(kLimited), body("gpt-4o"), false, modelDenied("gpt-3.5")},
		{"partial body, model complete", chat, bearer(kLimited), `{"model":"gpt-3.5","messages":[{"role":"user","content":"hel`, false, modelDenied("gpt-3.5")},
		{"partial body, model cut", chat, bearer(kLimited), `{"messages":[{"role":"user"}],"model":"gpt-3`, false, modelUnknown("the request body was cut before its end")},
		{"garbage body", chat, bearer(kLimited), "\x00\xff{not json", true, modelUnknown("the request body is not one JSON object")},
		{"array body", chat, bearer(kLimited), `["gpt-3.5"]`, false, modelUnknown("the request body is not one JSON object")},
		{"no body on a body-model route", "/v1/embeddings", bearer(kLimited), "", false, modelUnknown("this route carries its model in the request body")},
		{"no model on a route without one", "/v1/files", bearer(kLimited), "", false, allowed("", "authorization")},
		// 7 before 8.
		{"expired key, model denied first", chat, bearer(kExpired), body("gpt-3.5"), false, want{status: 401, typ: "key_model_access_denied", param: "model", code: codes.PermissionDenied,
			msg: "key not allowed to access model. This key can only access models=['gpt-4o']. Tried to access gpt-3.5"}},
		{"expired", chat, bearer(kExpired), body("gpt-4o"), false, want{status: 401, typ: "expired_key", param: "sk-..." + keys.HashHex(kExpired)[60:], code: codes.Unauthenticated,
			msg: "Authentication Error - Expired Key. Key Expiry time " + expired.UTC().Format("2006-01-02 15:04:05") + "+00:00 and current time " + pyT(expNow)}},
		// 9: budget.
		{"budget exceeded", chat, bearer(kBudget), "", false, want{status: 400, typ: "budget_exceeded", param: nil, code: codes.ResourceExhausted, msg: "Budget has been exceeded! Current cost: 10.0, Max budget: 10.0"}},
		{"max_budget 0", chat, bearer(kZero), "", false, want{status: 400, typ: "budget_exceeded", param: nil, code: codes.ResourceExhausted, msg: "Budget has been exceeded! Current cost: 0.0, Max budget: 0.0"}},
		{"python float format", chat, bearer(kFrac), "", false, want{status: 400, typ: "budget_exceeded", param: nil, code: codes.ResourceExhausted, msg: "Budget has been exceeded! Current cost: 0.30000000000000004, Max budget: 0.3"}},
		{"temp budget increase", chat, bearer(kTemp), "", false, allowed("", "authorization")},
		{"past budget_reset_at counts as 0", chat, bearer(kReset), "", false, allowed("", "authorization")},
		{"past budget_reset_at without budget_duration still counts", chat, bearer(kResetNo), "", false, want{status: 400, typ: "budget_exceeded", param: nil, code: codes.ResourceExhausted, msg: "Budget has been exceeded! Current cost: 20.0, Max budget: 10.0"}},
		// grace.
		{"rotated token in grace", chat, bearer(kOld), "", false, allowed("", "authorization")},
		{"new token", chat, bearer(kNew), "", false, allowed("", "authorization")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for pass := range 2 { // miss, then (after the Set lands) hit
				resp, err := e.client.Check(context.Background(), req(tc.path, tc.headers, tc.body, tc.raw))
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				checkResp(t, e, resp, tc.want)
				if pass == 0 {
					e.cache.Wait()
				}
			}
		})
	}
}

func checkResp(t *testing.T, e *env, resp *authv3.CheckResponse, w want) {
	t.Helper()
	if w.allow {
		ok := resp.GetOkResponse()
		if resp.GetStatus().GetCode() != 0 || ok == nil {
			t.Fatalf("want allow, got status %v denied %v", resp.GetStatus(), resp.GetDeniedResponse().GetBody())
		}
		// headers_to_remove is the credential, then every identity header
		// the response does not set (so a client cannot supply its own).
		set := map[string]bool{}
		for _, h := range ok.GetHeaders() {
			set[h.GetHeader().GetKey()] = true
		}
		wantRemove := slices.Clone(w.remove)
		for _, h := range []string{"x-litellm-key-hash", "x-litellm-key-alias", "x-litellm-user-id", "x-litellm-team-id", "x-litellm-model"} {
			if !set[h] {
				wantRemove = append(wantRemove, h)
			}
		}
		if !slices.Equal(ok.HeadersToRemove, wantRemove) || !slices.Equal(ok.QueryParametersToRemove, w.removeQ) {
			t.Fatalf("remove = %q / query %q, want %q / %q", ok.HeadersToRemove, ok.QueryParametersToRemove, wantRemove, w.removeQ)
		}
		got := ""
		for _, h := range ok.Headers {
			if h.Header.Key == "x-litellm-model" {
				got = h.Header.Value
			}
			if h.AppendAction != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				t.Fatalf("header %s append action %v", h.Header.Key, h.AppendAction)
			}
		}
		if got != w.model {
			t.Fatalf("model header = %q, want %q", got, w.model)
		}
		if md := resp.GetDynamicMetadata().GetFields()["model"].GetStringValue(); md != w.model {
			t.Fatalf("model metadata = %q, want %q", md, w.model)
		}
		return
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("want deny %q, got allow", w.msg)
	}
	if codes.Code(resp.GetStatus().GetCode()) != w.code {
		t.Errorf("rpc status = %v, want %v", codes.Code(resp.GetStatus().GetCode()), w.code)
	}
	if int(d.GetStatus().GetCode()) != w.status {
		t.Errorf("http status = %d, want %d", d.GetStatus().GetCode(), w.status)
	}
	if len(d.Headers) != 1 || d.Headers[0].Header.Key != "content-type" || d.Headers[0].Header.Value != "application/json" {
		t.Errorf("headers = %v", d.Headers)
	}
	var env struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Param   any    `json:"param"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(d.Body), &env); err != nil {
		t.Fatalf("body %q: %v", d.Body, err)
	}
	g := env.Error
	if msgOK := g.Message == w.msg || (w.msgPrefix && strings.HasPrefix(g.Message, w.msg)); !msgOK || g.Type != w.typ || g.Param != w.param || g.Code != itoa(w.status) {
		t.Fatalf("denial = %+v\nwant msg=%q type=%q param=%v code=%d", g, w.msg, w.typ, w.param, w.status)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestBudgetMessageFormat(t *testing.T) {
	e := newEnv(t, authz.Config{})
	for _, tc := range []struct {
		spend, max float64
		want       string
	}{
		{12.5, 12.5, "Current cost: 12.5, Max budget: 12.5"},
		{pointOne + pointTwo, 0.3, "Current cost: 0.30000000000000004, Max budget: 0.3"},
		{1e16, 1e16, "Current cost: 1e+16, Max budget: 1e+16"},
		{3, 0.00001, "Current cost: 3.0, Max budget: 1e-05"},
	} {
		raw := "sk-fmt-" + itoa(int(tc.spend*1000)) + "-" + itoa(int(tc.max*1e6))
		k := &keys.Key{Token: keys.HashHex(raw), Spend: tc.spend, MaxBudget: ptr(tc.max)}
		if err := e.store.Create(context.Background(), k); err != nil {
			t.Fatal(err)
		}
		resp, err := e.client.Check(context.Background(), req(chat, bearer(raw), "", false))
		if err != nil {
			t.Fatal(err)
		}
		checkResp(t, e, resp, want{status: 400, typ: "budget_exceeded", code: codes.ResourceExhausted, msg: "Budget has been exceeded! " + tc.want})
	}
}

func TestIdentityAndMetadata(t *testing.T) {
	e := newEnv(t, authz.Config{IdentityHeaderPrefix: "X-VK-"})
	resp, err := e.client.Check(context.Background(), req(chat, map[string]string{"x-api-key": kAll}, body("gpt-4o"), false))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		got[h.Header.Key] = h.Header.Value
	}
	want := map[string]string{"x-vk-key-hash": keys.HashHex(kAll), "x-vk-key-alias": "team-a-key", "x-vk-user-id": "user-1", "x-vk-team-id": "team-1", "x-vk-model": "gpt-4o"}
	if len(got) != len(want) {
		t.Fatalf("headers = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("header %s = %q, want %q", k, got[k], v)
		}
	}
	md := resp.GetDynamicMetadata().GetFields()
	for k, v := range map[string]string{"key_hash": keys.HashHex(kAll), "key_alias": "team-a-key", "user_id": "user-1", "team_id": "team-1", "model": "gpt-4o"} {
		if md[k].GetStringValue() != v {
			t.Fatalf("metadata %s = %q, want %q", k, md[k].GetStringValue(), v)
		}
	}
	// The rotated token reports the active key's hash.
	resp, err = e.client.Check(context.Background(), req(chat, bearer(kOld), "", false))
	if err != nil {
		t.Fatal(err)
	}
	if h := resp.GetDynamicMetadata().GetFields()["key_hash"].GetStringValue(); h != keys.HashHex(kNew) {
		t.Fatalf("rotated token key_hash = %q, want the active hash", h)
	}
	// Master key: no key identity, no key-hash header.
	resp, err = e.client.Check(context.Background(), req(chat, bearer(master), body("m"), false))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.Header.Key != "x-vk-model" {
			t.Fatalf("master key got identity header %s", h.Header.Key)
		}
	}
}

func TestCustomKeyAndModelHeader(t *testing.T) {
	e := newEnv(t, authz.Config{KeyHeader: "X-My-Key", ModelHeader: "x-model"})
	for _, tc := range []struct {
		name    string
		headers map[string]string
		body    string
		w       want
	}{
		{"custom header", map[string]string{"x-my-key": kLimited, "x-model": "gpt-4o"}, "", allowed("gpt-4o", "x-my-key")},
		{"model header denied", map[string]string{"x-my-key": kLimited, "x-model": "gpt-3.5"}, "", modelDenied("gpt-3.5")},
		{"model header checked beside the body", map[string]string{"x-my-key": kLimited, "x-model": "gpt-3.5"}, body("gpt-4o"), modelDenied("gpt-3.5")},
		{"standard headers ignored", bearer(kLimited), "", want{status: 401, typ: "auth_error", param: "None", code: codes.Unauthenticated, msg: "Authentication Error, No api key passed in."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.client.Check(context.Background(), req(chat, tc.headers, tc.body, false))
			if err != nil {
				t.Fatal(err)
			}
			checkResp(t, e, resp, tc.w)
		})
	}
}

func TestGraceExpires(t *testing.T) {
	e := newEnv(t, authz.Config{})
	r := req(chat, bearer(kOld), "", false)
	resp, err := e.client.Check(context.Background(), r)
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("in grace: %v %v", resp, err)
	}
	e.skew.Store(int64(2 * time.Hour))
	resp, err = e.client.Check(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	checkResp(t, e, resp, want{status: 401, typ: "token_not_found_in_db", param: "key", code: codes.Unauthenticated, msg: unknownMsg(kOld)})
}

// TestStoreChangesEnforced: writes through the store reach the cache by
// its change feed.
func TestStoreChangesEnforced(t *testing.T) {
	e := newEnv(t, authz.Config{})
	ctx := context.Background()
	check := func() *authv3.CheckResponse {
		t.Helper()
		resp, err := e.client.Check(ctx, req(chat, bearer(kLimited), body("gpt-4o"), false))
		if err != nil {
			t.Fatal(err)
		}
		e.cache.Wait()
		return resp
	}
	if check().GetOkResponse() == nil {
		t.Fatal("not allowed at first")
	}
	h := keys.HashHex(kLimited)
	if _, err := e.store.SetBlocked(ctx, h, true); err != nil {
		t.Fatal(err)
	}
	if check().GetDeniedResponse() == nil {
		t.Fatal("blocked key still allowed")
	}
	if _, err := e.store.SetBlocked(ctx, h, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Update(ctx, h, func(k *keys.Key) error { k.Models = []string{"claude-3"}; return nil }); err != nil {
		t.Fatal(err)
	}
	if check().GetDeniedResponse() == nil {
		t.Fatal("models change not enforced")
	}
	if _, err := e.store.Update(ctx, h, func(k *keys.Key) error { k.Models = nil; k.MaxBudget = ptr(1.0); return nil }); err != nil {
		t.Fatal(err)
	}
	if check().GetOkResponse() == nil {
		t.Fatal("update not enforced")
	}
	calls := e.loader.calls.Load()
	if err := e.store.AddSpend(ctx, map[string]float64{h: 1}); err != nil {
		t.Fatal(err)
	}
	if check().GetDeniedResponse() == nil {
		t.Fatal("spend not enforced")
	}
	if e.loader.calls.Load() != calls {
		t.Fatal("spend-only change reloaded the key")
	}
	if _, err := e.store.Delete(ctx, []string{h}); err != nil {
		t.Fatal(err)
	}
	resp := check()
	if resp.GetDeniedResponse() == nil || resp.GetStatus().GetCode() != int32(codes.Unauthenticated) {
		t.Fatal("deleted key still allowed")
	}
}

func TestCachedHitNoStoreQuery(t *testing.T) {
	e := newEnv(t, authz.Config{})
	r := req(chat, bearer(kAll), body("gpt-4o"), false)
	if _, err := e.client.Check(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	e.cache.Wait()
	n := e.loader.calls.Load()
	for range 200 {
		if resp, err := e.client.Check(context.Background(), r); err != nil || resp.GetOkResponse() == nil {
			t.Fatal(resp, err)
		}
	}
	if got := e.loader.calls.Load() - n; got != 0 {
		t.Fatalf("store queries for a cached key = %d, want 0", got)
	}
}

// TestFailClosed: a store that cannot answer denies uncached keys with an
// ext_authz error (Envoy's status_on_error), while cached keys keep working.
func TestFailClosed(t *testing.T) {
	e := newEnv(t, authz.Config{})
	ctx := context.Background()
	if _, err := e.client.Check(ctx, req(chat, bearer(kAll), "", false)); err != nil {
		t.Fatal(err)
	}
	e.cache.Wait()
	e.loader.fail.Store(true)
	resp, err := e.client.Check(ctx, req(chat, bearer(kAll), "", false))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("cached key during outage: %v %v", resp, err)
	}
	for _, raw := range []string{kLimited, "sk-never-seen"} {
		resp, err = e.client.Check(ctx, req(chat, bearer(raw), "", false))
		if status.Code(err) != codes.Unavailable || resp != nil {
			t.Fatalf("uncached key during outage: resp=%v err=%v, want codes.Unavailable", resp, err)
		}
	}
	// A caller whose deadline has passed never gets an allow.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	d := e.authz.Decide(cctx, &authz.Request{Path: chat, Headers: bearer(kAll)})
	if d.Allowed || d.Reason != authz.ReasonUnavailable {
		t.Fatalf("cancelled context decision = %+v", d)
	}
	e.loader.fail.Store(false)
	resp, err = e.client.Check(ctx, req(chat, bearer(kLimited), body("gpt-4o"), false))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("after recovery: %v %v", resp, err)
	}
}

func TestDecideHeaderFunc(t *testing.T) {
	e := newEnv(t, authz.Config{})
	h := map[string]string{"x-goog-api-key": kLimited}
	d := e.authz.Decide(context.Background(), &authz.Request{Method: "POST", Path: chat, Header: func(n string) string { return h[n] }, Body: []byte(body("gpt-4o"))})
	if !d.Allowed || d.Model != "gpt-4o" || !slices.Equal(d.RemoveHeaders, []string{"x-goog-api-key"}) || d.Entry == nil {
		t.Fatalf("decision = %+v", d)
	}
	id := e.authz.Identity(&d)
	if len(id) != 2 || id[0] != [2]string{"x-litellm-key-hash", keys.HashHex(kLimited)} || id[1] != [2]string{"x-litellm-model", "gpt-4o"} {
		t.Fatalf("identity = %q", id)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := authz.New(authz.Config{}); err == nil {
		t.Fatal("New without cache and master key succeeded")
	}
}

// serveCheck serves srv on a real gRPC listener, with the sidecar's server
// options, and returns a client connection to it; both end with the test.
func serveCheck(t testing.TB, srv *authz.Server) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(srv.ServerOptions(1 << 20)...)
	srv.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
