// Package cache is the ext_authz Check's key cache: a bounded ristretto
// cache of keys by hash, in front of the store.
//
// A hit costs one map lookup and no allocation. A miss goes to the store
// once however many Checks want the same key at the same time
// (singleflight), bounded by a lookup timeout; an unknown key is remembered
// as unknown for a short negative TTL, so a flood of bad keys cannot reach
// the database more than once per distinct key per TTL. A store error is
// never cached: the Check fails closed and asks again next time.
//
// Invalidation: Invalidate drops keys at once (our own writes), Attach
// follows the store's change feed (writes made anywhere), and Purge drops
// everything (the feed reconnected, so notifications may have been lost).
// Generation counters (one per stripe of the hash space, plus the Purge
// epoch) make sure an invalidation that races a load is never undone by the
// load's result, without events for some keys discarding the loads of
// others. A spend-only change updates the cached spend
// in place. Positive entries also expire after a safety TTL, which only
// matters should a notification ever be lost.
//
// A key found through a rotated-out token (grace period) is cached under
// the presented token's hash. A reverse index (active hash -> presented
// slots) makes an invalidation of the active key drop it too, and such an
// entry also lives at most the negative TTL.
package cache

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/modelbudget"
	"github.com/virtualkeys/sidecar/internal/store"
)

// Loader reads a key by hash for the data plane; store.Store satisfies it.
// It returns keys.ErrNotFound for an unknown key.
type Loader interface {
	Lookup(ctx context.Context, hash string) (*keys.Key, error)
}

// Subscriber is a change feed; store.Store satisfies it.
type Subscriber interface {
	Subscribe(fn func(store.Event)) (unsubscribe func())
}

// Defaults for zero Config fields.
const (
	DefaultMaxKeys       = 100_000
	DefaultNegativeTTL   = 5 * time.Second
	DefaultSafetyTTL     = 5 * time.Minute
	DefaultLookupTimeout = 500 * time.Millisecond
)

// Config configures a Cache.
type Config struct {
	// Loader reads keys on a miss. Required.
	Loader Loader
	// MaxKeys bounds the number of cached keys. 0 means DefaultMaxKeys.
	MaxKeys int
	// NegativeTTL is how long an unknown key is remembered. 0 means DefaultNegativeTTL.
	NegativeTTL time.Duration
	// SafetyTTL is how long a known key is kept without an invalidation.
	// 0 means DefaultSafetyTTL.
	SafetyTTL time.Duration
	// LookupTimeout bounds one store lookup. 0 means DefaultLookupTimeout.
	LookupTimeout time.Duration
	// Now is the clock. nil means time.Now.
	Now func() time.Time
	// Registerer receives the cache's metrics. nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives feed events. nil discards.
	Logger *slog.Logger
}

// Entry is one cached key, with what the Check needs precomputed. A
// negative entry (unknown key) is never returned by Get.
type Entry struct {
	hash  [32]byte
	neg   bool
	until time.Time // entry expiry (negative TTL, safety TTL, grace)
	epoch uint64    // Purge generation it was loaded in

	// Key is the stored row. Treat it as read-only: it is shared.
	Key *keys.Key
	// Hash is the lowercase hex hash the key was presented as.
	Hash string
	// Blocked, Expires (zero = never), GraceUntil (zero = not a rotated
	// token), BudgetResetAt (zero = none): from the row.
	Blocked       bool
	Expires       time.Time
	GraceUntil    time.Time
	BudgetResetAt time.Time
	// MaxBudget is the budget (HasBudget false = unlimited);
	// TempIncrease raises it until TempExpiry (metadata temp_budget_*).
	HasBudget    bool
	MaxBudget    float64
	TempIncrease float64
	TempExpiry   time.Time
	// ModelBudgets is the usable model_max_budget (nil = none).
	ModelBudgets []modelbudget.Limit

	spend atomic.Uint64 // float64 bits; SetSpend updates it in place
	memo  atomic.Value  // for the consumer's per-key renderings
}

// Spend is the key's current spend as last seen.
func (e *Entry) Spend() float64 { return math.Float64frombits(e.spend.Load()) }

// Memo is a slot where a consumer may keep something derived from this
// entry (pre-rendered response parts); it lives and dies with the entry.
func (e *Entry) Memo() *atomic.Value { return &e.memo }

// Budget is the effective max budget at now (temp increase included).
func (e *Entry) Budget(now time.Time) float64 {
	if e.TempIncrease != 0 && now.Before(e.TempExpiry) {
		return e.MaxBudget + e.TempIncrease
	}
	return e.MaxBudget
}

