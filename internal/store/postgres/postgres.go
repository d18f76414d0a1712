// Package postgres is the production key store: LiteLLM's own tables in a
// Postgres database shared by every replica, accessed through a pgx pool.
//
// The store owns nothing among LiteLLM's objects. Everything it creates
// lives in schema litellm_sidecar (its migrations table and the change
// feed's functions), except the change triggers on LiteLLM's two key
// tables, which Prisma does not model and so never diffs or drops. On a
// LiteLLM database (_prisma_migrations present) it creates and alters none
// of LiteLLM's tables and indexes; on an empty database it creates LiteLLM's
// schema exactly as LiteLLM's migrations would, so LiteLLM can run there
// later. Open applies this in one transaction under an advisory lock, or
// with Config.VerifyOnly only checks it (see docs/litellm-database.md).
//
// The triggers are statement-level with transition tables: one
// notification per statement on channel sidecar_key_changes, listing the
// keys changed, spend-only changes with their new spend, and the sidecar's
// own budget resets; a statement changing more keys sends one purge. A
// dedicated listener connection turns them into store.Events for the caches
// of every replica, reconnecting with backoff and sending
// store.EventReset after each (re)connect because notifications sent while
// it was away are lost. A heartbeat NOTIFY sent through the pool must come
// back to the listener: when it stops (LISTEN through PgBouncer's
// transaction pooling), the feed is declared deaf (metric, log,
// FeedStatus, store.EventDown).
package postgres

import (
	"strings"

	"context"
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5/pgconn"
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
	// FeedURL is where the change-feed listener connects; empty means URL.
	// Set it to a direct Postgres URL when URL goes through PgBouncer in
	// transaction or statement pooling mode (LISTEN needs a session).
	FeedURL string
	// VerifyOnly: do not create or change anything; fail unless LiteLLM's
	// tables, the sidecar's migrations and the change triggers are already
	// there (for a role that may only read and write the key tables).
	// false means apply what is missing.
	VerifyOnly bool
	// HeartbeatInterval is how often the store sends its heartbeat NOTIFY;
	// 0 means 5s.
	HeartbeatInterval time.Duration
	// DeafAfter is how long the listener may go without hearing the
	// heartbeat before the feed is declared deaf; 0 means 3 intervals.
	DeafAfter time.Duration
	// StatementTimeout is the server-side statement_timeout of every pool
	// connection: Postgres itself cancels a statement running longer (a
	// lock held elsewhere, a hung server), even when the client has gone.
	// 0 means DefaultStatementTimeout; a statement_timeout set in the URL
	// wins. Migrations run without it.
	StatementTimeout time.Duration
}

// DefaultStatementTimeout is Config.StatementTimeout's zero value.
const DefaultStatementTimeout = 5 * time.Second

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
	if cfg.FeedURL != "" {
		fc, err := pgx.ParseConfig(cfg.FeedURL)
		if err != nil {
			return nil, fmt.Errorf("postgres: parse feed database URL %s: invalid connection string", redactURL(cfg.FeedURL))
		}
		if fc.ConnectTimeout == 0 {
			fc.ConnectTimeout = connectTimeout
		}
		feedCfg = fc
	}
	feedCfg.RuntimeParams["application_name"] = feedApplicationName
	_, userTimeout := pcfg.ConnConfig.RuntimeParams["statement_timeout"]
	// options=-c statement_timeout=... in the URL is the operator's too.
	userTimeout = userTimeout || strings.Contains(pcfg.ConnConfig.RuntimeParams["options"], "statement_timeout")
	ourTimeout := !userTimeout
	if ourTimeout {
		st := cfg.StatementTimeout
		if st <= 0 {
			st = DefaultStatementTimeout
		}
		pcfg.ConnConfig.RuntimeParams["statement_timeout"] = fmt.Sprint(st.Milliseconds())
	}

	pool, err := connectPool(ctx, pcfg)
	if err != nil && ourTimeout && rejectsStartupParam(err) {
		// PgBouncer refuses startup parameters it does not track: keep the
		// client-side deadlines (a cancelled context cancels the statement)
		// and say how to get the server-side bound back.
		delete(pcfg.ConnConfig.RuntimeParams, "statement_timeout")
		log.Warn("postgres: the server (PgBouncer?) refuses the statement_timeout startup parameter; statements are bounded by client deadlines only. Set statement_timeout on the database role (ALTER ROLE ... SET statement_timeout = '5s') for a server-side bound")
		pool, err = connectPool(ctx, pcfg)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: connect to %s: %w", where, err)
	}
	s := &Store{pool: pool, log: log}
	if cfg.VerifyOnly {
		err = s.verify(ctx)
	} else {
		err = s.migrate(ctx)
	}
	if err != nil {
		pool.Close()
		if cfg.VerifyOnly {
			return nil, fmt.Errorf("postgres: verify %s (migrations off): %w", where, err)
		}
		return nil, fmt.Errorf("postgres: migrate %s: %w", where, err)
	}
	cols, _, err := loadColumns(ctx, pool)
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
	s.feed = newFeed(feedCfg, log, cfg.Registerer, cfg.HeartbeatInterval, cfg.DeafAfter, func(ctx context.Context, payload string) error {
		_, err := pool.Exec(ctx, `SELECT pg_notify($1, $2)`, feedChannel, payload)
		return err
	})
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

// FeedStatus reports the change feed's state: connected, deaf (its
// heartbeat stopped coming back), and a detail for readiness output.
func (s *Store) FeedStatus() FeedStatus { return s.feed.status() }

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

// connectPool opens a pool and proves it can connect.
func connectPool(ctx context.Context, cfg *pgxpool.Config) (*pgxpool.Pool, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, connectTimeout+time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// rejectsStartupParam reports PgBouncer's "unsupported startup parameter"
// (SQLSTATE 08P01) for statement_timeout.
func rejectsStartupParam(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "08P01" && strings.Contains(pgErr.Message, "statement_timeout")
}
