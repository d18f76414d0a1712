package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/budget"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/httpauthz"
	"github.com/virtualkeys/sidecar/internal/mgmt"
	"github.com/virtualkeys/sidecar/internal/store"
)

// parts are the capabilities built on the store: the Check (gRPC and HTTP
// faces) over the key cache, the management API and the background jobs.
type parts struct {
	grpcOptions  []grpc.ServerOption
	registerGRPC func(*grpc.Server)
	registerHTTP func(*http.ServeMux)
	jobs         []func(context.Context) error
	close        func()
}

func buildParts(cfg *Config, st store.Store, log *slog.Logger, reg prometheus.Registerer) (*parts, error) {
	groups, err := loadAccessGroups(cfg.AccessGroupsFile)
	if err != nil {
		return nil, err
	}
	kc, err := cache.New(cache.Config{
		Loader: st, MaxKeys: cfg.CacheMaxKeys, NegativeTTL: cfg.NegativeTTL, SafetyTTL: cfg.CacheTTL,
		LookupTimeout: cfg.LookupTimeout, Registerer: reg, Logger: log.With("component", "cache"),
	})
	if err != nil {
		return nil, err
	}
	// Writes made anywhere (another replica, a LiteLLM proxy, plain SQL)
	// reach this replica's cache through the store's change feed.
	detach := kc.Attach(st)
	closeAll := func() { detach(); kc.Close() }

	a, err := authz.New(authz.Config{
		Cache: kc, MasterKey: cfg.MasterKey, AccessGroups: groups, KeyHeader: cfg.KeyHeader,
		ModelHeader: cfg.ModelHeader, IdentityHeaderPrefix: cfg.IdentityHeaderPrefix,
		ResolveAliases: cfg.ModelAliasesResolved,
		Registerer:     reg, Logger: log.With("component", "authz"),
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	httpAuthz, err := httpauthz.New(httpauthz.Config{
		Decider: a, TrustForwarded: cfg.TrustForwarded, MaxBodyBytes: cfg.MaxBodyBytes,
		Registerer: reg, Logger: log.With("component", "httpauthz"),
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	api, err := mgmt.New(mgmt.Config{
		Store: st, MasterKey: cfg.MasterKey, MaxBodyBytes: cfg.MaxBodyBytes,
		// Our own writes drop the key from this replica's cache at once,
		// before the response; other replicas learn through the feed.
		Invalidate: kc.Invalidate,
		Registerer: reg, Logger: log.With("component", "mgmt"),
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	resets, err := budget.New(budget.Config{Store: st, Interval: cfg.BudgetResetInterval, Registerer: reg, Logger: log.With("component", "budget")})
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("budget job: %w", err)
	}

	check := authz.NewServer(a)
	return &parts{
		grpcOptions:  authz.ServerOptions(int(cfg.MaxBodyBytes)),
		registerGRPC: check.Register,
		registerHTTP: func(mux *http.ServeMux) {
			mux.Handle(httpAuthz.Prefix(), httpAuthz)
			mux.Handle(httpAuthz.Prefix()+"/", httpAuthz)
			mux.Handle("/", api.Handler()) // /key/*, /v2/key/info, /openapi.json, and LiteLLM-style 404s
		},
		jobs:  []func(context.Context) error{resets.Run},
		close: closeAll,
	}, nil
}
