package cache

import (
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// Peek returns what is cached for h, without Get's checks (tests only).
func (c *Cache) Peek(h [32]byte) *Entry {
	e, _ := c.rc.Get(slot(&h))
	return e
}

// FilterKeys is how many hashes the known-key filter holds, -1 before it
// is built (tests only).
func (c *Cache) FilterKeys() int64 {
	if f := c.filter.Load(); f != nil {
		return f.n.Load()
	}
	return -1
}

// FilterHas reports whether the known-key filter may contain h (tests only).
func (c *Cache) FilterHas(h [32]byte) bool {
	f := c.filter.Load()
	return f != nil && f.has(&h)
}

// NewTestEntry is a live key entry for row k (tests only).
func NewTestEntry(k *keys.Key) *Entry {
	now := time.Now()
	return newEntry([32]byte{1}, k, now, now.Add(time.Hour), 0)
}

// EvictTeam drops a team the way capacity eviction does: no generation
// bump, unlike an invalidation (tests only).
func (c *OrgCache) EvictTeam(id string) { c.rc.Del(c.slot(kindTeam, id, "")) }

// BumpTeam bumps a team's slot generation without dropping the entry: the
// moment inside an invalidation between the two (tests only).
func (c *OrgCache) BumpTeam(id string) { c.stripe(c.slot(kindTeam, id, "")).Add(1) }
