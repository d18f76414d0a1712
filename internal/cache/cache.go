// Package cache is the ext_authz Check's key cache: a bounded ristretto
// cache of keys by hash, in front of the store.
//
// A hit costs one map lookup and no allocation. A miss goes to the store
// once however many Checks want the same key at the same time (one load per
// key and generation, see below), bounded by a lookup timeout; an unknown
// key is remembered as unknown for a short negative TTL. A store error is
// never cached: the Check fails closed and asks again next time.
//
// # Invalidation
//
// Invalidate drops keys at once (our own writes), Attach follows the
// store's change feed (writes made anywhere), and Purge drops everything
// (the feed reconnected, so notifications may have been lost). Generation
// counters (one per stripe of the hash space, plus the Purge epoch) make
// sure an invalidation that races a load is never undone by the load's
// result, without events for some keys discarding the loads of others.
// Concurrent misses share a load only within one generation: a Check that
// arrives after an invalidation starts a new load instead of joining one
// that began before it (and may have read the old row).
//
// A spend-only change updates the cached spend in place. It also fences
// loads of the key in flight (they may have read the old spend): it bumps
// the key's generation, waits for pending cache writes to land, and then
// updates whatever entry is cached. Positive entries also expire after a
// safety TTL, which only matters should a notification ever be lost.
//
// # Feed down or deaf
//
// While the feed is down (EventDown until the next EventReset), changes
// made elsewhere are not heard. An entry older than StaleBound is then
// re-read on access; if the re-read fails (the store is down too), the
// cached entry keeps being served, so cached keys keep working through a
// database outage. After a failed re-read, further re-reads wait
// refreshBackoff, so an outage does not add a lookup timeout to every Check.
//
// # Bounded cost
//
// An entry costs a few hundred bytes (docs/benchmarks.md has the figures
// and the benchmark): the row is compacted (columns the management API
// alone reads are dropped, repeated values shared), and nothing per
// response is kept on it. MaxKeys bounds the entries.
//
// A flood of random unknown keys is stopped before the store by a filter
// of known token hashes (a Bloom filter, about 2 bytes per key in the
// store), built from the store's token list (Lister) when the feed
// connects and after every reconnect (and every StaleBound while the feed
// is down), and kept current by the feed (EventChanged adds the key) and by
// our own invalidations. A key the
// filter does not have is unknown without a store query, except that up to
// UnknownRate such keys per second still go to the store: a key created on
// another replica a moment ago may not have reached the filter yet. So a
// valid key is never denied outside a flood, and a flood never reaches the
// store at more than UnknownRate. Until the filter is first built, every
// miss goes to the store. At most MaxLoads store loads run at once; a miss
// beyond that fails at once (ErrOverloaded; the Check fails closed).
//
// # Grace tokens
//
// A key found through a rotated-out token (grace period) is cached under
// the presented token's hash. A reverse index (active hash -> presented
// slots) makes an invalidation of the active key drop it too, and such an
// entry also lives at most the negative TTL.
//
// A key dropped by Purge (not by Invalidate) whose reload fails is served
// as it was cached, within its TTL: a purge of every key (a feed reconnect,
// a statement that changed too many keys to list) must not turn a slow
// store into a wave of fail-closed Checks. Invalidated keys fail closed.
package cache

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// Loader reads a key by hash for the data plane; store.Store satisfies it.
// It returns keys.ErrNotFound for an unknown key, and a key the caller owns
// (the cache compacts it in place).
type Loader interface {
	Lookup(ctx context.Context, hash string) (*keys.Key, error)
}

// Lister streams every token hash the store's Lookup can resolve;
// store.Store satisfies it.
type Lister interface {
	ListTokens(ctx context.Context, fn func(hash string) error) error
}

// Subscriber is a change feed; store.Store satisfies it.
type Subscriber interface {
	Subscribe(fn func(store.Event)) (unsubscribe func())
}

// ErrOverloaded: MaxLoads store loads were already running.
var ErrOverloaded = errors.New("cache: too many store loads in flight")

