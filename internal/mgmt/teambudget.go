package mgmt

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// teamMemberBudgetKey is the team metadata member naming the team's
// default member budget row (LiteLLM's team_member_budget_id).
const teamMemberBudgetKey = "team_member_budget_id"

// teamMemberBudgetID is the team's default member budget, "" when none.
func teamMemberBudgetID(t *keys.Team) string {
	id, _ := t.Metadata[teamMemberBudgetKey].(string)
	return id
}

// wantsMemberBudget reports whether a /team/new or /team/update body sets
// any of the team's default member limits.
func (f *teamFields) wantsMemberBudget() bool {
	return f.TeamMemberBudget.ok() || f.TeamMemberRPMLimit.ok() || f.TeamMemberTPMLimit.ok() || f.TeamMemberBudgetDuration.ok()
}

// putTeamMemberBudget is LiteLLM's TeamMemberBudgetHandler: the body's
// team_member_budget, team_member_rpm_limit, team_member_tpm_limit (and
// team_member_budget_duration; else the team's budget_duration) go to one
// LiteLLM_BudgetTable row that every member added without its own
// max_budget_in_team points at. The team's existing row is updated with
// the values given; without one a row is created and named in t's
// metadata (team_member_budget_id). Changing the row reaches every
// replica's members through the budget table's change feed.
func (a *API) putTeamMemberBudget(ctx context.Context, r *http.Request, c *caller, o OrgStore, t *keys.Team, f *teamFields) error {
	if !f.wantsMemberBudget() {
		return nil
	}
	who := changedBy(r, c)
	var b, before *keys.Budget
	if id := teamMemberBudgetID(t); id != "" {
		cur, err := o.GetBudget(ctx, id)
		switch {
		case err == nil:
			cp := *cur
			b, before = cur, &cp
		case !errors.Is(err, keys.ErrNotFound):
			return fmt.Errorf("team member budget: %w", err)
		}
	}
	if b == nil {
		id := "team-budget-" + strings.ReplaceAll(newID(), "-", "")
		if t.TeamAlias != nil && *t.TeamAlias != "" {
			id = "team-" + strings.ReplaceAll(*t.TeamAlias, " ", "-") + "-budget-" + strings.ReplaceAll(newID(), "-", "")
		}
		b = &keys.Budget{BudgetID: id, CreatedBy: who}
		if !f.TeamMemberBudgetDuration.ok() && t.BudgetDuration != nil {
			b.BudgetDuration, b.BudgetResetAt = t.BudgetDuration, t.BudgetResetAt
		}
	}
	b.UpdatedBy = who
	if f.TeamMemberBudget.ok() {
		b.MaxBudget = &f.TeamMemberBudget.V
	}
	if f.TeamMemberRPMLimit.ok() {
		b.RPMLimit = &f.TeamMemberRPMLimit.V
	}
	if f.TeamMemberTPMLimit.ok() {
		b.TPMLimit = &f.TeamMemberTPMLimit.V
	}
	if f.TeamMemberBudgetDuration.ok() {
		d, at, err := budgetReset("team_member_budget_duration", f.TeamMemberBudgetDuration, a.clock())
		if err != nil {
			return err
		}
		b.BudgetDuration, b.BudgetResetAt = d, at
	}
	if err := o.PutBudget(ctx, b); err != nil {
		return fmt.Errorf("team member budget: %w", err)
	}
	// this replica's members see the new limits at once; others through
	// the feed
	a.orgChanged(store.Event{Kind: store.EventBudgetChanged, Budget: b.BudgetID})
	action := keys.ActionUpdated
	if before == nil {
		action = keys.ActionCreated
	}
	a.auditOrg(ctx, r, c, action, keys.BudgetTable, b.BudgetID, before, b)
	if t.Metadata == nil {
		t.Metadata = map[string]any{}
	}
	t.Metadata[teamMemberBudgetKey] = b.BudgetID
	return nil
}
