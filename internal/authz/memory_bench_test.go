package authz_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// rowLoader answers every Lookup with a fresh key shaped like a store's
// row (every string and map its own allocation, empty JSON columns as
// empty maps, as both backends return them), so the cache holds what it
// would hold in production.
type rowLoader struct{}

func (rowLoader) Lookup(_ context.Context, hash string) (*keys.Key, error) {
	s := func(v string) *string { v = strings.Clone(v); return &v }
	now := time.Now().UTC()
	reset := now.Add(30 * 24 * time.Hour)
	budget := 100.0
	id := hash[:8]
	return &keys.Key{
		Token: strings.Clone(hash), KeyName: s("sk-..." + hash[:4]), KeyAlias: s("team-a-" + id),
		Models: []string{strings.Clone("gpt-4o"), strings.Clone("gpt-4o-mini")}, UserID: s("user-" + id), TeamID: s("team-a"),
		Aliases: map[string]any{}, Config: map[string]any{}, Permissions: map[string]any{}, Metadata: map[string]any{},
		ModelSpend: map[string]any{}, ModelMaxBudget: map[string]any{}, AllowedCacheControls: []string{}, AllowedRoutes: []string{},
		MaxBudget: &budget, BudgetDuration: s("30d"), BudgetResetAt: &reset, CreatedAt: &now, UpdatedAt: &now,
		CreatedBy: s("admin"), UpdatedBy: s("admin"), Spend: 1.5,
	}, nil
}

// rawForIndex is a distinct, valid-looking virtual key per index.
func rawForIndex(i int) string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	return keys.Prefix + fmt.Sprintf("%x", b) + "aaaaaa"
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func heapBytes() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkCacheMemory fills a cache of n keys through allowed Checks (so
// each key holds everything a Check leaves behind) and reports the heap
// bytes per cached key and the process RSS. Run one size per process, so
// the RSS is that size's alone:
//
//	go test -run '^$' -bench 'CacheMemory/keys=100000$' -benchtime 1x ./internal/authz
func BenchmarkCacheMemory(b *testing.B) {
	for _, n := range []int{20_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			for b.Loop() {
				fillCache(b, n)
			}
		})
	}
}

func fillCache(b *testing.B, n int) {
	c, err := cache.New(cache.Config{Loader: rowLoader{}, MaxKeys: n, SafetyTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	a, err := authz.New(authz.Config{Cache: c, MasterKey: "sk-bench-master"})
	if err != nil {
		b.Fatal(err)
	}
	srv := authz.NewServer(a)
	ctx := context.Background()
	r := benchRequest("")
	hdr := r.Attributes.Request.Http.Headers
	before := heapBytes()
	rss0 := rssBytes()
	for i := range n {
		hdr["authorization"] = "Bearer " + rawForIndex(i)
		if resp, err := srv.Check(ctx, r); err != nil || resp.GetOkResponse() == nil {
			b.Fatalf("Check %d = %v, %v", i, resp, err)
		}
		if i%10000 == 9999 {
			c.Wait()
		}
	}
	c.Wait()
	// Every key must be cached (and hit) for the figure to mean anything.
	misses := 0
	for i := 0; i < n; i += max(1, n/1000) {
		hdr["authorization"] = "Bearer " + rawForIndex(i)
		if e, _ := c.Get(ctx, keys.Hash(rawForIndex(i))); e == nil {
			misses++
		}
		srv.Check(ctx, r)
	}
	after := heapBytes()
	if p := os.Getenv("CACHE_HEAP_PROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
	rss := rssBytes()
	b.ReportMetric(float64(after-before)/float64(n), "heap-B/key")
	b.ReportMetric(float64(rss-rss0)/float64(n), "rss-B/key")
	b.ReportMetric(float64(rss)/(1<<20), "rss-MiB")
	b.ReportMetric(float64(misses), "sampled-misses")
	runtime.KeepAlive(c)
}
