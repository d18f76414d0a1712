package cache

import (
	"context"
	"time"
)

// The known-key filter's life cycle: built from the store's token list on
// every EventReset (the feed connected: events sent before are lost) and
// when it has grown past its capacity; kept current by addKnown in between.

// addKnown adds a token hash to the filter, and to the one being built.
func (c *Cache) addKnown(h *[32]byte) {
	c.filterMu.Lock()
	defer c.filterMu.Unlock()
	if c.pending != nil {
		*c.pending = append(*c.pending, *h)
	}
	if f := c.filter.Load(); f != nil && !f.has(h) { // count distinct adds only
		if f.add(h) {
			c.requestRebuild()
		}
		c.filterKeys.Set(float64(f.n.Load()))
	}
}

// requestRebuild asks the rebuilder for a rebuild (coalesced).
func (c *Cache) requestRebuild() {
	if c.lister == nil {
		return
	}
	select {
	case c.rebuildC <- struct{}{}:
	default:
	}
}

// rebuilder rebuilds the filter when asked, retrying a failed rebuild with
// backoff (1s doubling to 30s) until it succeeds or a new request comes.
// While the feed is down, keys created elsewhere are not heard of, so it
// also rebuilds every StaleBound until the feed is back.
func (c *Cache) rebuilder(ctx context.Context) {
	defer c.wg.Done()
	var retry <-chan time.Time
	backoff := time.Second
	tick := time.NewTicker(time.Duration(c.staleNs))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.rebuildC:
		case <-retry:
		case <-tick.C:
			if !c.feedDown.Load() || c.filter.Load() == nil {
				continue
			}
		}
		retry = nil
		if err := c.rebuild(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.rebuildErrs.Inc()
			c.log.Warn("known-key filter rebuild failed; unknown keys go to the store (budgeted) meanwhile", "err", err, "retry_in", backoff)
			retry = time.After(backoff)
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
	}
}

// rebuild lists every token and swaps in a new filter. Adds that arrive
// while it lists go to the old filter and are replayed into the new one,
// so none is lost.
func (c *Cache) rebuild(ctx context.Context) error {
	var pending [][32]byte
	c.filterMu.Lock()
	c.pending = &pending
	c.filterMu.Unlock()
	defer func() {
		c.filterMu.Lock()
		c.pending = nil
		c.filterMu.Unlock()
	}()
	var listed [][32]byte
	err := c.lister.ListTokens(ctx, func(s string) error {
		if h, err := parseHash(s); err == nil {
			listed = append(listed, h)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.filterMu.Lock()
	defer c.filterMu.Unlock()
	f := newFilter(2 * (len(listed) + len(pending))) // room to grow before the next rebuild
	for i := range listed {
		f.add(&listed[i])
	}
	for i := range pending {
		f.add(&pending[i])
	}
	c.filter.Store(f)
	c.rebuilds.Inc()
	c.filterKeys.Set(float64(f.n.Load()))
	c.filterBytes.Set(float64(f.bytes()))
	c.log.Info("known-key filter built", "keys", f.n.Load(), "bytes", f.bytes())
	return nil
}
