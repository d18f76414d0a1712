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
	"github.com/virtualkeys/sidecar/internal/keygen"
	"github.com/virtualkeys/sidecar/internal/mgmt"
	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/webhook"
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
	var keyGen *keygen.Settings
	if cfg.LiteLLM != nil {
		groups = mergeAccessGroups(groups, cfg.LiteLLM.AccessGroups)
		keyGen = &cfg.LiteLLM.KeyGeneration
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
	// Teams, users and memberships: cached beside the keys for LiteLLM's
	// team and user checks, invalidated through the same feed.
	org, jobs, err := buildOrg(cfg, st, log, reg)
	if err != nil {
		closeAll()
		return nil, err
	}
	if org != nil {
		closeKeys := closeAll
		closeAll = func() { org.close(); closeKeys() }
	}

	a, err := authz.New(authz.Config{
		Cache: kc, Org: org.checks(), MasterKey: cfg.MasterKey, AccessGroups: groups, KeyHeader: cfg.KeyHeader,
		ModelHeader: cfg.ModelHeader, IdentityHeaderPrefix: cfg.IdentityHeaderPrefix,
		Registerer: reg, Logger: log.With("component", "authz"),
		DecisionLog: decisionLog(cfg, log),
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
	// Webhook events (key mutations now; budget alerts share the sender)
	// go out asynchronously; the sender drains on shutdown.
	hooks, err := webhook.New(webhook.Config{
		URLs: cfg.WebhookURLs, Secret: cfg.WebhookSecret,
		Registerer: reg, Logger: log.With("component", "webhook"),
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	api, err := mgmt.New(mgmt.Config{
		Events: hooks,
		Store:  st, MasterKey: cfg.MasterKey, MaxBodyBytes: cfg.MaxBodyBytes,
		KeyGeneration: keyGen, Directory: directory(st),
		// Our own writes drop the key from this replica's cache at once,
		// before the response; other replicas learn through the feed.
		Invalidate: kc.Invalidate, OrgChanged: org.changed(),
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
		jobs:  append([]func(context.Context) error{resets.Run, hooks.Run}, jobs...),
		close: closeAll,
	}, nil
}

// decisionLog turns --decision-log into the Authorizer's setting.
func decisionLog(cfg *Config, log *slog.Logger) authz.DecisionLog {
	switch cfg.DecisionLog {
	case "deny":
		return authz.DecisionLog{Logger: log.With("component", "decisions")}
	case "all":
		return authz.DecisionLog{Logger: log.With("component", "decisions"), AllowSample: cfg.DecisionLogSample}
	}
	return authz.DecisionLog{}
}

// directory gives the management API the user and team rows behind callers
// and keys (LiteLLM's roles and permissions) when the store has them.
func directory(st store.Store) mgmt.Directory {
	if o, ok := st.(mgmt.UserTeamReader); ok {
		return mgmt.OrgDirectory{Org: o}
	}
	return nil
}
