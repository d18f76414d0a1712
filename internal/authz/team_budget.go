package authz

import (
	"net/http"
	"time"

	"github.com/virtualkeys/sidecar/internal/apierr"
)

// teamBudget denies a team key once the team's spend is over its
// max_budget (common_checks step 3; LiteLLM compares spend > max_budget
// for teams). A team past its budget_reset_at counts as reset.
func teamBudget(o *org, now time.Time) (Decision, bool) {
	if o.team == nil || !o.team.HasBudget {
		return Decision{}, false
	}
	spend, max := o.team.SpendAt(now), o.team.MaxBudget
	if !(spend > max) {
		return Decision{}, false
	}
	return deny(ReasonBudget, apierr.New(http.StatusBadRequest, apierr.TypeBudgetExceeded, "",
		"Budget has been exceeded! Team="+o.teamID+" Current cost: "+apierr.PyFloat(spend)+", Max budget: "+apierr.PyFloat(max))), true
}
