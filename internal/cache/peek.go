package cache

import "github.com/virtualkeys/sidecar/internal/modelbudget"

// Cached returns the cached entry of the key with this hex hash, or nil when
// it is not cached (it never loads: for observers on the metering path).
func (c *Cache) Cached(hash string) *Entry {
	h, err := parseHash(hash)
	if err != nil {
		return nil
	}
	e, ok := c.rc.Get(slot(&h))
	if !ok || e.hash != h || e.neg || e.epoch != c.epoch.Load() || c.now().UnixNano() >= e.until {
		return nil
	}
	return e
}

// ModelBudgets returns the cached key's model_max_budget (modelbudget.Keys).
func (c *Cache) ModelBudgets(hash string) []modelbudget.Limit {
	if e := c.Cached(hash); e != nil {
		return e.ModelBudgets
	}
	return nil
}
