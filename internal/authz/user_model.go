package authz

import (
	"net/http"
	"slices"

	"github.com/virtualkeys/sidecar/internal/apierr"
)

// noDefaultModels in a user's models means the user may only use team
// models: a personal key may call none.
const noDefaultModels = "no-default-models"

// userModel denies a personal key (no team row) a model outside its
// user's models (common_checks step 2.1).
func (a *Authorizer) userModel(o *org, model string) (Decision, bool) {
	if o.team != nil || o.user == nil {
		return Decision{}, false
	}
	if slices.Contains(o.user.Models, noDefaultModels) {
		return deny(ReasonModelDenied, apierr.New(http.StatusUnauthorized, apierr.TypeKeyModelAccessDenied, "model",
			"User not allowed to access model. No default model access, only team models allowed. Tried to access "+model)), true
	}
	if a.modelAllowed(o.user.Models, nil, model) {
		return Decision{}, false
	}
	return deny(ReasonModelDenied, apierr.New(http.StatusUnauthorized, typeUserModelAccessDenied, "model",
		"user not allowed to access model. This user can only access models="+apierr.PyList(o.user.Models)+". Tried to access "+model)), true
}
