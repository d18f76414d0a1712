package postgres

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pgtest"
	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/postgres/litellm"
	"github.com/virtualkeys/sidecar/internal/store/postgres/litellmtest"
	"github.com/virtualkeys/sidecar/internal/store/storetest"
)

// wantTriggers are the only objects the sidecar attaches to LiteLLM's
// tables: its change triggers; the key tables' enabled ALWAYS ("A"), the
// team/user/membership/budget tables' row triggers enabled as usual ("O").
var wantTriggers = []string{
	"LiteLLM_BudgetTable/litellm_sidecar_org/O",
	"LiteLLM_DeprecatedVerificationToken/litellm_sidecar_delete/A",
	"LiteLLM_DeprecatedVerificationToken/litellm_sidecar_insert/A",
	"LiteLLM_DeprecatedVerificationToken/litellm_sidecar_truncate/A",
	"LiteLLM_DeprecatedVerificationToken/litellm_sidecar_update/A",
	"LiteLLM_TeamMembership/litellm_sidecar_org/O",
	"LiteLLM_TeamTable/litellm_sidecar_org/O",
	"LiteLLM_UserTable/litellm_sidecar_org/O",
	"LiteLLM_VerificationToken/litellm_sidecar_delete/A",
	"LiteLLM_VerificationToken/litellm_sidecar_insert/A",
	"LiteLLM_VerificationToken/litellm_sidecar_truncate/A",
	"LiteLLM_VerificationToken/litellm_sidecar_update/A",
}

// onLiteLLM loads LiteLLM's real schema into a fresh database (LiteLLM
// first), seeds the rows keys may reference, opens two stores on it (two
// replicas migrating at once), and when the test ends asserts that every
// LiteLLM table's columns, indexes and constraints (and the
// _prisma_migrations rows) are byte-identical to before, and that the
// sidecar's triggers are all it attached. It returns the first store.
func onLiteLLM(t *testing.T) (*Store, *Store, string) {
	t.Helper()
	url := litellmtest.URL(t)
	litellmtest.SeedDefaults(t, url)
	before := litellmtest.Snapshot(t, url)
	if trg := litellmtest.Triggers(t, url); len(trg) != 0 {
		t.Fatalf("LiteLLM's schema has triggers of its own: %v", trg)
	}
	var a, b *Store
	var errA, errB error
	var wg sync.WaitGroup
	wg.Go(func() { a, errA = Open(context.Background(), Config{URL: url}) })
	wg.Go(func() { b, errB = Open(context.Background(), Config{URL: url}) })
	wg.Wait()
	if err := errors.Join(errA, errB); err != nil {
		t.Fatalf("Open two stores on LiteLLM's schema: %v", err)
	}
	t.Cleanup(func() {
		_ = a.Close()
		_ = b.Close()
		if after := litellmtest.Snapshot(t, url); after != before {
			t.Errorf("LiteLLM's schema changed:\n%s", diffLines(before, after))
		}
		if got := litellmtest.Triggers(t, url); !slices.Equal(got, wantTriggers) {
			t.Errorf("triggers on LiteLLM's tables = %v, want %v", got, wantTriggers)
		}
	})
	return a, b, url
}

