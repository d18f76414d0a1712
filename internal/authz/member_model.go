package authz

import (
	"net/http"

	"github.com/virtualkeys/sidecar/internal/apierr"
)

// memberModel denies a model outside the team member's own scope, the
// allowed_models of the membership's budget row (common_checks step 2.2).
// An empty scope adds no restriction.
func (a *Authorizer) memberModel(o *org, model string) (Decision, bool) {
	if o.member == nil || len(o.member.AllowedModels) == 0 || a.modelAllowed(o.member.AllowedModels, nil, model) {
		return Decision{}, false
	}
	return deny(ReasonModelDenied, apierr.New(http.StatusUnauthorized, typeTeamModelAccessDenied, "model",
		"Team member not allowed to access model. User="+o.userID+", Team="+o.teamID+", Model="+model+
			". Allowed member models = "+apierr.PyList(o.member.AllowedModels))), true
}
