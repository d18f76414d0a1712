package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

func sptr(s string) *string { return &s }

// resolveFixture is a team t with a budgeted membership of user u, and a
// key entry of u in t.
func resolveFixture(t *testing.T) (*fakeOrg, *cache.OrgCache, *cache.Entry) {
	t.Helper()
	f := &fakeOrg{
		teams:   map[string]*keys.Team{"t": {TeamID: "t", MaxBudget: fptr(10), Spend: 1}},
		users:   map[string]*keys.User{"u": {UserID: "u", Spend: 2}},
		members: map[keys.MemberKey]*keys.Membership{{TeamID: "t", UserID: "u"}: {TeamID: "t", UserID: "u", Spend: 3, Budget: &keys.Budget{MaxBudget: fptr(4)}}},
	}
	return f, newOrg(t, f), cache.NewTestEntry(&keys.Key{Token: "h", TeamID: sptr("t"), UserID: sptr("u")})
}

func resolve(t *testing.T, c *cache.OrgCache, e *cache.Entry, now time.Time) cache.OrgView {
	t.Helper()
	v, err := c.Resolve(context.Background(), e, now)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	return v
}

// A key's team, user and membership are remembered on its entry: a hit
// makes no store query, reads no cache and allocates nothing.
func TestResolveRemembers(t *testing.T) {
	f, c, e := resolveFixture(t)
	now := time.Now()
	v := resolve(t, c, e, now)
	if v.Team == nil || v.Member == nil || v.User == nil || v.Team.Spend() != 1 || v.Member.Spend() != 3 || v.User.Spend() != 2 {
		t.Fatalf("view %+v", v)
	}
	c.Wait()
	n := f.calls.Load()
	allocs := testing.AllocsPerRun(100, func() { _, _ = c.Resolve(context.Background(), e, now) })
	if f.calls.Load() != n {
		t.Errorf("remembered view made %d queries", f.calls.Load()-n)
	}
	if allocs != 0 && !raceEnabled {
		t.Errorf("remembered view allocates %v times", allocs)
	}
	// the user of a team key is read only for a budgeted membership
	f.set(func() { f.members[keys.MemberKey{TeamID: "t", UserID: "u"}].Budget = nil })
	c.InvalidateMember("t", "u")
	if v := resolve(t, c, e, now); v.Member == nil || v.User != nil {
		t.Errorf("unbudgeted member: view %+v, want no user", v)
	}
	// a personal key reads its user only
	p := cache.NewTestEntry(&keys.Key{Token: "p", UserID: sptr("u")})
	if v := resolve(t, c, p, now); v.Team != nil || v.Member != nil || v.User == nil {
		t.Errorf("personal key: view %+v", v)
	}
}

// Whatever changes one of the objects makes the next Resolve see it.
func TestResolveSeesChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(f *fakeOrg, c *cache.OrgCache)
		check  func(v cache.OrgView) bool
	}{
		{"team invalidated", func(f *fakeOrg, c *cache.OrgCache) {
			f.set(func() { f.teams["t"] = &keys.Team{TeamID: "t", Blocked: true} })
			c.Handle(store.Event{Kind: store.EventTeamChanged, Team: "t"})
		}, func(v cache.OrgView) bool { return v.Team != nil && v.Team.Blocked }},
		{"team deleted", func(f *fakeOrg, c *cache.OrgCache) {
			f.set(func() { delete(f.teams, "t") })
			c.Handle(store.Event{Kind: store.EventTeamChanged, Team: "t"})
		}, func(v cache.OrgView) bool { return v.Team == nil && v.Member == nil && v.User != nil }},
		{"user invalidated", func(f *fakeOrg, c *cache.OrgCache) {
			f.set(func() { f.users["u"] = &keys.User{UserID: "u", Spend: 20} })
			c.Handle(store.Event{Kind: store.EventUserChanged, User: "u"})
		}, func(v cache.OrgView) bool { return v.User != nil && v.User.Spend() == 20 }},
		{"member invalidated", func(f *fakeOrg, c *cache.OrgCache) {
			f.set(func() {
				f.members[keys.MemberKey{TeamID: "t", UserID: "u"}] = &keys.Membership{TeamID: "t", UserID: "u", Spend: 30, Budget: &keys.Budget{MaxBudget: fptr(40)}}
			})
			c.Handle(store.Event{Kind: store.EventMemberChanged, Team: "t", User: "u"})
		}, func(v cache.OrgView) bool { return v.Member != nil && v.Member.MaxBudget == 40 }},
		{"budget table changed", func(f *fakeOrg, c *cache.OrgCache) {
			f.set(func() {
				f.members[keys.MemberKey{TeamID: "t", UserID: "u"}] = &keys.Membership{TeamID: "t", UserID: "u", Budget: &keys.Budget{MaxBudget: fptr(50)}}
			})
			c.Handle(store.Event{Kind: store.EventBudgetChanged, Budget: "b"})
		}, func(v cache.OrgView) bool { return v.Member != nil && v.Member.MaxBudget == 50 }},
		{"purge", func(f *fakeOrg, c *cache.OrgCache) {
			f.set(func() { f.teams["t"] = &keys.Team{TeamID: "t", Models: []string{"m"}} })
			c.Handle(store.Event{Kind: store.EventReset})
		}, func(v cache.OrgView) bool { return v.Team != nil && len(v.Team.Models) == 1 }},
		{"team spend", func(f *fakeOrg, c *cache.OrgCache) {
			c.Handle(store.Event{Kind: store.EventTeamSpend, Team: "t", Spend: 9})
		}, func(v cache.OrgView) bool { return v.Team != nil && v.Team.Spend() == 9 }},
		{"member spend", func(f *fakeOrg, c *cache.OrgCache) {
			c.Handle(store.Event{Kind: store.EventMemberSpend, Team: "t", User: "u", Spend: 3.5})
		}, func(v cache.OrgView) bool { return v.Member != nil && v.Member.Spend() == 3.5 }},
		// The view may hold an object the cache has since evicted and
		// reloaded for another key; a spend event updates the reloaded one,
		// and the view must follow it.
		{"spend after an eviction and a reload by another key", func(f *fakeOrg, c *cache.OrgCache) {
			c.EvictTeam("t")
			other := cache.NewTestEntry(&keys.Key{Token: "o", TeamID: sptr("t")})
			if _, err := c.Resolve(context.Background(), other, time.Now()); err != nil {
				panic(err)
			}
			c.Wait()
			c.Handle(store.Event{Kind: store.EventTeamSpend, Team: "t", Spend: 11})
		}, func(v cache.OrgView) bool { return v.Team != nil && v.Team.Spend() == 11 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, c, e := resolveFixture(t)
			resolve(t, c, e, time.Now())
			c.Wait()
			tc.change(f, c)
			c.Wait()
			if v := resolve(t, c, e, time.Now()); !tc.check(v) {
				t.Errorf("view after the change: team %+v member %+v user %+v", v.Team, v.Member, v.User)
			}
		})
	}
}

