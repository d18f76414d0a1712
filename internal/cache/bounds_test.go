package cache_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// snapLoader reads the row first and only then waits at the gate, as a
// store read that has returned but whose result is not yet cached.
type snapLoader struct {
	fakeLoader
	began chan struct{} // receives once per lookup, after the read
}

func (s *snapLoader) Lookup(ctx context.Context, hash string) (*keys.Key, error) {
	s.calls.Add(1)
	s.mu.Lock()
	k, ok := s.keys[hash]
	err := s.err
	var cp keys.Key
	if ok {
		cp = *k
	}
	s.mu.Unlock()
	s.began <- struct{}{}
	select {
	case <-s.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, keys.ErrNotFound
	}
	return &cp, nil
}

func newSnap() *snapLoader {
	return &snapLoader{fakeLoader: fakeLoader{gate: make(chan struct{})}, began: make(chan struct{}, 16)}
}

// TestCheckAfterInvalidationDoesNotJoinOlderLoad: a Get that starts after
// an invalidation gets the row as of after it, never the result of a load
// that began before it.
func TestCheckAfterInvalidationDoesNotJoinOlderLoad(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(c *cache.Cache, hash string)
	}{
		{"invalidate", func(c *cache.Cache, h string) { c.Invalidate(h) }},
		{"purge", func(c *cache.Cache, h string) { c.Purge() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newSnap()
			h := keys.HashHex("sk-j")
			l.put(&keys.Key{Token: h})
			c := newCache(t, l, newClock(), nil)
			first := make(chan *cache.Entry)
			go func() { e, _ := c.Get(context.Background(), keys.Hash("sk-j")); first <- e }()
			<-l.began // the first load has read the unblocked row
			l.put(&keys.Key{Token: h, Blocked: ptr(true)})
			tc.act(c, h)
			second := make(chan *cache.Entry)
			go func() { e, _ := c.Get(context.Background(), keys.Hash("sk-j")); second <- e }()
			<-l.began // the second Get made its own read
			close(l.gate)
			if e := <-first; e == nil || e.Blocked {
				t.Fatalf("first Get = %+v; want the row it read", e)
			}
			if e := <-second; e == nil || !e.Blocked {
				t.Fatalf("Get after %s = %+v; want the blocked row (it joined the older load)", tc.name, e)
			}
			if n := l.calls.Load(); n != 2 {
				t.Fatalf("store queries = %d, want 2", n)
			}
		})
	}
}

