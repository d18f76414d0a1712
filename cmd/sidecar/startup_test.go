package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/virtualkeys/sidecar/internal/pgtest"
)

// runErr runs the whole program with args and returns its error, which
// must come (the program must not serve).
func runErr(t *testing.T, args ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	err := run(ctx, args, envOf(nil), io.Discard, io.Discard)
	if err == nil {
		t.Fatal("run succeeded")
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	return err
}

func TestDatabaseURLRequiresMasterKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	err := runErr(t, "--database-url", "postgres://postgres@127.0.0.1:1/x?sslmode=disable", "--data-dir", dir,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if !strings.Contains(err.Error(), "--master-key") || !strings.Contains(err.Error(), "required with --database-url") {
		t.Errorf("error %q does not say the master key is required", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("the data dir was created (a master key generated) for a Postgres replica")
	}
	for _, env := range []string{"SIDECAR_MASTER_KEY", "LITELLM_MASTER_KEY"} {
		if _, err := parseConfig([]string{"--database-url", "postgres://h/db"}, envOf(map[string]string{env: "sk-m"}), io.Discard); err != nil {
			t.Errorf("master key from %s: %v", env, err)
		}
	}
}

// TestFailedStartWritesNothing: a start that fails on a taken port writes
// neither a master key, an embedded database, nor migrations into Postgres.
func TestFailedStartWritesNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, flag := range []string{"--http-addr", "--grpc-addr"} {
		t.Run("embedded "+flag, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			args := []string{"--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", flag, busy.Addr().String()}
			if err := runErr(t, args...); !strings.Contains(err.Error(), flag) {
				t.Errorf("error %q does not name %s", err, flag)
			}
			if _, err := os.Stat(dir); err == nil {
				entries, _ := os.ReadDir(dir)
				t.Errorf("failed start wrote the data dir: %v", entries)
			}
		})
	}
	t.Run("postgres", func(t *testing.T) {
		u := pgtest.URL(t)
		err := runErr(t, "--database-url", u, "--master-key", "sk-m", "--data-dir", filepath.Join(t.TempDir(), "d"),
			"--grpc-addr", "127.0.0.1:0", "--http-addr", busy.Addr().String())
		if !strings.Contains(err.Error(), "--http-addr") {
			t.Errorf("error %q does not name --http-addr", err)
		}
		conn, err := pgx.Connect(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
			  WHERE s.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast'))
			+ (SELECT count(*) FROM pg_proc p JOIN pg_namespace s ON s.oid = p.pronamespace
			  WHERE s.nspname NOT IN ('pg_catalog', 'information_schema'))`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("failed start created %d objects in the database (migrations ran)", n)
		}
	})
}

// TestSecondProcessOnDataDirExits: the embedded store belongs to one
// process; a second one on the same data dir exits with one clear line,
// and may start once the first has stopped.
func TestSecondProcessOnDataDirExits(t *testing.T) {
	dir := t.TempDir()
	first := start(t, "--data-dir", dir, "--master-key", "sk-m")
	err := runErr(t, "--data-dir", dir, "--master-key", "sk-m", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if !strings.Contains(err.Error(), "in use by another sidecar process") || !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not say the data dir is in use", err)
	}
	first.stop(t)
	start(t, "--data-dir", dir, "--master-key", "sk-m")
}

// TestReadyDuringDatabaseOutage: /readyz says whether the Check can decide.
// During a database outage cached keys are still decided, so it stays 200
// (the shipped readiness probe must not take every replica out at once)
// and reports the store in its body; the Check keeps allowing a cached key
// and the management API answers 503 in LiteLLM's envelope.
func TestReadyDuringDatabaseOutage(t *testing.T) {
	p := pgtest.NewProxy(t, pgtest.URL(t))
	r := start(t, "--database-url", p.URL, "--master-key", master, "--mgmt-timeout", "2s")
	code, out := admin(t, r.http, "/key/generate", map[string]any{})
	if code != 200 {
		t.Fatalf("generate: %d %v", code, out)
	}
	raw := out["key"].(string)
	c := newChecker(t, r.grpc)
	if v := c.check(t, raw, "gpt-4o"); !v.allowed {
		t.Fatalf("check before the outage: %+v", v)
	}
	if code, body := get(t, r.http+"/readyz"); code != 200 || !strings.Contains(body, "store: ok") {
		t.Errorf("/readyz before the outage = %d %q", code, body)
	}

	p.Down()
	code, body := get(t, r.http+"/readyz")
	if code != 200 || !strings.Contains(body, "store: unreachable") {
		t.Errorf("/readyz during the outage = %d %q, want 200 reporting the store unreachable", code, body)
	}
	if s := healthStatus(t, r.grpc, authzServiceName); s != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("grpc health during the outage = %v", s)
	}
	if v := c.check(t, raw, "gpt-4o"); !v.allowed {
		t.Errorf("cached key during the outage: %+v", v)
	}
	code, out = admin(t, r.http, "/key/generate", map[string]any{})
	if e, _ := out["error"].(map[string]any); code != http.StatusServiceUnavailable || e["type"] != "no_db_connection" {
		t.Errorf("generate during the outage = %d %v, want 503 no_db_connection", code, out)
	}

	p.Up(t)
	eventually(t, "store reported back", 10*time.Second, func() bool {
		_, body := get(t, r.http+"/readyz")
		return strings.Contains(body, "store: ok")
	})
}
