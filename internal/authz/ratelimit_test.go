package authz_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/ratelimit"
)

// rlClock is the limiter's injected clock.
type rlClock struct{ ns atomic.Int64 }

func (c *rlClock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *rlClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func newRLEnv(t *testing.T, subjects func(*cache.Entry) ratelimit.SubjectLimits) (*env, *ratelimit.Limiter, *rlClock) {
	t.Helper()
	clk := &rlClock{}
	clk.ns.Store(time.Date(2025, 5, 14, 10, 30, 0, 0, time.UTC).UnixNano())
	l, err := ratelimit.New(ratelimit.Config{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return newEnv(t, authz.Config{RateLimiter: l, SubjectLimits: subjects}), l, clk
}

func addKey(t *testing.T, e *env, k keys.Key) string {
	t.Helper()
	raw := keys.Generate()
	k.Token = keys.HashHex(raw)
	if err := e.store.Create(context.Background(), &k); err != nil {
		t.Fatal(err)
	}
	return raw
}

type rlStep struct {
	model   string
	advance time.Duration
	finish  int64 // > 0: end the previous allowed request with these output tokens first
	release bool  // end the previous allowed request without tokens first
	deny    string
	kind    string // rate_limit_type header of the denial
	headers map[string]string
}

// runSteps sends each step as a Check over gRPC and checks the answer.
func runSteps(t *testing.T, e *env, l *ratelimit.Limiter, clk *rlClock, raw string, steps []rlStep) {
	t.Helper()
	hash := keys.HashHex(raw)
	var lastLease, lastModel string
	for i, s := range steps {
		clk.Add(s.advance)
		subj := ratelimit.Subject{KeyHash: hash, Model: lastModel, Lease: lastLease}
		if s.finish > 0 {
			l.Finish(t.Context(), subj, ratelimit.Usage{InputTokens: 999, OutputTokens: s.finish})
		}
		if s.release {
			l.Release(t.Context(), subj)
		}
		b := ""
		if s.model != "" {
			b = body(s.model)
		}
		resp, err := e.client.Check(t.Context(), req(chat, bearer(raw), b, false))
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if s.deny == "" {
			ok := resp.GetOkResponse()
			if ok == nil {
				t.Fatalf("step %d: denied: %s", i, resp.GetDeniedResponse().GetBody())
			}
			got := map[string]string{}
			for _, h := range ok.GetResponseHeadersToAdd() {
				got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			for k, v := range s.headers {
				if got[k] != v {
					t.Errorf("step %d: header %s = %q, want %q (all: %v)", i, k, got[k], v, got)
				}
			}
			lastLease = resp.GetDynamicMetadata().GetFields()[authz.LeaseMetadataKey].GetStringValue()
			if resp.GetDynamicMetadata().GetFields()["key_hash"].GetStringValue() != hash {
				t.Errorf("step %d: identity metadata lost: %v", i, resp.GetDynamicMetadata())
			}
			lastModel = s.model
			continue
		}
		dr := resp.GetDeniedResponse()
		if dr == nil {
			t.Fatalf("step %d: allowed, want %q", i, s.deny)
		}
		if resp.GetStatus().GetCode() != int32(codes.ResourceExhausted) || dr.GetStatus().GetCode() != 429 {
			t.Fatalf("step %d: rpc code %d, http %d", i, resp.GetStatus().GetCode(), dr.GetStatus().GetCode())
		}
		var env struct {
			Error struct{ Message, Type, Param, Code string }
		}
		if err := json.Unmarshal([]byte(dr.GetBody()), &env); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(env.Error.Message, s.deny) || env.Error.Type != "None" || env.Error.Param != "None" || env.Error.Code != "429" {
			t.Fatalf("step %d: body %s, want message containing %q", i, dr.GetBody(), s.deny)
		}
		h := map[string]string{}
		for _, o := range dr.GetHeaders() {
			h[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
		}
		reset := strings.TrimPrefix(env.Error.Message[strings.Index(env.Error.Message, "Limit resets at: "):], "Limit resets at: ")
		if h["retry-after"] != "60" || h["rate_limit_type"] != s.kind || h["reset_at"] != reset || h["content-type"] != "application/json" {
			t.Fatalf("step %d: denial headers %v", i, h)
		}
	}
}

func TestRateLimitsOverGRPC(t *testing.T) {
	reset := "2025-05-14 10:31:00 UTC"
	tests := []struct {
		name  string
		key   keys.Key
		steps []rlStep
	}{
		{"rpm", keys.Key{RPMLimit: ptr[int64](2)}, []rlStep{
			{headers: map[string]string{"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1", "x-ratelimit-api_key-remaining-requests": "1"}},
			{headers: map[string]string{"x-ratelimit-remaining-requests": "0"}},
			{kind: "requests", deny: "Limit type: requests. Current limit: 2, Remaining: 0. Limit resets at: " + reset},
			{advance: 59 * time.Second, kind: "requests", deny: "Current limit: 2, Remaining: 0. Limit resets at: 2025-05-14 10:31:59 UTC"},
			{advance: time.Second, headers: map[string]string{"x-ratelimit-remaining-requests": "1"}}, // the window ran out
		}},
		{"tpm", keys.Key{TPMLimit: ptr[int64](100)}, []rlStep{
			{headers: map[string]string{"x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "100"}},
			{finish: 60, headers: map[string]string{"x-ratelimit-remaining-tokens": "40"}},
			{finish: 40, kind: "tokens", deny: "Limit type: tokens. Current limit: 100, Remaining: 0."},
			{advance: time.Minute, headers: map[string]string{"x-ratelimit-remaining-tokens": "100"}},
		}},
		{"max_parallel_requests", keys.Key{MaxParallelRequests: ptr[int64](1)}, []rlStep{
			{},
			{kind: "max_parallel_requests", deny: "Limit type: max_parallel_requests. Current limit: 1, Remaining: 0."},
			{release: true}, // ext_proc released the first: the slot is free
			{kind: "max_parallel_requests", deny: "max_parallel_requests"},
			{advance: ratelimit.DefaultLeaseTimeout}, // its end was lost: the lease expired
		}},
		{"model rpm", keys.Key{Metadata: map[string]any{"model_rpm_limit": map[string]any{"gpt-4o": 1.0}}}, []rlStep{
			{model: "gpt-4o", headers: map[string]string{"x-ratelimit-limit-requests": "1", "x-ratelimit-model_per_key-remaining-requests": "0"}},
			{model: "gpt-4o-mini"}, {},
			{model: "gpt-4o", kind: "requests", deny: ":gpt-4o. Limit type: requests. Current limit: 1, Remaining: 0."},
		}},
		{"model tpm", keys.Key{Metadata: map[string]any{"model_tpm_limit": map[string]any{"gpt-4o": 10.0}}}, []rlStep{
			{model: "gpt-4o"},
			{model: "gpt-4o", finish: 10, kind: "tokens", deny: ":gpt-4o. Limit type: tokens. Current limit: 10, Remaining: 0."},
			{model: "o1"},
		}},
		{"key limit reported before the model's", keys.Key{RPMLimit: ptr[int64](1), Metadata: map[string]any{"model_rpm_limit": map[string]any{"gpt-4o": 1.0}}}, []rlStep{
			{model: "gpt-4o"},
			{model: "gpt-4o", kind: "requests", deny: "Rate limit exceeded for api_key: "},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, l, clk := newRLEnv(t, nil)
			raw := addKey(t, e, tt.key)
			for i := range tt.steps { // the api_key descriptor's value is the hash
				tt.steps[i].deny = strings.ReplaceAll(tt.steps[i].deny, "api_key: ", "api_key: "+keys.HashHex(raw))
			}
			runSteps(t, e, l, clk, raw, tt.steps)
		})
	}
}

func TestRateLimitMessageExact(t *testing.T) {
	e, l, clk := newRLEnv(t, nil)
	raw := addKey(t, e, keys.Key{RPMLimit: ptr[int64](1)})
	runSteps(t, e, l, clk, raw, []rlStep{{}, {kind: "requests",
		deny: "Rate limit exceeded for api_key: " + keys.HashHex(raw) + ". Limit type: requests. Current limit: 1, Remaining: 0. Limit resets at: 2025-05-14 10:31:00 UTC"}})
}

// TestRateLimitOrder: the limiter runs last, so a request denied by an
// earlier check is not counted.
func TestRateLimitOrder(t *testing.T) {
	e, l, clk := newRLEnv(t, nil)
	blocked := addKey(t, e, keys.Key{RPMLimit: ptr[int64](0), Blocked: ptr(true)})
	budget := addKey(t, e, keys.Key{RPMLimit: ptr[int64](0), MaxBudget: ptr(1.0), Spend: 2})
	model := addKey(t, e, keys.Key{RPMLimit: ptr[int64](1), Models: []string{"gpt-4o"}})
	for _, c := range []struct {
		raw, model string
		typ        string
	}{{blocked, "", "auth_error"}, {budget, "", "budget_exceeded"}, {model, "o1", "key_model_access_denied"}, {model, "o1", "key_model_access_denied"}} {
		b := ""
		if c.model != "" {
			b = body(c.model)
		}
		resp, err := e.client.Check(t.Context(), req(chat, bearer(c.raw), b, false))
		if err != nil || !strings.Contains(resp.GetDeniedResponse().GetBody(), `"type":"`+c.typ+`"`) {
			t.Fatalf("%v: %v %v", c, resp, err)
		}
	}
	// The two model denials were not counted: the first allowed request passes.
	runSteps(t, e, l, clk, model, []rlStep{{model: "gpt-4o"}, {model: "gpt-4o", kind: "requests", deny: "Current limit: 1"}})
}

// TestRateLimitSubjectHook: team and user limits come from the hook the
// lead wires to the teams data.
func TestRateLimitSubjectHook(t *testing.T) {
	e, l, clk := newRLEnv(t, func(en *cache.Entry) ratelimit.SubjectLimits {
		s := ratelimit.SubjectLimits{}
		if en.Key.TeamID != nil {
			s.TeamID, s.TeamRPM = *en.Key.TeamID, ptr[int64](1)
		}
		return s
	})
	raw := addKey(t, e, keys.Key{TeamID: ptr("team-9")})
	runSteps(t, e, l, clk, raw, []rlStep{{}, {kind: "requests", deny: "Rate limit exceeded for team: team-9. Limit type: requests. Current limit: 1, Remaining: 0."}})
}

// TestUnlimitedKeyUnchanged: a key without limits gets the memoised
// response, without rate-limit headers or a lease.
func TestUnlimitedKeyUnchanged(t *testing.T) {
	e, _, _ := newRLEnv(t, nil)
	var first *authv3.CheckResponse
	for range 3 {
		resp, err := e.srv.Check(t.Context(), req(chat, bearer(kAll), body("gpt-4o"), false))
		if err != nil || resp.GetOkResponse() == nil {
			t.Fatal(resp, err)
		}
		if len(resp.GetOkResponse().GetResponseHeadersToAdd()) != 0 || resp.GetDynamicMetadata().GetFields()[authz.LeaseMetadataKey] != nil {
			t.Fatalf("unlimited key got rate-limit parts: %v", resp)
		}
		if first == nil {
			first = resp
		} else if resp != first {
			t.Fatal("unlimited key's allow response is not memoised")
		}
		e.cache.Wait()
	}
}

// TestLeaseMetadata: a key with limits gets rl_lease beside the identity,
// and the memoised base response is not modified.
func TestLeaseMetadata(t *testing.T) {
	e, l, _ := newRLEnv(t, nil)
	raw := addKey(t, e, keys.Key{MaxParallelRequests: ptr[int64](2), TPMLimit: ptr[int64](5), KeyAlias: ptr("a")})
	var leases []string
	for range 2 {
		resp, err := e.srv.Check(t.Context(), req(chat, bearer(raw), "", false))
		if err != nil || resp.GetOkResponse() == nil {
			t.Fatal(resp, err)
		}
		md := resp.GetDynamicMetadata().GetFields()
		if md["key_alias"].GetStringValue() != "a" || md[authz.LeaseMetadataKey].GetStringValue() == "" {
			t.Fatalf("metadata %v", md)
		}
		leases = append(leases, md[authz.LeaseMetadataKey].GetStringValue())
		e.cache.Wait()
	}
	if leases[0] == leases[1] {
		t.Fatalf("two requests share lease %q", leases[0])
	}
	resp, _ := e.srv.Check(t.Context(), req(chat, bearer(raw), "", false))
	if resp.GetDeniedResponse() == nil {
		t.Fatal("third parallel request allowed")
	}
	l.Finish(t.Context(), ratelimit.Subject{KeyHash: keys.HashHex(raw), Lease: leases[0]}, ratelimit.Usage{OutputTokens: 1})
	resp, _ = e.srv.Check(t.Context(), req(chat, bearer(raw), "", false))
	if resp.GetOkResponse() == nil {
		t.Fatalf("slot not released by Finish: %v", resp)
	}
}

// BenchmarkCheckHandlerRateLimited is the handler's cost for a key without
// limits, with local limits (rpm and tpm) and with a lease, on the same
// limiter: the limiter, the per-request headers and the lease metadata.
func BenchmarkCheckHandlerRateLimited(b *testing.B) {
	l, err := ratelimit.New(ratelimit.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	e := newEnv(b, authz.Config{RateLimiter: l})
	for _, bc := range []struct {
		name string
		key  keys.Key
	}{
		{"no-limits", keys.Key{}},
		{"rpm-tpm", keys.Key{RPMLimit: ptr[int64](1 << 40), TPMLimit: ptr[int64](1 << 40)}},
		{"rpm-tpm-parallel", keys.Key{RPMLimit: ptr[int64](1 << 40), TPMLimit: ptr[int64](1 << 40), MaxParallelRequests: ptr[int64](1 << 20)}},
	} {
		raw := keys.Generate()
		bc.key.Token = keys.HashHex(raw)
		if err := e.store.Create(context.Background(), &bc.key); err != nil {
			b.Fatal(err)
		}
		r := benchRequest(raw)
		e.srv.Check(context.Background(), r)
		e.cache.Wait()
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, _ := e.srv.Check(context.Background(), r)
				if lease := resp.GetDynamicMetadata().GetFields()[authz.LeaseMetadataKey].GetStringValue(); lease != "" {
					l.Release(context.Background(), ratelimit.Subject{KeyHash: bc.key.Token, Lease: lease})
				}
			}
		})
	}
}

// TestUnlimitedKeyAllocations: with a limiter configured, a key without
// limits still costs what a cache hit costs (the memoised response).
func TestUnlimitedKeyAllocations(t *testing.T) {
	l, err := ratelimit.New(ratelimit.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e := newEnv(t, authz.Config{RateLimiter: l})
	raw := addKey(t, e, keys.Key{Models: []string{"gpt-4o"}})
	r := benchRequest(raw)
	if resp, _ := e.srv.Check(context.Background(), r); resp.GetOkResponse() == nil {
		t.Fatal("denied")
	}
	e.cache.Wait()
	if n := testing.AllocsPerRun(200, func() { e.srv.Check(context.Background(), r) }); n > 2 {
		t.Errorf("cache-hit Check of a key without limits allocates %v times, want <= 2", n)
	}
}
