package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// OrgStore is a backend with the team/user/membership contract.
type OrgStore interface {
	store.Store
	store.Org
}

// OrgOpener returns a fresh, empty store for one test; the suite closes it.
type OrgOpener func(t *testing.T) OrgStore

// RunOrg runs the store.Org conformance suite. Besides the doc comments on
// store.Org it pins: rows read back in normal form (UTC millisecond times,
// empty never-nil maps and slices, members_with_roles an empty list); every
// write emits its event (EventTeamChanged, EventUserChanged,
// EventMemberChanged, EventBudgetChanged, or the *Spend kind with the new
// spend for AddOrgSpend; a backend may emit *Changed instead of *Spend).
func RunOrg(t *testing.T, open OrgOpener) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, st OrgStore)
	}{
		{"TeamRoundTrip", testTeamRoundTrip},
		{"TeamUpdateDelete", testTeamUpdateDelete},
		{"ListTeams", testListTeams},
		{"UserRoundTrip", testUserRoundTrip},
		{"ListUsers", testListUsers},
		{"Memberships", testMemberships},
		{"SharedBudget", testSharedBudget},
		{"AddOrgSpend", testAddOrgSpend},
		{"AddOrgSpendConcurrent", testAddOrgSpendConcurrent},
		{"ResetOrgBudgets", testResetOrgBudgets},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := open(t)
			t.Cleanup(func() { _ = st.Close() })
			tc.fn(t, st)
		})
	}
}

func sameJSON(t *testing.T, what string, want, got any) {
	t.Helper()
	wj, _ := json.Marshal(want)
	gj, _ := json.Marshal(got)
	if string(wj) != string(gj) {
		t.Errorf("%s mismatch\n got: %s\nwant: %s", what, gj, wj)
	}
}

func fullTeam(id string) *keys.Team {
	zone := time.FixedZone("X", -3*3600)
	base := time.Date(2031, 3, 4, 5, 6, 7, 123456789, zone)
	return &keys.Team{
		TeamID:         id,
		TeamAlias:      ptr("alias-" + id),
		OrganizationID: ptr("org-1"),
		Admins:         []string{"u-admin"},
		Members:        []string{"u-admin", "u-1"},
		MembersWithRoles: keys.Members{
			{Role: keys.TeamRoleAdmin, UserID: ptr("u-admin")},
			{Role: keys.TeamRoleUser, UserID: ptr("u-1"), UserEmail: ptr("one@example.com")},
		},
		Metadata:              map[string]any{"team_member_budget_id": "b1", "uni": "héllo ✓"},
		MaxBudget:             ptr(50.5),
		SoftBudget:            ptr(40.0),
		Spend:                 1.25,
		Models:                []string{"gpt-4o", "openai/*"},
		MaxParallelRequests:   ptr[int64](3),
		TPMLimit:              ptr[int64](1 << 40),
		RPMLimit:              ptr[int64](60),
		BudgetDuration:        ptr("30d"),
		BudgetResetAt:         ptr(base.Add(24 * time.Hour)),
		Blocked:               true,
		CreatedAt:             ptr(base),
		UpdatedAt:             ptr(base.Add(time.Minute)),
		ModelSpend:            map[string]any{"gpt-4o": 1.0},
		ModelMaxBudget:        map[string]any{"gpt-4o": map[string]any{"budget_limit": 10.0}},
		TeamMemberPermissions: []string{"/key/generate"},
	}
}

func wantTeam(t *keys.Team) *keys.Team {
	c := *t
	for _, p := range []**time.Time{&c.BudgetResetAt, &c.CreatedAt, &c.UpdatedAt} {
		if *p != nil {
			*p = ptr(ms(**p))
		}
	}
	store.TeamTable.Normalize(&c)
	return &c
}

