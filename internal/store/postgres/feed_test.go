package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pgtest"
	"github.com/virtualkeys/sidecar/internal/store/postgres/litellmtest"
)

// rawListener LISTENs on the feed channel with its own connection and
// returns what arrived up to a marker sent after the statements under test:
// NOTIFY is delivered in commit order, so nothing sent by them can come
// after the marker.
type rawListener struct {
	t      *testing.T
	listen *pgx.Conn
	send   *pgx.Conn
	n      int
}

func newRawListener(t *testing.T, url string) *rawListener {
	l := &rawListener{t: t, listen: sqlConn(t, url), send: sqlConn(t, url)}
	exec(t, l.listen, "LISTEN "+feedChannel)
	return l
}

// drain returns the non-heartbeat payloads received since the last drain.
func (l *rawListener) drain() []string {
	l.t.Helper()
	l.n++
	marker := fmt.Sprintf(`{"k":"hb","id":"marker-%d"}`, l.n)
	exec(l.t, l.send, `SELECT pg_notify($1, $2)`, feedChannel, marker)
	var out []string
	for {
		ctx, cancel := context.WithTimeout(l.t.Context(), 30*time.Second)
		n, err := l.listen.WaitForNotification(ctx)
		cancel()
		if err != nil {
			l.t.Fatalf("waiting for the marker: %v (got %v)", err, out)
		}
		if n.Payload == marker {
			return out
		}
		if !strings.HasPrefix(n.Payload, `{"k":"hb"`) {
			out = append(out, n.Payload)
		}
	}
}

type batch struct {
	K string
	T []string
	S [][]json.RawMessage
	R [][]json.RawMessage
}

func parseBatch(t *testing.T, p string) batch {
	t.Helper()
	var b batch
	if err := json.Unmarshal([]byte(p), &b); err != nil {
		t.Fatalf("payload %q: %v", p, err)
	}
	return b
}

