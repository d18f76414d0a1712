package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"github.com/virtualkeys/sidecar/internal/store/migrate"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrationLockKey is the pg_advisory_lock key serializing migrations
// across replicas ("sidecarM" in ASCII).
const migrationLockKey int64 = 0x736964656361724d

// aliasLockClass is the first key of the two-key pg_advisory_xact_lock
// taken per key_alias when uniqueness cannot be a unique index.
const aliasLockClass int32 = 0x73696463 // "sidc"

// Index names created outside the numbered migrations.
const (
	aliasUniqueIndex = "sidecar_key_alias_unique"
	aliasPlainIndex  = "sidecar_key_alias_idx"
)

// migrations returns the embedded migrations in version order.
func migrations() ([]migrate.File, error) { return migrate.Load(migrationFS, "migrations") }

// migrate applies the pending migrations and the key_alias index on one
// pool connection holding the migration advisory lock.
func (s *Store) migrate(ctx context.Context) (err error) {
	ms, err := migrations()
	if err != nil {
		return err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	// Waiting for another replica's migration and building on a large table
	// may take longer than the pool's statement_timeout.
	if _, err := conn.Exec(ctx, `SET statement_timeout = 0`); err != nil {
		return fmt.Errorf("disable statement_timeout: %w", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return fmt.Errorf("advisory lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, migrationLockKey); uerr != nil {
			// The session may still hold the lock: do not hand the
			// connection back to the pool.
			_ = conn.Hijack().Close(uctx)
			err = errors.Join(err, fmt.Errorf("advisory unlock: %w", uerr))
		}
	}()

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS sidecar_schema_migrations (
		version    integer PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("create sidecar_schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	rows, err := conn.Query(ctx, `SELECT version FROM sidecar_schema_migrations`)
	if err != nil {
		return err
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return err
	}
	for _, v := range vs {
		applied[int(v)] = true
	}
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO sidecar_schema_migrations (version) VALUES ($1)`, m.Version)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
		s.log.Info("postgres: applied migration", "migration", m.Name)
	}
	if err := s.ensureAliasIndex(ctx, conn.Conn()); err != nil {
		return err
	}
	// Back to the pool's statement_timeout before the connection is reused.
	if _, err := conn.Exec(ctx, `RESET statement_timeout`); err != nil {
		return fmt.Errorf("reset statement_timeout: %w", err)
	}
	return nil
}

// ensureAliasIndex makes key_alias unique with an index if the data allows;
// if existing rows (written by LiteLLM, which does not enforce it) share an
// alias, it logs a warning, creates a plain index and switches writes to
// an advisory-lock check.
func (s *Store) ensureAliasIndex(ctx context.Context, conn *pgx.Conn) error {
	var hasColumn, exists bool
	err := conn.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM information_schema.columns
			WHERE table_schema = current_schema() AND table_name = $1 AND column_name = 'key_alias'),
		EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $2)`,
		keyTableName, aliasUniqueIndex).Scan(&hasColumn, &exists)
	if err != nil {
		return err
	}
	if !hasColumn || exists {
		// Skip CREATE INDEX IF NOT EXISTS: it would still take a SHARE lock.
		s.aliasLock = false
		return nil
	}
	_, err = conn.Exec(ctx, `CREATE UNIQUE INDEX IF NOT EXISTS `+aliasUniqueIndex+` ON `+keyTable+` (key_alias)`)
	if err == nil {
		s.aliasLock = false
		return nil
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		return fmt.Errorf("create %s: %w", aliasUniqueIndex, err)
	}
	s.log.Warn("postgres: existing keys share a key_alias; alias uniqueness is enforced by the sidecar's writes, not by an index",
		"index", aliasUniqueIndex)
	if _, err := conn.Exec(ctx, `CREATE INDEX IF NOT EXISTS `+aliasPlainIndex+` ON `+keyTable+` (key_alias)`); err != nil {
		return fmt.Errorf("create %s: %w", aliasPlainIndex, err)
	}
	s.aliasLock = true
	return nil
}

// loadColumns reads the key table's actual columns.
func loadColumns(ctx context.Context, pool *pgxpool.Pool) (*columns, error) {
	rows, err := pool.Query(ctx, `SELECT column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1`, keyTableName)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	return newColumns(names)
}