func testTeamRoundTrip(t *testing.T, st OrgStore) {
	ctx := t.Context()
	rec := subscribe(t, st)
	full := fullTeam("team-full")
	if err := st.CreateTeam(ctx, full); err != nil {
		t.Fatalf("CreateTeam: %v", err)
	}
	rec.wait(t, "team created", func(e store.Event) bool { return e.Kind == store.EventTeamChanged && e.Team == "team-full" })
	got, err := st.GetTeam(ctx, "team-full")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "full team", wantTeam(fullTeam("team-full")), got)
	if got.CreatedAt.Location() != time.UTC {
		t.Errorf("created_at location = %v, want UTC", got.CreatedAt.Location())
	}

	// A bare team reads back in normal form, times filled.
	if err := st.CreateTeam(ctx, &keys.Team{TeamID: "bare"}); err != nil {
		t.Fatal(err)
	}
	bare, err := st.GetTeam(ctx, "bare")
	if err != nil {
		t.Fatal(err)
	}
	if bare.MembersWithRoles == nil || bare.Models == nil || bare.Metadata == nil || bare.CreatedAt == nil || bare.MaxBudget != nil || bare.Blocked {
		t.Errorf("bare team = %+v, want normal form", bare)
	}

	err = st.CreateTeam(ctx, &keys.Team{TeamID: "bare"})
	var ce *keys.ConflictError
	if !errors.As(err, &ce) || ce.Field != "team_id" || ce.Value != "bare" {
		t.Errorf("duplicate CreateTeam = %v, want ConflictError on team_id", err)
	}
	if err := st.CreateTeam(ctx, &keys.Team{}); !errors.Is(err, keys.ErrInvalid) {
		t.Errorf("CreateTeam(empty id) = %v, want ErrInvalid", err)
	}
	if _, err := st.GetTeam(ctx, "nope"); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("GetTeam(missing) = %v, want ErrNotFound", err)
	}
}

