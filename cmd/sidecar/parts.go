package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/budget"
	"github.com/virtualkeys/sidecar/internal/budgetalert"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/extproc"
	"github.com/virtualkeys/sidecar/internal/httpauthz"
	"github.com/virtualkeys/sidecar/internal/mgmt"
	"github.com/virtualkeys/sidecar/internal/modelbudget"
	"github.com/virtualkeys/sidecar/internal/pricing"
	"github.com/virtualkeys/sidecar/internal/spend"
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
	kc, err := cache.New(cache.Config{
		Loader: st, Lister: st, MaxKeys: cfg.CacheMaxKeys, NegativeTTL: cfg.NegativeTTL, SafetyTTL: cfg.CacheTTL,
		LookupTimeout: cfg.LookupTimeout, MaxLoads: cfg.CacheMaxLoads, UnknownRate: float64(cfg.CacheUnknownRate),
		StaleBound: cfg.FeedStaleBound, Registerer: reg, Logger: log.With("component", "cache"),
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

	// model_max_budget windows, fed by this replica's metering.
	modelSpend := modelbudget.NewTracker(kc, nil)
	a, err := authz.New(authz.Config{
		ModelSpend: modelSpend,
		Cache:      kc, Org: org.checks(), MasterKey: cfg.MasterKey, AccessGroups: groups, KeyHeader: cfg.KeyHeader,
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
		Store:  st, MasterKey: cfg.MasterKey, MaxBodyBytes: cfg.MaxBodyBytes, RequestTimeout: cfg.MgmtTimeout,
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

	alerts, err := budgetalert.New(budgetalert.Config{Keys: kc, Sender: hooks, Store: st, Registerer: reg, Logger: log.With("component", "budgetalert")})
	if err != nil {
		closeAll()
		return nil, err
	}
	meter, err := buildMetering(cfg, st, kc, log, reg, modelSpend, alerts)
	if err != nil {
		closeAll()
		return nil, err
	}

	check := authz.NewServer(a)
	return &parts{
		grpcOptions: authz.ServerOptions(int(cfg.MaxBodyBytes)),
		registerGRPC: func(g *grpc.Server) {
			check.Register(g)
			meter.server.Register(g)
		},
		registerHTTP: func(mux *http.ServeMux) {
			mux.Handle(httpAuthz.Prefix(), httpAuthz)
			mux.Handle(httpAuthz.Prefix()+"/", httpAuthz)
			mux.Handle("/", api.Handler()) // /key/*, /v2/key/info, /openapi.json, and LiteLLM-style 404s
		},
		jobs:  append([]func(context.Context) error{resets.Run, hooks.Run, alerts.Run, meter.accountant.Run, meter.prices.Run}, jobs...),
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

// metering is the ext_proc server and what it feeds.
type metering struct {
	server     *extproc.Server
	accountant *spend.Accountant
	prices     *pricing.Source
}

// buildMetering builds the price source, the spend accountant (local
// spend in the key cache, batches to the store) and the ext_proc server.
func buildMetering(cfg *Config, st store.Store, kc *cache.Cache, log *slog.Logger, reg prometheus.Registerer, observers ...spend.Observer) (*metering, error) {
	w, ok := st.(store.SpendWriter)
	if !ok {
		return nil, fmt.Errorf("metering: store %T cannot record spend", st)
	}
	deployments, err := parseDeployments(cfg.ModelDeployments)
	if err != nil {
		return nil, err
	}
	pcfg := pricing.Config{Location: cfg.PriceTable, Interval: cfg.PriceReloadInterval, Deployments: deployments}
	if cfg.CustomPricesFile != "" {
		b, err := os.ReadFile(cfg.CustomPricesFile)
		if err != nil {
			return nil, fmt.Errorf("--custom-prices-file: %w", err)
		}
		if pcfg.Custom, err = pricing.ParseCustom(b); err != nil {
			return nil, fmt.Errorf("--custom-prices-file %s: %w", cfg.CustomPricesFile, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prices, err := pricing.NewSource(ctx, pcfg, log.With("component", "pricing"), reg)
	if err != nil {
		return nil, fmt.Errorf("--price-table: %w", err)
	}
	acct, err := spend.New(spend.Config{
		Writer: w, Local: kc, Observers: observers, Interval: cfg.SpendFlushInterval, MaxPendingLogs: cfg.SpendMaxPendingLogs,
		FlushTimeout: cfg.ShutdownTimeout, Registerer: reg, Logger: log.With("component", "spend"),
	})
	if err != nil {
		return nil, err
	}
	srv, err := extproc.New(extproc.Config{
		Accountant: acct, Prices: prices, IdentityHeaderPrefix: cfg.IdentityHeaderPrefix,
		UnknownModelCostPerToken: cfg.UnknownModelCostPerToken, InjectIncludeUsage: cfg.InjectIncludeUsage,
		Registerer: reg, Logger: log.With("component", "extproc"),
	})
	if err != nil {
		return nil, err
	}
	return &metering{server: srv, accountant: acct, prices: prices}, nil
}
