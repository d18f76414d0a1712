package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// OrgLoader reads the objects keys belong to; store.Org satisfies it. Each
// returns keys.ErrNotFound for a row that does not exist.
type OrgLoader interface {
	GetTeam(ctx context.Context, id string) (*keys.Team, error)
	GetUser(ctx context.Context, id string) (*keys.User, error)
	GetMembership(ctx context.Context, teamID, userID string) (*keys.Membership, error)
}

// OrgConfig configures an OrgCache. Zero fields mean the Config defaults.
type OrgConfig struct {
	Loader        OrgLoader // required
	MaxEntries    int       // 0 = DefaultMaxKeys
	NegativeTTL   time.Duration
	SafetyTTL     time.Duration
	LookupTimeout time.Duration
	Now           func() time.Time
	Registerer    prometheus.Registerer
	Logger        *slog.Logger
}

// Budgeted is what the Check needs of a team, user or membership: its
// budget and its current spend.
type Budgeted struct {
	HasBudget     bool // false = unlimited
	MaxBudget     float64
	BudgetResetAt time.Time // zero = none

	spend atomic.Uint64 // float64 bits; updated in place by spend events
}

// Spend is the current spend as last seen.
func (b *Budgeted) Spend() float64 { return math.Float64frombits(b.spend.Load()) }

// SpendAt is the spend that counts at now: 0 once budget_reset_at has
// passed (the reset is due even if the job has not written it yet).
func (b *Budgeted) SpendAt(now time.Time) float64 {
	if !b.BudgetResetAt.IsZero() && !now.Before(b.BudgetResetAt) {
		return 0
	}
	return b.Spend()
}

func (b *Budgeted) set(max *float64, resetAt *time.Time, spend float64) {
	if max != nil {
		b.HasBudget, b.MaxBudget = true, *max
	}
	if resetAt != nil {
		b.BudgetResetAt = *resetAt
	}
	b.spend.Store(math.Float64bits(spend))
}

// Team is a cached LiteLLM_TeamTable row. Treat it as read-only.
type Team struct {
	Row     *keys.Team
	Blocked bool
	Models  []string
	Budgeted
}

// User is a cached LiteLLM_UserTable row. Treat it as read-only.
type User struct {
	Row    *keys.User
	Models []string
	Budgeted
}

// Member is a cached LiteLLM_TeamMembership row with its budget.
type Member struct {
	Row           *keys.Membership
	AllowedModels []string // the member's model scope (empty = none)
	Budgeted
}

type orgKind uint8

const (
	kindTeam orgKind = iota + 1
	kindUser
	kindMember
)

type orgEntry struct {
	kind    orgKind
	a, b    string
	neg     bool
	until   time.Time
	epoch   uint64
	bepoch  uint64 // budget epoch (members only)
	gen     uint64 // its slot's generation when its load began
	team    *Team
	user    *User
	member  *Member
	budgets *Budgeted
}

// OrgCache caches teams, users and memberships for the Check, beside the
// key cache and with its guarantees: a hit makes no store query and does
// not allocate; concurrent misses for one object make one query
// (singleflight); an unknown object is remembered briefly; a store error is
// never cached (the Check fails closed); the change feed invalidates
// (Attach), spend-only changes update in place, a feed reset purges, and
// generation counters keep an invalidation that races a load from being
// undone.
type OrgCache struct {
	rc      *ristretto.Cache[uint64, *orgEntry]
	loader  OrgLoader
	seed    maphash.Seed
	sf      singleflight.Group
	negTTL  time.Duration
	ttl     time.Duration
	timeout time.Duration
	now     func() time.Time
	log     *slog.Logger
	gens    [genStripes]atomic.Uint64 // bumped by an invalidation
	// Spend events: for a cached object (its views are rebuilt), and for
	// one not cached (a load in flight is not cached, and a view holding an
	// evicted copy is rebuilt).
	spends, missSpends [genStripes]atomic.Uint64
	epoch              atomic.Uint64 // bumped by Purge
	bepoch             atomic.Uint64 // bumped by a budget-table change: drops every membership

	hits, misses, negHits prometheus.Counter
}

