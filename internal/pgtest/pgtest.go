// Package pgtest gives tests an isolated Postgres database of their own.
//
// Tests read TEST_DATABASE_URL (e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable). When it is unset
// the test is skipped, except when CI is set: there a test that needs
// Postgres and cannot have it fails. Each call creates a fresh database
// (so LISTEN/NOTIFY channels are isolated too) and drops it when the test
// ends.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL is the environment variable naming the server tests may use.
const EnvURL = "TEST_DATABASE_URL"

// BaseURL returns TEST_DATABASE_URL, skipping the test when it is unset
// (failing instead when CI is set).
func BaseURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set, and CI is: Postgres tests must run in CI", EnvURL)
		}
		t.Skipf("%s not set; skipping Postgres test", EnvURL)
	}
	return u
}

// URL creates a fresh empty database on the TEST_DATABASE_URL server and
// returns a URL for it. The database is dropped (connections terminated)
// when the test ends.
func URL(t testing.TB) string {
	t.Helper()
	base := BaseURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connect %s: %v", redact(base), err)
	}
	defer admin.Close(context.Background())

	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "sidecar_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("pgtest: connect for drop: %v", err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})

	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: parse %s: %v", EnvURL, err)
	}
	u.Path = "/" + name
	return u.String()
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