// Defaults for zero Config fields.
const (
	// DefaultMaxKeys fits the shipped 512 MiB memory limit with room
	// (docs/benchmarks.md: under 0.8 KB of heap per key).
	DefaultMaxKeys       = 100_000
	DefaultNegativeTTL   = 5 * time.Second
	DefaultSafetyTTL     = 5 * time.Minute
	DefaultLookupTimeout = 500 * time.Millisecond
	DefaultMaxLoads      = 64
	DefaultUnknownRate   = 20
	DefaultStaleBound    = 30 * time.Second
)

// refreshBackoff is how long a failed stale re-read holds off the next one.
const refreshBackoff = time.Second

// Config configures a Cache.
type Config struct {
	// Loader reads keys on a miss. Required.
	Loader Loader
	// Lister lists the known tokens for the unknown-key filter. nil means
	// no filter: every miss goes to the store (still bounded by MaxLoads).
	// The filter is (re)built on every EventReset from the attached feed.
	Lister Lister
	// MaxKeys bounds the number of cached keys. 0 means DefaultMaxKeys.
	MaxKeys int
	// NegativeTTL is how long an unknown key is remembered. 0 means DefaultNegativeTTL.
	NegativeTTL time.Duration
	// SafetyTTL is how long a known key is kept without an invalidation.
	// 0 means DefaultSafetyTTL.
	SafetyTTL time.Duration
	// LookupTimeout bounds one store lookup. 0 means DefaultLookupTimeout.
	LookupTimeout time.Duration
	// MaxLoads bounds the store loads in flight; a miss beyond it fails
	// with ErrOverloaded. 0 means DefaultMaxLoads.
	MaxLoads int
	// UnknownRate is how many keys per second the filter does not know may
	// still be looked up in the store (burst the same). 0 means
	// DefaultUnknownRate.
	UnknownRate float64
	// StaleBound is the age past which an entry is re-read on access while
	// the change feed is down. 0 means DefaultStaleBound.
	StaleBound time.Duration
	// Now is the clock. nil means time.Now.
	Now func() time.Time
	// Registerer receives the cache's metrics. nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives feed events. nil discards.
	Logger *slog.Logger
}

// Cache is the key cache. Create it with New; it is safe for concurrent use.
type Cache struct {
	rc       *ristretto.Cache[uint64, *Entry]
	loader   Loader
	lister   Lister
	negTTL   time.Duration
	ttl      time.Duration
	timeout  time.Duration
	staleNs  int64
	now      func() time.Time
	log      *slog.Logger
	gens     [genStripes]atomic.Uint64 // per hash stripe: bumped by invalidations of keys in it
	invs     atomic.Uint64             // bumped by every Invalidate (guards grace-token loads)
	epoch    atomic.Uint64             // bumped by every Purge
	graceMu  sync.Mutex
	graceIdx map[[32]byte]map[uint64]struct{} // active hash -> presented cache keys
	local    localSpend                       // metered spend not yet in the store (spend.go)

	flightMu sync.Mutex
	flights  map[flightKey]*flight
	sem      chan struct{} // one token per store load in flight

	feedDown    atomic.Bool
	refreshFail atomic.Int64 // unix ns of the last failed stale re-read

	filterMu sync.Mutex             // serializes adds with a rebuild's hand-over
	filter   atomic.Pointer[filter] // nil until first built
	pending  *[][32]byte            // adds seen while a rebuild lists (under filterMu)
	unknown  *bucket
	rebuildC chan struct{}
	stop     context.CancelFunc
	wg       sync.WaitGroup

	hits, misses, negHits, invalidations, purges, resets prometheus.Counter
	filtered, unknownReads, overloaded, staleServed      prometheus.Counter
	rebuilds, rebuildErrs                                prometheus.Counter
	lookups                                              prometheus.Histogram
	feedUp, filterKeys, filterBytes                      prometheus.Gauge
}