// A remembered view lasts no longer than its objects: past the safety TTL
// (or an absent object's negative TTL) by the caller's clock, it is read
// again.
func TestResolveExpires(t *testing.T) {
	f, c, e := resolveFixture(t)
	now := time.Now()
	resolve(t, c, e, now)
	n := f.calls.Load()
	resolve(t, c, e, now.Add(cache.DefaultSafetyTTL+time.Second))
	if f.calls.Load() == n {
		t.Error("a view past the safety TTL was not read again")
	}
	ghost := cache.NewTestEntry(&keys.Key{Token: "g", TeamID: sptr("gone")})
	if v := resolve(t, c, ghost, now); v.Team != nil {
		t.Fatalf("absent team: %+v", v)
	}
	c.Wait()
	f.set(func() { f.teams["gone"] = &keys.Team{TeamID: "gone", Blocked: true} })
	if v := resolve(t, c, ghost, now.Add(cache.DefaultNegativeTTL+time.Second)); v.Team == nil || !v.Team.Blocked {
		t.Errorf("absent team past the negative TTL: %+v", v.Team)
	}
}

// set changes the fake's rows under its lock.
func (f *fakeOrg) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// An invalidation is a generation bump, then a delete. A Resolve between
// the two finds the old entry under the new generation: it must answer
// with it (as any lookup would at that moment) but not remember it, or the
// view would outlive the change.
func TestResolveDoesNotRememberAnEntryOlderThanItsSlot(t *testing.T) {
	f, c, e := resolveFixture(t)
	resolve(t, c, e, time.Now())
	c.Wait()
	f.set(func() { f.teams["t"] = &keys.Team{TeamID: "t", Blocked: true} })
	c.BumpTeam("t")
	if v := resolve(t, c, e, time.Now()); v.Team == nil || v.Team.Blocked {
		t.Fatalf("between the bump and the delete: team %+v, want the old row", v.Team)
	}
	c.EvictTeam("t") // the delete that completes the invalidation
	if v := resolve(t, c, e, time.Now()); v.Team == nil || !v.Team.Blocked {
		t.Errorf("after the invalidation: team %+v, want the new (blocked) row", v.Team)
	}
}

// A spend event for an object no longer cached still rebuilds a view that
// holds an evicted copy of it.
func TestResolveSeesSpendOfAnEvictedObject(t *testing.T) {
	_, c, e := resolveFixture(t)
	v := resolve(t, c, e, time.Now())
	c.Wait()
	c.EvictTeam("t")
	c.Handle(store.Event{Kind: store.EventTeamSpend, Team: "t", Spend: 9.5})
	// the store still says 1 (the fake is not updated): a rebuilt view
	// reads the row again; a kept one would still show the old object
	if got := resolve(t, c, e, time.Now()); got.Team == v.Team {
		t.Error("the view kept the evicted team after a spend event for it")
	}
}
