package keygen

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// TeamKey is a team key as the team-fit rules read it: the request's values
// merged over the stored key's (a new key has no Token).
type TeamKey struct {
	// Token is the key's hash; "" for a key being generated.
	Token string
	// UserID is the key's user ("" = none).
	UserID string
	// Models is the key's models list.
	Models []string
	// TPMLimit and RPMLimit are the key's limits (nil = none);
	// ModelTPMLimit and ModelRPMLimit its per-model ones (metadata's
	// model_tpm_limit / model_rpm_limit).
	TPMLimit, RPMLimit           *int64
	ModelTPMLimit, ModelRPMLimit map[string]int64
	// GuaranteedTPM and GuaranteedRPM are set when the request's
	// tpm_limit_type / rpm_limit_type is "guaranteed_throughput".
	GuaranteedTPM, GuaranteedRPM bool
}

// GuaranteedThroughput is the value of tpm_limit_type / rpm_limit_type
// that asks LiteLLM to refuse over-allocating the team's limits.
const GuaranteedThroughput = "guaranteed_throughput"

// TeamModels is LiteLLM's can_team_access_model for each model a team key
// names: a key may only name models its team may call (the team's models,
// with access groups and wildcards; a team without models may call any).
// "all-team-models" always fits. A refusal is LiteLLM's 403
// team_model_access_denied.
func TeamModels(t *keys.Team, groups keys.AccessGroups, models []string) error {
	for _, m := range models {
		if m == keys.AllTeamModels || keys.ModelAllowed(t.Models, nil, groups, m) {
			continue
		}
		return apierr.New(http.StatusForbidden, TypeTeamModelAccessDenied, "model",
			"team not allowed to access model. This team can only access models="+apierr.PyList(t.Models)+". Tried to access "+m)
	}
	return nil
}

// TypeTeamModelAccessDenied is LiteLLM's error type for a model its team
// may not call.
const TypeTeamModelAccessDenied = "team_model_access_denied"

// TeamAllocation is LiteLLM's _check_team_key_limits: when the key asks for
// guaranteed throughput (tpm_limit_type or rpm_limit_type
// "guaranteed_throughput"), its limits plus those already allocated to the
// team's other keys may not exceed the team's limits (tpm_limit, rpm_limit
// and metadata's model_tpm_limit / model_rpm_limit). others are the team's
// keys; the key itself (k.Token) is left out of the sum, which LiteLLM
// counts twice on an update. A refusal is LiteLLM's 400.
func TeamAllocation(t *keys.Team, others []*keys.Key, k TeamKey) error {
	if !k.GuaranteedTPM && !k.GuaranteedRPM {
		return nil
	}
	var tpm, rpm int64
	modelTPM, modelRPM := map[string]int64{}, map[string]int64{}
	for _, o := range others {
		if o.Token == k.Token {
			continue
		}
		if o.TPMLimit != nil {
			tpm += *o.TPMLimit
		}
		if o.RPMLimit != nil {
			rpm += *o.RPMLimit
		}
		addModelLimits(modelTPM, o.Metadata["model_tpm_limit"])
		addModelLimits(modelRPM, o.Metadata["model_rpm_limit"])
	}
	teamModelTPM, teamModelRPM := modelLimits(t.Metadata["model_tpm_limit"]), modelLimits(t.Metadata["model_rpm_limit"])
	// LiteLLM checks model-specific limits first, rpm before tpm.
	if err := allocModels("RPM", k.ModelRPMLimit, modelRPM, t.RPMLimit, teamModelRPM); err != nil {
		return err
	}
	if err := allocModels("TPM", k.ModelTPMLimit, modelTPM, t.TPMLimit, teamModelTPM); err != nil {
		return err
	}
	if k.TPMLimit != nil && t.TPMLimit != nil && *k.TPMLimit+tpm > *t.TPMLimit {
		return overAllocated("TPM", tpm, *k.TPMLimit, *t.TPMLimit)
	}
	if k.RPMLimit != nil && t.RPMLimit != nil && *k.RPMLimit+rpm > *t.RPMLimit {
		return overAllocated("RPM", rpm, *k.RPMLimit, *t.RPMLimit)
	}
	return nil
}

// allocModels checks a key's per-model limits against the team's: its
// overall limit when set, else the team's per-model limit for that model.
func allocModels(kind string, key, allocated map[string]int64, teamLimit *int64, teamModel map[string]int64) error {
	for _, m := range sortedKeys(key) {
		v := key[m]
		switch {
		case teamLimit != nil:
			if allocated[m]+v > *teamLimit {
				return overAllocated(kind, allocated[m], v, *teamLimit)
			}
		case teamModel[m] > 0 && allocated[m]+v > teamModel[m]:
			return overAllocated(kind, allocated[m], v, teamModel[m])
		}
	}
	return nil
}

func overAllocated(kind string, allocated, key, team int64) *apierr.Error {
	return httpError(http.StatusBadRequest, fmt.Sprintf("Allocated %s limit=%d + Key %s limit=%d is greater than team %s limit=%d", kind, allocated, kind, key, kind, team))
}

// modelLimits reads a {"model": limit} map from decoded JSON (metadata).
func modelLimits(v any) map[string]int64 {
	out := map[string]int64{}
	addModelLimits(out, v)
	return out
}

func addModelLimits(into map[string]int64, v any) {
	m, _ := v.(map[string]any)
	for model, raw := range m {
		if n, ok := keys.Number(raw); ok {
			into[model] += int64(n)
		}
	}
}

// ModelLimits reads a model_tpm_limit / model_rpm_limit object (a request
// field or a metadata member): model -> limit, non-numbers left out.
func ModelLimits(v any) map[string]int64 { return modelLimits(v) }

// TeamChange is LiteLLM's validate_key_team_change, for /key/update moving
// a key to team t: the team must be able to call the key's models, the
// key's user must be a member, the key's tpm/rpm limits may not exceed the
// team's, and the caller must be a proxy admin, an admin of t, or a member
// t's team_member_permissions let call /key/update. Refusals are LiteLLM's
// 403s.
func TeamChange(t *keys.Team, groups keys.AccessGroups, k TeamKey, c access.Caller) error {
	if err := TeamModels(t, groups, k.Models); err != nil {
		return err
	}
	if k.UserID != "" && t.Role(k.UserID) == "" {
		return httpError(http.StatusForbidden, fmt.Sprintf("User=%s is not a member of the team=%s. Check team members via `/team/info`.", k.UserID, t.TeamID))
	}
	if k.TPMLimit != nil && t.TPMLimit != nil && *t.TPMLimit != 0 && *k.TPMLimit > *t.TPMLimit {
		return httpError(http.StatusForbidden, fmt.Sprintf("Key=%s has a tpm_limit=%d which is greater than the team's tpm_limit=%d.", k.Token, *k.TPMLimit, *t.TPMLimit))
	}
	if k.RPMLimit != nil && t.RPMLimit != nil && *t.RPMLimit != 0 && *k.RPMLimit > *t.RPMLimit {
		return httpError(http.StatusForbidden, fmt.Sprintf("Key=%s has a rpm_limit=%d which is greater than the team's rpm_limit=%d.", k.Token, *k.RPMLimit, *t.RPMLimit))
	}
	if c.Admin() || access.TeamOf(t).MemberMayCall(c.UserID, access.RouteUpdate) {
		return nil
	}
	return httpError(http.StatusForbidden, fmt.Sprintf("User=%s is not a Proxy Admin or Team Admin for team=%s. Please ask your Proxy Admin to allow this action under 'Member Permissions' for this team.", pyNone(c.UserID), t.TeamID))
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
