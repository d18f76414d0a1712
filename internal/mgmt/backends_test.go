package mgmt_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/virtualkeys/sidecar/internal/mgmt"
	"github.com/virtualkeys/sidecar/internal/store/postgres"
	"github.com/virtualkeys/sidecar/internal/store/postgres/litellmtest"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

// backends are the real stores every HTTP table runs against. Postgres
// runs on LiteLLM's real schema, loaded first (the sidecar creates the same
// schema on an empty database: internal/store/postgres TestOrders); it
// skips without TEST_DATABASE_URL (and fails instead when CI is set).
func backends() []backend {
	return []backend{
		{"sqlite", openSQLite},
		{"postgres", openOnLiteLLM},
	}
}

// openOnLiteLLM opens the store on LiteLLM's real schema loaded first, with
// a second store (replica) on it, and checks at the end that every LiteLLM
// table's columns, indexes and constraints are unchanged.
func openOnLiteLLM(t testing.TB) mgmt.Store {
	t.Helper()
	url := litellmtest.URL(t)
	before := litellmtest.Snapshot(t, url)
	st := openPostgres(t, url)
	openPostgres(t, url) // a second replica
	litellmtest.SeedDefaults(t, url)
	t.Cleanup(func() {
		if after := litellmtest.Snapshot(t, url); after != before {
			t.Errorf("LiteLLM's schema changed under the management API")
		}
	})
	return st
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
	litellmtest.SeedDefaults(t, url) // budget_id/organization_id the tables use exist
	return st
}
