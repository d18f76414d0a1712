package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/virtualkeys/sidecar/internal/extproc/extproctest"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pgtest"
)

// chatCost is what openai_chat.json costs as gpt-4o-2024-08-06 (86
// uncached, 1920 cached, 300 output tokens), by hand from LiteLLM's table.
const chatCost = 86*2.5e-6 + 1920*1.25e-6 + 300*1e-5

// meter runs one request through r the way Envoy does: the Check, then
// ext_proc with the Check's dynamic metadata and the recorded response.
func meter(t *testing.T, r *running, c checker, key, reqID string) {
	t.Helper()
	v := c.check(t, key, "gpt-4o")
	if !v.allowed {
		t.Fatalf("Check denied %s: %s", reqID, v.body)
	}
	respond(t, r, allowMetadata(v), reqID)
}

// allowMetadata is the ext_authz dynamic metadata of an allow, as Envoy
// forwards it to ext_proc.
func allowMetadata(v verdict) map[string]string {
	md := map[string]string{}
	for k, f := range v.resp.GetDynamicMetadata().GetFields() {
		md[k] = f.GetStringValue()
	}
	return md
}

// respond drives ext_proc through one recorded OpenAI chat response, as
// Envoy does, with the Check's metadata.
func respond(t *testing.T, r *running, md map[string]string, reqID string) {
	t.Helper()
	body, err := os.ReadFile("../../internal/usage/testdata/openai_chat.json")
	if err != nil {
		t.Fatal(err)
	}
	_, err = extproctest.Drive(t.Context(), extprocClient(t, r), &extproctest.Exchange{
		RequestHeaders:  [][2]string{{":method", "POST"}, {":path", "/v1/chat/completions"}, {"x-request-id", reqID}},
		Metadata:        md,
		ResponseHeaders: [][2]string{{":status", "200"}, {"content-type", "application/json"}},
		Chunks:          extproctest.Split(body, 100),
	})
	if err != nil {
		t.Fatalf("ext_proc %s: %v", reqID, err)
	}
}

var clients sync.Map // grpc target -> ExternalProcessorClient

func extprocClient(t *testing.T, r *running) extprocv3.ExternalProcessorClient {
	t.Helper()
	if c, ok := clients.Load(r.grpc); ok {
		return c.(extprocv3.ExternalProcessorClient)
	}
	conn, err := grpc.NewClient(r.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { clients.Delete(r.grpc); conn.Close() })
	c := extprocv3.NewExternalProcessorClient(conn)
	clients.Store(r.grpc, c)
	return c
}

func dbSpend(t *testing.T, conn *pgx.Conn, key string) (spend float64, models map[string]float64) {
	t.Helper()
	var ms []byte
	if err := conn.QueryRow(context.Background(), `SELECT spend, model_spend FROM "LiteLLM_VerificationToken" WHERE token = $1`,
		keys.HashHex(key)).Scan(&spend, &ms); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(ms, &models)
	return spend, models
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Abs(b) }

func spendLogs(t *testing.T, base, query string) []map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/spend/logs?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+master)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rows []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&rows); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/spend/logs: %d %v", resp.StatusCode, err)
	}
	return rows
}

// TestMeteringAcrossReplicas: spend metered on A is enforced by A at once
// and by B within 1.5 s; 40 concurrent metered requests over both replicas
// lose no cent; /spend/logs shows each request.
func TestMeteringAcrossReplicas(t *testing.T) {
	db := pgtest.URL(t)
	a := start(t, "--master-key", master, "--database-url", db, "--spend-flush-interval", "500ms")
	b := start(t, "--master-key", master, "--database-url", db, "--spend-flush-interval", "500ms")
	ca, cb := newChecker(t, a.grpc), newChecker(t, b.grpc)
	conn, err := pgx.Connect(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	_, gen := admin(t, a.http, "/key/generate", map[string]any{"models": []string{"gpt-4o"}, "max_budget": 0.01})
	key := gen["key"].(string)
	if v := cb.check(t, key, "gpt-4o"); !v.allowed { // B has it cached
		t.Fatalf("B denies the new key: %s", v.body)
	}
	meter(t, a, ca, key, "budget-1")
	if v := cb.check(t, key, "gpt-4o"); !v.allowed {
		t.Fatalf("B denies after one request (%.4f of 0.01): %s", chatCost, v.body)
	}
	meter(t, a, ca, key, "budget-2") // 2 × 0.005615 > 0.01
	if v := ca.check(t, key, "gpt-4o"); v.errType != "budget_exceeded" {
		t.Fatalf("A allows at once after crossing the budget: %+v", v)
	}
	eventually(t, "spend metered on A denies the key on B", 1500*time.Millisecond, func() bool {
		return cb.check(t, key, "gpt-4o").errType == "budget_exceeded"
	})
	spend, models := dbSpend(t, conn, key)
	if !near(spend, 2*chatCost) || !near(models["gpt-4o"], 2*chatCost) {
		t.Errorf("stored spend %v model_spend %v, want %v", spend, models, 2*chatCost)
	}

	// 40 concurrent requests, half on each replica.
	_, gen = admin(t, a.http, "/key/generate", map[string]any{"models": []string{"gpt-4o"}})
	key2 := gen["key"].(string)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, c := a, ca
			if i%2 == 1 {
				r, c = b, cb
			}
			meter(t, r, c, key2, fmt.Sprintf("conc-%02d", i))
		}()
	}
	wg.Wait()
	eventually(t, "40 concurrent requests flushed", 3*time.Second, func() bool {
		s, _ := dbSpend(t, conn, key2)
		return near(s, 40*chatCost)
	})
	if rows := spendLogs(t, b.http, "api_key="+key2); len(rows) != 40 {
		t.Errorf("/spend/logs has %d rows for the key, want 40", len(rows))
	}
	rows := spendLogs(t, a.http, "request_id=budget-2")
	if len(rows) != 1 || !near(rows[0]["spend"].(float64), chatCost) || rows[0]["api_key"] != keys.HashHex(key) ||
		rows[0]["model"] != "gpt-4o" || rows[0]["status"] != "success" || rows[0]["prompt_tokens"].(float64) != 2006 {
		t.Errorf("/spend/logs?request_id=budget-2 = %v", rows)
	}
	// Both replicas' caches converge on the stored spend.
	eventually(t, "caches converge", 1500*time.Millisecond, func() bool {
		return cb.check(t, key2, "gpt-4o").allowed && ca.check(t, key2, "gpt-4o").allowed
	})
}