func testTeamUpdateDelete(t *testing.T, st OrgStore) {
	ctx := t.Context()
	rec := subscribe(t, st)
	if err := st.CreateTeam(ctx, fullTeam("t1")); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	from := rec.mark()
	up, err := st.UpdateTeam(ctx, "t1", func(tm *keys.Team) error {
		tm.Blocked = false
		tm.Models = nil
		tm.MaxBudget = nil
		tm.TeamID = "renamed" // ignored: the key does not change
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rec.waitFrom(t, "team updated", from, func(e store.Event) bool { return e.Kind == store.EventTeamChanged && e.Team == "t1" })
	got, err := st.GetTeam(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "updated team (returned vs read)", got, up)
	if got.Blocked || len(got.Models) != 0 || got.MaxBudget != nil || got.UpdatedAt.Before(before) {
		t.Errorf("updated team = %+v", got)
	}
	boom := errors.New("boom")
	if _, err := st.UpdateTeam(ctx, "t1", func(*keys.Team) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("UpdateTeam(fn error) = %v, want boom", err)
	}
	if _, err := st.UpdateTeam(ctx, "nope", func(*keys.Team) error { return nil }); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("UpdateTeam(missing) = %v, want ErrNotFound", err)
	}

	if err := st.CreateUser(ctx, &keys.User{UserID: "u-1"}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutMembership(ctx, &keys.Membership{TeamID: "t1", UserID: "u-1"}, nil); err != nil {
		t.Fatal(err)
	}
	from = rec.mark()
	del, err := st.DeleteTeams(ctx, []string{"t1", "nope", "t1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(del) != 1 || del[0].TeamID != "t1" {
		t.Fatalf("DeleteTeams = %+v, want t1", del)
	}
	rec.waitFrom(t, "team deleted", from, func(e store.Event) bool { return e.Kind == store.EventTeamChanged && e.Team == "t1" })
	rec.waitFrom(t, "membership deleted", from, func(e store.Event) bool {
		return e.Kind == store.EventMemberChanged && e.Team == "t1" && e.User == "u-1"
	})
	if _, err := st.GetMembership(ctx, "t1", "u-1"); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("membership after team delete: %v, want ErrNotFound", err)
	}
	if del, err := st.DeleteTeams(ctx, []string{"t1"}); err != nil || len(del) != 0 {
		t.Errorf("DeleteTeams(again) = %v, %v", del, err)
	}
}

func testListTeams(t *testing.T, st OrgStore) {
	ctx := t.Context()
	for _, tm := range []*keys.Team{
		{TeamID: "b", OrganizationID: ptr("o1"), MembersWithRoles: keys.Members{{Role: "user", UserID: ptr("alice")}}},
		{TeamID: "a", TeamAlias: ptr("A"), MembersWithRoles: keys.Members{{Role: "admin", UserID: ptr("alice")}, {Role: "user", UserID: ptr("bob")}}},
		{TeamID: "c", OrganizationID: ptr("o1")},
	} {
		if err := st.CreateTeam(ctx, tm); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		q    store.TeamQuery
		want []string
	}{
		{store.TeamQuery{}, []string{"a", "b", "c"}},
		{store.TeamQuery{UserID: "alice"}, []string{"a", "b"}},
		{store.TeamQuery{UserID: "bob"}, []string{"a"}},
		{store.TeamQuery{UserID: "nobody"}, nil},
		{store.TeamQuery{OrganizationID: "o1"}, []string{"b", "c"}},
		{store.TeamQuery{TeamAlias: "A"}, []string{"a"}},
	} {
		ts, err := st.ListTeams(ctx, tc.q)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, tm := range ts {
			ids = append(ids, tm.TeamID)
		}
		if fmt.Sprint(ids) != fmt.Sprint(tc.want) {
			t.Errorf("ListTeams(%+v) = %v, want %v", tc.q, ids, tc.want)
		}
	}
}

func testUserRoundTrip(t *testing.T, st OrgStore) {
	ctx := t.Context()
	rec := subscribe(t, st)
	base := time.Date(2030, 1, 2, 3, 4, 5, 987654321, time.FixedZone("Y", 3600))
	full := &keys.User{
		UserID: "u-full", UserAlias: ptr("Full"), TeamID: ptr("t"), SSOUserID: ptr("sso"), OrganizationID: ptr("o"),
		Teams: []string{"t", "t2"}, UserRole: ptr(keys.RoleInternalUser), MaxBudget: ptr(9.5), Spend: 2,
		UserEmail: ptr("full@example.com"), Models: []string{"gpt-4o"}, Metadata: map[string]any{"k": "v"},
		MaxParallelRequests: ptr[int64](2), TPMLimit: ptr[int64](100), RPMLimit: ptr[int64](10),
		BudgetDuration: ptr("1d"), BudgetResetAt: ptr(base), AllowedCacheControls: []string{"no-cache"},
		ModelSpend: map[string]any{"gpt-4o": 2.0}, ModelMaxBudget: map[string]any{}, CreatedAt: ptr(base), UpdatedAt: ptr(base),
	}
	if err := st.CreateUser(ctx, full); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "user created", func(e store.Event) bool { return e.Kind == store.EventUserChanged && e.User == "u-full" })
	got, err := st.GetUser(ctx, "u-full")
	if err != nil {
		t.Fatal(err)
	}
	w := *full
	w.BudgetResetAt, w.CreatedAt, w.UpdatedAt = ptr(ms(base)), ptr(ms(base)), ptr(ms(base))
	sameJSON(t, "full user", &w, got)

	err = st.CreateUser(ctx, &keys.User{UserID: "u-full"})
	var ce *keys.ConflictError
	if !errors.As(err, &ce) || ce.Field != "user_id" {
		t.Errorf("duplicate CreateUser = %v, want ConflictError on user_id", err)
	}
	from := rec.mark()
	up, err := st.UpdateUser(ctx, "u-full", func(u *keys.User) error { u.MaxBudget = nil; u.Models = nil; return nil })
	if err != nil {
		t.Fatal(err)
	}
	rec.waitFrom(t, "user updated", from, func(e store.Event) bool { return e.Kind == store.EventUserChanged && e.User == "u-full" })
	if up.MaxBudget != nil || up.Models == nil || len(up.Models) != 0 {
		t.Errorf("updated user = %+v", up)
	}
	if _, err := st.UpdateUser(ctx, "nope", func(*keys.User) error { return nil }); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("UpdateUser(missing) = %v", err)
	}
	if err := st.CreateTeam(ctx, &keys.Team{TeamID: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutMembership(ctx, &keys.Membership{TeamID: "t", UserID: "u-full"}, nil); err != nil {
		t.Fatal(err)
	}
	del, err := st.DeleteUsers(ctx, []string{"u-full", "nope"})
	if err != nil || len(del) != 1 || del[0].UserID != "u-full" {
		t.Fatalf("DeleteUsers = %+v, %v", del, err)
	}
	if _, err := st.GetUser(ctx, "u-full"); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("GetUser after delete = %v", err)
	}
	if _, err := st.GetMembership(ctx, "t", "u-full"); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("membership after user delete = %v", err)
	}
}

