package mgmt_test

import (
	"fmt"
	"testing"
)

// A team key's models and limits against its team's, over real HTTP on
// both stores: LiteLLM's can_team_access_model on /key/generate,
// _check_team_key_limits for guaranteed throughput, and
// validate_key_team_change when /key/update moves a key to a team.
func TestTeamKeyFit(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newDirEnv(t, open)
		for _, u := range []string{"ann", "bob"} {
			e.admin("POST", "/user/new", fmt.Sprintf(`{"user_id": %q, "user_role": "internal_user", "auto_create_key": false}`, u), 200)
		}
		e.admin("POST", "/team/new", `{"team_id": "t", "models": ["gpt-4o", "openai/*"], "tpm_limit": 100, "rpm_limit": 10,
			"members_with_roles": [{"role": "admin", "user_id": "ann"}, {"role": "user", "user_id": "bob"}]}`, 200)
		bob, _, _ := e.generate(`{"user_id": "bob", "team_id": "t"}`)
		bobPersonal, _, _ := e.generate(`{"user_id": "bob", "models": ["gpt-4o"]}`)
		bobOutside, _, _ := e.generate(`{"user_id": "bob", "models": ["o3"]}`)
		stranger, _, _ := e.generate(`{"user_id": "zed", "models": ["gpt-4o"]}`)
		greedy, _, _ := e.generate(`{"user_id": "bob", "tpm_limit": 500}`)

		const notMember = "User=bob is not a Proxy Admin or Team Admin for team=t. Please ask your Proxy Admin to allow this action under 'Member Permissions' for this team."
		e.runSteps([]apiStep{
			{"models outside the team's", master, "POST", "/key/generate", `{"team_id": "t", "models": ["gpt-4o", "o3"]}`, 403, "team_model_access_denied",
				"team not allowed to access model. This team can only access models=['gpt-4o', 'openai/*']. Tried to access o3"},
			{"models within the team's", master, "POST", "/key/generate", `{"team_id": "t", "models": ["gpt-4o", "openai/gpt-4.1", "all-team-models"]}`, 200, "", ""},
			{"a team_id without a team row is a label", master, "POST", "/key/generate", `{"team_id": "no-row", "models": ["o3"]}`, 200, "", ""},
			{"guaranteed tpm within", master, "POST", "/key/generate", `{"team_id": "t", "tpm_limit": 60, "tpm_limit_type": "guaranteed_throughput"}`, 200, "", ""},
			{"guaranteed tpm over", master, "POST", "/key/generate", `{"team_id": "t", "tpm_limit": 41, "tpm_limit_type": "guaranteed_throughput"}`, 400, "internal_server_error",
				"Allocated TPM limit=60 + Key TPM limit=41 is greater than team TPM limit=100"},
			{"best effort is not counted", master, "POST", "/key/generate", `{"team_id": "t", "tpm_limit": 1000}`, 200, "", ""},
			{"a bad limit type", master, "POST", "/key/generate", `{"team_id": "t", "rpm_limit_type": "fast"}`, 422, "validation_error",
				"rpm_limit_type: Input should be 'guaranteed_throughput', 'best_effort_throughput' or 'dynamic'"},
			{"move: models outside the team's", master, "POST", "/key/update", fmt.Sprintf(`{"key": %q, "team_id": "t"}`, bobOutside), 403, "team_model_access_denied",
				"team not allowed to access model. This team can only access models=['gpt-4o', 'openai/*']. Tried to access o3"},
			{"move: the key's user is not a member", master, "POST", "/key/update", fmt.Sprintf(`{"key": %q, "team_id": "t"}`, stranger), 403, "internal_server_error",
				"User=zed is not a member of the team=t. Check team members via `/team/info`."},
			{"move: tpm over the team's", master, "POST", "/key/update", fmt.Sprintf(`{"key": %q, "team_id": "t"}`, greedy), 403, "internal_server_error", ""},
			{"regenerate into a team the models do not fit", master, "POST", "/key/regenerate", fmt.Sprintf(`{"key": %q, "team_id": "t"}`, bobOutside), 403, "team_model_access_denied",
				"team not allowed to access model. This team can only access models=['gpt-4o', 'openai/*']. Tried to access o3"},
			{"regenerate to another user", bob, "POST", "/key/regenerate", fmt.Sprintf(`{"key": %q, "user_id": "ann"}`, bobPersonal), 403, "internal_server_error",
				"User can only create keys for themselves. Got user_id=ann, Your ID=bob"},
			{"regenerate into a team not the caller's", bob, "POST", "/key/regenerate", fmt.Sprintf(`{"key": %q, "team_id": "elsewhere"}`, bobPersonal), 403, "internal_server_error",
				"User can only create keys for their own team. Got=elsewhere, Your Team ID=t"},
			{"move by a plain member", bob, "POST", "/key/update", fmt.Sprintf(`{"key": %q, "team_id": "t"}`, bobPersonal), 403, "internal_server_error", notMember},
			{"the team lets members update", master, "POST", "/team/permissions_update", `{"team_id": "t", "team_member_permissions": ["/key/update", "/key/info"]}`, 200, "", ""},
			{"move by a member the team lets update", bob, "POST", "/key/update", fmt.Sprintf(`{"key": %q, "team_id": "t"}`, bobPersonal), 200, "", ""},
		})
		// the limit type is kept in metadata, where LiteLLM keeps it
		r := e.call("POST", "/key/generate", master, `{"team_id": "t", "rpm_limit": 1, "rpm_limit_type": "guaranteed_throughput"}`)
		k, _ := r.obj(t)["key"].(string)
		e.sawRaw(k)
		info := e.call("GET", "/key/info?key="+k, master, "")
		md, _ := info.obj(t)["info"].(map[string]any)["metadata"].(map[string]any)
		if md["rpm_limit_type"] != "guaranteed_throughput" {
			t.Errorf("metadata %v", md)
		}
	})
}