// NewOrg validates cfg and builds the cache.
func NewOrg(cfg OrgConfig) (*OrgCache, error) {
	if cfg.Loader == nil {
		return nil, errors.New("cache: OrgConfig.Loader is required")
	}
	if cfg.MaxEntries < 0 || cfg.NegativeTTL < 0 || cfg.SafetyTTL < 0 || cfg.LookupTimeout < 0 {
		return nil, errors.New("cache: sizes and durations must not be negative")
	}
	c := &OrgCache{loader: cfg.Loader, seed: maphash.MakeSeed(), negTTL: cfg.NegativeTTL, ttl: cfg.SafetyTTL,
		timeout: cfg.LookupTimeout, now: cfg.Now, log: cfg.Logger}
	max := cfg.MaxEntries
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
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *orgEntry]{
		NumCounters: int64(max) * 10, MaxCost: int64(max), BufferItems: 64, IgnoreInternalCost: true,
		KeyToHash: func(k uint64) (uint64, uint64) { return k, 0 },
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c.rc = rc
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	c.hits = counter("sidecar_org_cache_hits_total", "Team, user and membership lookups answered from the cache (not counting Checks answered from a key's remembered view).")
	c.misses = counter("sidecar_org_cache_misses_total", "Team, user and membership lookups that went to the store.")
	c.negHits = counter("sidecar_org_cache_negative_hits_total", "Lookups of teams, users or memberships remembered as absent.")
	if cfg.Registerer != nil {
		for _, m := range []prometheus.Collector{c.hits, c.misses, c.negHits} {
			if err := cfg.Registerer.Register(m); err != nil {
				rc.Close()
				return nil, fmt.Errorf("cache: register metrics: %w", err)
			}
		}
	}
	return c, nil
}

// Close releases the cache's goroutines.
func (c *OrgCache) Close() { c.rc.Close() }

// slot hashes an object's identity; entries carry the identity, so a
// collision is a miss, never a wrong answer.
func (c *OrgCache) slot(kind orgKind, a, b string) uint64 {
	h := maphash.String(c.seed, a)
	if kind == kindMember {
		h = h*0x9e3779b97f4a7c15 ^ maphash.String(c.seed, b)
	}
	return h ^ uint64(kind)<<56
}

// get returns a live cached entry for (kind, a, b) at now, or nil.
// Entries are stored without a ristretto TTL and expire here, against the
// caller's clock reading, so a hit reads no clock.
func (c *OrgCache) get(k uint64, kind orgKind, a, b string, now time.Time) *orgEntry {
	e, ok := c.rc.Get(k)
	if !ok || e.kind != kind || e.a != a || e.b != b || e.epoch != c.epoch.Load() ||
		(kind == kindMember && e.bepoch != c.bepoch.Load()) || !now.Before(e.until) {
		return nil
	}
	return e
}

// OrgView is what the Check reads of a key's organisation: the key's team,
// its user and the user's membership in the team; nil when the key names
// none or the row does not exist.
type OrgView struct {
	Team   *Team
	User   *User
	Member *Member
}

// orgMemo is a key entry's remembered OrgView with what it was built
// from: the generation of each object's slot and the cache epochs when the
// lookups began, and the earliest expiry of the objects. Any invalidation,
// spend event, purge or expiry since makes it stale.
type orgMemo struct {
	view                 OrgView
	epoch, bepoch        uint64
	n                    int
	slots                [3]uint64
	gens, spends, misses [3]uint64
	until                time.Time
}

func (c *OrgCache) memoValid(m *orgMemo, now time.Time) bool {
	if m.epoch != c.epoch.Load() || m.bepoch != c.bepoch.Load() || !now.Before(m.until) {
		return false
	}
	for i := range m.n {
		j := m.slots[i] % genStripes
		if c.gens[j].Load() != m.gens[i] || c.spends[j].Load() != m.spends[i] || c.missSpends[j].Load() != m.misses[i] {
			return false
		}
	}
	return true
}

