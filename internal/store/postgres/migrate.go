package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/virtualkeys/sidecar/internal/store/migrate"
	"github.com/virtualkeys/sidecar/internal/store/postgres/litellm"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Schema is the Postgres schema holding everything the sidecar owns: its
// migrations table and the change feed's functions.
const Schema = "litellm_sidecar"

// migrationLockKey is the pg_advisory_xact_lock key serializing migrations
// across replicas ("sidecarM" in ASCII).
const migrationLockKey int64 = 0x736964656361724d

// aliasLockClass is the first key of the two-key pg_advisory_xact_lock
// taken per key_alias: uniqueness is enforced by the writes, never by an
// index on LiteLLM's table.
const aliasLockClass int32 = 0x73696463 // "sidc"

// LiteLLM's tables the store uses.
const (
	auditTableName      = "LiteLLM_AuditLog"
	deprecatedTableName = "LiteLLM_DeprecatedVerificationToken"
)

// Objects an earlier sidecar version created among LiteLLM's objects;
// migrate mode removes them.
var legacyObjects = []string{
	`DROP TRIGGER IF EXISTS sidecar_key_change ON "LiteLLM_VerificationToken"`,
	`DROP TRIGGER IF EXISTS sidecar_deprecated_change ON "LiteLLM_DeprecatedVerificationToken"`,
	`DROP FUNCTION IF EXISTS sidecar_notify_key_change()`,
	`DROP FUNCTION IF EXISTS sidecar_notify_deprecated_change()`,
	`DROP INDEX IF EXISTS sidecar_key_alias_unique`,
	`DROP INDEX IF EXISTS sidecar_key_alias_idx`,
	`DROP INDEX IF EXISTS sidecar_audit_object_id_idx`,
	`DROP INDEX IF EXISTS sidecar_deprecated_active_token_id_idx`,
	`DROP TABLE IF EXISTS sidecar_schema_migrations`,
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migrate.File, error) { return migrate.Load(migrationFS, "migrations") }

// dbState is what a database holds before the store touches it.
type dbState struct {
	schema      string // current_schema()
	prisma      bool   // _prisma_migrations exists: LiteLLM's migrations ran here
	keyTable    bool
	deprecated  bool
	audit       bool
	legacy      bool // sidecar_schema_migrations: an earlier sidecar version ran here
	ownSchema   bool // litellm_sidecar exists
	ownVersions map[int]bool
}

func readState(ctx context.Context, q pgx.Tx) (*dbState, error) {
	st := &dbState{ownVersions: map[int]bool{}}
	err := q.QueryRow(ctx, `SELECT current_schema(),
		to_regclass('_prisma_migrations') IS NOT NULL,
		to_regclass('"LiteLLM_VerificationToken"') IS NOT NULL,
		to_regclass('"LiteLLM_DeprecatedVerificationToken"') IS NOT NULL,
		to_regclass('"LiteLLM_AuditLog"') IS NOT NULL,
		to_regclass('sidecar_schema_migrations') IS NOT NULL,
		to_regnamespace($1) IS NOT NULL`, Schema).Scan(&st.schema, &st.prisma, &st.keyTable, &st.deprecated, &st.audit, &st.legacy, &st.ownSchema)
	if err != nil {
		return nil, err
	}
	if !st.ownSchema {
		return st, nil
	}
	var has bool
	if err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, Schema+".schema_migrations").Scan(&has); err != nil || !has {
		return st, err
	}
	rows, err := q.Query(ctx, `SELECT version FROM `+Schema+`.schema_migrations`)
	if err != nil {
		return nil, err
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		st.ownVersions[int(v)] = true
	}
	return st, nil
}