// New validates cfg and builds the cache.
func New(cfg Config) (*Cache, error) {
	if cfg.Loader == nil {
		return nil, errors.New("cache: Loader is required")
	}
	if cfg.MaxKeys < 0 || cfg.NegativeTTL < 0 || cfg.SafetyTTL < 0 || cfg.LookupTimeout < 0 ||
		cfg.MaxLoads < 0 || cfg.UnknownRate < 0 || cfg.StaleBound < 0 || math.IsNaN(cfg.UnknownRate) {
		return nil, errors.New("cache: sizes, rates and durations must not be negative")
	}
	c := &Cache{
		loader: cfg.Loader, lister: cfg.Lister, negTTL: cfg.NegativeTTL, ttl: cfg.SafetyTTL, timeout: cfg.LookupTimeout,
		now: cfg.Now, log: cfg.Logger, graceIdx: map[[32]byte]map[uint64]struct{}{},
		flights: map[flightKey]*flight{}, rebuildC: make(chan struct{}, 1),
	}
	maxKeys := cmp(cfg.MaxKeys, DefaultMaxKeys)
	c.sem = make(chan struct{}, cmp(cfg.MaxLoads, DefaultMaxLoads))
	rate := cfg.UnknownRate
	if rate == 0 {
		rate = DefaultUnknownRate
	}
	c.unknown = newBucket(rate, max(1, rate))
	c.staleNs = int64(cmp(cfg.StaleBound, DefaultStaleBound))
	c.negTTL = cmp(c.negTTL, DefaultNegativeTTL)
	c.ttl = cmp(c.ttl, DefaultSafetyTTL)
	c.timeout = cmp(c.timeout, DefaultLookupTimeout)
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *Entry]{
		NumCounters:        int64(maxKeys) * 10,
		MaxCost:            int64(maxKeys),
		BufferItems:        64,
		IgnoreInternalCost: true,
		// Keys are already uniform hashes: use their first 8 bytes as is.
		KeyToHash: func(k uint64) (uint64, uint64) { return k, 0 },
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c.rc = rc
	if err := c.metrics(cfg.Registerer); err != nil {
		rc.Close()
		return nil, err
	}
	if c.lister != nil {
		ctx, stop := context.WithCancel(context.Background())
		c.stop = stop
		c.wg.Add(1)
		go c.rebuilder(ctx)
	}
	return c, nil
}

func cmp[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

func (c *Cache) metrics(reg prometheus.Registerer) error {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	c.hits = counter("sidecar_cache_hits_total", "Key lookups answered from the cache.")
	c.misses = counter("sidecar_cache_misses_total", "Key lookups that went to the store.")
	c.negHits = counter("sidecar_cache_negative_hits_total", "Lookups of keys remembered as unknown.")
	c.invalidations = counter("sidecar_cache_invalidations_total", "Keys dropped by invalidation.")
	c.purges = counter("sidecar_cache_purges_total", "Whole-cache purges (change feed reconnects).")
	c.resets = counter("sidecar_feed_resets_total", "Change-feed (re)connections seen by the cache.")
	c.filtered = counter("sidecar_cache_filtered_total", "Unknown keys answered by the known-key filter without a store query.")
	c.unknownReads = counter("sidecar_cache_unknown_reads_total", "Store reads for keys the known-key filter did not have (budgeted by --cache-unknown-rate).")
	c.overloaded = counter("sidecar_cache_overloaded_total", "Misses refused because --cache-max-loads store loads were in flight.")
	c.staleServed = counter("sidecar_cache_stale_served_total", "Entries past the feed stale bound served because the store could not re-read them.")
	c.rebuilds = counter("sidecar_cache_filter_rebuilds_total", "Known-key filter rebuilds from the store.")
	c.rebuildErrs = counter("sidecar_cache_filter_rebuild_errors_total", "Known-key filter rebuilds that failed (retried).")
	c.lookups = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sidecar_store_lookup_seconds", Help: "Store lookups made on cache misses.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	})
	c.feedUp = gauge("sidecar_feed_connected", "1 while the change feed is connected.")
	c.filterKeys = gauge("sidecar_cache_filter_keys", "Token hashes in the known-key filter.")
	c.filterBytes = gauge("sidecar_cache_filter_bytes", "Memory of the known-key filter.")
	if reg == nil {
		return nil
	}
	for _, m := range []prometheus.Collector{c.hits, c.misses, c.negHits, c.invalidations, c.purges, c.resets,
		c.filtered, c.unknownReads, c.overloaded, c.staleServed, c.rebuilds, c.rebuildErrs, c.lookups,
		c.feedUp, c.filterKeys, c.filterBytes} {
		if err := reg.Register(m); err != nil {
			return fmt.Errorf("cache: register metrics: %w", err)
		}
	}
	return nil
}

