package sqlite_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

func benchStore(b *testing.B, n int) (*sqlite.Store, []string) {
	b.Helper()
	s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "keys.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	toks := make([]string, n)
	team := "team"
	for i := range toks {
		toks[i] = keys.HashHex(fmt.Sprint("sk-bench-", i))
		if err := s.Create(b.Context(), &keys.Key{Token: toks[i], TeamID: &team, Models: []string{"gpt-4o"}, Metadata: map[string]any{"i": i}}); err != nil {
			b.Fatal(err)
		}
	}
	return s, toks
}

func BenchmarkLookup(b *testing.B) {
	s, toks := benchStore(b, 1000)
	ctx := b.Context()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Lookup(ctx, toks[i%len(toks)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkLookupParallel(b *testing.B) {
	s, toks := benchStore(b, 1000)
	ctx := b.Context()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.Lookup(ctx, toks[i%len(toks)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

func BenchmarkAddSpend(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprint("batch=", batch), func(b *testing.B) {
			s, toks := benchStore(b, 1000)
			ctx := b.Context()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				d := make(map[string]float64, batch)
				for j := range batch {
					d[toks[(i+j)%len(toks)]] = 0.001
				}
				if err := s.AddSpend(ctx, d); err != nil {
					b.Fatal(err)
				}
				i += batch
			}
		})
	}
}

func BenchmarkList(b *testing.B) {
	s, _ := benchStore(b, 1000)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.List(ctx, store.ListQuery{Page: 3, Size: 50, TeamID: "team", SortBy: "spend", Desc: true}); err != nil {
			b.Fatal(err)
		}
	}
}
