package cache_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeLoader counts lookups; gate, when set, blocks each lookup until it is
// closed or receives.
type fakeLoader struct {
	mu    sync.Mutex
	keys  map[string]*keys.Key
	calls atomic.Int64
	gate  chan struct{}
	err   error
}

func (f *fakeLoader) Lookup(ctx context.Context, hash string) (*keys.Key, error) {
	f.calls.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	k, ok := f.keys[hash]
	if !ok {
		return nil, keys.ErrNotFound
	}
	cp := *k
	return &cp, nil
}

func (f *fakeLoader) put(k *keys.Key) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keys == nil {
		f.keys = map[string]*keys.Key{}
	}
	f.keys[k.Token] = k
}

type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }
func newClock() *clock                   { c := &clock{}; c.ns.Store(time.Now().UnixNano()); return c }
func ptr[T any](v T) *T                  { return &v }
func rawKey(i int) string                { return fmt.Sprintf("sk-test-%04d", i) }

func newCache(t *testing.T, l cache.Loader, clk *clock, reg prometheus.Registerer) *cache.Cache {
	t.Helper()
	c, err := cache.New(cache.Config{Loader: l, Now: clk.now, Registerer: reg, NegativeTTL: time.Second, LookupTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []cache.Config{{}, {Loader: &fakeLoader{}, MaxKeys: -1}, {Loader: &fakeLoader{}, NegativeTTL: -1}} {
		if c, err := cache.New(cfg); err == nil {
			c.Close()
			t.Errorf("New(%+v) = nil error", cfg)
		}
	}
}

func TestHitMakesNoStoreQuery(t *testing.T) {
	l := &fakeLoader{}
	k := &keys.Key{Token: keys.HashHex("sk-a"), Spend: 1, MaxBudget: ptr(5.0), Blocked: ptr(true),
		Metadata: map[string]any{"temp_budget_increase": 2.0, "temp_budget_expiry": "2999-01-01T00:00:00"}}
	l.put(k)
	c := newCache(t, l, newClock(), nil)
	h := keys.Hash("sk-a")
	e, err := c.Get(context.Background(), h)
	if err != nil || e == nil {
		t.Fatalf("Get = %v, %v", e, err)
	}
	if !e.Blocked || !e.HasBudget || e.MaxBudget != 5 || e.Spend() != 1 || e.Budget(time.Now()) != 7 {
		t.Fatalf("precomputed entry wrong: %+v budget %v", e, e.Budget(time.Now()))
	}
	c.Wait()
	for range 100 {
		if e2, err := c.Get(context.Background(), h); err != nil || e2 != e {
			t.Fatalf("hit = %p, %v; want %p", e2, err, e)
		}
	}
	if n := l.calls.Load(); n != 1 {
		t.Fatalf("store queries = %d, want 1", n)
	}
	allocs := testing.AllocsPerRun(1000, func() { _, _ = c.Get(context.Background(), h) })
	if allocs != 0 {
		t.Fatalf("hit allocs = %v, want 0", allocs)
	}
}

func TestConcurrentMissesOneQuery(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := &fakeLoader{gate: make(chan struct{})}
	l.put(&keys.Key{Token: keys.HashHex("sk-b")})
	c := newCache(t, l, newClock(), reg)
	const n = 1000
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range n {
		wg.Go(func() {
			if e, err := c.Get(context.Background(), keys.Hash("sk-b")); err != nil || e == nil {
				bad.Add(1)
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for metric(t, reg, "sidecar_cache_misses_total") < n {
		if time.Now().After(deadline) {
			t.Fatal("callers did not all arrive")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the last callers enter the singleflight
	close(l.gate)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d callers failed", bad.Load())
	}
	if got := l.calls.Load(); got != 1 {
		t.Fatalf("store queries = %d, want 1", got)
	}
}

func metric(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestNegativeEntries(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := &fakeLoader{}
	clk := newClock()
	c := newCache(t, l, clk, reg)
	const distinct = 200
	for round := range 5 {
		for i := range distinct {
			e, err := c.Get(context.Background(), keys.Hash(rawKey(i)))
			if e != nil || err != nil {
				t.Fatalf("unknown key = %v, %v", e, err)
			}
		}
		if round == 0 {
			c.Wait()
		}
	}
	if got := l.calls.Load(); got > distinct {
		t.Fatalf("store queries = %d for %d distinct unknown keys, want <= %d", got, distinct, distinct)
	}
	if neg := metric(t, reg, "sidecar_cache_negative_hits_total"); neg < 3*distinct {
		t.Fatalf("negative hits = %v", neg)
	}
	clk.advance(1100 * time.Millisecond) // past NegativeTTL: asked again
	before := l.calls.Load()
	_, _ = c.Get(context.Background(), keys.Hash(rawKey(0)))
	if l.calls.Load() != before+1 {
		t.Fatal("negative entry outlived its TTL")
	}
}

func TestLoaderErrorNotCached(t *testing.T) {
	l := &fakeLoader{err: errors.New("connection refused")}
	c := newCache(t, l, newClock(), nil)
	for i := range 3 {
		if _, err := c.Get(context.Background(), keys.Hash("sk-x")); err == nil {
			t.Fatal("store error not returned")
		}
		c.Wait()
		if got := l.calls.Load(); got != int64(i+1) {
			t.Fatalf("calls = %d: error was cached", got)
		}
	}
	l.mu.Lock()
	l.err = nil
	l.mu.Unlock()
	l.put(&keys.Key{Token: keys.HashHex("sk-x")})
	if e, err := c.Get(context.Background(), keys.Hash("sk-x")); err != nil || e == nil {
		t.Fatalf("after recovery = %v, %v", e, err)
	}
}

func TestLookupTimeout(t *testing.T) {
	l := &fakeLoader{gate: make(chan struct{})} // never opens
	c, err := cache.New(cache.Config{Loader: l, LookupTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Get(context.Background(), keys.Hash("sk-slow")); err == nil {
		t.Fatal("no error from a hung store")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %v, want ~50ms", d)
	}
}

// TestGenerationGuard: an invalidation (or purge, or spend event) that
// happens while a load is in flight must not be undone by the load's result.
func TestGenerationGuard(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(c *cache.Cache, hash string)
	}{
		{"invalidate", func(c *cache.Cache, h string) { c.Invalidate(h) }},
		{"purge", func(c *cache.Cache, h string) { c.Purge() }},
		{"spend on uncached", func(c *cache.Cache, h string) { c.SetSpend(h, 99) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &fakeLoader{gate: make(chan struct{})}
			h := keys.HashHex("sk-g")
			l.put(&keys.Key{Token: h})
			c := newCache(t, l, newClock(), nil)
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = c.Get(context.Background(), keys.Hash("sk-g"))
			}()
			for l.calls.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			tc.act(c, h) // the load has read nothing yet, but began before this
			l.gate <- struct{}{}
			<-done
			c.Wait()
			go func() { l.gate <- struct{}{} }()
			if _, err := c.Get(context.Background(), keys.Hash("sk-g")); err != nil {
				t.Fatal(err)
			}
			if got := l.calls.Load(); got != 2 {
				t.Fatalf("store queries = %d, want 2: the stale load was cached", got)
			}
		})
	}
}

func TestInvalidatePurgeSpend(t *testing.T) {
	l := &fakeLoader{}
	h := keys.HashHex("sk-i")
	l.put(&keys.Key{Token: h, Spend: 1})
	c := newCache(t, l, newClock(), nil)
	get := func() *cache.Entry {
		t.Helper()
		e, err := c.Get(context.Background(), keys.Hash("sk-i"))
		if err != nil || e == nil {
			t.Fatalf("Get = %v, %v", e, err)
		}
		c.Wait()
		return e
	}
	e := get()
	c.SetSpend(h, 4.5)
	if e2 := get(); e2 != e || e2.Spend() != 4.5 || l.calls.Load() != 1 {
		t.Fatalf("spend update: same=%v spend=%v calls=%d", e2 == e, e2.Spend(), l.calls.Load())
	}
	c.Invalidate(h)
	get()
	if l.calls.Load() != 2 {
		t.Fatalf("Invalidate: calls=%d", l.calls.Load())
	}
	c.Purge()
	get()
	if l.calls.Load() != 3 {
		t.Fatalf("Purge: calls=%d", l.calls.Load())
	}
	c.Invalidate("not-a-hash") // ignored
}

// TestGraceTokenFollowsActive: a key seen through a rotated-out token is
// dropped when its active token changes.
func TestGraceTokenFollowsActive(t *testing.T) {
	l := &fakeLoader{}
	active := keys.HashHex("sk-new")
	old := keys.HashHex("sk-old")
	l.put(&keys.Key{Token: active})
	l.mu.Lock()
	l.keys[old] = &keys.Key{Token: active, GraceUntil: ptr(time.Now().Add(time.Hour))}
	l.mu.Unlock()
	c := newCache(t, l, newClock(), nil)
	e, err := c.Get(context.Background(), keys.Hash("sk-old"))
	if err != nil || e == nil || e.GraceUntil.IsZero() {
		t.Fatalf("grace lookup = %+v, %v", e, err)
	}
	c.Wait()
	_, _ = c.Get(context.Background(), keys.Hash("sk-old"))
	if l.calls.Load() != 1 {
		t.Fatalf("grace entry not cached: calls=%d", l.calls.Load())
	}
	c.Invalidate(active)
	_, _ = c.Get(context.Background(), keys.Hash("sk-old"))
	if l.calls.Load() != 2 {
		t.Fatal("invalidating the active token left the grace entry cached")
	}
}

type fakeFeed struct{ fn func(store.Event) }

func (f *fakeFeed) Subscribe(fn func(store.Event)) func() { f.fn = fn; return func() { f.fn = nil } }

func TestAttach(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := &fakeLoader{}
	h := keys.HashHex("sk-f")
	l.put(&keys.Key{Token: h})
	c := newCache(t, l, newClock(), reg)
	feed := &fakeFeed{}
	detach := c.Attach(feed)
	load := func() { _, _ = c.Get(context.Background(), keys.Hash("sk-f")); c.Wait() }
	load()
	feed.fn(store.Event{Kind: store.EventSpend, Token: h, Spend: 3})
	load()
	if e, _ := c.Get(context.Background(), keys.Hash("sk-f")); e.Spend() != 3 || l.calls.Load() != 1 {
		t.Fatalf("EventSpend: spend=%v calls=%d", e.Spend(), l.calls.Load())
	}
	for i, ev := range []store.Event{{Kind: store.EventChanged, Token: h}, {Kind: store.EventReset}} {
		feed.fn(ev)
		load()
		if got := l.calls.Load(); got != int64(i+2) {
			t.Fatalf("event %v: calls=%d", ev.Kind, got)
		}
	}
	if metric(t, reg, "sidecar_feed_connected") != 1 {
		t.Fatal("feed gauge not up after EventReset")
	}
	feed.fn(store.Event{Kind: store.EventDown})
	if metric(t, reg, "sidecar_feed_connected") != 0 {
		t.Fatal("feed gauge not down after EventDown")
	}
	load()
	if l.calls.Load() != 3 {
		t.Fatal("EventDown dropped cached keys")
	}
	detach()
	if feed.fn != nil {
		t.Fatal("detach did not unsubscribe")
	}
}

// TestGuardIsPerStripe: an invalidation of an unrelated key (another
// generation stripe) does not stop a load in flight from being cached;
// an invalidation of the active key stops a grace-token load.
func TestGuardIsPerStripe(t *testing.T) {
	stripeOf := func(raw string) uint64 { h := keys.Hash(raw); return binary.LittleEndian.Uint64(h[:8]) % 1024 }
	other := ""
	for i := 0; other == ""; i++ {
		if r := rawKey(i); stripeOf(r) != stripeOf("sk-s") {
			other = r
		}
	}
	for _, tc := range []struct {
		name      string
		presented string
		act       func(c *cache.Cache)
		wantCalls int64
	}{
		{"unrelated invalidation", "sk-s", func(c *cache.Cache) { c.Invalidate(keys.HashHex(other)) }, 1},
		{"unrelated spend", "sk-s", func(c *cache.Cache) { c.SetSpend(keys.HashHex(other), 1) }, 1},
		{"active key of a grace token", "sk-s-old", func(c *cache.Cache) { c.Invalidate(keys.HashHex("sk-s")) }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &fakeLoader{gate: make(chan struct{})}
			l.put(&keys.Key{Token: keys.HashHex("sk-s")})
			l.mu.Lock()
			l.keys[keys.HashHex("sk-s-old")] = &keys.Key{Token: keys.HashHex("sk-s"), GraceUntil: ptr(time.Now().Add(time.Hour))}
			l.mu.Unlock()
			c := newCache(t, l, newClock(), nil)
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = c.Get(context.Background(), keys.Hash(tc.presented))
			}()
			for l.calls.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			tc.act(c)
			l.gate <- struct{}{}
			<-done
			c.Wait()
			close(l.gate)
			if _, err := c.Get(context.Background(), keys.Hash(tc.presented)); err != nil {
				t.Fatal(err)
			}
			if got := l.calls.Load(); got != tc.wantCalls {
				t.Fatalf("store queries = %d, want %d", got, tc.wantCalls)
			}
		})
	}
}

// TestPurgedEntryServedWhileStoreFails: after a purge (feed reconnect, or a
// statement that changed too many keys to list) a key is reloaded; if the
// store cannot answer, the purged entry is served rather than failing the
// Check closed. A key invalidated on its own (blocked, deleted) is not:
// its store error fails closed.
func TestPurgedEntryServedWhileStoreFails(t *testing.T) {
	for _, tc := range []struct {
		name     string
		drop     func(c *cache.Cache, h string)
		wantServ bool
	}{
		{"purge", func(c *cache.Cache, _ string) { c.Purge() }, true},
		{"invalidate", func(c *cache.Cache, h string) { c.Invalidate(h) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &fakeLoader{}
			h := keys.HashHex("sk-p")
			l.put(&keys.Key{Token: h, Models: []string{"gpt-4o"}})
			c := newCache(t, l, newClock(), nil)
			e1, err := c.Get(t.Context(), keys.Hash("sk-p"))
			if err != nil || e1 == nil {
				t.Fatalf("Get = %v, %v", e1, err)
			}
			c.Wait()
			tc.drop(c, h)
			c.Wait()
			l.mu.Lock()
			l.err = errors.New("lookup timeout")
			l.mu.Unlock()
			e2, err := c.Get(t.Context(), keys.Hash("sk-p"))
			if tc.wantServ && (err != nil || e2 != e1) {
				t.Fatalf("store failing after a purge: Get = %v, %v; want the purged entry", e2, err)
			}
			if !tc.wantServ && err == nil {
				t.Fatalf("store failing after an invalidation: Get = %v, nil; want the error (fail closed)", e2)
			}
			// The store answers again: the reload replaces the entry.
			l.mu.Lock()
			l.err = nil
			l.mu.Unlock()
			e3, err := c.Get(t.Context(), keys.Hash("sk-p"))
			if err != nil || e3 == nil || e3 == e1 {
				t.Fatalf("after recovery: Get = %v, %v (same entry %v)", e3, err, e3 == e1)
			}
		})
	}
}