func diffLines(a, b string) string {
	as, bs := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range as {
		if !slices.Contains(bs, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bs {
		if !slices.Contains(as, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// TestConformance runs the store conformance suite on LiteLLM's real
// schema (LiteLLM first), with a second store (replica) on the same
// database, and checks LiteLLM's schema is untouched. (The sidecar-first
// schema is byte-identical to it: TestOrders.)
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		a, _, _ := onLiteLLM(t)
		return a
	})
}

// TestTwoStoresOnLiteLLMSchema: a write through one replica reaches the
// other's feed, alias uniqueness holds across replicas without an index.
func TestTwoStoresOnLiteLLMSchema(t *testing.T) {
	a, b, _ := onLiteLLM(t)
	ctx := t.Context()
	r := &recorder{}
	t.Cleanup(b.Subscribe(r.add))
	tok := keys.HashHex("sk-two-stores")
	if err := a.Create(ctx, &keys.Key{Token: tok, KeyAlias: ptr("shared"), BudgetID: ptr("b1"), OrganizationID: ptr("o1")}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "create through the other replica", 0, func(e store.Event) bool { return e.Kind == store.EventChanged && e.Token == tok })
	if _, err := b.SetBlocked(ctx, tok, true); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Get(ctx, tok); err != nil || got.Blocked == nil || !*got.Blocked {
		t.Errorf("Get through the other replica = %+v, %v", got, err)
	}
	// Concurrent creates of one alias through both replicas: one wins.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			errs[i] = s.Create(ctx, &keys.Key{Token: keys.HashHex("sk-race-" + string(rune('a'+i))), KeyAlias: ptr("race")})
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, keys.ErrConflict):
			t.Errorf("concurrent create: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent creates of one alias on two replicas succeeded, want 1", won)
	}
}

// migrationDirs returns LiteLLM's migration folders in Prisma's order.
func migrationDirs(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join("testdata", "litellm-migrations"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	sort.Strings(dirs)
	if len(dirs) != 110 {
		t.Fatalf("%d LiteLLM migrations in testdata, want 110", len(dirs))
	}
	return dirs
}

// deployLiteLLM does what `prisma migrate deploy` does: apply, in name
// order, each migration not recorded in _prisma_migrations, recording it.
// It returns the migrations it applied.
func deployLiteLLM(t *testing.T, url string) []string {
	t.Helper()
	c := sqlConn(t, url)
	ctx := t.Context()
	exec(t, c, `CREATE TABLE IF NOT EXISTS _prisma_migrations (
		id varchar(36) PRIMARY KEY, checksum varchar(64) NOT NULL, finished_at timestamptz, migration_name varchar(255) NOT NULL,
		logs text, rolled_back_at timestamptz, started_at timestamptz NOT NULL DEFAULT now(), applied_steps_count integer NOT NULL DEFAULT 0)`)
	var applied []string
	for _, d := range migrationDirs(t) {
		var done bool
		if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM _prisma_migrations WHERE migration_name = $1 AND rolled_back_at IS NULL)`, d).Scan(&done); err != nil {
			t.Fatal(err)
		}
		if done {
			continue
		}
		sql, err := os.ReadFile(filepath.Join("testdata", "litellm-migrations", d, "migration.sql"))
		if err != nil {
			t.Fatal(err)
		}
		err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count)
				VALUES (gen_random_uuid()::text, 'x', now(), $1, 1)`, d)
			return err
		})
		if err != nil {
			t.Fatalf("LiteLLM migration %s: %v", d, err)
		}
		applied = append(applied, d)
	}
	return applied
}

