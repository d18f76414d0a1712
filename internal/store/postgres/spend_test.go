package postgres

import (
	"testing"

	"github.com/virtualkeys/sidecar/internal/pgtest"
	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/storetest"
)

func TestSpendConformance(t *testing.T) {
	storetest.RunSpend(t, func(t *testing.T) store.Store {
		s, err := Open(t.Context(), Config{URL: pgtest.URL(t)})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}