func testListUsers(t *testing.T, st OrgStore) {
	ctx := t.Context()
	base := time.Now().UTC().Truncate(time.Millisecond)
	for i, u := range []*keys.User{
		{UserID: "u1", UserRole: ptr(keys.RoleInternalUser), Teams: []string{"t1"}, UserEmail: ptr("a@x")},
		{UserID: "u2", UserRole: ptr(keys.RoleProxyAdmin), Teams: []string{"t1", "t2"}},
		{UserID: "u3", UserRole: ptr(keys.RoleInternalUser)},
	} {
		u.CreatedAt = ptr(base.Add(time.Duration(i) * time.Second))
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		q     store.UserQuery
		want  []string
		total int
	}{
		{store.UserQuery{}, []string{"u3", "u2", "u1"}, 3},
		{store.UserQuery{Size: 2, Page: 2}, []string{"u1"}, 3},
		{store.UserQuery{Role: keys.RoleInternalUser}, []string{"u3", "u1"}, 2},
		{store.UserQuery{TeamID: "t1"}, []string{"u2", "u1"}, 2},
		{store.UserQuery{UserIDs: []string{"u1", "u3", "zz"}}, []string{"u3", "u1"}, 2},
		{store.UserQuery{Email: "a@x"}, []string{"u1"}, 1},
	} {
		us, total, err := st.ListUsers(ctx, tc.q)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, u := range us {
			ids = append(ids, u.UserID)
		}
		if fmt.Sprint(ids) != fmt.Sprint(tc.want) || total != tc.total {
			t.Errorf("ListUsers(%+v) = %v (total %d), want %v (total %d)", tc.q, ids, total, tc.want, tc.total)
		}
	}
}

