package authz_test

import (
	"context"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// BenchmarkCheck measures Check over a real gRPC connection on loopback
// (client and server in this process, so ns/op and allocs include both
// sides): a cache hit with a realistic chat body, a negative-cache hit, and
// a malformed credential. BenchmarkCheckHandler measures the handler alone;
// cmd/loadgen measures the server's CPU per Check against the real binary.
func BenchmarkCheck(b *testing.B) {
	e := newEnv(b, authz.Config{})
	raw := keys.Generate()
	if err := e.store.Create(context.Background(), &keys.Key{Token: keys.HashHex(raw), Models: []string{"gpt-4o", "gpt-4o-mini"}, KeyAlias: ptr("bench")}); err != nil {
		b.Fatal(err)
	}
	warm := func(r *authv3.CheckRequest) *authv3.CheckRequest {
		if _, err := e.client.Check(context.Background(), r); err != nil {
			b.Fatal(err)
		}
		e.cache.Wait()
		return r
	}
	malformed := benchRequest(raw)
	malformed.Attributes.Request.Http.Headers = map[string]string{"authorization": "Token x"}
	for _, bc := range []struct {
		name  string
		r     *authv3.CheckRequest
		allow bool
	}{
		{"hit-chat-body", warm(benchRequest(raw)), true},
		{"negative-hit", warm(benchRequest("sk-unknown-key-000000000000")), false},
		{"malformed", malformed, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := e.client.Check(context.Background(), bc.r)
				if err != nil || (resp.GetOkResponse() != nil) != bc.allow {
					b.Fatalf("Check = %v, %v", resp, err)
				}
			}
		})
	}
}
