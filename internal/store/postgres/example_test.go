package postgres_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/postgres"
)

// Open a store on a shared database, follow its change feed, write a key.
func Example() {
	ctx := context.Background()
	s, err := postgres.Open(ctx, postgres.Config{
		URL:        "postgres://sidecar@db:5432/litellm?sslmode=require",
		Logger:     slog.Default(),
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	unsubscribe := s.Subscribe(func(e store.Event) {
		// Called on the feed's goroutine; must not block. EventReset:
		// purge the cache; EventChanged: drop e.Token; EventSpend: update it.
	})
	defer unsubscribe()

	raw := keys.Generate()
	k := &keys.Key{Token: keys.HashHex(raw), KeyName: new(keys.Name(raw))}
	if err := s.Create(ctx, k); err != nil {
		fmt.Println(err)
	}
}
