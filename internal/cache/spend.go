package cache

import (
	"math"
	"sync"
)

// localSpend is spend this replica metered that the store does not have
// yet (recorded, not yet flushed or flush in flight), per key. A key's
// cached spend is always the store's value plus this, so a change-feed
// spend event or a reload never makes the Check forget it.
type localSpend struct {
	mu sync.Mutex
	m  map[[32]byte]*pendingSpend
}

type pendingSpend struct {
	sum float64
	n   int // deltas not yet settled; the entry goes when it reaches 0
}

func (l *localSpend) get(h [32]byte) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[h].pending()
}

func (p *pendingSpend) pending() float64 {
	if p == nil {
		return 0
	}
	return p.sum
}

// AddSpend records delta of spend metered on this replica for the key
// hash (lowercase hex) and applies it to the cached entry at once, so the
// key's next Check sees it. It stays counted on top of whatever spend the
// store reports until SettleSpend says it reached the store.
func (c *Cache) AddSpend(hash string, delta float64) {
	h, err := parseHash(hash)
	if err != nil || delta == 0 || math.IsNaN(delta) || math.IsInf(delta, 0) {
		return
	}
	c.local.mu.Lock()
	if c.local.m == nil {
		c.local.m = map[[32]byte]*pendingSpend{}
	}
	p := c.local.m[h]
	if p == nil {
		p = &pendingSpend{}
		c.local.m[h] = p
	}
	p.sum += delta
	p.n++
	// Under the lock, so a concurrent SetSpend (store value + pending)
	// cannot interleave and apply the delta twice or not at all.
	k := slot(&h)
	if e, ok := c.rc.Get(k); ok && e.hash == h && !e.neg {
		addFloat(&e.spend, delta)
	}
	// A load in flight read the store and possibly the pending sum before
	// this delta: don't cache its result.
	c.stripe(k).Add(1)
	c.local.mu.Unlock()
	c.dropGraced(h)
}

// SettleSpend says n deltas of the key summing to delta reached the store,
// whose spend for the key became stored in that commit. The cached spend
// becomes the larger of (what it was - delta) and (stored + what is still
// pending): the first is right when the change feed already delivered
// this commit (or a later one), the second when it has not yet; either
// way a later spend event sets it to the store's value plus what is
// pending.
func (c *Cache) SettleSpend(hash string, delta float64, n int, stored float64) {
	h, err := parseHash(hash)
	if err != nil {
		return
	}
	c.local.mu.Lock()
	defer c.local.mu.Unlock()
	p := c.local.m[h]
	if p != nil {
		p.sum -= delta
		p.n -= n
		if p.n <= 0 {
			delete(c.local.m, h)
		}
	}
	k := slot(&h)
	if e, ok := c.rc.Get(k); ok && e.hash == h && !e.neg {
		e.spend.Store(math.Float64bits(max(e.Spend()-delta, stored+c.local.m[h].pending())))
	}
	c.stripe(k).Add(1) // a load between the commit and now may have read the old row
}

// PendingSpend is the spend metered on this replica for the key that the
// store does not have yet.
func (c *Cache) PendingSpend(hash string) float64 {
	h, err := parseHash(hash)
	if err != nil {
		return 0
	}
	return c.local.get(h)
}

func addFloat(bits interface {
	Load() uint64
	CompareAndSwap(old, new uint64) bool
}, delta float64) {
	for {
		old := bits.Load()
		if bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+delta)) {
			return
		}
	}
}
