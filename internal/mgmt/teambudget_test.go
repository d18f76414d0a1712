package mgmt_test

import (
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/mgmt"
	"github.com/virtualkeys/sidecar/internal/store"
)

// A team's default member budget (team_member_budget, _rpm_limit,
// _tpm_limit, _budget_duration), over real HTTP on both stores: one
// LiteLLM_BudgetTable row named in the team's metadata, which members
// added without their own max_budget_in_team share, and which
// /team/update changes for all of them at once.
func TestTeamMemberBudget(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		var mu sync.Mutex
		var events []store.Event
		e := newEnv(t, open(t), func(c *mgmt.Config) {
			c.OrgChanged = func(ev store.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }
		})
		o := orgOf(t, e)
		ctx := t.Context()
		budgetOf := func(user string) *keys.Budget {
			t.Helper()
			m, err := o.GetMembership(ctx, "t", user)
			if err != nil {
				t.Fatalf("membership of %s: %v", user, err)
			}
			return m.Budget
		}
		tm := e.admin("POST", "/team/new", `{"team_id": "t", "team_alias": "My Team", "budget_duration": "30d",
			"team_member_budget": 5, "team_member_rpm_limit": 10, "members_with_roles": [{"role": "admin", "user_id": "ann"}]}`, 200)
		md, _ := tm["metadata"].(map[string]any)
		id, _ := md["team_member_budget_id"].(string)
		if !strings.HasPrefix(id, "team-My-Team-budget-") {
			t.Fatalf("team_member_budget_id = %q", id)
		}
		for _, k := range []string{"team_member_budget", "team_member_rpm_limit"} {
			if _, ok := tm[k]; ok {
				t.Errorf("the team row carries %s", k)
			}
		}
		b := budgetOf("ann")
		if b == nil || b.BudgetID != id || *b.MaxBudget != 5 || *b.RPMLimit != 10 || b.BudgetDuration == nil || *b.BudgetDuration != "30d" || b.BudgetResetAt == nil {
			t.Fatalf("ann's budget = %+v", b)
		}
		e.admin("POST", "/team/member_add", `{"team_id": "t", "member": {"role": "user", "user_id": "bob"}}`, 200)
		e.admin("POST", "/team/member_add", `{"team_id": "t", "member": {"role": "user", "user_id": "cat"}, "max_budget_in_team": 2}`, 200)
		if b := budgetOf("bob"); b == nil || b.BudgetID != id {
			t.Errorf("bob's budget = %+v, want the team's default", b)
		}
		if b := budgetOf("cat"); b == nil || b.BudgetID == id || *b.MaxBudget != 2 {
			t.Errorf("cat's budget = %+v, want its own", b)
		}
		// /team/update changes the shared row: every member it covers at once
		up := e.admin("POST", "/team/update", `{"team_id": "t", "team_member_budget": 7, "team_member_tpm_limit": 1000}`, 200)
		if got := up["data"].(map[string]any)["metadata"].(map[string]any)["team_member_budget_id"]; got != id {
			t.Errorf("team_member_budget_id after update = %v, want %s", got, id)
		}
		for _, u := range []string{"ann", "bob"} {
			if b := budgetOf(u); b == nil || *b.MaxBudget != 7 || *b.RPMLimit != 10 || b.TPMLimit == nil || *b.TPMLimit != 1000 {
				t.Errorf("%s's budget after the update = %+v", u, b)
			}
		}
		// this replica's caches heard of the shared row's change at once
		mu.Lock()
		heard := slices.ContainsFunc(events, func(ev store.Event) bool { return ev.Kind == store.EventBudgetChanged && ev.Budget == id })
		mu.Unlock()
		if !heard {
			t.Errorf("no budget event for %s", id)
		}
		// a team without a default gets one on update
		e.admin("POST", "/team/new", `{"team_id": "t2", "members_with_roles": [{"role": "user", "user_id": "dan"}]}`, 200)
		up = e.admin("POST", "/team/update", `{"team_id": "t2", "team_member_budget_duration": "1d", "team_member_budget": 1}`, 200)
		id2, _ := up["data"].(map[string]any)["metadata"].(map[string]any)["team_member_budget_id"].(string)
		if !strings.HasPrefix(id2, "team-budget-") {
			t.Errorf("t2's team_member_budget_id = %q", id2)
		}
		e.admin("POST", "/team/member_add", `{"team_id": "t2", "member": {"role": "user", "user_id": "eve"}}`, 200)
		if m, err := o.GetMembership(ctx, "t2", "eve"); err != nil || m.Budget == nil || m.Budget.BudgetID != id2 || *m.Budget.BudgetDuration != "1d" {
			t.Errorf("eve's membership = %+v, %v", m, err)
		}
		for _, bad := range []string{
			`{"team_id": "t", "team_member_budget": -1}`,
			`{"team_id": "t", "team_member_budget_duration": "often"}`,
		} {
			if r := e.call("POST", "/team/update", master, bad); r.status != 400 && r.status != 422 {
				t.Errorf("%s: %d %s", bad, r.status, r.body)
			}
		}
	})
}