// Resolve returns key entry e's team, user and membership as of now, with
// the lookups LiteLLM's checks need: the team; the membership when the
// team exists; the user when the key has no team row, or when its
// membership has a budget (the member budget check reads the user). The
// answer is remembered on the entry until any of those objects changes
// (invalidation, spend event, purge) or expires, so a hit costs a few
// atomic loads instead of three cache lookups, and allocates nothing.
func (c *OrgCache) Resolve(ctx context.Context, e *Entry, now time.Time) (OrgView, error) {
	if m := e.org.Load(); m != nil && c.memoValid(m, now) {
		return m.view, nil
	}
	m := &orgMemo{epoch: c.epoch.Load(), bepoch: c.bepoch.Load(), until: now.Add(c.ttl)}
	keep := true // false: an object predates an invalidation; answer, but do not remember
	look := func(kind orgKind, a, b string) (*orgEntry, error) {
		k := c.slot(kind, a, b)
		i := m.n
		m.n++
		// generations before the lookup: a change during it shows
		j := k % genStripes
		m.slots[i], m.gens[i], m.spends[i], m.misses[i] = k, c.gens[j].Load(), c.spends[j].Load(), c.missSpends[j].Load()
		oe, err := c.entryFor(ctx, k, kind, a, b, now)
		if err != nil {
			return nil, err
		}
		// An entry whose load began before the slot's last invalidation (a
		// stale fallback, or a stale load ristretto has not yet dropped) is
		// used for this Check only, as Team/User/Member would.
		if oe.gen != m.gens[i] {
			keep = false
		}
		if oe.until.Before(m.until) {
			m.until = oe.until
		}
		if oe.neg {
			return nil, nil
		}
		return oe, nil
	}
	var teamID, userID string
	if t := e.Key.TeamID; t != nil {
		teamID = *t
	}
	if u := e.Key.UserID; u != nil {
		userID = *u
	}
	if teamID != "" {
		te, err := look(kindTeam, teamID, "")
		if err != nil {
			return OrgView{}, err
		}
		if te != nil {
			m.view.Team = te.team
		}
	}
	if userID != "" {
		if m.view.Team != nil {
			me, err := look(kindMember, teamID, userID)
			if err != nil {
				return OrgView{}, err
			}
			if me != nil {
				m.view.Member = me.member
			}
		}
		if m.view.Team == nil || (m.view.Member != nil && m.view.Member.HasBudget) {
			ue, err := look(kindUser, userID, "")
			if err != nil {
				return OrgView{}, err
			}
			if ue != nil {
				m.view.User = ue.user
			}
		}
	}
	if keep {
		e.org.Store(m)
	}
	return m.view, nil
}

// Team returns the cached team as of now (the caller's clock reading, so
// one Check reads the clock once): (nil, nil) when no such team exists,
// (nil, err) when the store could not answer.
func (c *OrgCache) Team(ctx context.Context, id string, now time.Time) (*Team, error) {
	e, err := c.lookup(ctx, kindTeam, id, "", now)
	if e == nil || err != nil {
		return nil, err
	}
	return e.team, nil
}

// User returns the cached user, like Team.
func (c *OrgCache) User(ctx context.Context, id string, now time.Time) (*User, error) {
	e, err := c.lookup(ctx, kindUser, id, "", now)
	if e == nil || err != nil {
		return nil, err
	}
	return e.user, nil
}

// Member returns the cached membership of user in team, like Team.
func (c *OrgCache) Member(ctx context.Context, teamID, userID string, now time.Time) (*Member, error) {
	e, err := c.lookup(ctx, kindMember, teamID, userID, now)
	if e == nil || err != nil {
		return nil, err
	}
	return e.member, nil
}

func (c *OrgCache) lookup(ctx context.Context, kind orgKind, a, b string, now time.Time) (*orgEntry, error) {
	e, err := c.entryFor(ctx, c.slot(kind, a, b), kind, a, b, now)
	if e == nil || err != nil || e.neg {
		return nil, err
	}
	return e, nil
}