// Cache is the key cache. Create it with New; it is safe for concurrent use.
type Cache struct {
	rc       *ristretto.Cache[uint64, *Entry]
	loader   Loader
	sf       singleflight.Group
	negTTL   time.Duration
	ttl      time.Duration
	timeout  time.Duration
	now      func() time.Time
	log      *slog.Logger
	gens     [genStripes]atomic.Uint64 // per hash stripe: bumped by invalidations of keys in it
	invs     atomic.Uint64             // bumped by every Invalidate (guards grace-token loads)
	epoch    atomic.Uint64             // bumped by every Purge
	graceMu  sync.Mutex
	graceIdx map[[32]byte]map[uint64]struct{} // active hash -> presented cache keys
	local    localSpend                       // metered spend not yet in the store (spend.go)

	hits, misses, negHits, invalidations, purges, resets prometheus.Counter
	lookups                                              prometheus.Histogram
	feedUp                                               prometheus.Gauge
}

// New validates cfg and builds the cache.
func New(cfg Config) (*Cache, error) {
	if cfg.Loader == nil {
		return nil, errors.New("cache: Loader is required")
	}
	if cfg.MaxKeys < 0 || cfg.NegativeTTL < 0 || cfg.SafetyTTL < 0 || cfg.LookupTimeout < 0 {
		return nil, errors.New("cache: sizes and durations must not be negative")
	}
	c := &Cache{
		loader: cfg.Loader, negTTL: cfg.NegativeTTL, ttl: cfg.SafetyTTL, timeout: cfg.LookupTimeout,
		now: cfg.Now, log: cfg.Logger, graceIdx: map[[32]byte]map[uint64]struct{}{},
	}
	max := cfg.MaxKeys
	if max == 0 {
		max = DefaultMaxKeys
	}
	if c.negTTL == 0 {
		c.negTTL = DefaultNegativeTTL
	}
	if c.ttl == 0 {
		c.ttl = DefaultSafetyTTL
	}
	if c.timeout == 0 {
		c.timeout = DefaultLookupTimeout
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *Entry]{
		NumCounters:        int64(max) * 10,
		MaxCost:            int64(max),
		BufferItems:        64,
		IgnoreInternalCost: true,
		// Keys are already uniform hashes: use their first 8 bytes as is.
		KeyToHash: func(k uint64) (uint64, uint64) { return k, 0 },
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c.rc = rc
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	c.hits = counter("sidecar_cache_hits_total", "Key lookups answered from the cache.")
	c.misses = counter("sidecar_cache_misses_total", "Key lookups that went to the store.")
	c.negHits = counter("sidecar_cache_negative_hits_total", "Lookups of keys remembered as unknown.")
	c.invalidations = counter("sidecar_cache_invalidations_total", "Keys dropped by invalidation.")
	c.purges = counter("sidecar_cache_purges_total", "Whole-cache purges (change feed reconnects).")
	c.resets = counter("sidecar_feed_resets_total", "Change-feed (re)connections seen by the cache.")
	c.lookups = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sidecar_store_lookup_seconds", Help: "Store lookups made on cache misses.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	})
	c.feedUp = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sidecar_feed_connected", Help: "1 while the change feed is connected."})
	if cfg.Registerer != nil {
		for _, m := range []prometheus.Collector{c.hits, c.misses, c.negHits, c.invalidations, c.purges, c.resets, c.lookups, c.feedUp} {
			if err := cfg.Registerer.Register(m); err != nil {
				rc.Close()
				return nil, fmt.Errorf("cache: register metrics: %w", err)
			}
		}
	}
	return c, nil
}

// Close releases the cache's goroutines.
func (c *Cache) Close() { c.rc.Close() }

func slot(h *[32]byte) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

// genStripes is how many generation counters the keys are spread over: an
// invalidation only discards loads in flight for keys of its own stripe,
// so a stream of events for some keys cannot keep others from being cached.
const genStripes = 64

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
	if e, ok := c.rc.Get(slot(&hash)); ok && e.hash == hash && e.epoch == c.epoch.Load() && c.now().Before(e.until) {
		if e.neg {
			c.negHits.Inc()
			return nil, nil
		}
		c.hits.Inc()
		return e, nil
	}
	c.misses.Inc()
	return c.load(ctx, hash)
}

