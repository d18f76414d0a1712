package authz_test

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

// queryCounter counts the store lookups the cache makes.
type queryCounter struct {
	cache.Loader
	n atomic.Int64
}

func (c *queryCounter) Lookup(ctx context.Context, hash string) (*keys.Key, error) {
	c.n.Add(1)
	return c.Loader.Lookup(ctx, hash)
}

// BenchmarkUnknownKeyFlood sends 100k distinct random sk- keys through the
// Check, on an embedded store holding 1000 keys, and reports how many
// reached the store: with the known-key filter (the default) and without
// it (Lister nil: what a flood cost before the filter).
//
//	go test -run '^$' -bench UnknownKeyFlood -benchtime 1x ./internal/authz
func BenchmarkUnknownKeyFlood(b *testing.B) {
	const flood = 100_000
	for _, bc := range []struct {
		name   string
		filter bool
	}{{"filter", true}, {"no-filter", false}} {
		b.Run(bc.name, func(b *testing.B) {
			st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "keys.db"), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			for i := range 1000 {
				if err := st.Create(context.Background(), &keys.Key{Token: keys.HashHex(rawForIndex(i))}); err != nil {
					b.Fatal(err)
				}
			}
			loader := &queryCounter{Loader: st}
			cfg := cache.Config{Loader: loader, MaxKeys: 200_000}
			if bc.filter {
				cfg.Lister = st
			}
			c, err := cache.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			defer c.Attach(st)() // EventReset at once: the filter is built
			a, err := authz.New(authz.Config{Cache: c, MasterKey: "sk-bench-master"})
			if err != nil {
				b.Fatal(err)
			}
			srv := authz.NewServer(a)
			// Wait for the filter: a known key must load, and an unknown one
			// must be refused without a query once the budget is spent.
			for bc.filter {
				before := loader.n.Load()
				for range 100 {
					_, _ = c.Get(context.Background(), keys.Hash(keys.Prefix+rand.Text()))
				}
				if loader.n.Load()-before < 100 {
					break
				}
			}
			r := benchRequest("")
			hdr := r.Attributes.Request.Http.Headers
			for b.Loop() {
				base := loader.n.Load()
				denied := 0
				for range flood {
					hdr["authorization"] = "Bearer " + keys.Prefix + rand.Text()
					resp, err := srv.Check(context.Background(), r)
					if err == nil && resp.GetDeniedResponse() != nil {
						denied++
					}
				}
				q := loader.n.Load() - base
				b.ReportMetric(float64(q), "store-queries")
				b.ReportMetric(100*float64(q)/flood, "store-queries-%")
				b.ReportMetric(float64(flood-denied), "not-denied-401")
			}
		})
	}
}
