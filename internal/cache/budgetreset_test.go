package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// TestBudgetResetInPlace: EventBudgetReset updates a cached key's spend and
// budget_reset_at without a store query; an uncached key stays uncached.
func TestBudgetResetInPlace(t *testing.T) {
	l := &fakeLoader{}
	h := keys.HashHex("sk-r")
	past := time.Now().Add(-time.Minute).UTC()
	next := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Millisecond)
	l.put(&keys.Key{Token: h, Spend: 9, MaxBudget: ptr(10.0), BudgetResetAt: &past})
	c := newCache(t, l, newClock(), nil)
	f := &fakeFeed{}
	detach := c.Attach(f)
	defer detach()
	e, err := c.Get(context.Background(), keys.Hash("sk-r"))
	if err != nil || e == nil {
		t.Fatalf("Get = %v, %v", e, err)
	}
	c.Wait()
	f.fn(store.Event{Kind: store.EventBudgetReset, Token: h, Spend: 0, BudgetResetAt: next})
	e2, err := c.Get(context.Background(), keys.Hash("sk-r"))
	if err != nil || e2 == nil {
		t.Fatalf("Get = %v, %v", e2, err)
	}
	if l.calls.Load() != 1 {
		t.Errorf("store queries = %d, want 1: the reset reloaded the key", l.calls.Load())
	}
	if e2.Spend() != 0 || !e2.BudgetResetAt.Equal(next) || *e2.Key.BudgetResetAt != next || e2.Key.Spend != 0 || !e2.HasBudget || e2.MaxBudget != 10 {
		t.Errorf("after reset: spend %v reset_at %v key %+v", e2.Spend(), e2.BudgetResetAt, e2.Key)
	}
	if e.Spend() != 9 || *e.Key.BudgetResetAt != past {
		t.Errorf("the old entry (shared, read-only) was modified: %v %v", e.Spend(), *e.Key.BudgetResetAt)
	}
	// A later spend-only change lands on the new entry.
	f.fn(store.Event{Kind: store.EventSpend, Token: h, Spend: 3})
	if e3, _ := c.Get(context.Background(), keys.Hash("sk-r")); e3.Spend() != 3 || !e3.BudgetResetAt.Equal(next) {
		t.Errorf("spend after reset = %v, reset_at %v", e3.Spend(), e3.BudgetResetAt)
	}
	// Not cached: nothing to do, the next load reads the row.
	other := keys.HashHex("sk-other")
	l.put(&keys.Key{Token: other, Spend: 0})
	c.ApplyBudgetReset(other, 0, next)
	c.ApplyBudgetReset("not-a-hash", 0, next)
	if e4, err := c.Get(context.Background(), keys.Hash("sk-other")); err != nil || e4 == nil || l.calls.Load() != 2 {
		t.Errorf("uncached key: %v, %v, calls %d", e4, err, l.calls.Load())
	}
}
