package mgmt_test

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/mgmt"
	"github.com/virtualkeys/sidecar/internal/pgtest"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

// rawDB is a store plus a plain SQL connection to the same database, to
// write what the API cannot (NaN, hand-written JSON) and read columns back.
type rawDB struct {
	name  string
	st    mgmt.Store
	exec  func(t *testing.T, q string)
	query func(t *testing.T, q string) string // one text value
	// lock takes the whole database until release (sqlite only).
	lock func(t *testing.T) (release func())
}

// rawBackends opens each backend with a raw connection beside it. SQL
// given to exec/query must not use placeholders (the dialects differ).
var rawBackends = []struct {
	name string
	open func(t *testing.T) rawDB
}{
	{"sqlite", func(t *testing.T) rawDB {
		path := filepath.Join(t.TempDir(), "keys.db")
		st, err := sqlite.Open(context.Background(), path, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return rawDB{"sqlite", st,
			func(t *testing.T, q string) {
				t.Helper()
				if _, err := db.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			},
			func(t *testing.T, q string) string {
				t.Helper()
				var s string
				if err := db.QueryRow(q).Scan(&s); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				return s
			},
			func(t *testing.T) func() {
				t.Helper()
				c, err := db.Conn(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.ExecContext(context.Background(), `BEGIN EXCLUSIVE`); err != nil {
					t.Fatal(err)
				}
				return func() {
					_, _ = c.ExecContext(context.Background(), `ROLLBACK`)
					_ = c.Close()
				}
			}}
	}},
	{"postgres", func(t *testing.T) rawDB {
		u := pgtest.URL(t)
		st := openPostgres(t, u)
		conn, err := pgx.Connect(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		return rawDB{"postgres", st,
			func(t *testing.T, q string) {
				t.Helper()
				if _, err := conn.Exec(context.Background(), q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			},
			func(t *testing.T, q string) string {
				t.Helper()
				var s string
				if err := conn.QueryRow(context.Background(), q).Scan(&s); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				return s
			}, nil}
	}},
}

func eachRaw(t *testing.T, fn func(t *testing.T, db rawDB)) {
	t.Helper()
	for _, b := range rawBackends {
		t.Run(b.name, func(t *testing.T) { fn(t, b.open(t)) })
	}
}

const keyTable = `"LiteLLM_VerificationToken"`

// TestForeignKeyNamesField: LiteLLM's key table has foreign keys
// (budget_id -> LiteLLM_BudgetTable, organization_id ->
// LiteLLM_OrganizationTable). An id that does not exist answers 400 naming
// the field, not 500.
func TestForeignKeyNamesField(t *testing.T) {
	u := pgtest.URL(t)
	st := openPostgres(t, u)
	conn, err := pgx.Connect(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// The store created LiteLLM's schema on this empty database, exactly as
	// LiteLLM's migrations would, foreign keys included: only the
	// referenced rows are needed.
	for _, q := range []string{
		`INSERT INTO "LiteLLM_BudgetTable" (budget_id, created_by, updated_by) VALUES ('b-1', 'test', 'test')`,
		`INSERT INTO "LiteLLM_OrganizationTable" (organization_id, organization_alias, budget_id, created_by, updated_by) VALUES ('o-1', 'org', 'b-1', 'test', 'test')`,
	} {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	e := newEnv(t, st)
	_, h, _ := e.generate(`{"budget_id":"b-1","organization_id":"o-1"}`)
	for _, tc := range []errCase{
		{"generate unknown budget_id", `{"budget_id":"nope"}`, 400, "bad_request_error", "budget_id", "budget_id: 'nope' does not exist in LiteLLM_BudgetTable"},
		{"generate unknown organization_id", `{"organization_id":"nope"}`, 400, "bad_request_error", "organization_id", "organization_id: 'nope' does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) { e.T(t).checkErr(tc, "POST", "/key/generate") })
	}
	for _, tc := range []errCase{
		{"update unknown budget_id", `{"key":"` + h + `","budget_id":"nope"}`, 400, "bad_request_error", "budget_id", "LiteLLM_BudgetTable"},
		{"update unknown organization_id", `{"key":"` + h + `","organization_id":"nope"}`, 400, "bad_request_error", "organization_id", "LiteLLM_OrganizationTable"},
	} {
		t.Run(tc.name, func(t *testing.T) { e.T(t).checkErr(tc, "POST", "/key/update") })
	}
	t.Run("regenerate keeps a valid reference", func(t *testing.T) {
		e := e.T(t)
		out := e.admin("POST", "/key/regenerate", `{"key":"`+h+`"}`, 200)
		if out["budget_id"] != "b-1" || out["organization_id"] != "o-1" {
			t.Errorf("budget_id %v organization_id %v", out["budget_id"], out["organization_id"])
		}
	})
}

// TestIntegerRanges: max_parallel_requests is a Postgres integer (int4) in
// LiteLLM's schema; a larger value is refused before SQL, alike on both
// backends. tpm_limit/rpm_limit are bigint: every int64 fits.
func TestIntegerRanges(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		_, h, _ := e.generate(`{}`)
		for _, tc := range []errCase{
			{"max_parallel_requests 2^31", `{"max_parallel_requests":2147483648}`, 400, "bad_request_error", "max_parallel_requests", "at most 2147483647"},
			{"max_parallel_requests 2^40", `{"max_parallel_requests":1099511627776}`, 400, "bad_request_error", "max_parallel_requests", "at most 2147483647"},
			{"tpm_limit above int64", `{"tpm_limit":9223372036854775808}`, 422, "validation_error", "tpm_limit", "valid integer"},
			{"rpm_limit fraction", `{"rpm_limit":1.5}`, 422, "validation_error", "rpm_limit", "valid integer"},
		} {
			t.Run("generate "+tc.name, func(t *testing.T) { e.T(t).checkErr(tc, "POST", "/key/generate") })
			tc.body = `{"key":"` + h + `",` + tc.body[1:]
			t.Run("update "+tc.name, func(t *testing.T) { e.T(t).checkErr(tc, "POST", "/key/update") })
		}
		t.Run("largest values fit", func(t *testing.T) {
			e := e.T(t)
			out := e.admin("POST", "/key/generate", `{"max_parallel_requests":2147483647,"tpm_limit":9223372036854775807,"rpm_limit":9223372036854775807}`, 200)
			info := e.admin("GET", "/key/info?key="+out["token"].(string), "", 200)["info"].(map[string]any)
			if jsonStr(info["max_parallel_requests"]) != "2147483647" || info["tpm_limit"] == nil {
				t.Errorf("stored max_parallel_requests %v tpm_limit %v", info["max_parallel_requests"], info["tpm_limit"])
			}
		})
	})
}

// TestListPageBounds: a huge page must not overflow the offset into a 500.
func TestListPageBounds(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		e.generate(`{}`)
		for _, tc := range []errCase{
			{"max int64 page", "page=9223372036854775807&size=2", 422, "validation_error", "page", "page"},
			{"max int64 page size 100", "page=9223372036854775807&size=100", 422, "validation_error", "page", "page"},
			{"page just past the bound", "page=10995116279&size=100", 422, "validation_error", "page", "page"},
			{"page above int64", "page=9223372036854775808", 422, "validation_error", "page", "valid integer"},
			{"size above 100", "size=101", 422, "validation_error", "size", "between 1 and 100"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := e.T(t)
				r := e.call("GET", "/key/list?"+tc.body, master, "")
				typ, msg, param, _ := r.errBody(t)
				if r.status != tc.wantStatus || typ != tc.wantType || param != tc.wantParam || !strings.Contains(msg, tc.wantMsg) {
					t.Errorf("GET /key/list?%s = %d %s %v %q, want %d %s %v ~%q", tc.body, r.status, typ, param, msg, tc.wantStatus, tc.wantType, tc.wantParam, tc.wantMsg)
				}
			})
		}
		t.Run("largest page answers empty", func(t *testing.T) {
			out := e.T(t).admin("GET", "/key/list?page=10995116278&size=100", "", 200)
			if ks, _ := out["keys"].([]any); len(ks) != 0 || out["total_count"] != float64(1) {
				t.Errorf("got %v", out)
			}
		})
	})
}

// TestJSONColumnsLossless: integers above 2^53 in JSON columns survive the
// API (request to response) and a /key/block leaves columns it does not
// change exactly as stored.
func TestJSONColumnsLossless(t *testing.T) {
	const big = `12345678901234567890`
	const odd = `9007199254740993` // 2^53 + 1: not a float64
	eachRaw(t, func(t *testing.T, db rawDB) {
		e := newEnv(t, db.st)
		t.Run("request to response", func(t *testing.T) {
			e := e.T(t)
			r := e.call("POST", "/key/generate", master, `{"metadata":{"big":`+big+`,"odd":`+odd+`},"config":{"n":`+odd+`},"model_max_budget":{"m":{"budget_limit":`+odd+`}}}`)
			if r.status != 200 {
				t.Fatalf("generate: %d %s", r.status, r.body)
			}
			h := r.obj(t)["token"].(string)
			info := e.call("GET", "/key/info?key="+h, master, "")
			for _, want := range []string{`"big":` + big, `"odd":` + odd, `"n":` + odd, `"budget_limit":` + odd} {
				if !bytes.Contains(r.body, []byte(want)) || !bytes.Contains(info.body, []byte(want)) {
					t.Errorf("%s lost:\ngenerate %s\ninfo %s", want, r.body, info.body)
				}
			}
		})
		t.Run("block leaves JSON columns as stored", func(t *testing.T) {
			e := e.T(t)
			_, h, _ := e.generate(`{}`)
			// Written by another tool: key order and spacing of its own.
			md := `{"z": 1, "big": ` + big + `, "a": {"odd": ` + odd + `, "f": 1.50}}`
			ms := `{"gpt-4o": ` + odd + `}`
			db.exec(t, `UPDATE `+keyTable+` SET metadata = '`+md+`', model_spend = '`+ms+`' WHERE token = '`+h+`'`)
			read := func() string {
				return db.query(t, `SELECT CAST(metadata AS text) || ' ' || CAST(model_spend AS text) FROM `+keyTable+` WHERE token = '`+h+`'`)
			}
			before := read()
			out := e.call("POST", "/key/block", master, `{"key":"`+h+`"}`)
			if out.status != 200 {
				t.Fatalf("block: %d %s", out.status, out.body)
			}
			if after := read(); after != before {
				t.Errorf("JSON columns rewritten by /key/block:\nbefore %s\nafter  %s", before, after)
			}
			for _, want := range []string{big, odd} {
				if !bytes.Contains(out.body, []byte(want)) {
					t.Errorf("block response lost %s: %s", want, out.body)
				}
			}
			// A change to metadata rewrites it, still exactly.
			e.admin("POST", "/key/update", `{"key":"`+h+`","tags":["t"]}`, 200)
			if after := read(); !strings.Contains(after, big) || !strings.Contains(after, odd) || !strings.Contains(after, `"tags"`) {
				t.Errorf("after update: %s", after)
			}
		})
	})
}

// TestNonFiniteRendered: NaN or Infinity written into spend/max_budget by
// SQL renders (as null) instead of failing every read with a 500.
func TestNonFiniteRendered(t *testing.T) {
	eachRaw(t, func(t *testing.T, db rawDB) {
		e := newEnv(t, db.st)
		_, h, _ := e.generate(`{"max_budget":10}`)
		// SQLite turns NaN into NULL; 9e999 is its Infinity.
		set := `spend = 'NaN'::float8, max_budget = 'Infinity'::float8`
		if db.name == "sqlite" {
			set = `spend = 9e999, max_budget = -9e999`
		}
		db.exec(t, `UPDATE `+keyTable+` SET `+set+` WHERE token = '`+h+`'`)
		for _, c := range []struct{ method, path, body string }{
			{"GET", "/key/info?key=" + h, ""},
			{"POST", "/v2/key/info", `{"keys":["` + h + `"]}`},
			{"GET", "/key/list?return_full_object=true", ""},
			{"POST", "/key/block", `{"key":"` + h + `"}`},
			{"POST", "/key/update", `{"key":"` + h + `","metadata":{"a":1}}`},
		} {
			r := e.call(c.method, c.path, master, c.body)
			if r.status != 200 {
				t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.body)
				continue
			}
			if !bytes.Contains(r.body, []byte(`"spend":null`)) || !bytes.Contains(r.body, []byte(`"max_budget":null`)) {
				t.Errorf("%s %s: non-finite values not rendered as null: %s", c.method, c.path, r.body)
			}
		}
	})
}

// TestDatabaseHangAnswers503: a statement blocked by a lock held elsewhere
// answers 503 in LiteLLM's envelope once the request timeout passes; it
// neither hangs nor answers 500.
func TestDatabaseHangAnswers503(t *testing.T) {
	u := pgtest.URL(t)
	st := openPostgres(t, u)
	e := newEnv(t, st, func(c *mgmt.Config) { c.RequestTimeout = 300 * time.Millisecond })
	_, h, _ := e.generate(`{}`)

	locker, err := pgx.Connect(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(context.Background())
	tx, err := locker.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(context.Background(), `LOCK TABLE `+keyTable+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/key/block", `{"key":"` + h + `"}`},
		{"GET", "/key/info?key=" + h, ""},
		{"GET", "/key/list", ""},
		{"POST", "/key/generate", `{}`},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := callBounded(t, e, c.method, c.path, c.body)
			checkUnavailable(t, r)
		})
	}
	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Served again once the lock is gone (the pool replaces the connections
	// the timeouts cancelled; the short timeout may need a few tries on a
	// loaded machine).
	deadline := time.Now().Add(20 * time.Second)
	for r := e.call("POST", "/key/block", master, `{"key":"`+h+`"}`); r.status != 200; r = e.call("POST", "/key/block", master, `{"key":"`+h+`"}`) {
		if r.status != 503 || time.Now().After(deadline) {
			t.Fatalf("after the lock: %d %s", r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDatabaseOutageAnswers503: with the database unreachable (the proxy in
// front of it closed: connections cut, new ones refused) the API answers
// 503 with a clear message, never 500; it recovers when the database is back.
func TestDatabaseOutageAnswers503(t *testing.T) {
	u := pgtest.URL(t)
	p := pgtest.NewProxy(t, u)
	st := openPostgres(t, p.URL)
	e := newEnv(t, st)
	_, h, _ := e.generate(`{}`)

	p.Down()
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/key/info?key=" + h, ""},
		{"POST", "/key/block", `{"key":"` + h + `"}`},
		{"POST", "/key/generate", `{}`},
		{"GET", "/key/list", ""},
		{"POST", "/key/delete", `{"keys":["` + h + `"]}`},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) { checkUnavailable(t, callBounded(t, e, c.method, c.path, c.body)) })
	}
	t.Run("a virtual key cannot be authenticated either", func(t *testing.T) {
		r := e.call("GET", "/key/info", keys.Generate(), "")
		checkUnavailable(t, r)
	})
	p.Up(t)
	e.admin("POST", "/key/block", `{"key":"`+h+`"}`, 200)
}

// callBounded sends a request as admin with a generous client deadline, so
// a hang fails the test instead of stalling it.
func callBounded(t *testing.T, e *env, method, path, body string) resp {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+master)
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v (the API hung)", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func checkUnavailable(t *testing.T, r resp) {
	t.Helper()
	typ, msg, _, code := r.errBody(t)
	if r.status != 503 || typ != "no_db_connection" || code != "503" || !strings.Contains(msg, "DB not connected") {
		t.Errorf("got %d %s %q, want 503 no_db_connection", r.status, typ, msg)
	}
	if r.header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
}

// TestEmbeddedStoreLockedAnswers503: the embedded store's file locked by
// another connection (a backup tool, sqlite3 in a shell) answers 503, not
// 500, and the API serves again once the lock is gone.
func TestEmbeddedStoreLockedAnswers503(t *testing.T) {
	db := rawBackends[0].open(t)
	e := newEnv(t, db.st, func(c *mgmt.Config) { c.RequestTimeout = 300 * time.Millisecond })
	_, h, _ := e.generate(`{}`)
	release := db.lock(t)
	checkUnavailable(t, callBounded(t, e, "POST", "/key/block", `{"key":"`+h+`"}`))
	release()
	e.admin("POST", "/key/block", `{"key":"`+h+`"}`, 200)
}
