package main

import (
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// grpcMetrics returns grpc-go's standard Prometheus server metrics
// (grpc_server_started_total, grpc_server_handled_total{grpc_code},
// grpc_server_msg_received_total, grpc_server_msg_sent_total, per service
// and method), registered on reg, and the server options that record them.
// The handling-time histogram is off: its cost on every Check is not worth
// it when sidecar_authz_check_duration_seconds already times decisions.
func grpcMetrics(reg prometheus.Registerer) (*grpcprom.ServerMetrics, []grpc.ServerOption, error) {
	m := grpcprom.NewServerMetrics()
	if err := reg.Register(m); err != nil {
		return nil, nil, err
	}
	return m, []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.StreamServerInterceptor()),
	}, nil
}
