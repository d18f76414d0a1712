package authz_test

import (
	"context"
	"path/filepath"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

// benchChatBody is a realistic chat-completions request.
const benchChatBody = `{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant that answers concisely."},{"role":"user","content":"Summarise the plot of Hamlet in three sentences, naming the main characters and how each of them dies."}],"temperature":0.7,"max_tokens":512,"stream":true,"stream_options":{"include_usage":true}}`

func benchRequest(key string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Method: "POST", Path: "/v1/chat/completions",
		Headers: map[string]string{":method": "POST", ":path": "/v1/chat/completions", "authorization": "Bearer " + key, "content-type": "application/json", "x-request-id": "c0ffee"},
		RawBody: []byte(benchChatBody),
	}}}}
}

// benchServer is a Check service on a real embedded store and cache, with
// one key allowed gpt-4o and gpt-4o-mini; opts adjust the Authorizer's
// configuration.
func benchServer(tb testing.TB, opts ...func(*authz.Config)) (*authz.Server, *cache.Cache, string) {
	tb.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "keys.db"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	c, err := cache.New(cache.Config{Loader: st, MaxKeys: 1000})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	raw := keys.Generate()
	alias, user := "bench", "u"
	if err := st.Create(context.Background(), &keys.Key{Token: keys.HashHex(raw), Models: []string{"gpt-4o", "gpt-4o-mini"}, KeyAlias: &alias, UserID: &user}); err != nil {
		tb.Fatal(err)
	}
	cfg := authz.Config{Cache: c, MasterKey: "sk-bench-master"}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := authz.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return authz.NewServer(a), c, raw
}

// BenchmarkCheckHandler measures the Check handler itself (no transport):
// a cache hit with a realistic chat body, a negative-cache hit, a
// malformed credential. cmd/loadgen measures Check over a real connection.
func BenchmarkCheckHandler(b *testing.B) {
	srv, c, raw := benchServer(b)
	warm := func(r *authv3.CheckRequest) *authv3.CheckRequest {
		srv.Check(context.Background(), r)
		c.Wait()
		return r
	}
	malformed := benchRequest(raw)
	malformed.Attributes.Request.Http.Headers = map[string]string{"authorization": "Token x"}
	for _, bc := range []struct {
		name string
		r    *authv3.CheckRequest
	}{
		{"hit-chat-body", warm(benchRequest(raw))},
		{"negative-hit", warm(benchRequest("sk-unknown-key-000000000000"))},
		{"malformed", malformed},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				srv.Check(context.Background(), bc.r)
			}
		})
	}
}

// TestCacheHitCheckAllocations pins the allocations of a cache-hit Check:
// the model string read from the body and the Request the gRPC face
// builds; allow responses are memoised per key, denials pre-rendered.
func TestCacheHitCheckAllocations(t *testing.T) {
	srv, c, raw := benchServer(t)
	r := benchRequest(raw)
	if resp, _ := srv.Check(context.Background(), r); resp.GetOkResponse() == nil {
		t.Fatal("denied")
	}
	c.Wait()
	n := testing.AllocsPerRun(200, func() { srv.Check(context.Background(), r) })
	if n > 2 {
		t.Errorf("cache-hit Check allocates %v times, want <= 2", n)
	}
}