// TestMeteringSurvivesStoreOutage: spend metered while the database
// refuses connections is flushed, exactly once, when it returns.
func TestMeteringSurvivesStoreOutage(t *testing.T) {
	db := pgtest.URL(t)
	a := start(t, "--master-key", master, "--database-url", db, "--spend-flush-interval", "200ms")
	ca := newChecker(t, a.grpc)
	_, gen := admin(t, a.http, "/key/generate", map[string]any{"models": []string{"gpt-4o"}})
	key := gen["key"].(string)
	meter(t, a, ca, key, "before-outage")

	adminConn, err := pgx.Connect(t.Context(), pgtest.BaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adminConn.Close(context.Background()) })
	var dbName string
	conn, err := pgx.Connect(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(t.Context(), `SELECT current_database()`).Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	down := func(off bool) {
		t.Helper()
		if _, err := adminConn.Exec(context.Background(), fmt.Sprintf(`ALTER DATABASE %q ALLOW_CONNECTIONS %v`, dbName, !off)); err != nil {
			t.Fatal(err)
		}
		if off {
			if _, err := adminConn.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, dbName); err != nil {
				t.Fatal(err)
			}
		}
	}
	down(true)
	t.Cleanup(func() { down(false) })
	for i := range 5 { // the key is cached: the Check and metering go on
		meter(t, a, ca, key, fmt.Sprintf("outage-%d", i))
	}
	eventually(t, "flushes fail while the database is down", 5*time.Second, func() bool {
		_, m := get(t, a.http+"/metrics")
		var n float64
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, `sidecar_spend_flushes_total{result="error"} `) {
				fmt.Sscan(strings.TrimPrefix(line, `sidecar_spend_flushes_total{result="error"} `), &n)
			}
		}
		return n >= 2
	})
	down(false)
	conn, err = pgx.Connect(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	eventually(t, "spend flushed after the outage", 10*time.Second, func() bool {
		s, _ := dbSpend(t, conn, key)
		return near(s, 6*chatCost)
	})
	time.Sleep(500 * time.Millisecond) // and not twice
	if s, _ := dbSpend(t, conn, key); !near(s, 6*chatCost) {
		t.Fatalf("spend %v after the outage, want %v", s, 6*chatCost)
	}
	if rows := spendLogs(t, a.http, "api_key="+key); len(rows) != 6 {
		t.Errorf("%d spend-log rows, want 6", len(rows))
	}
}

// TestShutdownFlushesSpend: SIGTERM (the run context ending) flushes spend
// that the interval would only have written an hour later.
func TestShutdownFlushesSpend(t *testing.T) {
	db := pgtest.URL(t)
	a := start(t, "--master-key", master, "--database-url", db, "--spend-flush-interval", "1h")
	ca := newChecker(t, a.grpc)
	_, gen := admin(t, a.http, "/key/generate", map[string]any{"models": []string{"gpt-4o"}})
	key := gen["key"].(string)
	meter(t, a, ca, key, "at-shutdown")
	conn, err := pgx.Connect(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if s, _ := dbSpend(t, conn, key); s != 0 {
		t.Fatalf("spend %v before shutdown, want 0 (flush interval 1h)", s)
	}
	a.stop(t)
	if s, _ := dbSpend(t, conn, key); !near(s, chatCost) {
		t.Fatalf("spend %v after shutdown, want %v", s, chatCost)
	}
}

// TestMeteringEmbeddedStore: the default (SQLite) sidecar meters too: the
// key's spend and /spend/logs show each request after a flush.
func TestMeteringEmbeddedStore(t *testing.T) {
	a := start(t, "--master-key", master, "--spend-flush-interval", "100ms")
	ca := newChecker(t, a.grpc)
	_, gen := admin(t, a.http, "/key/generate", map[string]any{"models": []string{"gpt-4o"}, "max_budget": 1})
	key := gen["key"].(string)
	for i := range 3 {
		meter(t, a, ca, key, fmt.Sprintf("sqlite-%d", i))
	}
	eventually(t, "three spend-log rows", 5*time.Second, func() bool {
		return len(spendLogs(t, a.http, "api_key="+keys.HashHex(key))) == 3
	})
	spent, modelSpend := keySpend(t, a.http, key)
	if !near(spent, 3*chatCost) || !near(modelSpend["gpt-4o"], 3*chatCost) {
		t.Fatalf("/key/info spend %v model_spend %v, want %v", spent, modelSpend, 3*chatCost)
	}
}
