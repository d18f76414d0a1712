package authz_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

// failingOrg wraps an OrgLoader; fail makes every lookup fail as a store
// outage would.
type failingOrg struct {
	cache.OrgLoader
	fail atomic.Bool
}

var errDown = errors.New("dial tcp: connection refused")

func (f *failingOrg) GetTeam(ctx context.Context, id string) (*keys.Team, error) {
	if f.fail.Load() {
		return nil, errDown
	}
	return f.OrgLoader.GetTeam(ctx, id)
}

func (f *failingOrg) GetUser(ctx context.Context, id string) (*keys.User, error) {
	if f.fail.Load() {
		return nil, errDown
	}
	return f.OrgLoader.GetUser(ctx, id)
}

func (f *failingOrg) GetMembership(ctx context.Context, t, u string) (*keys.Membership, error) {
	if f.fail.Load() {
		return nil, errDown
	}
	return f.OrgLoader.GetMembership(ctx, t, u)
}

type orgEnv struct {
	store  *sqlite.Store
	keys   *cache.Cache
	org    *cache.OrgCache
	loader *failingOrg
	server *authz.Server
	client authv3.AuthorizationClient
	now    time.Time
}

// newOrgEnv serves Check over gRPC with the key and org caches on an
// embedded store, both following its change feed; opts adjust the
// Authorizer's configuration.
func newOrgEnv(t testing.TB, opts ...func(*authz.Config)) *orgEnv {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "org.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := &orgEnv{store: st, loader: &failingOrg{OrgLoader: st}, now: time.Now().UTC().Truncate(time.Second)}
	if e.keys, err = cache.New(cache.Config{Loader: st}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.keys.Close)
	t.Cleanup(e.keys.Attach(st))
	if e.org, err = cache.NewOrg(cache.OrgConfig{Loader: e.loader, LookupTimeout: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.org.Close)
	t.Cleanup(e.org.Attach(st))
	cfg := authz.Config{Cache: e.keys, Org: e.org, MasterKey: master, Now: func() time.Time { return e.now },
		AccessGroups: keys.AccessGroups{"grp-claude": {"claude-3"}}}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := authz.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.server = authz.NewServer(a)
	conn := serveCheck(t, e.server)
	e.client = authv3.NewAuthorizationClient(conn)
	return e
}

func (e *orgEnv) key(t testing.TB, raw string, k keys.Key) {
	t.Helper()
	k.Token = keys.HashHex(raw)
	if err := e.store.Create(context.Background(), &k); err != nil {
		t.Fatal(err)
	}
}

func (e *orgEnv) team(t testing.TB, tm keys.Team) {
	t.Helper()
	if err := e.store.CreateTeam(context.Background(), &tm); err != nil {
		t.Fatal(err)
	}
}

func (e *orgEnv) user(t testing.TB, u keys.User) {
	t.Helper()
	if err := e.store.CreateUser(context.Background(), &u); err != nil {
		t.Fatal(err)
	}
}

func (e *orgEnv) member(t testing.TB, team, user string, spend float64, b *keys.Budget) {
	t.Helper()
	ctx := context.Background()
	if b != nil {
		b.CreatedBy, b.UpdatedBy = "test", "test"
	}
	if err := e.store.PutMembership(ctx, &keys.Membership{TeamID: team, UserID: user}, b); err != nil {
		t.Fatal(err)
	}
	if spend != 0 {
		if err := e.store.AddOrgSpend(ctx, storeSpendMember(team, user, spend)); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *orgEnv) check(t *testing.T, raw, model string, w want) {
	t.Helper()
	for pass := range 2 { // miss, then hit
		resp, err := e.client.Check(context.Background(), req(chat, bearer(raw), body(model), false))
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		checkResp(t, nil, resp, w)
		if pass == 0 {
			e.keys.Wait()
			e.org.Wait()
		}
	}
}

func budgetDenied(msg string) want {
	return want{status: 400, typ: "budget_exceeded", param: nil, code: codes.ResourceExhausted, msg: msg}
}

func TestCheckTeamsAndUsers(t *testing.T) {
	e := newOrgEnv(t)
	past, future := e.now.Add(-time.Minute), e.now.Add(time.Hour)
	e.team(t, keys.Team{TeamID: "t-open", Models: []string{"gpt-4o", "gpt-4o-mini", "grp-claude"}, MaxBudget: ptr(10.0), Spend: 10})
	e.team(t, keys.Team{TeamID: "t-blocked", Blocked: true})
	e.team(t, keys.Team{TeamID: "t-over", MaxBudget: ptr(10.0), Spend: 10.5})
	e.team(t, keys.Team{TeamID: "t-reset", MaxBudget: ptr(10.0), Spend: 50, BudgetResetAt: &past, BudgetDuration: ptr("1d")})
	e.team(t, keys.Team{TeamID: "t-notyet", MaxBudget: ptr(10.0), Spend: 50, BudgetResetAt: &future, BudgetDuration: ptr("1d")})
	e.user(t, keys.User{UserID: "u-member"})
	e.user(t, keys.User{UserID: "u-scoped"})
	e.user(t, keys.User{UserID: "u-broke", MaxBudget: ptr(2.0), Spend: 2})
	e.user(t, keys.User{UserID: "u-models", Models: []string{"gpt-4o"}})
	e.user(t, keys.User{UserID: "u-nodefault", Models: []string{"no-default-models"}})
	e.member(t, "t-open", "u-member", 5, &keys.Budget{BudgetID: "b-member", MaxBudget: ptr(5.0)})
	e.member(t, "t-open", "u-scoped", 0, &keys.Budget{BudgetID: "b-scoped", AllowedModels: []string{"gpt-4o-mini"}})
	e.member(t, "t-open", "u-broke", 1, &keys.Budget{BudgetID: "b-broke", MaxBudget: ptr(5.0)})

	e.key(t, "sk-team-open", keys.Key{TeamID: ptr("t-open"), Models: []string{"all-team-models"}})
	e.key(t, "sk-team-blocked", keys.Key{TeamID: ptr("t-blocked"), Models: []string{"gpt-4o"}})
	e.key(t, "sk-team-blocked-expired", keys.Key{TeamID: ptr("t-blocked"), Expires: &past})
	e.key(t, "sk-team-over", keys.Key{TeamID: ptr("t-over")})
	e.key(t, "sk-team-over-expired", keys.Key{TeamID: ptr("t-over"), Expires: &past})
	e.key(t, "sk-team-reset", keys.Key{TeamID: ptr("t-reset")})
	e.key(t, "sk-team-notyet", keys.Key{TeamID: ptr("t-notyet")})
	e.key(t, "sk-team-ghost", keys.Key{TeamID: ptr("t-ghost"), Models: []string{"all-team-models"}})
	e.key(t, "sk-member", keys.Key{TeamID: ptr("t-open"), UserID: ptr("u-member")})
	e.key(t, "sk-scoped", keys.Key{TeamID: ptr("t-open"), UserID: ptr("u-scoped")})
	e.key(t, "sk-team-broke-user", keys.Key{TeamID: ptr("t-open"), UserID: ptr("u-broke")})
	e.key(t, "sk-personal-broke", keys.Key{UserID: ptr("u-broke")})
	e.key(t, "sk-personal-models", keys.Key{UserID: ptr("u-models")})
	e.key(t, "sk-personal-nodefault", keys.Key{UserID: ptr("u-nodefault")})
	e.key(t, "sk-personal-ghost", keys.Key{UserID: ptr("u-ghost")})

	blocked := want{status: 401, typ: "auth_error", param: "None", code: codes.Unauthenticated,
		msg: "Authentication Error, Team=t-blocked is blocked. Update via `/team/unblock` if you're an admin."}
	for _, tc := range []struct {
		name, key, model string
		want             want
	}{
		{"team key within team models and budget (spend == max passes for teams)", "sk-team-open", "gpt-4o", allowed("gpt-4o", "authorization")},
		{"all-team-models means the team's list: access group", "sk-team-open", "claude-3", allowed("claude-3", "authorization")},
		{"all-team-models means the team's list: denied", "sk-team-open", "gpt-3.5", want{status: 401, typ: "team_model_access_denied", param: "model", code: codes.PermissionDenied,
			msg: "team not allowed to access model. This team can only access models=['gpt-4o', 'gpt-4o-mini', 'grp-claude']. Tried to access gpt-3.5"}},
		{"team blocked", "sk-team-blocked", "gpt-4o", blocked},
		{"key model check comes before team blocked", "sk-team-blocked", "gpt-3.5", want{status: 401, typ: "key_model_access_denied", param: "model", code: codes.PermissionDenied,
			msg: "key not allowed to access model. This key can only access models=['gpt-4o']. Tried to access gpt-3.5"}},
		{"team blocked comes before key expiry", "sk-team-blocked-expired", "gpt-4o", blocked},
		{"team over budget", "sk-team-over", "gpt-4o", budgetDenied("Budget has been exceeded! Team=t-over Current cost: 10.5, Max budget: 10.0")},
		{"key expiry comes before team budget", "sk-team-over-expired", "gpt-4o", want{status: 401, typ: "expired_key", param: "sk-..." + keys.HashHex("sk-team-over-expired")[60:], code: codes.Unauthenticated,
			msg: "Authentication Error - Expired Key. Key Expiry time " + past.Format("2006-01-02 15:04:05") + "+00:00 and current time " + e.now.Format("2006-01-02 15:04:05") + "+00:00"}},
		{"team past budget_reset_at counts as reset", "sk-team-reset", "gpt-4o", allowed("gpt-4o", "authorization")},
		{"team before budget_reset_at", "sk-team-notyet", "gpt-4o", budgetDenied("Budget has been exceeded! Team=t-notyet Current cost: 50.0, Max budget: 10.0")},
		{"team not in the table: team_id is a label", "sk-team-ghost", "anything", allowed("anything", "authorization")},
		{"team member over budget", "sk-member", "gpt-4o", budgetDenied("Budget has been exceeded! User=u-member in Team=t-open Current cost: 5.0, Max budget: 5.0")},
		{"team member model scope", "sk-scoped", "gpt-4o", want{status: 401, typ: "team_model_access_denied", param: "model", code: codes.PermissionDenied,
			msg: "Team member not allowed to access model. User=u-scoped, Team=t-open, Model=gpt-4o. Allowed member models = ['gpt-4o-mini']"}},
		{"team member model scope allows", "sk-scoped", "gpt-4o-mini", allowed("gpt-4o-mini", "authorization")},
		{"a team key ignores the user's personal budget", "sk-team-broke-user", "gpt-4o", allowed("gpt-4o", "authorization")},
		{"personal key over the user's budget", "sk-personal-broke", "gpt-4o", budgetDenied("ExceededBudget: User=u-broke over budget. Spend=2.0, Budget=2.0")},
		{"personal key: user's models", "sk-personal-models", "gpt-3.5", want{status: 401, typ: "user_model_access_denied", param: "model", code: codes.PermissionDenied,
			msg: "user not allowed to access model. This user can only access models=['gpt-4o']. Tried to access gpt-3.5"}},
		{"personal key: user's models allow", "sk-personal-models", "gpt-4o", allowed("gpt-4o", "authorization")},
		{"personal key: no-default-models", "sk-personal-nodefault", "gpt-4o", want{status: 401, typ: "key_model_access_denied", param: "model", code: codes.PermissionDenied,
			msg: "User not allowed to access model. No default model access, only team models allowed. Tried to access gpt-4o"}},
		{"user not in the table", "sk-personal-ghost", "gpt-4o", allowed("gpt-4o", "authorization")},
	} {
		t.Run(tc.name, func(t *testing.T) { e.check(t, tc.key, tc.model, tc.want) })
	}
}

// A change to a team reaches the Check through the change feed, and a
// store that cannot answer for an uncached team fails the Check closed.
func TestCheckTeamChangesAndOutage(t *testing.T) {
	e := newOrgEnv(t)
	ctx := context.Background()
	e.team(t, keys.Team{TeamID: "t"})
	e.key(t, "sk-t", keys.Key{TeamID: ptr("t")})
	e.check(t, "sk-t", "gpt-4o", allowed("gpt-4o", "authorization"))
	if _, err := e.store.UpdateTeam(ctx, "t", func(tm *keys.Team) error { tm.Blocked = true; return nil }); err != nil {
		t.Fatal(err)
	}
	e.check(t, "sk-t", "gpt-4o", want{status: 401, typ: "auth_error", param: "None", code: codes.Unauthenticated,
		msg: "Authentication Error, Team=t is blocked. Update via `/team/unblock` if you're an admin."})
	if _, err := e.store.UpdateTeam(ctx, "t", func(tm *keys.Team) error { tm.Blocked = false; tm.MaxBudget = ptr(1.0); return nil }); err != nil {
		t.Fatal(err)
	}
	e.check(t, "sk-t", "gpt-4o", allowed("gpt-4o", "authorization"))
	if err := e.store.AddOrgSpend(ctx, storeSpendTeam("t", 1.5)); err != nil { // spend-only: updated in place
		t.Fatal(err)
	}
	e.check(t, "sk-t", "gpt-4o", budgetDenied("Budget has been exceeded! Team=t Current cost: 1.5, Max budget: 1.0"))

	// Cached: the outage does not matter. Uncached: fail closed.
	e.loader.fail.Store(true)
	e.check(t, "sk-t", "gpt-4o", budgetDenied("Budget has been exceeded! Team=t Current cost: 1.5, Max budget: 1.0"))
	e.team(t, keys.Team{TeamID: "t2"})
	e.key(t, "sk-t2", keys.Key{TeamID: ptr("t2")})
	_, err := e.client.Check(ctx, req(chat, bearer("sk-t2"), body("gpt-4o"), false))
	if code := statusCode(err); code != codes.Unavailable {
		t.Errorf("uncached team with the store down: %v, want codes.Unavailable", err)
	}
}

func statusCode(err error) codes.Code { return status.Code(err) }

func storeSpendTeam(team string, d float64) store.OrgSpend {
	return store.OrgSpend{Teams: map[string]float64{team: d}}
}

func storeSpendMember(team, user string, d float64) store.OrgSpend {
	return store.OrgSpend{Memberships: map[keys.MemberKey]float64{{TeamID: team, UserID: user}: d}}
}
