package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

// BenchmarkCheckGRPCMetrics measures a cache-hit Check over a real gRPC
// connection with the sidecar's own parts, without and with the
// --grpc-metrics interceptors, in one run. They skip the Check (its
// interceptor cost was ~5% of its CPU), so the two should match; a ratio
// above 1 means the skip no longer works:
//
//	go test ./cmd/sidecar -run '^$' -bench CheckGRPCMetrics -count 6 | benchstat -col /metrics -
func BenchmarkCheckGRPCMetrics(b *testing.B) {
	for _, tc := range []struct {
		name    string
		metrics bool
	}{{"metrics=off", false}, {"metrics=on", true}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "k.db"), nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			cfg, err := parseConfig([]string{"--master-key", "sk-bench-master", "--data-dir", b.TempDir()}, envOf(nil), io.Discard)
			if err != nil {
				b.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			p, err := buildParts(cfg, st, slog.New(slog.DiscardHandler), reg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(p.close)
			opts := p.grpcOptions
			if tc.metrics {
				_, mo, err := grpcMetrics(reg)
				if err != nil {
					b.Fatal(err)
				}
				opts = append(opts, mo...)
			}
			g := grpc.NewServer(opts...)
			p.registerGRPC(g)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go func() { _ = g.Serve(lis) }()
			b.Cleanup(g.Stop)
			conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			raw := keys.Generate()
			if err := st.Create(ctx, &keys.Key{Token: keys.HashHex(raw), Models: []string{"gpt-4o"}}); err != nil {
				b.Fatal(err)
			}
			client := authv3.NewAuthorizationClient(conn)
			r := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "POST", Path: "/v1/chat/completions",
				Headers: map[string]string{"authorization": "Bearer " + raw, "content-type": "application/json"},
				RawBody: []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}`),
			}}}}
			for range 3 { // load the key into the cache
				if _, err := client.Check(ctx, r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Check(ctx, r)
				if err != nil || resp.GetOkResponse() == nil {
					b.Fatalf("Check = %v, %v", resp, err)
				}
			}
		})
	}
}
