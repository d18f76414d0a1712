// Package postgres is the production key store: LiteLLM's own tables in a
// Postgres database shared by every replica, accessed through a pgx pool.
//
// Open applies the embedded migrations (migrations/*.sql) under an advisory
// lock, so replicas starting together do not race, and never alters a table
// LiteLLM's migrations created: it reads the key table's real columns and
// touches only the known ones that exist, leaving any others alone.
//
// Triggers on the key tables pg_notify every change on the channel
// sidecar_key_changes; a dedicated listener connection turns those
// notifications into store.Events for the caches of every replica,
// reconnecting with backoff and sending store.EventReset after each
// (re)connect because notifications sent while it was away are lost.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/store"
)

// Config configures Open.
type Config struct {
	// URL is a libpq connection string or postgres:// URL.
	URL string
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil registers none.
	Registerer prometheus.Registerer
	// MaxConns caps the pool; 0 means 10.
	MaxConns int32
}

// Pool limits besides MaxConns.
const (
	defaultMaxConns   = 10
	connectTimeout    = 5 * time.Second
	maxConnLifetime   = 30 * time.Minute
	maxConnIdleTime   = 5 * time.Minute
	healthCheckPeriod = 30 * time.Second
	// feedStartWait bounds how long Open waits for the listener's first
	// LISTEN.
	feedStartWait = connectTimeout + time.Second
)

// Store is the Postgres store.Store. Create it with Open.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	cols *columns
	org  *orgTables // teams, users, memberships, budgets (org.go)
	// aliasLock: existing data had duplicate key_alias values, so there is
	// no unique index; writes enforce uniqueness under an advisory lock.
	aliasLock bool

	feed *feed

	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Open connects, checks the server answers, applies the migrations and
// starts the change feed.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	where := redactURL(cfg.URL)
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// The parser's message may quote the URL; do not wrap it.
		return nil, fmt.Errorf("postgres: parse database URL %s: invalid connection string", where)
	}
	where = pcfg.ConnConfig.Host
	if pcfg.ConnConfig.Port != 0 {
		where = fmt.Sprintf("%s:%d", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port)
	}
	where += "/" + pcfg.ConnConfig.Database
	pcfg.MaxConns = cfg.MaxConns
	if pcfg.MaxConns <= 0 {
		pcfg.MaxConns = defaultMaxConns
	}
	pcfg.MinConns = 0
	pcfg.MaxConnLifetime = maxConnLifetime
	pcfg.MaxConnLifetimeJitter = maxConnLifetime / 10
	pcfg.MaxConnIdleTime = maxConnIdleTime
	pcfg.HealthCheckPeriod = healthCheckPeriod
	if pcfg.ConnConfig.ConnectTimeout == 0 { // connect_timeout in the URL wins
		pcfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	if _, ok := pcfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		pcfg.ConnConfig.RuntimeParams["application_name"] = "sidecar"
	}
	feedCfg := pcfg.ConnConfig.Copy()
	feedCfg.RuntimeParams["application_name"] = feedApplicationName

	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open %s: %w", where, err)
	}
	pctx, cancel := context.WithTimeout(ctx, connectTimeout+time.Second)
	err = pool.Ping(pctx)
	cancel()
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect to %s: %w", where, err)
	}
	s := &Store{pool: pool, log: log}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: migrate %s: %w", where, err)
	}
	cols, err := loadColumns(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: read key table columns on %s: %w", where, err)
	}
	s.cols = cols
	if s.org, err = loadOrg(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: read team and user table columns on %s: %w", where, err)
	}
	if missing := cols.missing(); len(missing) > 0 {
		log.Info("postgres: key table lacks columns; they read as zero values and are not written", "columns", missing)
	}
	s.feed = newFeed(feedCfg, log, cfg.Registerer)
	if err := s.feed.registerMetrics(); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: metrics: %w", err)
	}
	s.feed.start()
	// Writes made before the listener's LISTEN would never be notified:
	// return once it listens, so this store sees its own writes. If it
	// cannot connect in time, go on; it keeps retrying and subscribers get
	// EventReset when it is up.
	t := time.NewTimer(feedStartWait)
	defer t.Stop()
	select {
	case <-s.feed.ready:
	case <-t.C:
		log.Warn("postgres: change feed not connected yet; continuing, it keeps retrying", "waited", feedStartWait)
	case <-ctx.Done():
		_ = s.Close()
		return nil, fmt.Errorf("postgres: open %s: waiting for the change feed: %w", where, ctx.Err())
	}
	return s, nil
}

// Close stops the change feed and closes the pool. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.feed.stop()
		s.pool.Close()
	})
	return nil
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// FeedConnected reports whether the change-feed listener is connected now.
func (s *Store) FeedConnected() bool { return s.feed.isConnected() }

// Subscribe registers fn for change events. If the feed is connected, fn
// receives EventReset at once (from the calling goroutine); otherwise its
// first event is the EventReset sent when the feed connects. fn must not
// block and must not call Subscribe or the returned unsubscribe.
func (s *Store) Subscribe(fn func(store.Event)) (unsubscribe func()) {
	return s.feed.subscribe(fn)
}

var (
	urlPassword = regexp.MustCompile(`(://[^:/@]*):[^@]*@`)
	dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)`)
)

// redactURL renders a connection string (URL or keyword/value) without its
// password.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	s := urlPassword.ReplaceAllString(raw, "$1:xxxxx@")
	return dsnPassword.ReplaceAllString(s, "${1}xxxxx")
}

// errNoRows reports whether err is pgx's "no rows".
func errNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