func testMemberships(t *testing.T, st OrgStore) {
	ctx := t.Context()
	rec := subscribe(t, st)
	if err := st.PutMembership(ctx, &keys.Membership{TeamID: "t", UserID: "u2"}, nil); err != nil {
		t.Fatal(err)
	}
	b := &keys.Budget{BudgetID: "b1", MaxBudget: ptr(5.0), RPMLimit: ptr[int64](7), AllowedModels: []string{"gpt-4o"},
		BudgetDuration: ptr("1d"), CreatedBy: "admin", UpdatedBy: "admin"}
	if err := st.PutMembership(ctx, &keys.Membership{TeamID: "t", UserID: "u1"}, b); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "membership put", func(e store.Event) bool { return e.Kind == store.EventMemberChanged && e.Team == "t" && e.User == "u1" })
	m, err := st.GetMembership(ctx, "t", "u1")
	if err != nil {
		t.Fatal(err)
	}
	if m.Spend != 0 || m.BudgetID == nil || *m.BudgetID != "b1" || m.Budget == nil || *m.Budget.MaxBudget != 5 ||
		*m.Budget.RPMLimit != 7 || m.Budget.CreatedBy != "admin" || m.Budget.CreatedAt == nil {
		t.Fatalf("membership = %+v budget %+v", m, m.Budget)
	}
	plain, err := st.GetMembership(ctx, "t", "u2")
	if err != nil || plain.Budget != nil || plain.BudgetID != nil {
		t.Fatalf("membership without budget = %+v, %v", plain, err)
	}
	// Replace the budget's limits: spend is kept, the budget event fires.
	if err := st.AddOrgSpend(ctx, store.OrgSpend{Memberships: map[keys.MemberKey]float64{{TeamID: "t", UserID: "u1"}: 1.5}}); err != nil {
		t.Fatal(err)
	}
	from := rec.mark()
	b2 := &keys.Budget{BudgetID: "b1", MaxBudget: ptr(8.0), CreatedBy: "x", UpdatedBy: "admin2"}
	if err := st.PutMembership(ctx, &keys.Membership{TeamID: "t", UserID: "u1"}, b2); err != nil {
		t.Fatal(err)
	}
	rec.waitFrom(t, "budget changed", from, func(e store.Event) bool { return e.Kind == store.EventBudgetChanged && e.Budget == "b1" })
	m, err = st.GetMembership(ctx, "t", "u1")
	if err != nil {
		t.Fatal(err)
	}
	if m.Spend != 1.5 || *m.Budget.MaxBudget != 8 || m.Budget.RPMLimit != nil || m.Budget.CreatedBy != "admin" || m.Budget.UpdatedBy != "admin2" {
		t.Errorf("membership after budget replace = %+v budget %+v", m, m.Budget)
	}
	ms, err := st.ListMemberships(ctx, "t")
	if err != nil || len(ms) != 2 || ms[0].UserID != "u1" || ms[1].UserID != "u2" || ms[0].Budget == nil {
		t.Errorf("ListMemberships = %+v, %v", ms, err)
	}
	from = rec.mark()
	if err := st.DeleteMembership(ctx, "t", "u1"); err != nil {
		t.Fatal(err)
	}
	rec.waitFrom(t, "membership deleted", from, func(e store.Event) bool { return e.Kind == store.EventMemberChanged && e.User == "u1" })
	if _, err := st.GetMembership(ctx, "t", "u1"); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("GetMembership after delete = %v", err)
	}
	if err := st.DeleteMembership(ctx, "t", "u1"); err != nil {
		t.Errorf("DeleteMembership(missing) = %v", err)
	}
	if err := st.PutMembership(ctx, &keys.Membership{TeamID: "t"}, nil); !errors.Is(err, keys.ErrInvalid) {
		t.Errorf("PutMembership(no user) = %v, want ErrInvalid", err)
	}
}

