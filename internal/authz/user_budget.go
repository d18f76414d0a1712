package authz

import (
	"net/http"
	"time"

	"github.com/virtualkeys/sidecar/internal/apierr"
)

// userBudget denies a personal key (no team row) once its user's spend
// reaches the user's max_budget (common_checks step 4.1).
func userBudget(o *org, now time.Time) (Decision, bool) {
	if o.team != nil || o.user == nil || !o.user.HasBudget {
		return Decision{}, false
	}
	spend, max := o.user.SpendAt(now), o.user.MaxBudget
	if spend < max {
		return Decision{}, false
	}
	return deny(ReasonBudget, apierr.New(http.StatusBadRequest, apierr.TypeBudgetExceeded, "",
		"ExceededBudget: User="+o.userID+" over budget. Spend="+apierr.PyFloat(spend)+", Budget="+apierr.PyFloat(max))), true
}
