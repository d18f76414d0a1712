package mgmt_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/virtualkeys/sidecar/internal/mgmt"
	"github.com/virtualkeys/sidecar/internal/pgtest"
	"github.com/virtualkeys/sidecar/internal/store/postgres"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

// backends are the real stores every HTTP table runs against. Postgres
// skips without TEST_DATABASE_URL (and fails instead when CI is set).
func backends() []backend {
	return []backend{
		{"sqlite", openSQLite},
		{"postgres", func(t testing.TB) mgmt.Store { return openPostgres(t, pgtest.URL(t)) }},
	}
}

func openSQLite(t testing.TB) mgmt.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "keys.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func openPostgres(t testing.TB, url string) *postgres.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url, Logger: slog.New(slog.DiscardHandler), MaxConns: 4})
	if err != nil {
		t.Fatalf("postgres.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}