// Close releases the cache's goroutines.
func (c *Cache) Close() {
	if c.stop != nil {
		c.stop()
		c.wg.Wait()
	}
	c.rc.Close()
}

func slot(h *[32]byte) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

// genStripes is how many generation counters the keys are spread over: an
// invalidation (or spend update) only discards loads in flight for keys of
// its own stripe, so a stream of events for some keys cannot keep others
// from being cached.
const genStripes = 1024

func (c *Cache) stripe(k uint64) *atomic.Uint64 { return &c.gens[k%genStripes] }

// loadGen is what a load records before it queries the store.
type loadGen struct{ stripe, invs, epoch uint64 }

func (c *Cache) current(k uint64) loadGen {
	return loadGen{c.stripe(k).Load(), c.invs.Load(), c.epoch.Load()}
}

// still reports whether nothing that concerns a load of slot k (graced:
// through a rotated token, whose active key is only known after the load)
// was invalidated since g.
func (c *Cache) still(g loadGen, k uint64, graced bool) bool {
	return c.stripe(k).Load() == g.stripe && c.epoch.Load() == g.epoch && (!graced || c.invs.Load() == g.invs)
}

// Get returns the entry for hash: (entry, nil) for a known key, (nil, nil)
// for an unknown one, (nil, err) when the store could not answer (not
// cached). A hit does not allocate.
func (c *Cache) Get(ctx context.Context, hash [32]byte) (*Entry, error) {
	now := c.now().UnixNano()
	e, ok := c.rc.Get(slot(&hash))
	if ok && e.hash == hash && e.epoch == c.epoch.Load() && now < e.until {
		if e.neg {
			c.negHits.Inc()
			return nil, nil
		}
		if c.feedDown.Load() && now-e.loaded > c.staleNs {
			return c.refresh(ctx, e, now)
		}
		c.hits.Inc()
		return e, nil
	}
	// A positive entry dropped only by a purge (the feed reconnected, or a
	// statement changed too many keys to list) is still the best answer
	// there is when its reload fails: a purge of every key must not turn
	// into a wave of fail-closed Checks while the store is slow to reload
	// them. Entries invalidated one by one (a block, a delete) are removed
	// from the cache, so they are never served this way.
	if ok && e.hash == hash && !e.neg && e.epoch != c.epoch.Load() && now < e.until {
		c.misses.Inc()
		fresh, err := c.load(ctx, hash)
		if err != nil && ctx.Err() == nil {
			c.staleServed.Inc()
			return e, nil
		}
		return fresh, err
	}
	if f := c.filter.Load(); f != nil && !f.has(&hash) {
		if !c.unknown.take(now) {
			c.filtered.Inc()
			return nil, nil
		}
		c.unknownReads.Inc()
	}
	c.misses.Inc()
	return c.load(ctx, hash)
}

// refresh re-reads a stale entry (the feed is down); when the store cannot
// answer it serves the entry it has.
func (c *Cache) refresh(ctx context.Context, e *Entry, now int64) (*Entry, error) {
	if now-c.refreshFail.Load() < int64(refreshBackoff) {
		c.staleServed.Inc()
		return e, nil
	}
	c.misses.Inc()
	fresh, err := c.load(ctx, e.hash)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		c.refreshFail.Store(now)
		c.staleServed.Inc()
		return e, nil
	}
	return fresh, nil
}