// TestFeedStatements: one notification per statement whatever its size,
// a purge above the listing limit, nothing for changes the store does not
// read, TRUNCATE purges, and the triggers fire under
// session_replication_role = replica (ENABLE ALWAYS).
func TestFeedStatements(t *testing.T) {
	url := pgtest.URL(t)
	s, err := Open(t.Context(), Config{URL: url, HeartbeatInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	l := newRawListener(t, url)
	c := sqlConn(t, url)
	const table = `"LiteLLM_VerificationToken"`
	exec(t, c, `INSERT INTO `+table+` (token, spend, models) SELECT 'k' || g, 0, ARRAY[]::text[] FROM generate_series(1, 50) g`)
	if got := l.drain(); len(got) != 1 || len(parseBatch(t, got[0]).T) != 50 {
		t.Fatalf("50-row INSERT: %d notifications %v, want one listing 50 keys", len(got), got)
	}

	tests := []struct {
		name  string
		sql   string
		check func(t *testing.T, got []string)
	}{
		{"spend-only, 50 rows", `UPDATE ` + table + ` SET spend = spend + 1, updated_at = now() WHERE token LIKE 'k%'`, func(t *testing.T, got []string) {
			b := parseBatch(t, one(t, got))
			if len(b.S) != 50 || len(b.T) != 0 || len(b.R) != 0 || string(b.S[0][1]) != "1" {
				t.Errorf("payload %s", got[0])
			}
		}},
		{"config change, 50 rows", `UPDATE ` + table + ` SET models = ARRAY['m'] WHERE token LIKE 'k%'`, func(t *testing.T, got []string) {
			if b := parseBatch(t, one(t, got)); len(b.T) != 50 || len(b.S) != 0 {
				t.Errorf("payload %s", got[0])
			}
		}},
		{"nothing the store reads changed", `UPDATE ` + table + ` SET updated_at = now() WHERE token LIKE 'k%'`, func(t *testing.T, got []string) {
			if len(got) != 0 {
				t.Errorf("notifications %v, want none", got)
			}
		}},
		{"no rows", `UPDATE ` + table + ` SET blocked = true WHERE token = 'nobody'`, func(t *testing.T, got []string) {
			if len(got) != 0 {
				t.Errorf("notifications %v, want none", got)
			}
		}},
		{"above the listing limit: one purge", `INSERT INTO ` + table + ` (token) SELECT 'p' || g FROM generate_series(1, 101) g`, func(t *testing.T, got []string) {
			if b := parseBatch(t, one(t, got)); b.K != "purge" {
				t.Errorf("payload %s, want a purge", got[0])
			}
		}},
		{"NaN spend", `UPDATE ` + table + ` SET spend = 'NaN' WHERE token = 'k1'`, func(t *testing.T, got []string) {
			if b := parseBatch(t, one(t, got)); len(b.S) != 1 || string(b.S[0][1]) != `"NaN"` {
				t.Errorf("payload %s", got[0])
			}
		}},
		{"rotation", `UPDATE ` + table + ` SET token = 'k1-new' WHERE token = 'k1'`, func(t *testing.T, got []string) {
			b := parseBatch(t, one(t, got))
			if strings.Join(b.T, ",") != "k1,k1-new" && strings.Join(b.T, ",") != "k1-new,k1" {
				t.Errorf("payload %s", got[0])
			}
		}},
		{"replica role (logical replication, pg_restore)", `SET session_replication_role = replica; UPDATE ` + table + ` SET blocked = true WHERE token = 'k2'; RESET session_replication_role`, func(t *testing.T, got []string) {
			if b := parseBatch(t, one(t, got)); len(b.T) != 1 || b.T[0] != "k2" {
				t.Errorf("payload %v", got)
			}
		}},
		{"truncate", `TRUNCATE ` + table + ` CASCADE`, func(t *testing.T, got []string) {
			if len(got) == 0 {
				t.Fatal("no notification")
			}
			for _, p := range got {
				if b := parseBatch(t, p); b.K != "purge" {
					t.Errorf("payload %s, want purges", p)
				}
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exec(t, c, tc.sql)
			tc.check(t, l.drain())
		})
	}

	// The budget reset job: statements of resetChunk rows, each one
	// notification listing resets (applied in place by caches), no purge.
	past := time.Now().Add(-time.Hour).UTC()
	exec(t, c, `INSERT INTO `+table+` (token, spend, budget_duration, budget_reset_at)
		SELECT 'r' || g, 5, '1d', $1 FROM generate_series(1, 120) g`, past)
	l.drain()
	n, err := s.ResetBudgets(t.Context(), time.Now())
	if err != nil || n != 120 {
		t.Fatalf("ResetBudgets = %d, %v", n, err)
	}
	got := l.drain()
	resets := 0
	for _, p := range got {
		b := parseBatch(t, p)
		if b.K != "b" || len(b.T) != 0 || len(b.S) != 0 {
			t.Errorf("reset notification %s", p)
		}
		resets += len(b.R)
	}
	if resets != 120 || len(got) != (120+resetChunk-1)/resetChunk {
		t.Errorf("ResetBudgets of 120 keys: %d notifications listing %d resets", len(got), resets)
	}
	// Outside the reset job, a budget_reset_at change is a configuration change.
	exec(t, c, `UPDATE `+table+` SET spend = 0, budget_reset_at = now() WHERE token = 'r1'`)
	if b := parseBatch(t, one(t, l.drain())); len(b.T) != 1 || len(b.R) != 0 {
		t.Errorf("budget_reset_at by plain SQL: %+v", b)
	}
}

func one(t *testing.T, got []string) string {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("%d notifications %v, want exactly one", len(got), got)
	}
	return got[0]
}

// TestLiteLLMRoleWritesThroughTriggers: a role that may only write the key
// table (LiteLLM's) runs the sidecar's trigger functions without any grant
// on the sidecar's schema, and its writes notify.
func TestLiteLLMRoleWritesThroughTriggers(t *testing.T) {
	url := pgtest.URL(t)
	open(t, url)
	c := sqlConn(t, url)
	role := "litellm_rt_" + strings.TrimPrefix(strings.SplitN(url[strings.LastIndex(url, "/")+1:], "?", 2)[0], "sidecar_test_")
	exec(t, c, `CREATE ROLE `+role+` LOGIN`)
	t.Cleanup(func() {
		bc, err := pgx.Connect(context.Background(), pgtest.BaseURL(t))
		if err == nil {
			_, _ = bc.Exec(context.Background(), `DROP ROLE IF EXISTS `+role)
			_ = bc.Close(context.Background())
		}
	})
	exec(t, c, `GRANT SELECT, INSERT, UPDATE, DELETE ON "LiteLLM_VerificationToken" TO `+role)
	t.Cleanup(func() { _, _ = c.Exec(context.Background(), `DROP OWNED BY `+role) })
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	lc := sqlConn(t, strings.Replace(url, "://"+cfg.User+"@", "://"+role+"@", 1))
	l := newRawListener(t, url)
	tok := keys.HashHex("sk-litellm-role")
	exec(t, lc, `INSERT INTO "LiteLLM_VerificationToken" (token) VALUES ($1)`, tok)
	exec(t, lc, `UPDATE "LiteLLM_VerificationToken" SET spend = 1 WHERE token = $1`, tok)
	exec(t, lc, `DELETE FROM "LiteLLM_VerificationToken" WHERE token = $1`, tok)
	if got := l.drain(); len(got) != 3 {
		t.Errorf("LiteLLM role's writes sent %v, want 3 notifications", got)
	}
}

// TestRemoveSidecarObjects: the documented removal leaves LiteLLM's
// database exactly as LiteLLM's migrations made it.
func TestRemoveSidecarObjects(t *testing.T) {
	url := pgtest.URL(t)
	open(t, url).Close()
	ref := litellmtest.URL(t)
	c := sqlConn(t, url)
	exec(t, c, `DROP SCHEMA litellm_sidecar CASCADE`)
	if got, want := snapshot(t, url), snapshot(t, ref); got != want {
		t.Errorf("after DROP SCHEMA litellm_sidecar CASCADE:\n%s", diffLines(want, got))
	}
	if trg := triggersOn(t, url); len(trg) != 0 {
		t.Errorf("triggers left: %v", trg)
	}
}
