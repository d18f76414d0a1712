package postgres

import (
	"testing"

	"github.com/virtualkeys/sidecar/internal/pgtest"
	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/postgres/litellmtest"
	"github.com/virtualkeys/sidecar/internal/store/storetest"
)

func TestSpendConformance(t *testing.T) {
	storetest.RunSpend(t, func(t *testing.T) store.Store {
		url := pgtest.URL(t)
		s, err := Open(t.Context(), Config{URL: url})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		// LiteLLM's schema (created by Open) has foreign keys: seed the
		// budget and organization rows the suite names.
		litellmtest.SeedDefaults(t, url)
		return s
	})
}
