package authz

import (
	"net/http"

	"github.com/virtualkeys/sidecar/internal/apierr"
)

// teamBlocked denies a key whose team is blocked (LiteLLM's common_checks
// step 1).
func teamBlocked(o *org) (Decision, bool) {
	if o.team == nil || !o.team.Blocked {
		return Decision{}, false
	}
	return deny(ReasonBlocked, apierr.New(http.StatusUnauthorized, apierr.TypeAuth, "None",
		"Authentication Error, Team="+o.teamID+" is blocked. Update via `/team/unblock` if you're an admin.")), true
}