// entryFor returns the entry for (kind, a, b) in slot k, negative entries
// included (nil only with an error): the cached one, else one loaded from
// the store, else, when the store fails, the last one known (stale).
func (c *OrgCache) entryFor(ctx context.Context, k uint64, kind orgKind, a, b string, now time.Time) (*orgEntry, error) {
	if e := c.get(k, kind, a, b, now); e != nil {
		if e.neg {
			c.negHits.Inc()
		} else {
			c.hits.Inc()
		}
		return e, nil
	}
	c.misses.Inc()
	// An entry past its TTL (not invalidated: same epochs) is kept as a
	// fallback: when the store cannot answer, the Check goes on with what it
	// last knew of this team or user, as it does with cached keys during a
	// database outage, instead of failing closed on every key with a team.
	var stale *orgEntry
	if e, ok := c.rc.Get(k); ok && e.kind == kind && e.a == a && e.b == b && e.epoch == c.epoch.Load() &&
		(kind != kindMember || e.bepoch == c.bepoch.Load()) {
		stale = e
	}
	sfKey := string(rune('0'+kind)) + a + "\x00" + b
	v, err, _ := c.sf.Do(sfKey, func() (any, error) {
		gen, epoch, bepoch := c.stripe(k).Load(), c.epoch.Load(), c.bepoch.Load()
		missed := c.missSpends[k%genStripes].Load()
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer cancel()
		e := &orgEntry{kind: kind, a: a, b: b, epoch: epoch, bepoch: bepoch, gen: gen}
		var err error
		switch kind {
		case kindTeam:
			var t *keys.Team
			if t, err = c.loader.GetTeam(lctx, a); err == nil {
				e.team = &Team{Row: t, Blocked: t.Blocked, Models: t.Models}
				e.team.set(t.MaxBudget, t.BudgetResetAt, t.Spend)
				e.budgets = &e.team.Budgeted
			}
		case kindUser:
			var u *keys.User
			if u, err = c.loader.GetUser(lctx, a); err == nil {
				e.user = &User{Row: u, Models: u.Models}
				e.user.set(u.MaxBudget, u.BudgetResetAt, u.Spend)
				e.budgets = &e.user.Budgeted
			}
		case kindMember:
			var m *keys.Membership
			if m, err = c.loader.GetMembership(lctx, a, b); err == nil {
				e.member = &Member{Row: m}
				var max *float64
				var reset *time.Time
				if m.Budget != nil {
					max, reset, e.member.AllowedModels = m.Budget.MaxBudget, m.Budget.BudgetResetAt, m.Budget.AllowedModels
				}
				e.member.set(max, reset, m.Spend)
				e.budgets = &e.member.Budgeted
			}
		}
		now := c.now()
		switch {
		case errors.Is(err, keys.ErrNotFound):
			e.neg, e.until = true, now.Add(c.negTTL)
		case err != nil:
			return nil, fmt.Errorf("load %s: %w", sfKey[1:], err)
		default:
			e.until = now.Add(c.ttl)
		}
		still := func() bool {
			return c.stripe(k).Load() == gen && c.missSpends[k%genStripes].Load() == missed &&
				c.epoch.Load() == epoch && c.bepoch.Load() == bepoch
		}
		if still() {
			c.rc.Set(k, e, 1)
			if !still() {
				c.rc.Del(k)
			}
		}
		return e, nil
	})
	if err != nil {
		if stale != nil && ctx.Err() == nil {
			return stale, nil
		}
		return nil, err
	}
	return v.(*orgEntry), nil
}

func (c *OrgCache) stripe(k uint64) *atomic.Uint64 { return &c.gens[k%genStripes] }

func (c *OrgCache) drop(kind orgKind, a, b string) {
	k := c.slot(kind, a, b)
	c.stripe(k).Add(1)
	c.rc.Del(k)
}

// InvalidateTeam drops a team (this replica's own writes; others learn
// through the feed).
func (c *OrgCache) InvalidateTeam(id string) { c.drop(kindTeam, id, "") }

// InvalidateUser drops a user.
func (c *OrgCache) InvalidateUser(id string) { c.drop(kindUser, id, "") }

// InvalidateMember drops a membership.
func (c *OrgCache) InvalidateMember(teamID, userID string) { c.drop(kindMember, teamID, userID) }

// Purge drops everything.
func (c *OrgCache) Purge() { c.epoch.Add(1) }

// setSpend updates a cached object's spend in place and bumps the slot's
// spend generation, so a key's remembered view (Resolve), which may hold an
// older copy of the object (evicted, then reloaded for another key), is
// rebuilt. With nothing cached it makes sure a load in flight (which may
// have read the old spend) is not cached.
func (c *OrgCache) setSpend(kind orgKind, a, b string, spend float64) {
	k := c.slot(kind, a, b)
	if e := c.get(k, kind, a, b, c.now()); e != nil && !e.neg {
		e.budgets.spend.Store(math.Float64bits(spend))
		c.spends[k%genStripes].Add(1)
		return
	}
	c.missSpends[k%genStripes].Add(1)
}

// Handle applies one change-feed event; events for keys are ignored.
func (c *OrgCache) Handle(ev store.Event) {
	switch ev.Kind {
	case store.EventTeamChanged:
		c.InvalidateTeam(ev.Team)
	case store.EventTeamSpend:
		c.setSpend(kindTeam, ev.Team, "", ev.Spend)
	case store.EventUserChanged:
		c.InvalidateUser(ev.User)
	case store.EventUserSpend:
		c.setSpend(kindUser, ev.User, "", ev.Spend)
	case store.EventMemberChanged:
		c.InvalidateMember(ev.Team, ev.User)
	case store.EventMemberSpend:
		c.setSpend(kindMember, ev.Team, ev.User, ev.Spend)
	case store.EventBudgetChanged:
		c.bepoch.Add(1) // rare: reload every membership rather than track budget_id
	case store.EventReset:
		c.Purge()
	}
}

// Attach follows a change feed and returns the function that detaches.
func (c *OrgCache) Attach(s Subscriber) (detach func()) { return s.Subscribe(c.Handle) }

// Wait blocks until pending Sets are applied (tests only).
func (c *OrgCache) Wait() { c.rc.Wait() }
