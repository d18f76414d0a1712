package main

import (
	"context"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// checkMethod is the ext_authz Check, the one RPC the interceptors skip.
const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// grpcMetrics returns grpc-go's standard Prometheus server metrics
// (grpc_server_started_total, grpc_server_handled_total{grpc_code},
// grpc_server_msg_received_total, grpc_server_msg_sent_total, per service
// and method), registered on reg, and the server options that record them.
//
// They cover every RPC but the Check: on the Check they cost ~5% of its
// server CPU (measured, docs/benchmarks.md), and the Check already counts
// every outcome in sidecar_authz_decisions_total (reason "unavailable" is
// the fail-closed gRPC error) and times it in
// sidecar_authz_check_duration_seconds. The handling-time histogram is off.
func grpcMetrics(reg prometheus.Registerer) (*grpcprom.ServerMetrics, []grpc.ServerOption, error) {
	m := grpcprom.NewServerMetrics()
	if err := reg.Register(m); err != nil {
		return nil, nil, err
	}
	unary := m.UnaryServerInterceptor()
	return m, []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if info.FullMethod == checkMethod {
				return h(ctx, req)
			}
			return unary(ctx, req, info, h)
		}),
		grpc.ChainStreamInterceptor(m.StreamServerInterceptor()),
	}, nil
}
