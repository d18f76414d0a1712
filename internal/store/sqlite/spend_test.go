package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/storetest"
)

func TestSpendConformance(t *testing.T) {
	storetest.RunSpend(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "keys.db"))
	})
}