// TestSpendUpdateFencesLoad: a load that read the old spend does not
// replace an entry whose spend was updated in place since.
func TestSpendUpdateFencesLoad(t *testing.T) {
	l := newSnap()
	h := keys.HashHex("sk-sp")
	l.put(&keys.Key{Token: h, Spend: 1})
	clk := newClock()
	c, err := cache.New(cache.Config{Loader: l, Now: clk.now, StaleBound: time.Second, LookupTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	feed := &fakeFeed{}
	c.Attach(feed)
	go func() { <-l.began; l.gate <- struct{}{} }()
	if _, err := c.Get(context.Background(), keys.Hash("sk-sp")); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	// The feed goes deaf, the entry ages past the stale bound, and a
	// re-read begins while the cached entry is still there.
	feed.fn(store.Event{Kind: store.EventDown})
	clk.advance(2 * time.Second)
	done := make(chan struct{})
	go func() { defer close(done); _, _ = c.Get(context.Background(), keys.Hash("sk-sp")) }()
	<-l.began // the re-read has read spend 1
	c.SetSpend(h, 5)
	l.gate <- struct{}{}
	<-done
	c.Wait()
	if e := c.Peek(keys.Hash("sk-sp")); e == nil || e.Spend() != 5 {
		t.Fatalf("cached entry after a fenced load: %+v; want spend 5", e)
	}
}

// TestMaxLoads: past MaxLoads loads in flight, a miss fails at once and
// makes no store query; a miss for a key being loaded joins that load.
func TestMaxLoads(t *testing.T) {
	l := &fakeLoader{gate: make(chan struct{})}
	c, err := cache.New(cache.Config{Loader: l, MaxLoads: 2, LookupTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var wg sync.WaitGroup
	for _, raw := range []string{"sk-m1", "sk-m2", "sk-m1"} {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = c.Get(context.Background(), keys.Hash(raw)) }()
	}
	for l.calls.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	if _, err := c.Get(context.Background(), keys.Hash("sk-m3")); !errors.Is(err, cache.ErrOverloaded) {
		t.Fatalf("third distinct load: err = %v, want ErrOverloaded", err)
	}
	if n := l.calls.Load(); n != 2 {
		t.Fatalf("store queries = %d, want 2 (the refused miss made none)", n)
	}
	close(l.gate)
	wg.Wait()
	if _, err := c.Get(context.Background(), keys.Hash("sk-m3")); err != nil {
		t.Fatalf("after the loads finished: %v", err)
	}
}

// listLoader is a store with a token list; block, when set, holds the
// listing until closed.
type listLoader struct {
	fakeLoader
	block chan struct{}
	lists atomic.Int64
}

func (l *listLoader) ListTokens(ctx context.Context, fn func(string) error) error {
	l.lists.Add(1)
	l.mu.Lock()
	var toks []string
	for h := range l.keys {
		toks = append(toks, h)
	}
	l.mu.Unlock()
	if l.block != nil {
		select {
		case <-l.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, h := range toks {
		if err := fn(h); err != nil {
			return err
		}
	}
	return nil
}

func waitFilter(t *testing.T, c *cache.Cache, atLeast int64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); c.FilterKeys() < atLeast; {
		if time.Now().After(deadline) {
			t.Fatalf("filter not built: %d keys", c.FilterKeys())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestUnknownKeyFlood: with the filter built, 100k random keys reach the
// store at most at the unknown-key budget; a key created since (by event)
// or created elsewhere a moment ago (no event yet, within budget) is found.
func TestUnknownKeyFlood(t *testing.T) {
	l := &listLoader{}
	for i := range 1000 {
		l.put(&keys.Key{Token: keys.HashHex(rawKey(i))})
	}
	clk := newClock()
	c, err := cache.New(cache.Config{Loader: l, Lister: l, Now: clk.now, UnknownRate: 20, NegativeTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	feed := &fakeFeed{}
	c.Attach(feed)
	feed.fn(store.Event{Kind: store.EventReset})
	waitFilter(t, c, 1000)

	// A key created elsewhere, whose event has not arrived: within the
	// budget, it is found.
	l.put(&keys.Key{Token: keys.HashHex("sk-fresh")})
	if e, err := c.Get(context.Background(), keys.Hash("sk-fresh")); err != nil || e == nil {
		t.Fatalf("fresh key outside a flood: %v, %v", e, err)
	}
	base := l.calls.Load()
	const flood = 100_000
	for range flood {
		raw := keys.Prefix + rand.Text()
		if e, err := c.Get(context.Background(), keys.Hash(raw)); e != nil || err != nil {
			t.Fatalf("random key = %v, %v", e, err)
		}
	}
	queries := l.calls.Load() - base
	t.Logf("%d random unknown keys made %d store queries (%.3f%%)", flood, queries, 100*float64(queries)/flood)
	if queries > flood/100 {
		t.Fatalf("%d store queries for %d random keys; want at most 1%%", queries, flood)
	}
	// Known keys still load during the flood (the filter has them).
	if e, err := c.Get(context.Background(), keys.Hash(rawKey(7))); err != nil || e == nil {
		t.Fatalf("known key during the flood: %v, %v", e, err)
	}
	// A key whose creation event arrived is in the filter at once.
	l.put(&keys.Key{Token: keys.HashHex("sk-evented")})
	feed.fn(store.Event{Kind: store.EventChanged, Token: keys.HashHex("sk-evented")})
	if e, err := c.Get(context.Background(), keys.Hash("sk-evented")); err != nil || e == nil {
		t.Fatalf("key created with an event, budget exhausted: %v, %v", e, err)
	}
	// Budget exhausted, no event: denied as unknown until the budget refills.
	l.put(&keys.Key{Token: keys.HashHex("sk-silent")})
	if e, _ := c.Get(context.Background(), keys.Hash("sk-silent")); e != nil {
		t.Fatal("the budget was not exhausted by the flood")
	}
	clk.advance(time.Second)
	if e, err := c.Get(context.Background(), keys.Hash("sk-silent")); err != nil || e == nil {
		t.Fatalf("silent key after the budget refilled: %v, %v", e, err)
	}
}

// TestFilterRebuildKeepsConcurrentAdds: a key whose event arrives while
// the filter is being rebuilt is in the rebuilt filter.
func TestFilterRebuildKeepsConcurrentAdds(t *testing.T) {
	l := &listLoader{block: make(chan struct{})}
	l.put(&keys.Key{Token: keys.HashHex("sk-old")})
	clk := newClock()
	c, err := cache.New(cache.Config{Loader: l, Lister: l, Now: clk.now, UnknownRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	feed := &fakeFeed{}
	c.Attach(feed)
	feed.fn(store.Event{Kind: store.EventReset})
	for l.lists.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	l.put(&keys.Key{Token: keys.HashHex("sk-new")})
	feed.fn(store.Event{Kind: store.EventChanged, Token: keys.HashHex("sk-new")})
	close(l.block)
	waitFilter(t, c, 2)
	// Spend the budget on a random key, so only the filter can let these in.
	_, _ = c.Get(context.Background(), keys.Hash("sk-random-unknown"))
	for _, raw := range []string{"sk-old", "sk-new"} {
		if e, err := c.Get(context.Background(), keys.Hash(raw)); err != nil || e == nil {
			t.Fatalf("%s after the rebuild: %v, %v", raw, e, err)
		}
	}
}

// TestStaleWhileFeedDown: while the feed is down, an entry older than the
// stale bound is re-read; when the store is down too, it is served as is,
// and the next re-read waits a backoff.
func TestStaleWhileFeedDown(t *testing.T) {
	l := &fakeLoader{}
	h := keys.HashHex("sk-st")
	l.put(&keys.Key{Token: h})
	clk := newClock()
	c, err := cache.New(cache.Config{Loader: l, Now: clk.now, StaleBound: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	feed := &fakeFeed{}
	c.Attach(feed)
	feed.fn(store.Event{Kind: store.EventReset})
	get := func() *cache.Entry {
		t.Helper()
		e, err := c.Get(context.Background(), keys.Hash("sk-st"))
		if err != nil {
			t.Fatal(err)
		}
		c.Wait()
		return e
	}
	get()
	clk.advance(time.Minute)
	get() // feed up: no re-read, however old
	if n := l.calls.Load(); n != 1 {
		t.Fatalf("feed up: store queries = %d, want 1", n)
	}
	feed.fn(store.Event{Kind: store.EventDown})
	l.put(&keys.Key{Token: h, Blocked: ptr(true)}) // a change nobody heard of
	if e := get(); !e.Blocked || l.calls.Load() != 2 {
		t.Fatalf("stale entry not re-read: blocked=%v calls=%d", e.Blocked, l.calls.Load())
	}
	clk.advance(10 * time.Second)
	get() // younger than the bound
	if n := l.calls.Load(); n != 2 {
		t.Fatalf("fresh entry re-read: calls=%d", n)
	}
	// The store goes down too: the cached entry keeps being served.
	l.mu.Lock()
	l.err = errors.New("connection refused")
	l.mu.Unlock()
	clk.advance(time.Minute)
	if e := get(); e == nil || !e.Blocked {
		t.Fatalf("store down: got %+v, want the cached entry", e)
	}
	calls := l.calls.Load()
	get() // within the backoff: no new attempt
	if n := l.calls.Load(); n != calls {
		t.Fatalf("re-read retried within the backoff: calls %d -> %d", calls, n)
	}
	clk.advance(2 * time.Second)
	get()
	if n := l.calls.Load(); n != calls+1 {
		t.Fatalf("re-read not retried after the backoff: calls %d -> %d", calls, n)
	}
}

// TestFilter: no false negatives, few false positives at the built size,
// and re-adding a known key does not count toward the rebuild threshold.
func TestFilter(t *testing.T) {
	l := &listLoader{}
	for i := range 10_000 {
		l.put(&keys.Key{Token: keys.HashHex(rawKey(i))})
	}
	c, err := cache.New(cache.Config{Loader: l, Lister: l, UnknownRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	feed := &fakeFeed{}
	c.Attach(feed)
	feed.fn(store.Event{Kind: store.EventReset})
	waitFilter(t, c, 10_000)
	for i := range 10_000 {
		if !c.FilterHas(keys.Hash(rawKey(i))) {
			t.Fatalf("filter misses known key %d", i)
		}
	}
	fp := 0
	for range 100_000 {
		if c.FilterHas(keys.Hash(keys.Prefix + rand.Text())) {
			fp++
		}
	}
	if fp > 500 { // 0.5%; the design point is about 0.2% at 16 bits per key, less at 32
		t.Fatalf("false positives: %d of 100000", fp)
	}
	n := c.FilterKeys()
	c.Invalidate(keys.HashHex(rawKey(1)), keys.HashHex(rawKey(2)))
	if got := c.FilterKeys(); got != n {
		t.Fatalf("re-adding known keys changed the count: %d -> %d", n, got)
	}
}