func testAddOrgSpend(t *testing.T, st OrgStore) {
	ctx := t.Context()
	rec := subscribe(t, st)
	if err := st.CreateTeam(ctx, &keys.Team{TeamID: "t", Spend: 1}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateUser(ctx, &keys.User{UserID: "u", Spend: 2}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutMembership(ctx, &keys.Membership{TeamID: "t", UserID: "u"}, nil); err != nil {
		t.Fatal(err)
	}
	from := rec.mark()
	err := st.AddOrgSpend(ctx, store.OrgSpend{
		Teams:       map[string]float64{"t": 0.5, "ghost": 1},
		Users:       map[string]float64{"u": 0.25, "ghost": 1},
		Memberships: map[keys.MemberKey]float64{{TeamID: "t", UserID: "u"}: 0.125, {TeamID: "t", UserID: "ghost"}: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	tm, _ := st.GetTeam(ctx, "t")
	u, _ := st.GetUser(ctx, "u")
	m, _ := st.GetMembership(ctx, "t", "u")
	if tm.Spend != 1.5 || u.Spend != 2.25 || m.Spend != 0.125 {
		t.Errorf("spend team %v user %v member %v, want 1.5 2.25 0.125", tm.Spend, u.Spend, m.Spend)
	}
	spendOrChanged := func(spend, changed store.EventKind, want float64) func(store.Event) bool {
		return func(e store.Event) bool {
			return (e.Kind == spend && e.Spend == want) || e.Kind == changed
		}
	}
	rec.waitFrom(t, "team spend", from, spendOrChanged(store.EventTeamSpend, store.EventTeamChanged, 1.5))
	rec.waitFrom(t, "user spend", from, spendOrChanged(store.EventUserSpend, store.EventUserChanged, 2.25))
	rec.waitFrom(t, "member spend", from, spendOrChanged(store.EventMemberSpend, store.EventMemberChanged, 0.125))
	if err := st.AddOrgSpend(ctx, store.OrgSpend{}); err != nil {
		t.Errorf("AddOrgSpend(empty) = %v", err)
	}
	// Spend only: nothing else changes.
	tm2, _ := st.GetTeam(ctx, "t")
	tm2.UpdatedAt, tm.UpdatedAt = nil, nil
	tm.Spend = tm2.Spend
	sameJSON(t, "team after spend", tm, tm2)
}

func testAddOrgSpendConcurrent(t *testing.T, st OrgStore) {
	ctx := t.Context()
	ids := []string{"a", "b", "c"}
	for _, id := range ids {
		if err := st.CreateTeam(ctx, &keys.Team{TeamID: id}); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateUser(ctx, &keys.User{UserID: id}); err != nil {
			t.Fatal(err)
		}
		if err := st.PutMembership(ctx, &keys.Membership{TeamID: id, UserID: id}, nil); err != nil {
			t.Fatal(err)
		}
	}
	const workers, batches = 8, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers*batches)
	for w := range workers {
		wg.Go(func() {
			for b := range batches {
				x, y := ids[(w+b)%3], ids[(w+b+1)%3]
				errs <- st.AddOrgSpend(ctx, store.OrgSpend{
					Teams:       map[string]float64{x: 0.5, y: 0.25},
					Users:       map[string]float64{y: 0.5, x: 0.25},
					Memberships: map[keys.MemberKey]float64{{TeamID: x, UserID: x}: 0.5, {TeamID: y, UserID: y}: 0.25},
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("AddOrgSpend: %v", err)
		}
	}
	var teams, users, members float64
	for _, id := range ids {
		tm, _ := st.GetTeam(ctx, id)
		u, _ := st.GetUser(ctx, id)
		m, _ := st.GetMembership(ctx, id, id)
		teams, users, members = teams+tm.Spend, users+u.Spend, members+m.Spend
	}
	want := float64(workers*batches) * 0.75
	if teams != want || users != want || members != want {
		t.Errorf("total spend teams %v users %v members %v, want %v each", teams, users, members, want)
	}
}

func testResetOrgBudgets(t *testing.T, st OrgStore) {
	ctx := t.Context()
	now := ms(time.Now())
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	for _, tm := range []*keys.Team{
		{TeamID: "due", Spend: 5, BudgetDuration: ptr("1d"), BudgetResetAt: &past},
		{TeamID: "later", Spend: 5, BudgetDuration: ptr("1d"), BudgetResetAt: &future},
		{TeamID: "bad", Spend: 5, BudgetDuration: ptr("soon"), BudgetResetAt: &past},
	} {
		if err := st.CreateTeam(ctx, tm); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateUser(ctx, &keys.User{UserID: "u", Spend: 3, BudgetDuration: ptr("1h"), BudgetResetAt: &past}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutMembership(ctx, &keys.Membership{TeamID: "due", UserID: "u"},
		&keys.Budget{BudgetID: "b", MaxBudget: ptr(1.0), BudgetDuration: ptr("1d"), BudgetResetAt: &past, CreatedBy: "t", UpdatedBy: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddOrgSpend(ctx, store.OrgSpend{Memberships: map[keys.MemberKey]float64{{TeamID: "due", UserID: "u"}: 2}}); err != nil {
		t.Fatal(err)
	}
	rec := subscribe(t, st)
	from := rec.mark()
	n, err := st.ResetOrgBudgets(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("ResetOrgBudgets reset %d rows, want 3 (team, user, budget)", n)
	}
	due, _ := st.GetTeam(ctx, "due")
	later, _ := st.GetTeam(ctx, "later")
	bad, _ := st.GetTeam(ctx, "bad")
	u, _ := st.GetUser(ctx, "u")
	m, _ := st.GetMembership(ctx, "due", "u")
	if due.Spend != 0 || !due.BudgetResetAt.After(now) || later.Spend != 5 || bad.Spend != 5 {
		t.Errorf("teams after reset: due %v/%v later %v bad %v", due.Spend, due.BudgetResetAt, later.Spend, bad.Spend)
	}
	if u.Spend != 0 || !u.BudgetResetAt.After(now) {
		t.Errorf("user after reset: %v/%v", u.Spend, u.BudgetResetAt)
	}
	if m.Spend != 0 || m.Budget == nil || !m.Budget.BudgetResetAt.After(now) {
		t.Errorf("membership after reset: %+v budget %+v", m, m.Budget)
	}
	rec.waitFrom(t, "team reset event", from, func(e store.Event) bool {
		return (e.Kind == store.EventTeamChanged || e.Kind == store.EventTeamSpend) && e.Team == "due"
	})
	rec.waitFrom(t, "member reset event", from, func(e store.Event) bool {
		return (e.Kind == store.EventMemberChanged || e.Kind == store.EventMemberSpend || e.Kind == store.EventBudgetChanged)
	})
}

// A budget row several memberships share (a team's default member budget):
// PutBudget writes it (created_at/_by kept on replace, the budget event
// fires), GetBudget reads it, and memberships pointing at it read it.
func testSharedBudget(t *testing.T, st OrgStore) {
	ctx := t.Context()
	rec := subscribe(t, st)
	if _, err := st.GetBudget(ctx, "team-budget-1"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("GetBudget of a missing row: %v", err)
	}
	b := &keys.Budget{BudgetID: "team-budget-1", MaxBudget: ptr(5.0), TPMLimit: ptr[int64](100), BudgetDuration: ptr("30d"), CreatedBy: "admin", UpdatedBy: "admin"}
	from := rec.mark()
	if err := st.PutBudget(ctx, b); err != nil {
		t.Fatal(err)
	}
	rec.waitFrom(t, "budget put", from, func(e store.Event) bool { return e.Kind == store.EventBudgetChanged && e.Budget == "team-budget-1" })
	for _, u := range []string{"u1", "u2"} {
		if err := st.PutMembership(ctx, &keys.Membership{TeamID: "t", UserID: u, BudgetID: ptr("team-budget-1")}, nil); err != nil {
			t.Fatal(err)
		}
	}
	from = rec.mark()
	if err := st.PutBudget(ctx, &keys.Budget{BudgetID: "team-budget-1", MaxBudget: ptr(9.0), CreatedBy: "other", UpdatedBy: "admin2"}); err != nil {
		t.Fatal(err)
	}
	rec.waitFrom(t, "budget replaced", from, func(e store.Event) bool { return e.Kind == store.EventBudgetChanged && e.Budget == "team-budget-1" })
	got, err := st.GetBudget(ctx, "team-budget-1")
	if err != nil {
		t.Fatal(err)
	}
	if *got.MaxBudget != 9 || got.TPMLimit != nil || got.CreatedBy != "admin" || got.UpdatedBy != "admin2" || got.CreatedAt == nil {
		t.Errorf("budget after replace = %+v", got)
	}
	for _, u := range []string{"u1", "u2"} {
		m, err := st.GetMembership(ctx, "t", u)
		if err != nil || m.Budget == nil || *m.Budget.MaxBudget != 9 {
			t.Errorf("membership %s = %+v, %v", u, m, err)
		}
	}
	if err := st.PutBudget(ctx, &keys.Budget{}); !errors.Is(err, keys.ErrInvalid) {
		t.Errorf("PutBudget without budget_id: %v", err)
	}
}