// TestOrders: the supported orders of installing LiteLLM and the sidecar
// on one database, each ending with both working and LiteLLM's schema as
// LiteLLM's migrations make it.
func TestOrders(t *testing.T) {
	ctx := t.Context()
	// The reference: LiteLLM's schema as its migrations leave it.
	ref := litellmtest.URL(t)
	want := litellmtest.Snapshot(t, ref)

	t.Run("LiteLLM migrations, then the sidecar", func(t *testing.T) {
		url := pgtest.URL(t)
		if got := deployLiteLLM(t, url); len(got) != 110 {
			t.Fatalf("applied %d migrations", len(got))
		}
		before := litellmtest.Snapshot(t, url)
		s := open(t, url)
		if err := s.Create(ctx, &keys.Key{Token: keys.HashHex("sk-1")}); err != nil {
			t.Fatal(err)
		}
		if after := litellmtest.Snapshot(t, url); after != before {
			t.Errorf("the sidecar changed LiteLLM's schema:\n%s", diffLines(before, after))
		}
	})

	t.Run("sidecar first, then LiteLLM's migrate deploy", func(t *testing.T) {
		url := pgtest.URL(t)
		s := open(t, url)
		tok := keys.HashHex("sk-first")
		if err := s.Create(ctx, &keys.Key{Token: tok}); err != nil {
			t.Fatal(err)
		}
		if got := litellmtest.Snapshot(t, url); got != want {
			t.Errorf("the sidecar's LiteLLM schema differs from LiteLLM's migrations':\n%s", diffLines(want, got))
		}
		// LiteLLM starting later finds every migration applied.
		if got := deployLiteLLM(t, url); len(got) != 0 {
			t.Errorf("LiteLLM's migrate deploy applied %v on a sidecar-initialised database, want none", got)
		}
		if _, err := s.Get(ctx, tok); err != nil {
			t.Errorf("key after LiteLLM's deploy: %v", err)
		}
	})

	t.Run("sidecar first, then every LiteLLM migration file run again", func(t *testing.T) {
		// Not what LiteLLM does (Prisma skips recorded migrations), but
		// what a by-hand replay meets. The files that fail are the ones
		// that fail on a database LiteLLM itself migrated: LiteLLM's own
		// non-idempotent migrations, nothing the sidecar caused.
		replay := func(url string) []string {
			c := sqlConn(t, url)
			var failed []string
			for _, d := range migrationDirs(t) {
				sql, err := os.ReadFile(filepath.Join("testdata", "litellm-migrations", d, "migration.sql"))
				if err != nil {
					t.Fatal(err)
				}
				if err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, string(sql)); return err }); err != nil {
					failed = append(failed, d)
				}
			}
			return failed
		}
		url := pgtest.URL(t)
		open(t, url)
		got := replay(url)
		litellmFirst := litellmtest.URL(t)
		want := replay(litellmFirst)
		t.Logf("replaying LiteLLM's 110 migration files: %d fail on a sidecar-initialised database: %v", len(got), got)
		if !slices.Equal(got, want) {
			t.Errorf("replay failures on a sidecar-initialised database %v, on LiteLLM's own %v", got, want)
		}
	})

	t.Run("LiteLLM upgrade adds a column and an index", func(t *testing.T) {
		url := litellmtest.URL(t)
		s := open(t, url)
		tok := keys.HashHex("sk-upgrade")
		if err := s.Create(ctx, &keys.Key{Token: tok}); err != nil {
			t.Fatal(err)
		}
		r := &recorder{}
		t.Cleanup(s.Subscribe(r.add))
		c := sqlConn(t, url)
		// A later LiteLLM migration (budget_fallbacks appears in v1.92).
		exec(t, c, `ALTER TABLE "LiteLLM_VerificationToken" ADD COLUMN "budget_fallbacks" JSONB`)
		exec(t, c, `CREATE INDEX "LiteLLM_VerificationToken_key_alias_idx" ON "LiteLLM_VerificationToken" (key_alias)`)
		exec(t, c, `UPDATE "LiteLLM_VerificationToken" SET budget_fallbacks = '{}' WHERE token = $1`, tok)
		exec(t, c, `UPDATE "LiteLLM_VerificationToken" SET models = ARRAY['m'] WHERE token = $1`, tok)
		r.waitFor(t, "change after upgrade", 0, func(e store.Event) bool { return e.Kind == store.EventChanged && e.Token == tok })
		if _, err := s.Update(ctx, tok, func(k *keys.Key) error { k.KeyAlias = ptr("after-upgrade"); return nil }); err != nil {
			t.Errorf("Update after LiteLLM's upgrade: %v", err)
		}
		// A restart regenerates the trigger function and changes nothing.
		before := litellmtest.Snapshot(t, url)
		open(t, url)
		if after := litellmtest.Snapshot(t, url); after != before {
			t.Errorf("restart changed LiteLLM's schema:\n%s", diffLines(before, after))
		}
	})
}