// flightKey names one shared load: a key in one generation of its stripe
// and of the Purge epoch. A Check that arrives after an invalidation sees
// a newer generation, so it never joins a load that began before it.
type flightKey struct {
	hash          [32]byte
	stripe, epoch uint64
}

type flight struct {
	done chan struct{}
	invs uint64
	e    *Entry
	err  error
}

func (c *Cache) load(ctx context.Context, hash [32]byte) (*Entry, error) {
	g := c.current(slot(&hash))
	fk := flightKey{hash, g.stripe, g.epoch}
	c.flightMu.Lock()
	f, joined := c.flights[fk]
	if joined {
		c.flightMu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// A grace-token result depends on every invalidation (its active
		// key is only known after the load): one since the load began
		// means it is not for us, so we load on our own.
		if f.err != nil || !f.e.graced() || f.invs == g.invs {
			return result(f.e, f.err)
		}
		c.flightMu.Lock()
	}
	select {
	case c.sem <- struct{}{}:
	default:
		c.flightMu.Unlock()
		c.overloaded.Inc()
		return nil, ErrOverloaded
	}
	f = &flight{done: make(chan struct{}), invs: g.invs}
	if !joined {
		c.flights[fk] = f
	}
	c.flightMu.Unlock()
	f.e, f.err = c.fetch(ctx, hash, g)
	<-c.sem
	if !joined {
		c.flightMu.Lock()
		delete(c.flights, fk)
		c.flightMu.Unlock()
	}
	close(f.done)
	return result(f.e, f.err)
}

func result(e *Entry, err error) (*Entry, error) {
	if err != nil || e.neg {
		return nil, err
	}
	return e, nil
}

func (e *Entry) graced() bool { return !e.GraceUntil.IsZero() }

// fetch reads one key from the store and caches the result unless an
// invalidation since g concerns it.
func (c *Cache) fetch(ctx context.Context, hash [32]byte, g loadGen) (*Entry, error) {
	hexHash := hex.EncodeToString(hash[:])
	// One caller's cancellation must not fail the others waiting on this
	// load; the timeout bounds it for all of them.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	began := c.now()
	start := time.Now()
	k, err := c.loader.Lookup(lctx, hexHash)
	c.lookups.Observe(time.Since(start).Seconds())
	now := c.now()
	var e *Entry
	switch {
	case errors.Is(err, keys.ErrNotFound):
		e = &Entry{hash: hash, neg: true, until: now.Add(c.negTTL).UnixNano(), epoch: g.epoch}
	case err != nil:
		return nil, fmt.Errorf("lookup %s: %w", keys.Redact(hexHash), err)
	default:
		graced := k.GraceUntil != nil
		var active [32]byte
		if graced {
			active, _ = parseHash(k.Token)
		}
		e = newEntry(hash, k, began, now.Add(c.ttl), g.epoch)
		// Spend metered here and not yet flushed stays counted.
		e.spend.Store(math.Float64bits(k.Spend + c.local.get(hash)))
		if graced { // a rotated-out token: keep it briefly
			e.until = min(e.until, now.Add(c.negTTL).UnixNano())
		}
		c.addKnown(&hash) // the filter may not have heard of it yet
		c.set(e, g, graced, active)
		return e, nil
	}
	c.set(e, g, false, [32]byte{})
	return e, nil
}

// set caches e unless an invalidation that concerns it happened since the
// load began (g), re-checking after the Set so one racing the Set itself
// is not undone either.
func (c *Cache) set(e *Entry, g loadGen, graced bool, active [32]byte) {
	k := slot(&e.hash)
	if !c.still(g, k, graced) {
		return
	}
	if graced {
		c.graceMu.Lock()
		m := c.graceIdx[active]
		if m == nil {
			m = map[uint64]struct{}{}
			c.graceIdx[active] = m
		}
		m[k] = struct{}{}
		c.graceMu.Unlock()
	}
	if e.neg {
		c.rc.SetWithTTL(k, e, 1, c.negTTL)
	} else {
		c.rc.Set(k, e, 1) // expiry is checked by Get (until): no TTL bookkeeping per key
	}
	if !c.still(g, k, graced) {
		c.rc.Del(k)
	}
}

