package mgmt_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/virtualkeys/sidecar/internal/mgmt"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

// backends are the real stores every HTTP table runs against.
func backends() []backend {
	return []backend{
		{"sqlite", openSQLite},
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