// TestVerifyOnly: --migrate=false creates nothing and names what is
// missing; after one migrating start it runs as a role with only DML
// rights on the three key tables.
func TestVerifyOnly(t *testing.T) {
	ctx := t.Context()
	url := litellmtest.URL(t)
	before := litellmtest.Snapshot(t, url)
	_, err := Open(ctx, Config{URL: url, VerifyOnly: true})
	if err == nil || !strings.Contains(err.Error(), "migrations not applied") {
		t.Fatalf("VerifyOnly on a database the sidecar never migrated: %v", err)
	}
	c := sqlConn(t, url)
	var schema bool
	if err := c.QueryRow(ctx, `SELECT to_regnamespace('litellm_sidecar') IS NOT NULL`).Scan(&schema); err != nil || schema {
		t.Fatalf("VerifyOnly created schema litellm_sidecar (%v, %v)", schema, err)
	}
	if after := litellmtest.Snapshot(t, url); after != before {
		t.Fatalf("VerifyOnly changed the database:\n%s", diffLines(before, after))
	}

	empty := pgtest.URL(t)
	if _, err := Open(ctx, Config{URL: empty, VerifyOnly: true}); err == nil || !strings.Contains(err.Error(), "LiteLLM_VerificationToken") {
		t.Errorf("VerifyOnly on an empty database: %v", err)
	}

	_ = open(t, url) // the one migrating start, as the owner
	// A least-privilege role: the documented grants for --migrate=false.
	role := "sidecar_rt_" + strings.ReplaceAll(strings.TrimPrefix(url[strings.LastIndex(url, "/")+1:], "sidecar_test_"), "?sslmode=disable", "")
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT USAGE ON SCHEMA litellm_sidecar TO ` + role,
		`GRANT SELECT ON litellm_sidecar.schema_migrations TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON "LiteLLM_VerificationToken", "LiteLLM_DeprecatedVerificationToken" TO ` + role,
		`GRANT SELECT, INSERT ON "LiteLLM_AuditLog" TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON "LiteLLM_TeamTable", "LiteLLM_UserTable", "LiteLLM_TeamMembership", "LiteLLM_BudgetTable" TO ` + role,
		`GRANT SELECT, INSERT ON "LiteLLM_SpendLogs" TO ` + role,
		`GRANT SELECT, INSERT, DELETE ON litellm_sidecar.spend_batches TO ` + role,
	} {
		exec(t, c, q)
	}
	t.Cleanup(func() {
		cc, err := pgx.Connect(context.Background(), url)
		if err == nil {
			_, _ = cc.Exec(context.Background(), `DROP OWNED BY `+role)
			_ = cc.Close(context.Background())
		}
		// The database is dropped first by pgtest's cleanup when this runs
		// later; drop the role from the server's default database.
		bc, err := pgx.Connect(context.Background(), pgtest.BaseURL(t))
		if err == nil {
			_, _ = bc.Exec(context.Background(), `DROP ROLE IF EXISTS `+role)
			_ = bc.Close(context.Background())
		}
	})
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	roleURL := strings.Replace(url, "://"+cfg.User+"@", "://"+role+"@", 1)
	if _, err := Open(ctx, Config{URL: roleURL}); err == nil {
		t.Error("migrating start as the least-privilege role succeeded; want a permission error")
	}
	s, err := Open(ctx, Config{URL: roleURL, VerifyOnly: true})
	if err != nil {
		t.Fatalf("VerifyOnly as the least-privilege role: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	tok := keys.HashHex("sk-least-privilege")
	r := &recorder{}
	t.Cleanup(s.Subscribe(r.add))
	grace := time.Now().Add(time.Hour)
	if err := s.Create(ctx, &keys.Key{Token: tok, KeyAlias: ptr("lp")}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := s.Regenerate(ctx, tok, keys.HashHex("sk-least-privilege-2"), &grace, nil); err != nil {
		t.Fatalf("Regenerate: %v", err)
	}
	if err := s.AppendAudit(ctx, &keys.Audit{Action: "created", TableName: keyTableName, ObjectID: tok}); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	if _, err := s.ResetBudgets(ctx, time.Now()); err != nil {
		t.Fatalf("ResetBudgets: %v", err)
	}
	r.waitFor(t, "feed as the least-privilege role", 0, func(e store.Event) bool { return e.Kind == store.EventChanged && e.Token == tok })
	// Dropping a trigger makes verify fail, naming it.
	exec(t, c, `DROP TRIGGER litellm_sidecar_truncate ON "LiteLLM_VerificationToken"`)
	if _, err := Open(ctx, Config{URL: roleURL, VerifyOnly: true}); err == nil || !strings.Contains(err.Error(), "litellm_sidecar_truncate") {
		t.Errorf("VerifyOnly without a trigger: %v", err)
	}
}

// TestLegacyObjectsRemoved: a database an earlier version migrated (its
// index on LiteLLM's table, its triggers and migrations table in public)
// is cleaned up.
func TestLegacyObjectsRemoved(t *testing.T) {
	url := litellmtest.URL(t)
	before := litellmtest.Snapshot(t, url)
	c := sqlConn(t, url)
	exec(t, c, `CREATE TABLE sidecar_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`)
	exec(t, c, `CREATE UNIQUE INDEX sidecar_key_alias_unique ON "LiteLLM_VerificationToken" (key_alias)`)
	exec(t, c, `CREATE FUNCTION sidecar_notify_key_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`)
	exec(t, c, `CREATE TRIGGER sidecar_key_change AFTER INSERT ON "LiteLLM_VerificationToken" FOR EACH ROW EXECUTE FUNCTION sidecar_notify_key_change()`)
	open(t, url)
	if after := litellmtest.Snapshot(t, url); after != before {
		t.Errorf("earlier version's objects not removed:\n%s", diffLines(before, after))
	}
	if got := litellmtest.Triggers(t, url); !slices.Equal(got, wantTriggers) {
		t.Errorf("triggers = %v", got)
	}
}

// TestLegacyTablesAreLiteLLMs: on a key table without _prisma_migrations
// the store creates LiteLLM's other two tables exactly as LiteLLM's
// migrations define them.
func TestLegacyTablesAreLiteLLMs(t *testing.T) {
	ref := litellmtest.URL(t)
	url := pgtest.URL(t)
	c := sqlConn(t, url)
	exec(t, c, `CREATE TABLE "LiteLLM_VerificationToken" (token TEXT PRIMARY KEY, spend DOUBLE PRECISION NOT NULL DEFAULT 0)`)
	open(t, url)
	pick := func(snap string) []string {
		var out []string
		for _, l := range strings.Split(snap, "\n") {
			if strings.Contains(l, "LiteLLM_AuditLog") || strings.Contains(l, "LiteLLM_DeprecatedVerificationToken") {
				out = append(out, l)
			}
		}
		return out
	}
	want, got := pick(litellmtest.Snapshot(t, ref)), pick(litellmtest.Snapshot(t, url))
	if !slices.Equal(got, want) || len(want) == 0 {
		t.Errorf("tables differ from LiteLLM's:\n%s", diffLines(strings.Join(want, "\n"), strings.Join(got, "\n")))
	}
	_ = litellm.Legacy
}

func snapshot(t *testing.T, url string) string { return litellmtest.Snapshot(t, url) }
func triggersOn(t *testing.T, url string) []string {
	return litellmtest.Triggers(t, url)
}

// TestBootstrapLeavesSessionAlone: creating LiteLLM's schema from its dump
// (which sets statement_timeout = 0, row_security = off and an empty search_path
// for its session) leaves the pooled connection's settings as they were.
func TestBootstrapLeavesSessionAlone(t *testing.T) {
	url := pgtest.URL(t)
	s, err := Open(t.Context(), Config{URL: url + "&options=-c%20statement_timeout%3D7000", MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	for setting, want := range map[string]string{"statement_timeout": "7s", "row_security": "on", "client_min_messages": "notice", "search_path": `"$user", public`} {
		var got string
		if err := s.pool.QueryRow(t.Context(), "SELECT current_setting($1)", setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %q after the bootstrap, want %q", setting, got, want)
		}
	}
}
