package authz

import (
	"net/http"
	"time"

	"github.com/virtualkeys/sidecar/internal/apierr"
)

// memberBudget denies a team key once its user's spend in the team
// (LiteLLM_TeamMembership.spend) reaches the max_budget of the
// membership's budget row (common_checks step 4.2). As in LiteLLM, the
// check needs the user's row to exist.
func memberBudget(o *org, now time.Time) (Decision, bool) {
	if o.team == nil || o.user == nil || o.member == nil || !o.member.HasBudget {
		return Decision{}, false
	}
	spend, max := o.member.SpendAt(now), o.member.MaxBudget
	if spend < max {
		return Decision{}, false
	}
	return deny(ReasonBudget, apierr.New(http.StatusBadRequest, apierr.TypeBudgetExceeded, "",
		"Budget has been exceeded! User="+o.userID+" in Team="+o.teamID+" Current cost: "+apierr.PyFloat(spend)+", Max budget: "+apierr.PyFloat(max))), true
}
