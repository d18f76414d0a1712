package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pgtest"
	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/postgres/litellmtest"
	"github.com/virtualkeys/sidecar/internal/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ptr[T any](v T) *T { return &v }

// open opens a store on url and closes it when the test ends.
func open(t *testing.T, url string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{URL: url})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// sqlConn is a plain connection to url for setup and out-of-band writes.
func sqlConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func exec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestOpenConcurrentMigrations(t *testing.T) {
	url := pgtest.URL(t)
	const n = 4
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = Open(t.Context(), Config{URL: url}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open #%d: %v", i, err)
			continue
		}
		t.Cleanup(func() { _ = stores[i].Close() })
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	c := sqlConn(t, url)
	rows, err := c.Query(t.Context(), `SELECT version, count(*) FROM litellm_sidecar.schema_migrations GROUP BY version ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int32]int64{}
	var v int32
	var cnt int64
	if _, err := pgx.ForEachRow(rows, []any{&v, &cnt}, func() error { got[v] = cnt; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ms) {
		t.Errorf("recorded versions %v, want %d migrations", got, len(ms))
	}
	for _, m := range ms {
		if got[int32(m.Version)] != 1 {
			t.Errorf("migration %s recorded %d times, want 1", m.Name, got[int32(m.Version)])
		}
	}
	// Each trigger once, not once per Open.
	if got := litellmtest.Triggers(t, url); !slices.Equal(got, wantTriggers) {
		t.Errorf("triggers = %v, want %v", got, wantTriggers)
	}
	// Reopening applies nothing new and works.
	s := open(t, url)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// liteLLMBaseline is an older LiteLLM key table: no rotation_count,
// last_rotation_at, organization_id, allowed_routes or budget_id, nullable
// JSON columns, plus a column the sidecar does not know.
const liteLLMBaseline = `CREATE TABLE "LiteLLM_VerificationToken" (
    "token" TEXT NOT NULL,
    "key_name" TEXT,
    "key_alias" TEXT,
    "soft_budget_cooldown" BOOLEAN NOT NULL DEFAULT false,
    "spend" DOUBLE PRECISION NOT NULL DEFAULT 0.0,
    "expires" TIMESTAMP(3),
    "models" TEXT[],
    "aliases" JSONB NOT NULL DEFAULT '{}',
    "config" JSONB NOT NULL DEFAULT '{}',
    "user_id" TEXT,
    "team_id" TEXT,
    "permissions" JSONB NOT NULL DEFAULT '{}',
    "max_parallel_requests" INTEGER,
    "metadata" JSONB NOT NULL DEFAULT '{}',
    "blocked" BOOLEAN,
    "tpm_limit" BIGINT,
    "rpm_limit" BIGINT,
    "max_budget" DOUBLE PRECISION,
    "budget_duration" TEXT,
    "budget_reset_at" TIMESTAMP(3),
    "allowed_cache_controls" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "model_spend" JSONB NOT NULL DEFAULT '{}',
    "model_max_budget" JSONB NOT NULL DEFAULT '{}',
    "created_at" TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP,
    "created_by" TEXT,
    "updated_at" TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP,
    "updated_by" TEXT,
    "future_column" TEXT,
    CONSTRAINT "LiteLLM_VerificationToken_pkey" PRIMARY KEY ("token")
)`

func TestLiteLLMCompat(t *testing.T) {
	url := pgtest.URL(t)
	c := sqlConn(t, url)
	exec(t, c, liteLLMBaseline)
	tok := keys.HashHex("sk-litellm-existing")
	exec(t, c, `INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, spend, models, max_budget, expires, future_column)
		VALUES ($1, 'legacy', 1.5, NULL, 10, '2030-01-02 03:04:05.678', 'keep me')`, tok)

	s := open(t, url)
	ctx := t.Context()
	if got := s.cols.missing(); strings.Join(got, ",") != "allowed_routes,budget_id,organization_id,rotation_count,last_rotation_at" {
		t.Errorf("missing columns = %v", got)
	}

	k, err := s.Get(ctx, tok)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	wantExp := time.Date(2030, 1, 2, 3, 4, 5, 678_000_000, time.UTC)
	if k.Spend != 1.5 || *k.KeyAlias != "legacy" || *k.MaxBudget != 10 || !k.Expires.Equal(wantExp) || k.Expires.Location() != time.UTC {
		t.Errorf("Get = %+v", k)
	}
	if k.Models == nil || len(k.Models) != 0 || k.AllowedRoutes == nil || k.RotationCount != 0 || k.OrganizationID != nil {
		t.Errorf("NULL/missing columns not read as zero values: models %#v routes %#v rotation %d org %v",
			k.Models, k.AllowedRoutes, k.RotationCount, k.OrganizationID)
	}

	up, err := s.Update(ctx, tok, func(k *keys.Key) error {
		k.Models = []string{"gpt-4o"}
		k.OrganizationID = ptr("org-dropped") // no column: not stored
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if up.OrganizationID != nil || len(up.Models) != 1 {
		t.Errorf("Update result = org %v models %v; want what the table holds", up.OrganizationID, up.Models)
	}
	newTok := keys.HashHex("sk-litellm-rotated")
	grace := time.Now().Add(time.Hour)
	rk, err := s.Regenerate(ctx, tok, newTok, &grace, func(k *keys.Key) error { k.RotationCount++; return nil })
	if err != nil {
		t.Fatalf("Regenerate: %v", err)
	}
	if rk.Token != newTok || rk.Spend != 1.5 || rk.Models[0] != "gpt-4o" {
		t.Errorf("Regenerate = %+v", rk)
	}
	look, err := s.Lookup(ctx, tok)
	if err != nil || look.Token != newTok || look.GraceUntil == nil {
		t.Errorf("Lookup old = %+v, %v", look, err)
	}
	var future *string
	if err := c.QueryRow(ctx, `SELECT future_column FROM "LiteLLM_VerificationToken" WHERE token = $1`, newTok).Scan(&future); err != nil {
		t.Fatal(err)
	}
	if future == nil || *future != "keep me" {
		t.Errorf("future_column = %v, want it untouched", future)
	}
	// New keys work too; the unknown column takes its default.
	if err := s.Create(ctx, &keys.Key{Token: keys.HashHex("sk-new"), KeyAlias: ptr("legacy")}); !errors.Is(err, keys.ErrConflict) {
		t.Errorf("Create with taken alias = %v, want conflict", err)
	}
	if err := s.Create(ctx, &keys.Key{Token: keys.HashHex("sk-new"), OrganizationID: ptr("x")}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	res, err := s.List(ctx, store.ListQuery{OrganizationID: "x"})
	if err != nil || res.Total != 0 {
		t.Errorf("List by missing organization_id = %d, %v; want 0", res.Total, err)
	}
	if n, err := s.ResetBudgets(ctx, time.Now()); err != nil || n != 0 {
		t.Errorf("ResetBudgets = %d, %v", n, err)
	}
}

func TestDuplicateAliasesInExistingData(t *testing.T) {
	url := pgtest.URL(t)
	c := sqlConn(t, url)
	exec(t, c, liteLLMBaseline)
	a, b := keys.HashHex("sk-dup-a"), keys.HashHex("sk-dup-b")
	exec(t, c, `INSERT INTO "LiteLLM_VerificationToken" (token, key_alias) VALUES ($1, 'dup'), ($2, 'dup')`, a, b)

	s := open(t, url)
	ctx := t.Context()
	var idx int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE tablename = 'LiteLLM_VerificationToken' AND indexdef LIKE '%key_alias%'`).Scan(&idx); err != nil {
		t.Fatal(err)
	}
	if idx != 0 {
		t.Errorf("%d key_alias indexes on LiteLLM's table; want none (uniqueness is an advisory lock)", idx)
	}
	// Existing duplicates stay writable when the alias does not change.
	if _, err := s.Update(ctx, a, func(k *keys.Key) error { k.Spend = 3; return nil }); err != nil {
		t.Errorf("Update keeping a duplicated alias: %v", err)
	}
	tests := []struct {
		name string
		do   func() error
		want string // conflict field, "" = success
	}{
		{"create taken", func() error { return s.Create(ctx, &keys.Key{Token: keys.HashHex("sk-c1"), KeyAlias: ptr("dup")}) }, "key_alias"},
		{"create free", func() error { return s.Create(ctx, &keys.Key{Token: keys.HashHex("sk-c2"), KeyAlias: ptr("free")}) }, ""},
		{"update to taken", func() error {
			_, err := s.Update(ctx, a, func(k *keys.Key) error { k.KeyAlias = ptr("free"); return nil })
			return err
		}, "key_alias"},
		{"regenerate to taken", func() error {
			_, err := s.Regenerate(ctx, b, keys.HashHex("sk-b2"), nil, func(k *keys.Key) error { k.KeyAlias = ptr("free"); return nil })
			return err
		}, "key_alias"},
		{"update to new", func() error {
			_, err := s.Update(ctx, a, func(k *keys.Key) error { k.KeyAlias = ptr("fresh"); return nil })
			return err
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			var ce *keys.ConflictError
			if !errors.As(err, &ce) || ce.Field != tc.want {
				t.Fatalf("err = %v, want conflict on %s", err, tc.want)
			}
		})
	}
	// Concurrent creates of one new alias: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			errs[i] = s.Create(ctx, &keys.Key{Token: keys.HashHex(fmt.Sprint("sk-race-", i)), KeyAlias: ptr("race")})
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, keys.ErrConflict):
			t.Errorf("concurrent create: %v", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d concurrent creates of one alias succeeded, want 1", ok)
	}
}

