package main

import (
	"context"
	"errors"
	"fmt"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/virtualkeys/sidecar/internal/extproc"
	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/postgres"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

// authzServiceName is the gRPC health service name of the Check.
const authzServiceName = "envoy.service.auth.v3.Authorization"

// sidecar is the running process: its listeners, servers and store.
type sidecar struct {
	cfg    *Config
	log    *slog.Logger
	reg    *prometheus.Registry
	store  store.Store
	health *health.Server
	grpc   *grpc.Server
	http   *http.Server
	jobs   []func(context.Context) error

	grpcLn, httpLn net.Listener
	ready          atomic.Bool
	closeParts     func()
	unlock         func()        // releases the data dir lock (embedded store); nil otherwise
	degraded       func() string // "" when every part works as configured
}

// ignoredSettings lists, sorted, what config.yaml sets that this sidecar
// does not use: what the file's parser does not read, and
// router_settings.model_group_alias unless --model-aliases-resolved says
// something upstream resolves the aliases (without it they neither grant
// access nor change prices).
func ignoredSettings(cfg *Config) []string {
	lc := cfg.LiteLLM
	if lc == nil {
		return nil
	}
	if len(lc.ModelGroupAlias) == 0 || cfg.ModelAliasesResolved {
		return lc.Ignored
	}
	out := append(slices.Clone(lc.Ignored), "router_settings.model_group_alias")
	slices.Sort(out)
	return out
}

// newSidecar builds every part and binds both listeners; nothing is served
// until serve. It writes nothing (data dir, master key file, database
// migrations) until the configuration has been checked and both listeners
// are bound, so a start that fails on a taken port leaves no trace. The
// embedded store's data dir is locked for the process's lifetime. On error
// everything built so far is released.
func newSidecar(ctx context.Context, cfg *Config, stderr io.Writer) (_ *sidecar, err error) {
	s := &sidecar{cfg: cfg, reg: prometheus.NewRegistry()}
	s.log = newLogger(cfg, stderr)
	if ignored := ignoredSettings(cfg); len(ignored) > 0 {
		// One line for everything config.yaml sets that the sidecar does
		// not use, so an operator sees it once, not once per setting.
		s.log.Info("litellm config: settings ignored", slog.String("file", cfg.ConfigFile), slog.Any("ignored", ignored))
	}
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	// 1. Everything that can be checked without writing.
	if _, err := loadAccessGroups(cfg.AccessGroupsFile); err != nil {
		return nil, err
	}
	if s.grpcLn, err = listen(cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("--grpc-addr: %w", err)
	}
	closers = append(closers, func() { s.grpcLn.Close() })
	if s.httpLn, err = listen(cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("--http-addr: %w", err)
	}
	closers = append(closers, func() { s.httpLn.Close() })

	// 2. The embedded store's data dir: ours alone, then the master key.
	// Postgres needs no data dir (its master key is required).
	if cfg.DatabaseURL == "" {
		if err := ensureDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
		unlock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		closers = append(closers, unlock)
		s.unlock = unlock
		if cfg.MasterKey == "" {
			if cfg.MasterKey, err = loadOrCreateMasterKey(cfg.DataDir, stderr); err != nil {
				return nil, err
			}
		}
	}

	s.reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())

	// 3. The store (Postgres applies its migrations here) and the parts.
	if s.store, err = openStore(ctx, cfg, s.log, s.reg); err != nil {
		return nil, err
	}
	closers = append(closers, func() { s.store.Close() })

	parts, err := buildParts(cfg, s.store, s.log, s.reg)
	if err != nil {
		return nil, err
	}
	closers = append(closers, parts.close)
	s.jobs = parts.jobs
	s.closeParts = parts.close
	s.degraded = parts.degraded

	s.health = health.NewServer()
	opts := parts.grpcOptions
	var gm *grpcprom.ServerMetrics
	if cfg.GRPCMetrics {
		m, mo, err := grpcMetrics(s.reg)
		if err != nil {
			return nil, fmt.Errorf("grpc metrics: %w", err)
		}
		gm, opts = m, append(opts, mo...)
	}
	s.grpc = grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	parts.registerGRPC(s.grpc)
	if gm != nil {
		gm.InitializeMetrics(s.grpc)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	parts.registerHTTP(mux)
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// serve runs both servers and the background jobs until ctx is cancelled
// or one of them fails, then shuts down: not ready first, then (after
// ShutdownDelay) drain within ShutdownTimeout, then close the store.
func (s *sidecar) serve(ctx context.Context) error {
	if s.unlock != nil {
		defer s.unlock() // after the store is closed
	}
	defer s.store.Close()
	defer s.closeParts()
	g, gctx := errgroup.WithContext(ctx)
	jobCtx, stopJobs := context.WithCancel(context.Background())
	defer stopJobs()

	g.Go(func() error {
		if err := s.grpc.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.http.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	for _, job := range s.jobs {
		g.Go(func() error { return job(jobCtx) })
	}

	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(authzServiceName, healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(extproc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	s.ready.Store(true)
	s.log.Info("sidecar serving",
		"grpc_addr", s.grpcLn.Addr().String(), "http_addr", s.httpLn.Addr().String(),
		"store", storeKind(s.cfg))

	g.Go(func() error {
		<-gctx.Done()
		s.shutdown()
		stopJobs()
		return nil
	})
	err := g.Wait()
	s.log.Info("sidecar stopped")
	return err
}

func (s *sidecar) shutdown() {
	s.log.Info("shutting down: not ready, draining", "delay", s.cfg.ShutdownDelay, "timeout", s.cfg.ShutdownTimeout)
	s.ready.Store(false)
	s.health.Shutdown() // every service NOT_SERVING, so Envoy stops picking us
	if s.cfg.ShutdownDelay > 0 {
		time.Sleep(s.cfg.ShutdownDelay)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()

	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	if err := s.http.Shutdown(ctx); err != nil {
		s.log.Warn("http drain cut short", "err", err)
		s.http.Close()
	}
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("grpc drain cut short")
		s.grpc.Stop()
		<-done
	}
}

// readyzStorePing bounds the store check /readyz reports, well inside a
// Kubernetes probe's default 1 s timeout.
const readyzStorePing = 300 * time.Millisecond

// readyz answers whether the Check can decide: 200 from the moment the
// sidecar serves (the store answered at start, the cache follows its feed)
// until shutdown begins, 503 otherwise. It does not fail while the
// database is unreachable: cached keys are still decided, and an outage of
// the shared database would take every replica out of service at once,
// turning decidable requests into connection errors. The body reports the
// store's state now, for people and monitoring.
func (s *sidecar) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !s.ready.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not ready: shutting down or starting\n")
		return
	}
	var b strings.Builder
	b.WriteString("ok\n")
	ctx, cancel := context.WithTimeout(r.Context(), readyzStorePing)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		b.WriteString("store: unreachable: cached keys are still decided; keys not in the cache are denied (503) until it answers\n")
		s.log.Warn("readiness: store does not answer; still ready (cached keys are decided)", "err", err)
	} else {
		b.WriteString("store: ok\n")
	}
	if f, ok := s.store.(interface{ FeedConnected() bool }); ok {
		if f.FeedConnected() {
			b.WriteString("change feed: connected\n")
		} else {
			b.WriteString("change feed: reconnecting (the cache is purged when it is back)\n")
		}
	}
	writeFeedDetail(&b, s.store)
	// Still ready when degraded (rate limits count locally while Redis is
	// away), but say so.
	if d := s.degraded(); d != "" {
		b.WriteString("degraded: " + d + "\n")
	}
	io.WriteString(w, b.String())
}

func storeKind(cfg *Config) string {
	if cfg.DatabaseURL != "" {
		return "postgres"
	}
	return "sqlite"
}

// openStore opens Postgres when a URL is configured, else the embedded
// store in the data dir. Opening is bounded so an unreachable server fails
// start-up with one clear message instead of hanging.
func openStore(ctx context.Context, cfg *Config, log *slog.Logger, reg prometheus.Registerer) (store.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if cfg.DatabaseURL != "" {
		st, err := postgres.Open(ctx, postgres.Config{URL: cfg.DatabaseURL, FeedURL: cfg.FeedDatabaseURL, VerifyOnly: cfg.NoMigrate,
			HeartbeatInterval: cfg.FeedHeartbeat, Logger: log, Registerer: reg, StatementTimeout: cfg.DBStatementTimeout})
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return st, nil
	}
	path := filepath.Join(cfg.DataDir, "sidecar.db")
	st, err := sqlite.Open(ctx, path, log)
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	return st, nil
}

// listen binds host:port or unix:///path. A stale socket file left by a
// crashed process is removed first.
func listen(addr string) (net.Listener, error) {
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.Dial("unix", p); err == nil {
				c.Close()
				return nil, fmt.Errorf("%s: another process is listening", addr)
			}
			os.Remove(p)
		}
		return net.Listen("unix", p)
	}
	return net.Listen("tcp", addr)
}

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	// Durations print as Go durations ("1.2ms"), not integer nanoseconds.
	opts := &slog.HandlerOptions{Level: cfg.LogLevel, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		return a
	}}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
