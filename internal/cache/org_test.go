package cache_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// fakeOrg is an OrgLoader over maps, counting queries; gate blocks loads.
type fakeOrg struct {
	mu      sync.Mutex
	teams   map[string]*keys.Team
	users   map[string]*keys.User
	members map[keys.MemberKey]*keys.Membership
	calls   atomic.Int64
	gate    chan struct{}
	err     error
}

func (f *fakeOrg) wait(ctx context.Context) error {
	f.calls.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (f *fakeOrg) GetTeam(ctx context.Context, id string) (*keys.Team, error) {
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if t, ok := f.teams[id]; ok {
		cp := *t
		return &cp, nil
	}
	return nil, keys.ErrNotFound
}

func (f *fakeOrg) GetUser(ctx context.Context, id string) (*keys.User, error) {
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if u, ok := f.users[id]; ok {
		cp := *u
		return &cp, nil
	}
	return nil, keys.ErrNotFound
}

func (f *fakeOrg) GetMembership(ctx context.Context, team, user string) (*keys.Membership, error) {
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if m, ok := f.members[keys.MemberKey{TeamID: team, UserID: user}]; ok {
		cp := *m
		return &cp, nil
	}
	return nil, keys.ErrNotFound
}

func newOrg(t *testing.T, f *fakeOrg) *cache.OrgCache {
	t.Helper()
	c, err := cache.NewOrg(cache.OrgConfig{Loader: f})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func fptr(v float64) *float64 { return &v }

func TestOrgCacheHitMakesNoQuery(t *testing.T) {
	f := &fakeOrg{
		teams:   map[string]*keys.Team{"t": {TeamID: "t", Blocked: true, Models: []string{"m"}, MaxBudget: fptr(5), Spend: 1}},
		users:   map[string]*keys.User{"u": {UserID: "u", MaxBudget: fptr(2), Spend: 0.5}},
		members: map[keys.MemberKey]*keys.Membership{{TeamID: "t", UserID: "u"}: {TeamID: "t", UserID: "u", Spend: 3, Budget: &keys.Budget{MaxBudget: fptr(4), AllowedModels: []string{"m"}}}},
	}
	c := newOrg(t, f)
	ctx := t.Context()
	tm, err := c.Team(ctx, "t", time.Now())
	if err != nil || tm == nil || !tm.Blocked || !tm.HasBudget || tm.MaxBudget != 5 || tm.Spend() != 1 {
		t.Fatalf("Team = %+v, %v", tm, err)
	}
	u, err := c.User(ctx, "u", time.Now())
	if err != nil || u == nil || u.MaxBudget != 2 {
		t.Fatalf("User = %+v, %v", u, err)
	}
	m, err := c.Member(ctx, "t", "u", time.Now())
	if err != nil || m == nil || m.MaxBudget != 4 || m.Spend() != 3 || len(m.AllowedModels) != 1 {
		t.Fatalf("Member = %+v, %v", m, err)
	}
	c.Wait()
	before := f.calls.Load()
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = c.Team(ctx, "t", time.Now())
		_, _ = c.User(ctx, "u", time.Now())
		_, _ = c.Member(ctx, "t", "u", time.Now())
	})
	if got := f.calls.Load() - before; got != 0 {
		t.Errorf("hits made %d store queries, want 0", got)
	}
	if allocs != 0 && !raceEnabled {
		t.Errorf("hits allocate %v times, want 0", allocs)
	}
	// Past the safety TTL (by the caller's clock) an entry is reloaded.
	n := f.calls.Load()
	if _, err := c.Team(ctx, "t", time.Now().Add(cache.DefaultSafetyTTL+time.Second)); err != nil || f.calls.Load() != n+1 {
		t.Errorf("lookup past the safety TTL made %d queries (err %v), want 1", f.calls.Load()-n, err)
	}
}