func (c *Cache) load(ctx context.Context, hash [32]byte) (*Entry, error) {
	hexHash := hex.EncodeToString(hash[:])
	v, err, _ := c.sf.Do(hexHash, func() (any, error) {
		gen := c.current(slot(&hash))
		epoch := gen.epoch
		// One caller's cancellation must not fail the others waiting on
		// this load; the timeout bounds it for all of them.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer cancel()
		start := time.Now()
		k, err := c.loader.Lookup(lctx, hexHash)
		c.lookups.Observe(time.Since(start).Seconds())
		now := c.now()
		var e *Entry
		switch {
		case errors.Is(err, keys.ErrNotFound):
			e = &Entry{hash: hash, neg: true, until: now.Add(c.negTTL), epoch: epoch, Hash: hexHash}
		case err != nil:
			return nil, fmt.Errorf("lookup %s: %w", keys.Redact(hexHash), err)
		default:
			e = newEntry(hash, hexHash, k, now.Add(c.ttl), epoch)
			// Spend metered here and not yet flushed stays counted.
			e.spend.Store(math.Float64bits(k.Spend + c.local.get(hash)))
			if !e.GraceUntil.IsZero() { // a rotated-out token: keep it briefly
				e.until = minTime(e.until, now.Add(c.negTTL))
			}
		}
		c.set(e, gen)
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	e := v.(*Entry)
	if e.neg {
		return nil, nil
	}
	return e, nil
}

// set caches e unless an invalidation that concerns it happened since the
// load began (gen), re-checking after the Set so one racing the Set itself
// is not undone either.
func (c *Cache) set(e *Entry, gen loadGen) {
	k := slot(&e.hash)
	graced := e.Key != nil && e.Key.Token != e.Hash
	if !c.still(gen, k, graced) {
		return
	}
	if graced {
		active, err := parseHash(e.Key.Token)
		if err == nil {
			c.graceMu.Lock()
			m := c.graceIdx[active]
			if m == nil {
				m = map[uint64]struct{}{}
				c.graceIdx[active] = m
			}
			m[k] = struct{}{}
			c.graceMu.Unlock()
		}
	}
	c.rc.SetWithTTL(k, e, 1, e.until.Sub(c.now()))
	if !c.still(gen, k, graced) {
		c.rc.Del(k)
	}
}

func newEntry(hash [32]byte, hexHash string, k *keys.Key, until time.Time, epoch uint64) *Entry {
	e := &Entry{hash: hash, Key: k, Hash: hexHash, until: until, epoch: epoch, Blocked: k.IsBlocked()}
	if k.Expires != nil {
		e.Expires = *k.Expires
	}
	if k.GraceUntil != nil {
		e.GraceUntil = *k.GraceUntil
	}
	if k.BudgetResetAt != nil {
		e.BudgetResetAt = *k.BudgetResetAt
	}
	if k.MaxBudget != nil {
		e.HasBudget, e.MaxBudget = true, *k.MaxBudget
	}
	if inc, ok := number(k.Metadata["temp_budget_increase"]); ok {
		if s, ok := k.Metadata["temp_budget_expiry"].(string); ok {
			if t, err := parseISOTime(s); err == nil {
				e.TempIncrease, e.TempExpiry = inc, t
			}
		}
	}
	e.ModelBudgets = modelbudget.Parse(k.ModelMaxBudget)
	e.spend.Store(math.Float64bits(k.Spend))
	return e
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case json.Number: // the stores decode JSON columns losslessly
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// parseISOTime reads LiteLLM's temp_budget_expiry: an ISO 8601 time with or
// without zone (naive times are UTC) or a date.
func parseISOTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("not an ISO time: %q", s)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
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
// of them that are still in their grace period). Invalid hashes are ignored.
func (c *Cache) Invalidate(hashes ...string) {
	c.invs.Add(1)
	for _, s := range hashes {
		h, err := parseHash(s)
		if err != nil {
			continue
		}
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
// no reload). A key not cached is left alone: its next load reads the spend.
func (c *Cache) SetSpend(hash string, spend float64) {
	h, err := parseHash(hash)
	if err != nil {
		return
	}
	k := slot(&h)
	c.dropGraced(h)   // rare: reload those rather than track their spend
	c.local.mu.Lock() // spend metered here and not yet flushed stays counted
	defer c.local.mu.Unlock()
	spend += c.local.m[h].pending()
	if e, ok := c.rc.Get(k); ok && e.hash == h && !e.neg && e.epoch == c.epoch.Load() && c.now().Before(e.until) {
		e.spend.Store(math.Float64bits(spend))
		return
	}
	c.stripe(k).Add(1) // a load in flight may have read the old spend: don't cache it
}

// Attach follows a change feed: EventChanged invalidates, EventSpend
// updates the spend, EventReset purges (notifications may have been lost
// while the feed was down), EventDown only marks the feed down: cached
// keys keep being served. It returns the function that detaches.
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
			c.resets.Inc()
			c.feedUp.Set(1)
		case store.EventDown:
			c.feedUp.Set(0)
			c.log.Warn("change feed down: serving cached keys until it reconnects")
		}
	})
}

// Wait blocks until pending Sets are applied (tests only: correctness never
// depends on a Set landing).
func (c *Cache) Wait() { c.rc.Wait() }