func parseHash(s string) ([32]byte, error) {
	var h [32]byte
	if len(s) != 64 {
		return h, errors.New("not a 64-hex hash")
	}
	_, err := hex.Decode(h[:], []byte(s))
	return h, err
}

// Invalidate drops the keys with these hex hashes (and tokens rotated out
// of them that are still in their grace period), and adds them to the
// known-key filter (an invalidation may be a create). Invalid hashes are
// ignored.
func (c *Cache) Invalidate(hashes ...string) {
	c.invs.Add(1)
	for _, s := range hashes {
		h, err := parseHash(s)
		if err != nil {
			continue
		}
		c.addKnown(&h)
		k := slot(&h)
		c.stripe(k).Add(1)
		c.rc.Del(k)
		c.invalidations.Inc()
		c.dropGraced(h)
	}
}

// dropGraced drops the entries cached for tokens rotated out of active.
func (c *Cache) dropGraced(active [32]byte) {
	c.graceMu.Lock()
	defer c.graceMu.Unlock()
	for k := range c.graceIdx[active] {
		c.stripe(k).Add(1)
		c.rc.Del(k)
	}
	delete(c.graceIdx, active)
}

// Purge drops every cached key, positive and negative.
func (c *Cache) Purge() {
	c.epoch.Add(1)
	c.graceMu.Lock()
	clear(c.graceIdx)
	c.graceMu.Unlock()
	c.purges.Inc()
}

// SetSpend updates the cached spend of a key in place (a spend-only change:
// no reload). A key not cached is left alone: its next load reads the
// spend. Loads of the key in flight are fenced: they may have read the old
// spend, so their result is not cached, and a result whose cache write was
// already under way is applied before the update (so the update reaches it).
func (c *Cache) SetSpend(hash string, spend float64) {
	h, err := parseHash(hash)
	if err != nil {
		return
	}
	k := slot(&h)
	c.dropGraced(h) // rare: reload those rather than track their spend
	c.stripe(k).Add(1)
	c.rc.Wait()       // a Set that passed its generation check before the bump has landed
	c.local.mu.Lock() // spend metered here and not yet flushed stays counted
	defer c.local.mu.Unlock()
	spend += c.local.m[h].pending()
	if e, ok := c.rc.Get(k); ok && e.hash == h && !e.neg {
		e.spend.Store(math.Float64bits(spend))
	}
}

// Attach follows a change feed: EventChanged invalidates (and adds the key
// to the known-key filter), EventSpend updates the spend, EventReset purges
// (notifications may have been lost while the feed was down) and rebuilds
// the filter, EventDown marks the feed down: cached keys keep being served,
// re-read once older than StaleBound. It returns the function that detaches.
func (c *Cache) Attach(s Subscriber) (detach func()) {
	return s.Subscribe(func(ev store.Event) {
		switch ev.Kind {
		case store.EventChanged:
			c.Invalidate(ev.Token)
		case store.EventSpend:
			c.SetSpend(ev.Token, ev.Spend)
		case store.EventBudgetReset:
			c.ApplyBudgetReset(ev.Token, ev.Spend, ev.BudgetResetAt)
		case store.EventReset:
			c.Purge()
			c.feedDown.Store(false)
			c.resets.Inc()
			c.feedUp.Set(1)
			c.requestRebuild()
		case store.EventDown:
			c.feedDown.Store(true)
			c.feedUp.Set(0)
			c.log.Warn("change feed down: serving cached keys, re-reading those older than the stale bound")
		}
	})
}

// Wait blocks until pending Sets are applied (tests only: correctness never
// depends on a Set landing).
func (c *Cache) Wait() { c.rc.Wait() }