func TestOrgCacheBurstOfMissesIsOneQuery(t *testing.T) {
	f := &fakeOrg{teams: map[string]*keys.Team{"t": {TeamID: "t"}}, gate: make(chan struct{})}
	reg := prometheus.NewRegistry()
	c, err := cache.NewOrg(cache.OrgConfig{Loader: f, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	const n = 200
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range n {
		wg.Go(func() {
			if tm, err := c.Team(context.Background(), "t", time.Now()); err != nil || tm == nil {
				bad.Add(1)
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for metric(t, reg, "sidecar_org_cache_misses_total") < n {
		if time.Now().After(deadline) {
			t.Fatal("callers did not all arrive")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the last callers enter the singleflight
	close(f.gate)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d callers failed", bad.Load())
	}
	if got := f.calls.Load(); got != 1 {
		t.Errorf("%d concurrent misses made %d queries, want 1", n, got)
	}
}

func TestOrgCacheAbsentAndErrors(t *testing.T) {
	f := &fakeOrg{}
	c := newOrg(t, f)
	ctx := t.Context()
	if tm, err := c.Team(ctx, "ghost", time.Now()); tm != nil || err != nil {
		t.Fatalf("absent team = %v, %v; want nil, nil", tm, err)
	}
	c.Wait()
	n := f.calls.Load()
	if tm, _ := c.Team(ctx, "ghost", time.Now()); tm != nil || f.calls.Load() != n {
		t.Errorf("absent team not remembered (queries %d -> %d)", n, f.calls.Load())
	}
	// Created elsewhere: its change event drops the negative entry.
	f.mu.Lock()
	f.teams = map[string]*keys.Team{"ghost": {TeamID: "ghost"}}
	f.mu.Unlock()
	c.Handle(store.Event{Kind: store.EventTeamChanged, Team: "ghost"})
	if tm, _ := c.Team(ctx, "ghost", time.Now()); tm == nil {
		t.Error("team created after a negative lookup is still absent after its event")
	}
	// A store error is returned, never cached.
	f.mu.Lock()
	f.err = errors.New("db down")
	f.mu.Unlock()
	if u, err := c.User(ctx, "u", time.Now()); u != nil || err == nil {
		t.Fatalf("User with store down = %v, %v; want an error", u, err)
	}
	f.mu.Lock()
	f.err = nil
	f.users = map[string]*keys.User{"u": {UserID: "u"}}
	f.mu.Unlock()
	if u, err := c.User(ctx, "u", time.Now()); u == nil || err != nil {
		t.Errorf("User after the store recovered = %v, %v", u, err)
	}
}

func TestOrgCacheEvents(t *testing.T) {
	f := &fakeOrg{
		teams:   map[string]*keys.Team{"t": {TeamID: "t", Spend: 1}},
		users:   map[string]*keys.User{"u": {UserID: "u", Spend: 1}},
		members: map[keys.MemberKey]*keys.Membership{{TeamID: "t", UserID: "u"}: {TeamID: "t", UserID: "u", Spend: 1}},
	}
	c := newOrg(t, f)
	ctx := t.Context()
	warm := func() {
		t.Helper()
		_, _ = c.Team(ctx, "t", time.Now())
		_, _ = c.User(ctx, "u", time.Now())
		_, _ = c.Member(ctx, "t", "u", time.Now())
		c.Wait()
	}
	warm()
	for _, tc := range []struct {
		name    string
		ev      store.Event
		queries int64 // store queries the next three lookups make
		check   func() bool
	}{
		{"team spend in place", store.Event{Kind: store.EventTeamSpend, Team: "t", Spend: 7}, 0,
			func() bool { tm, _ := c.Team(ctx, "t", time.Now()); return tm.Spend() == 7 }},
		{"user spend in place", store.Event{Kind: store.EventUserSpend, User: "u", Spend: 8}, 0,
			func() bool { u, _ := c.User(ctx, "u", time.Now()); return u.Spend() == 8 }},
		{"member spend in place", store.Event{Kind: store.EventMemberSpend, Team: "t", User: "u", Spend: 9}, 0,
			func() bool { m, _ := c.Member(ctx, "t", "u", time.Now()); return m.Spend() == 9 }},
		{"team changed", store.Event{Kind: store.EventTeamChanged, Team: "t"}, 1, nil},
		{"user changed", store.Event{Kind: store.EventUserChanged, User: "u"}, 1, nil},
		{"member changed", store.Event{Kind: store.EventMemberChanged, Team: "t", User: "u"}, 1, nil},
		{"budget changed drops memberships", store.Event{Kind: store.EventBudgetChanged, Budget: "b"}, 1, nil},
		{"key events are ignored", store.Event{Kind: store.EventChanged, Token: "x"}, 0, nil},
		{"reset purges", store.Event{Kind: store.EventReset}, 3, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warm()
			c.Handle(tc.ev)
			n := f.calls.Load()
			if tc.check != nil && !tc.check() {
				t.Error("spend not updated in place")
			}
			_, _ = c.Team(ctx, "t", time.Now())
			_, _ = c.User(ctx, "u", time.Now())
			_, _ = c.Member(ctx, "t", "u", time.Now())
			if got := f.calls.Load() - n; got != tc.queries {
				t.Errorf("lookups after the event made %d queries, want %d", got, tc.queries)
			}
		})
	}
}

// An invalidation while a load is in flight must not be undone by the
// load's (stale) result.
func TestOrgCacheInvalidationRacingALoad(t *testing.T) {
	f := &fakeOrg{teams: map[string]*keys.Team{"t": {TeamID: "t"}}, gate: make(chan struct{})}
	c := newOrg(t, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Team(context.Background(), "t", time.Now())
	}()
	for f.calls.Load() == 0 {
		time.Sleep(time.Millisecond) // wait for the load to start
	}
	f.mu.Lock()
	f.teams["t"] = &keys.Team{TeamID: "t", Blocked: true}
	f.mu.Unlock()
	c.InvalidateTeam("t")
	close(f.gate)
	<-done
	c.Wait()
	if tm, _ := c.Team(t.Context(), "t", time.Now()); tm == nil || !tm.Blocked {
		t.Errorf("after an invalidation during a load, Team = %+v; want the new (blocked) row", tm)
	}
}

// BenchmarkOrgCacheHit: the three lookups a team key's Check adds (team,
// user, membership), all hits.
func BenchmarkOrgCacheHit(b *testing.B) {
	f := &fakeOrg{
		teams:   map[string]*keys.Team{"bench-team": {TeamID: "bench-team"}},
		users:   map[string]*keys.User{"bench-user": {UserID: "bench-user"}},
		members: map[keys.MemberKey]*keys.Membership{{TeamID: "bench-team", UserID: "bench-user"}: {TeamID: "bench-team", UserID: "bench-user"}},
	}
	c, err := cache.NewOrg(cache.OrgConfig{Loader: f})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, now := context.Background(), time.Now()
	_, _ = c.Team(ctx, "bench-team", now)
	_, _ = c.User(ctx, "bench-user", now)
	_, _ = c.Member(ctx, "bench-team", "bench-user", now)
	c.Wait()
	b.ReportAllocs()
	for b.Loop() {
		_, _ = c.Team(ctx, "bench-team", now)
		_, _ = c.User(ctx, "bench-user", now)
		_, _ = c.Member(ctx, "bench-team", "bench-user", now)
	}
}
