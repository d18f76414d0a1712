// Package litellmtest helps tests run against LiteLLM's real Postgres
// schema: load it into a fresh database, seed the rows its foreign keys
// need, and snapshot every LiteLLM table's definition from the catalog to
// prove nothing of LiteLLM's was changed.
package litellmtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/virtualkeys/sidecar/internal/store/postgres/litellm"
)

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
