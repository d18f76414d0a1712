// Package litellmtest helps tests run against LiteLLM's real Postgres
// schema: a fresh database holding it, the rows its foreign keys need, and
// a snapshot of every LiteLLM table's definition from the catalog to prove
// nothing of LiteLLM's was changed.
//
// URL copies each database from a template database holding LiteLLM's
// schema (CREATE DATABASE ... TEMPLATE, much faster than loading the
// schema each time). The template, sidecar_litellm_tmpl_<hash of the
// schema>, is made once per schema version on the TEST_DATABASE_URL server
// and kept there for later runs.
package litellmtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/virtualkeys/sidecar/internal/pgtest"
	"github.com/virtualkeys/sidecar/internal/store/postgres/litellm"
)

// templateLock serializes template creation across test processes.
const templateLock int64 = 0x6c6974656c6c6d54 // "litellmT"

func templateName() string {
	h := sha256.Sum256([]byte(litellm.Schema))
	return "sidecar_litellm_tmpl_" + hex.EncodeToString(h[:4])
}

func withDB(base, name string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	u.Path = "/" + name
	return u.String()
}

// ensureTemplate makes the template database if it does not exist yet.
func ensureTemplate(t testing.TB, ctx context.Context, admin *pgx.Conn, base string) string {
	t.Helper()
	name := templateName()
	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock($1)`, templateLock); err != nil {
		t.Fatalf("litellmtest: lock: %v", err)
	}
	defer func() { _, _ = admin.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, templateLock) }()
	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		t.Fatalf("litellmtest: %v", err)
	}
	if exists {
		return name
	}
	building := name + "_building"
	if _, err := admin.Exec(ctx, `DROP DATABASE IF EXISTS `+building+` WITH (FORCE)`); err != nil {
		t.Fatalf("litellmtest: %v", err)
	}
	if _, err := admin.Exec(ctx, `CREATE DATABASE `+building); err != nil {
		t.Fatalf("litellmtest: create template: %v", err)
	}
	c, err := pgx.Connect(ctx, withDB(base, building))
	if err != nil {
		t.Fatalf("litellmtest: connect template: %v", err)
	}
	_, err = c.Exec(ctx, litellm.Schema)
	_ = c.Close(context.Background())
	if err != nil {
		t.Fatalf("litellmtest: load LiteLLM's schema into the template: %v", err)
	}
	if _, err := admin.Exec(ctx, `ALTER DATABASE `+building+` RENAME TO `+name); err != nil {
		t.Fatalf("litellmtest: %v", err)
	}
	return name
}

// URL creates a fresh database holding LiteLLM's schema exactly as
// LiteLLM's migrations leave it ("LiteLLM first") and returns its URL. It
// is dropped when the test ends. Like pgtest.URL it skips without
// TEST_DATABASE_URL, and fails instead when CI is set.
func URL(t testing.TB) string {
	t.Helper()
	base := pgtest.BaseURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("litellmtest: connect: %v", err)
	}
	defer admin.Close(context.Background())
	tmpl := ensureTemplate(t, ctx, admin, base)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "sidecar_test_" + hex.EncodeToString(b[:])
	for {
		_, err := admin.Exec(ctx, `CREATE DATABASE `+name+` TEMPLATE `+tmpl)
		var pgErr *pgconn.PgError
		if err == nil {
			break
		}
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" || ctx.Err() != nil { // object_in_use: another copy runs
			t.Fatalf("litellmtest: create database from template: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("litellmtest: connect for drop: %v", err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("litellmtest: drop database %s: %v", name, err)
		}
	})
	return withDB(base, name)
}

func connect(t testing.TB, url string) (*pgx.Conn, context.Context, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		cancel()
		t.Fatalf("litellmtest: connect: %v", err)
	}
	return c, ctx, func() { _ = c.Close(context.Background()); cancel() }
}

// Load applies LiteLLM's schema (litellm.Schema) to the database at url, as
// LiteLLM's migrations would have: "LiteLLM first".
func Load(t testing.TB, url string) {
	t.Helper()
	c, ctx, done := connect(t, url)
	defer done()
	if _, err := c.Exec(ctx, litellm.Schema); err != nil {
		t.Fatalf("litellmtest: load LiteLLM's schema: %v", err)
	}
}

// Seed inserts budget and organization rows with these ids, which keys'
// budget_id and organization_id must reference on LiteLLM's schema.
func Seed(t testing.TB, url string, budgets, orgs []string) {
	t.Helper()
	c, ctx, done := connect(t, url)
	defer done()
	for _, id := range budgets {
		if _, err := c.Exec(ctx, `INSERT INTO "LiteLLM_BudgetTable" (budget_id, created_by, updated_by)
			VALUES ($1, 'test', 'test') ON CONFLICT DO NOTHING`, id); err != nil {
			t.Fatalf("litellmtest: seed budget %s: %v", id, err)
		}
	}
	for _, id := range orgs {
		if _, err := c.Exec(ctx, `INSERT INTO "LiteLLM_BudgetTable" (budget_id, created_by, updated_by)
			VALUES ('org-budget-' || $1, 'test', 'test') ON CONFLICT DO NOTHING`, id); err != nil {
			t.Fatalf("litellmtest: seed budget for org %s: %v", id, err)
		}
		if _, err := c.Exec(ctx, `INSERT INTO "LiteLLM_OrganizationTable" (organization_id, organization_alias, budget_id, created_by, updated_by)
			VALUES ($1, $1, 'org-budget-' || $1, 'test', 'test') ON CONFLICT DO NOTHING`, id); err != nil {
			t.Fatalf("litellmtest: seed organization %s: %v", id, err)
		}
	}
}

// SeedDefaults seeds the ids the project's test suites use.
func SeedDefaults(t testing.TB, url string) {
	t.Helper()
	Seed(t, url, []string{"budget-1", "b1", "b"}, []string{"org-1", "o1", "o", "x"})
}

// snapshotQueries read, for every table in schema public except the
// sidecar's own, everything Prisma (and LiteLLM) could notice: columns
// with types, defaults and nullability; indexes with their definitions;
// constraints with their definitions; the table's owner-visible options.
// Triggers are listed separately (Triggers).
var snapshotQueries = []struct{ name, sql string }{
	{"columns", `SELECT table_name, ordinal_position, column_name, data_type, udt_name, coalesce(character_maximum_length, -1),
		coalesce(column_default, '<none>'), is_nullable, coalesce(collation_name, '')
		FROM information_schema.columns WHERE table_schema = 'public'
		ORDER BY table_name, ordinal_position`},
	{"indexes", `SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY tablename, indexname`},
	{"constraints", `SELECT c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid, true), k.convalidated
		FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
		WHERE c.relnamespace = 'public'::regnamespace ORDER BY c.relname, k.conname`},
	{"tables", `SELECT c.relname, c.relkind::text, c.relpersistence::text, c.relrowsecurity, coalesce(array_to_string(c.reloptions, ','), ''),
		c.relreplident::text
		FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
		ORDER BY c.relname`},
	{"types", `SELECT t.typname, coalesce(string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder), '')
		FROM pg_type t LEFT JOIN pg_enum e ON e.enumtypid = t.oid
		WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd', 'c') AND t.typrelid = 0
		GROUP BY t.typname ORDER BY t.typname`},
	{"functions", `SELECT p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc p
		WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1, 2`},
	{"prisma", `SELECT migration_name, checksum FROM _prisma_migrations ORDER BY migration_name`},
}

// Snapshot renders the definition of every object in schema public (where
// LiteLLM's tables live) from pg_catalog and information_schema, one line
// per column, index, constraint, table, type and function, plus the
// _prisma_migrations rows. Two equal snapshots mean byte-identical
// definitions.
func Snapshot(t testing.TB, url string) string {
	t.Helper()
	c, ctx, done := connect(t, url)
	defer done()
	var b strings.Builder
	var prisma bool
	if err := c.QueryRow(ctx, `SELECT to_regclass('public._prisma_migrations') IS NOT NULL`).Scan(&prisma); err != nil {
		t.Fatalf("litellmtest: snapshot: %v", err)
	}
	for _, q := range snapshotQueries {
		if q.name == "prisma" && !prisma {
			continue
		}
		rows, err := c.Query(ctx, q.sql)
		if err != nil {
			t.Fatalf("litellmtest: snapshot %s: %v", q.name, err)
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatalf("litellmtest: snapshot %s: %v", q.name, err)
			}
			fmt.Fprintf(&b, "%s %v\n", q.name, vals)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("litellmtest: snapshot %s: %v", q.name, err)
		}
	}
	return b.String()
}

// Triggers lists the triggers on tables in schema public as
// "table/trigger/enabled".
func Triggers(t testing.TB, url string) []string {
	t.Helper()
	c, ctx, done := connect(t, url)
	defer done()
	rows, err := c.Query(ctx, `SELECT c.relname || '/' || t.tgname || '/' || t.tgenabled::text FROM pg_trigger t
		JOIN pg_class c ON c.oid = t.tgrelid
		WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal ORDER BY 1`)
	if err != nil {
		t.Fatalf("litellmtest: triggers: %v", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("litellmtest: triggers: %v", err)
	}
	return out
}