// recorder collects events.
type recorder struct {
	mu sync.Mutex
	ev []store.Event
}

func (r *recorder) add(e store.Event) { r.mu.Lock(); r.ev = append(r.ev, e); r.mu.Unlock() }

func (r *recorder) snapshot() []store.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]store.Event(nil), r.ev...)
}

// waitFor waits until an event from index from on matches and returns the
// index after it.
func (r *recorder) waitFor(t *testing.T, what string, from int, match func(store.Event) bool) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ev := r.snapshot()
		for i := from; i < len(ev); i++ {
			if match(ev[i]) {
				return i + 1
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: no matching event; got %+v", what, r.snapshot()[from:])
	return 0
}

func kind(k store.EventKind) func(store.Event) bool {
	return func(e store.Event) bool { return e.Kind == k }
}

func TestFeedFromPlainSQL(t *testing.T) {
	url := pgtest.URL(t)
	s := open(t, url)
	// Open returns once the listener listens, so writes right after Open
	// are seen, and a new subscriber gets its EventReset at once.
	if !s.FeedConnected() {
		t.Error("FeedConnected = false right after Open")
	}
	r := &recorder{}
	t.Cleanup(s.Subscribe(r.add))
	if ev := r.snapshot(); len(ev) != 1 || ev[0].Kind != store.EventReset {
		t.Errorf("events right after Subscribe = %+v, want [EventReset]", ev)
	}
	c := sqlConn(t, url)
	tok, tok2 := keys.HashHex("sk-feed-1"), keys.HashHex("sk-feed-2")
	changed := func(tok string) func(store.Event) bool {
		return func(e store.Event) bool { return e.Kind == store.EventChanged && e.Token == tok }
	}
	tests := []struct {
		name  string
		sql   string
		args  []any
		match []func(store.Event) bool // each must be seen after the statement
	}{
		{"insert", `INSERT INTO "LiteLLM_VerificationToken" (token) VALUES ($1)`, []any{tok},
			[]func(store.Event) bool{changed(tok)}},
		{"spend only", `UPDATE "LiteLLM_VerificationToken" SET spend = spend + 2.25, updated_at = now() WHERE token = $1`, []any{tok},
			[]func(store.Event) bool{func(e store.Event) bool { return e.Kind == store.EventSpend && e.Token == tok && e.Spend == 2.25 }}},
		{"spend and config", `UPDATE "LiteLLM_VerificationToken" SET spend = 3, models = ARRAY['x'] WHERE token = $1`, []any{tok},
			[]func(store.Event) bool{changed(tok)}},
		{"token moved", `UPDATE "LiteLLM_VerificationToken" SET token = $2 WHERE token = $1`, []any{tok, tok2},
			[]func(store.Event) bool{changed(tok2), changed(tok)}},
		{"grace record", `INSERT INTO "LiteLLM_DeprecatedVerificationToken" (id, token, active_token_id, revoke_at) VALUES ('d1', $1, $2, now() + interval '1 hour')`,
			[]any{"deprecated-tok", tok2}, []func(store.Event) bool{changed("deprecated-tok")}},
		{"delete", `DELETE FROM "LiteLLM_VerificationToken" WHERE token = $1`, []any{tok2},
			[]func(store.Event) bool{changed(tok2)}},
		{"junk payload", `SELECT pg_notify('sidecar_key_changes', 'not json')`, nil,
			[]func(store.Event) bool{kind(store.EventReset)}},
	}
	for _, tc := range tests {
		from := len(r.snapshot())
		exec(t, c, tc.sql, tc.args...)
		for _, m := range tc.match {
			r.waitFor(t, tc.name, from, m)
		}
		// A spend-only write must not also invalidate the key.
		if tc.name == "spend only" {
			time.Sleep(100 * time.Millisecond)
			for _, e := range r.snapshot()[from:] {
				if e.Kind != store.EventSpend {
					t.Errorf("spend-only update also sent %+v", e)
				}
			}
		}
	}
}

func TestFeedReconnects(t *testing.T) {
	defer func(a, b time.Duration) { feedBackoffMin, feedIdlePing = a, b }(feedBackoffMin, feedIdlePing)
	feedIdlePing = 200 * time.Millisecond // exercise the idle ping too
	url := pgtest.URL(t)
	reg := prometheus.NewRegistry()
	s, err := Open(t.Context(), Config{URL: url, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	r := &recorder{}
	t.Cleanup(s.Subscribe(r.add))
	from := r.waitFor(t, "first reset", 0, kind(store.EventReset))
	time.Sleep(500 * time.Millisecond) // a few idle pings

	c := sqlConn(t, url)
	for round := range 2 {
		var killed bool
		err := c.QueryRow(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE application_name = $1 AND datname = current_database()`, feedApplicationName).Scan(&killed)
		if err != nil || !killed {
			t.Fatalf("round %d: terminate listener: %v %v", round, killed, err)
		}
		start := time.Now()
		from = r.waitFor(t, "down", from, kind(store.EventDown))
		from = r.waitFor(t, "reset after reconnect", from, kind(store.EventReset))
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("round %d: reconnect took %v", round, d)
		}
		tok := keys.HashHex(fmt.Sprint("sk-after-", round))
		if err := s.Create(t.Context(), &keys.Key{Token: tok}); err != nil {
			t.Fatal(err)
		}
		from = r.waitFor(t, "event after reconnect", from, func(e store.Event) bool {
			return e.Kind == store.EventChanged && e.Token == tok
		})
	}
	if got := testutil.ToFloat64(s.feed.reconnects); got != 2 {
		t.Errorf("reconnects_total = %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.feed.connectedG); got != 1 {
		t.Errorf("feed_connected = %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.feed.notifications); got < 2 {
		t.Errorf("notifications_total = %v, want >= 2", got)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 6 {
		t.Errorf("registered metrics = %d, %v; want 6", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.FeedConnected() || testutil.ToFloat64(s.feed.connectedG) != 0 {
		t.Error("feed still reported connected after Close")
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		want    string
		notWant string
	}{
		{"unreachable", "postgres://user:s3cret-pw@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", "127.0.0.1:1", "s3cret-pw"},
		{"bad url", "postgres://user:s3cret-pw@127.0.0.1:notaport/db", "invalid connection string", "s3cret-pw"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			s, err := Open(t.Context(), Config{URL: tc.url})
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if d := time.Since(start); d > 8*time.Second {
				t.Errorf("Open took %v", d)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, tc.notWant) || strings.Contains(msg, "\n") {
				t.Errorf("error = %q; want one line containing %q without the password", msg, tc.want)
			}
		})
	}
}

func TestTimestampsAreUTCWhateverTheSessionZone(t *testing.T) {
	url := pgtest.URL(t)
	s, err := Open(t.Context(), Config{URL: url + "&timezone=America/New_York"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	exp := time.Date(2031, 6, 7, 8, 9, 10, 123_456_789, time.FixedZone("Z5", 5*3600))
	k := &keys.Key{Token: keys.HashHex("sk-tz"), Expires: &exp}
	if err := s.Create(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	var raw string
	c := sqlConn(t, url)
	if err := c.QueryRow(t.Context(), `SELECT expires::text FROM "LiteLLM_VerificationToken" WHERE token = $1`, k.Token).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if raw != "2031-06-07 03:09:10.123" {
		t.Errorf("stored expires = %s, want UTC wall clock 2031-06-07 03:09:10.123", raw)
	}
	got, err := s.Get(t.Context(), k.Token)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Expires.Equal(exp.Truncate(time.Millisecond)) || got.Expires.Location() != time.UTC {
		t.Errorf("read expires = %v", got.Expires)
	}
}

func TestOpenOnMinimalKeyTable(t *testing.T) {
	url := pgtest.URL(t)
	c := sqlConn(t, url)
	exec(t, c, `CREATE TABLE "LiteLLM_VerificationToken" (token TEXT PRIMARY KEY, spend DOUBLE PRECISION NOT NULL DEFAULT 0, team_id TEXT)`)
	s := open(t, url)
	var idx []string
	rows, err := c.Query(t.Context(), `SELECT indexname FROM pg_indexes WHERE tablename = 'LiteLLM_VerificationToken' ORDER BY indexname`)
	if err != nil {
		t.Fatal(err)
	}
	if idx, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if want := "LiteLLM_VerificationToken_pkey"; strings.Join(idx, ",") != want {
		t.Errorf("indexes = %v, want %s (none created on LiteLLM's table)", idx, want)
	}
	tok := keys.HashHex("sk-min")
	if err := s.Create(t.Context(), &keys.Key{Token: tok, KeyAlias: ptr("dropped"), TeamID: ptr("t")}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSpend(t.Context(), map[string]float64{tok: 2}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(t.Context(), tok)
	if err != nil || got.Spend != 2 || got.KeyAlias != nil || *got.TeamID != "t" || got.CreatedAt != nil {
		t.Errorf("Get = %+v, %v", got, err)
	}
	if _, err := s.GetByAlias(t.Context(), "dropped"); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("GetByAlias without the column = %v, want not found", err)
	}
	res, err := s.List(t.Context(), store.ListQuery{TeamID: "t"})
	if err != nil || res.Total != 1 {
		t.Errorf("List = %+v, %v", res, err)
	}
}

func TestOrgConformance(t *testing.T) {
	storetest.RunOrg(t, func(t *testing.T) storetest.OrgStore {
		url := pgtest.URL(t)
		s, err := Open(t.Context(), Config{URL: url})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		// LiteLLM's schema (created by Open) has foreign keys: seed the
		// budget and organization rows the suite names.
		litellmtest.Seed(t, url, nil, []string{"org-1"}) // budgets are the suite's own
		return s
	})
}
