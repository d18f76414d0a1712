package authz

import (
	"net/http"

	"github.com/virtualkeys/sidecar/internal/apierr"
)

// Model-access denial types for teams and users (LiteLLM's ProxyErrorTypes).
const (
	typeTeamModelAccessDenied = "team_model_access_denied"
	typeUserModelAccessDenied = "user_model_access_denied"
)

// teamModel denies a model outside the team's models (common_checks step
// 2), with the key's rules: an empty list, "*" or "all-proxy-models" allows
// every model; globs and access groups apply. A key whose models say
// "all-team-models" passed its own check and is held to this list here.
func (a *Authorizer) teamModel(o *org, model string) (Decision, bool) {
	if o.team == nil || a.modelAllowed(o.team.Models, nil, model) {
		return Decision{}, false
	}
	return deny(ReasonModelDenied, apierr.New(http.StatusUnauthorized, typeTeamModelAccessDenied, "model",
		"team not allowed to access model. This team can only access models="+apierr.PyList(o.team.Models)+". Tried to access "+model)), true
}