// migrate brings the database to what the store needs, in one transaction
// under an advisory lock (so replicas starting together do not race, and
// so it works through PgBouncer's transaction pooling):
//   - a database with neither _prisma_migrations nor the key table gets
//     LiteLLM's whole schema, exactly as LiteLLM's migrations leave it;
//   - a database with _prisma_migrations gets none of LiteLLM's objects: its
//     key tables must exist;
//   - a key table without _prisma_migrations (LiteLLM's `prisma db push`
//     era) gets LiteLLM's DDL for the other two tables if they are missing;
//   - then the sidecar's own schema, its migrations, and the change
//     triggers on the key tables.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Waiting for another replica's migration, or creating objects on a
		// large database, may take longer than the pool's statement_timeout.
		if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
			return fmt.Errorf("disable statement_timeout: %w", err)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
			return fmt.Errorf("advisory lock: %w", err)
		}
		st, err := readState(ctx, tx)
		if err != nil {
			return fmt.Errorf("read database state: %w", err)
		}
		switch {
		case !st.prisma && !st.keyTable:
			if err := bootstrapLiteLLM(ctx, tx, st.schema); err != nil {
				return err
			}
			s.log.Info("postgres: empty database: created LiteLLM's schema as its migrations would (LiteLLM can run on this database later)")
		case st.prisma:
			if err := st.requireLiteLLM(); err != nil {
				return err
			}
		case !st.deprecated || !st.audit:
			if _, err := tx.Exec(ctx, litellm.Legacy); err != nil {
				return fmt.Errorf("create LiteLLM's audit and grace-period tables: %w", err)
			}
			s.log.Info("postgres: key table without _prisma_migrations: created LiteLLM's missing audit/grace-period tables")
		}
		if st.legacy {
			for _, q := range legacyObjects {
				if _, err := tx.Exec(ctx, q); err != nil {
					return fmt.Errorf("remove an earlier version's objects (%s): %w", q, err)
				}
			}
			s.log.Info("postgres: removed the objects an earlier sidecar version created among LiteLLM's (now in schema " + Schema + ")")
		}
		// Only when missing: CREATE SCHEMA IF NOT EXISTS still needs CREATE
		// on the database, which a role given a pre-created schema lacks.
		if !st.ownSchema {
			if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+Schema); err != nil {
				return fmt.Errorf("create schema %s: %w", Schema, err)
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+Schema+`.schema_migrations (
			version    integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("create %s.schema_migrations: %w", Schema, err)
		}
		for _, m := range ms {
			if st.ownVersions[m.Version] {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+Schema+`.schema_migrations (version) VALUES ($1)`, m.Version); err != nil {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
			s.log.Info("postgres: applied migration", "migration", m.Name)
		}
		return s.ensureTriggers(ctx, tx)
	})
}

// verify checks, without writing anything, that the database is what the
// store needs: LiteLLM's key tables, the sidecar's migrations and the
// change triggers (--migrate=false, for a role that may only read and
// write the key tables).
func (s *Store) verify(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		st, err := readState(ctx, tx)
		if err != nil {
			return fmt.Errorf("read database state: %w", err)
		}
		if err := st.requireLiteLLM(); err != nil {
			return err
		}
		var missing []string
		for _, m := range ms {
			if !st.ownVersions[m.Version] {
				missing = append(missing, m.Name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("migrations not applied: %s (run the sidecar once with migrations on, as a role allowed to create them; see docs/litellm-database.md)",
				strings.Join(missing, ", "))
		}
		trg, err := readTriggers(ctx, tx)
		if err != nil {
			return err
		}
		if m := trg.missing(); len(m) > 0 {
			return fmt.Errorf("change triggers missing: %s (run the sidecar once with migrations on, as a role allowed to create them; see docs/litellm-database.md)",
				strings.Join(m, ", "))
		}
		if st.legacy {
			s.log.Warn("postgres: objects of an earlier sidecar version are still in the database; run once with migrations on to remove them",
				"table", "sidecar_schema_migrations")
		}
		return nil
	})
}

func (st *dbState) requireLiteLLM() error {
	var missing []string
	for _, t := range []struct {
		ok   bool
		name string
	}{{st.keyTable, keyTableName}, {st.deprecated, deprecatedTableName}, {st.audit, auditTableName}} {
		if !t.ok {
			missing = append(missing, t.name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("LiteLLM's tables %s are missing in schema %q (the sidecar creates them only in an empty database; run LiteLLM's migrations, or a LiteLLM version that has them)",
		strings.Join(missing, ", "), st.schema)
}

// dumpSet matches a session-wide SET at the start of a line of the dump.
var dumpSet = regexp.MustCompile(`(?m)^SET (\w+) =`)

// bootstrapLiteLLM applies LiteLLM's schema dump. The dump names schema
// public and empties search_path for the session; here it does so for the
// transaction only, and search_path is restored after.

func bootstrapLiteLLM(ctx context.Context, tx pgx.Tx, schema string) error {
	if schema != "public" {
		return fmt.Errorf("empty database, current schema %q: the sidecar creates LiteLLM's tables only in schema public (where LiteLLM's migrations put them); create them with LiteLLM, or use schema public", schema)
	}
	const sessionWide = `SELECT pg_catalog.set_config('search_path', '', false);`
	if strings.Count(litellm.Schema, sessionWide) != 2 {
		return errors.New("LiteLLM schema: unexpected search_path settings in the embedded dump")
	}
	sql := strings.ReplaceAll(litellm.Schema, sessionWide, `SELECT pg_catalog.set_config('search_path', '', true);`)
	// The dump's SETs (statement_timeout = 0, row_security = off, ...) would
	// outlive the transaction on this pooled connection: make them local.
	sql = dumpSet.ReplaceAllString(sql, "SET LOCAL $1 =")
	var path string
	if err := tx.QueryRow(ctx, `SELECT current_setting('search_path')`).Scan(&path); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("create LiteLLM's schema: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_catalog.set_config('search_path', $1, true)`, path); err != nil {
		return err
	}
	return nil
}

// loadColumns reads the key table's actual columns and their types.
func loadColumns(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (*columns, map[string]string, error) {
	rows, err := q.Query(ctx, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1`, keyTableName)
	if err != nil {
		return nil, nil, err
	}
	types := map[string]string{}
	var names []string
	var name, typ string
	if _, err := pgx.ForEachRow(rows, []any{&name, &typ}, func() error {
		names = append(names, name)
		types[name] = typ
		return nil
	}); err != nil {
		return nil, nil, err
	}
	c, err := newColumns(names)
	return c, types, err
}
