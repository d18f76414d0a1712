package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/budget"
	"github.com/virtualkeys/sidecar/internal/budgetalert"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/extproc"
	"github.com/virtualkeys/sidecar/internal/httpauthz"
	"github.com/virtualkeys/sidecar/internal/keygen"
	"github.com/virtualkeys/sidecar/internal/mgmt"
	"github.com/virtualkeys/sidecar/internal/modelbudget"
	"github.com/virtualkeys/sidecar/internal/pricing"
	"github.com/virtualkeys/sidecar/internal/ratelimit"
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
	// limiter counts rate limits; the ext_proc metering server ends its
	// requests (Finish/Release). degraded says why readiness is partial.
	limiter  *ratelimit.Limiter
	degraded func() string
}

func buildParts(cfg *Config, st store.Store, log *slog.Logger, reg prometheus.Registerer) (*parts, error) {
	groups, err := loadAccessGroups(cfg.AccessGroupsFile)
	if err != nil {
		return nil, err
	}
	var keyGen *keygen.Settings
	var groupAlias map[string]string
	if cfg.LiteLLM != nil {
		groups = mergeAccessGroups(groups, cfg.LiteLLM.AccessGroups)
		keyGen = &cfg.LiteLLM.KeyGeneration
		groupAlias = cfg.LiteLLM.ModelGroupAlias
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
	limiter, closeLimiter, err := newLimiter(cfg, log, reg)
	if err != nil {
		closeAll()
		return nil, err
	}
	{
		closeRest := closeAll
		closeAll = func() { closeRest(); closeLimiter() }
	}

	// model_max_budget windows, fed by this replica's metering.
	modelSpend := modelbudget.NewTracker(kc, nil)
	a, err := authz.New(authz.Config{
		ModelSpend: modelSpend,
		Cache:      kc, Org: org.checks(), MasterKey: cfg.MasterKey, AccessGroups: groups, KeyHeader: cfg.KeyHeader,
		ModelHeader: cfg.ModelHeader, IdentityHeaderPrefix: cfg.IdentityHeaderPrefix,
		Registerer: reg, Logger: log.With("component", "authz"),
		DecisionLog:    decisionLog(cfg, log),
		RateLimiter:    limiter,
		SubjectLimits:  org.subjectLimits(),
		ResolveAliases: cfg.ModelAliasesResolved,
		// Used only with ResolveAliases (LiteLLM's router upstream
		// resolves model_group_alias); authz.New drops it otherwise.
		ModelGroupAlias: groupAlias,
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	httpAuthz, err := httpauthz.New(httpauthz.Config{
		Decider: a, Releaser: limiter, TrustForwarded: cfg.TrustForwarded, MaxBodyBytes: cfg.MaxBodyBytes,
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
		KeyGeneration: keyGen, Directory: directory(st), AccessGroups: groups,
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
	meter, err := buildMetering(cfg, st, kc, limiterEnds{limiter}, log, reg, modelSpend, alerts)
	if err != nil {
		closeAll()
		return nil, err
	}

	check := authz.NewServer(a)
	return &parts{
		grpcOptions: check.ServerOptions(int(cfg.MaxBodyBytes)),
		registerGRPC: func(g *grpc.Server) {
			check.Register(g)
			meter.server.Register(g)
		},
		registerHTTP: func(mux *http.ServeMux) {
			mux.Handle(httpAuthz.Prefix(), httpAuthz)
			mux.Handle(httpAuthz.Prefix()+"/", httpAuthz)
			mux.Handle("/", api.Handler()) // /key/*, /v2/key/info, /openapi.json, and LiteLLM-style 404s
		},
		jobs:     append([]func(context.Context) error{resets.Run, hooks.Run, alerts.Run, meter.accountant.Run, meter.prices.Run}, jobs...),
		close:    closeAll,
		limiter:  limiter,
		degraded: limiter.Degraded,
	}, nil
}

// newLimiter builds the rate limiter: local counting, or counters in Redis
// with --redis-url (an unreachable Redis at start is not fatal: the
// limiter counts locally and probes until Redis answers).
func newLimiter(cfg *Config, log *slog.Logger, reg prometheus.Registerer) (*ratelimit.Limiter, func(), error) {
	rcfg := ratelimit.Config{
		Window: cfg.RateLimitWindow, Tokens: cfg.TokenRateLimitType, LeaseTimeout: cfg.RateLimitLeaseTimeout,
		RedisTimeout: cfg.RedisTimeout, KeyPrefix: cfg.RedisKeyPrefix,
		Registerer: reg, Logger: log.With("component", "ratelimit"),
	}
	var rc *redis.Client
	if cfg.RedisURL != "" {
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, nil, errors.New("--redis-url: not a redis:// or rediss:// URL")
		}
		// Fail fast: a slow Redis must not hold the Check; the limiter
		// falls back to local counting instead of retrying.
		opts.MaxRetries = -1
		opts.DialTimeout = max(cfg.RedisTimeout, 250*time.Millisecond)
		opts.ReadTimeout, opts.WriteTimeout = cfg.RedisTimeout, cfg.RedisTimeout
		opts.PoolTimeout = cfg.RedisTimeout
		rc = redis.NewClient(opts)
		rcfg.Redis = rc
	}
	l, err := ratelimit.New(rcfg)
	if err != nil {
		if rc != nil {
			rc.Close()
		}
		return nil, nil, err
	}
	return l, func() {
		l.Close()
		if rc != nil {
			rc.Close()
		}
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
func buildMetering(cfg *Config, st store.Store, kc *cache.Cache, limiter extproc.Limiter, log *slog.Logger, reg prometheus.Registerer, observers ...spend.Observer) (*metering, error) {
	w, ok := st.(store.SpendWriter)
	if !ok {
		return nil, fmt.Errorf("metering: store %T cannot record spend", st)
	}
	deployments, err := parseDeployments(cfg.ModelDeployments)
	if err != nil {
		return nil, err
	}
	custom, err := customPrices(cfg)
	if err != nil {
		return nil, err
	}
	pcfg := pricing.Config{Location: cfg.PriceTable, Interval: cfg.PriceReloadInterval, Deployments: deployments, Custom: custom}
	if cfg.ModelAliasesResolved && cfg.LiteLLM != nil {
		// The router upstream serves an alias with its target group's
		// deployments: price it as the target (as the Check allows it).
		pcfg.Aliases = cfg.LiteLLM.ModelGroupAlias
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
		Accountant: acct, Prices: prices, Limiter: limiter, IdentityHeaderPrefix: cfg.IdentityHeaderPrefix,
		UnknownModelCostPerToken: cfg.UnknownModelCostPerToken, InjectIncludeUsage: cfg.InjectIncludeUsage,
		Registerer: reg, Logger: log.With("component", "extproc"),
	})
	if err != nil {
		return nil, err
	}
	return &metering{server: srv, accountant: acct, prices: prices}, nil
}

// limiterEnds lets the ext_proc server end rate-limit leases and count
// tokens (its Subject and Usage are the limiter's, field for field).
type limiterEnds struct{ l *ratelimit.Limiter }

func (a limiterEnds) Finish(ctx context.Context, s extproc.Subject, u extproc.Usage) {
	a.l.Finish(ctx, ratelimit.Subject(s), ratelimit.Usage(u))
}

func (a limiterEnds) Release(ctx context.Context, s extproc.Subject) {
	a.l.Release(ctx, ratelimit.Subject(s))
}

// directory gives the management API the user and team rows behind callers
// and keys (LiteLLM's roles and permissions) when the store has them.
func directory(st store.Store) mgmt.Directory {
	if o, ok := st.(mgmt.UserTeamReader); ok {
		return mgmt.OrgDirectory{Org: o}
	}
	return nil
}
