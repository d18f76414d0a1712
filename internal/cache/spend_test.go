package cache_test

import (
	"context"
	"math"
	"sync"
	"testing"

	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// TestLocalSpend: metered spend is visible at once, survives change-feed
// spend events and reloads until settled, and is then replaced by the
// store's value.
func TestLocalSpend(t *testing.T) {
	l := &fakeLoader{}
	h := keys.HashHex("sk-local")
	l.put(&keys.Key{Token: h, Spend: 1})
	c := newCache(t, l, newClock(), nil)
	spend := func() float64 {
		t.Helper()
		e, err := c.Get(context.Background(), keys.Hash("sk-local"))
		if err != nil || e == nil {
			t.Fatalf("Get = %v, %v", e, err)
		}
		c.Wait()
		return e.Spend()
	}
	steps := []struct {
		name string
		do   func()
		want float64
	}{
		{"loaded", func() {}, 1},
		{"metered", func() { c.AddSpend(h, 0.25); c.AddSpend(h, 0.25) }, 1.5},
		{"feed event from another replica keeps local", func() { c.SetSpend(h, 2) }, 2.5},
		{"reload keeps local", func() { c.Invalidate(h); l.put(&keys.Key{Token: h, Spend: 3}) }, 3.5},
		{"settled: store value", func() { l.put(&keys.Key{Token: h, Spend: 3.5}); c.SettleSpend(h, 0.5, 2, 3.5) }, 3.5},
		{"later event: no double count", func() { c.SetSpend(h, 3.5) }, 3.5},
		{"metered while uncached then loaded", func() {
			c.Invalidate(h)
			c.AddSpend(h, 1)
		}, 4.5},
		{"bad input ignored", func() { c.AddSpend("zz", 1); c.AddSpend(h, math.NaN()) }, 4.5},
	}
	for _, s := range steps {
		s.do()
		if got := spend(); math.Abs(got-s.want) > 1e-12 {
			t.Fatalf("%s: spend = %v, want %v", s.name, got, s.want)
		}
	}
	if p := c.PendingSpend(h); p != 1 {
		t.Errorf("PendingSpend = %v, want 1", p)
	}
}

// TestLocalSpendConcurrent: concurrent AddSpend and SetSpend never lose a delta.
func TestLocalSpendConcurrent(t *testing.T) {
	l := &fakeLoader{}
	h := keys.HashHex("sk-conc")
	l.put(&keys.Key{Token: h})
	c := newCache(t, l, newClock(), nil)
	e, _ := c.Get(context.Background(), keys.Hash("sk-conc"))
	c.Wait()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				c.AddSpend(h, 0.01)
				c.SetSpend(h, 0)
			}
		}()
	}
	wg.Wait()
	if got := e.Spend(); math.Abs(got-8) > 1e-9 {
		t.Fatalf("spend = %v, want 8", got)
	}
}

// TestSettleSpendRaces: the change feed may deliver this replica's commit,
// or a later one from another replica, before or after SettleSpend; the
// cached spend ends right either way.
func TestSettleSpendRaces(t *testing.T) {
	h := keys.HashHex("sk-settle")
	for _, tc := range []struct {
		name string
		do   func(c *cache.Cache)
		want float64
	}{
		// base 1, metered 0.5 here; our commit makes it 1.5; another
		// replica's later commit makes it 2.5.
		{"event after settle", func(c *cache.Cache) { c.SettleSpend(h, 0.5, 1, 1.5); c.SetSpend(h, 1.5) }, 1.5},
		{"event before settle", func(c *cache.Cache) { c.SetSpend(h, 1.5); c.SettleSpend(h, 0.5, 1, 1.5) }, 1.5},
		{"later commit before settle", func(c *cache.Cache) { c.SetSpend(h, 2.5); c.SettleSpend(h, 0.5, 1, 1.5) }, 2.5},
		{"settle before a later commit", func(c *cache.Cache) { c.SettleSpend(h, 0.5, 1, 1.5); c.SetSpend(h, 2.5) }, 2.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &fakeLoader{}
			l.put(&keys.Key{Token: h, Spend: 1})
			c := newCache(t, l, newClock(), nil)
			e, err := c.Get(context.Background(), keys.Hash("sk-settle"))
			if err != nil || e == nil {
				t.Fatal(err)
			}
			c.Wait()
			c.AddSpend(h, 0.5)
			tc.do(c)
			if got := e.Spend(); math.Abs(got-tc.want) > 1e-12 {
				t.Fatalf("spend = %v, want %v", got, tc.want)
			}
			if p := c.PendingSpend(h); p != 0 {
				t.Fatalf("pending = %v, want 0", p)
			}
		})
	}
}
