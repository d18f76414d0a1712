package cache

import (
	"math"
	"time"
)

// ApplyBudgetReset applies the budget reset job's change to a cached key in
// place (store.EventBudgetReset): spend and budget_reset_at take the new
// values, nothing is reloaded. A midnight reset of every key therefore
// costs no store queries. A key not cached is left alone (its next load
// reads the new row); loads in flight for its stripe are not cached, as
// they may have read the row before the reset. If the updated entry cannot
// be stored, the old one is dropped rather than kept with a stale
// budget_reset_at.
func (c *Cache) ApplyBudgetReset(hash string, spend float64, resetAt time.Time) {
	h, err := parseHash(hash)
	if err != nil {
		return
	}
	k := slot(&h)
	c.dropGraced(h) // rare: reload those rather than follow them
	c.stripe(k).Add(1)
	gen := c.current(k)
	e, ok := c.rc.Get(k)
	now := c.now()
	if !ok || e.hash != h || e.neg || e.epoch != gen.epoch || now.UnixNano() >= e.until || e.Key == nil {
		return
	}
	nk := *e.Key
	nk.Spend = spend
	ne0 := c.local.get(h) // metered here, not yet flushed: still counts
	nk.BudgetResetAt = &resetAt
	until := time.Unix(0, e.until)
	ne := newEntry(e.hash, &nk, time.Unix(0, e.loaded), until, e.epoch)
	ne.spend.Store(math.Float64bits(spend + ne0))
	if !c.rc.Set(k, ne, 1) || !c.still(gen, k, false) {
		c.rc.Del(k)
	}
}
