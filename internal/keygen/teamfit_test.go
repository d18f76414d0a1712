package keygen

import (
	"net/http"
	"testing"

	"github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/keys"
)

func i64(v int64) *int64 { return &v }

// errText is "status type message", "ok" for nil.
func errText(err error) string {
	if err == nil {
		return "ok"
	}
	e, ok := err.(*apierr.Error)
	if !ok {
		return "non-API error " + err.Error()
	}
	return http.StatusText(e.Status) + " " + e.Type + " " + e.Message
}

func TestTeamModels(t *testing.T) {
	groups := keys.AccessGroups{"fast": {"gpt-4o-mini", "claude-3-haiku"}}
	restricted := &keys.Team{TeamID: "t", Models: []string{"gpt-4o", "openai/*", "fast"}}
	open := &keys.Team{TeamID: "t"}
	const denied = "Forbidden team_model_access_denied team not allowed to access model. This team can only access models=['gpt-4o', 'openai/*', 'fast']. Tried to access "
	tests := []struct {
		name   string
		team   *keys.Team
		models []string
		want   string
	}{
		{"no models on the key", restricted, nil, "ok"},
		{"exact", restricted, []string{"gpt-4o"}, "ok"},
		{"team glob", restricted, []string{"openai/gpt-4.1"}, "ok"},
		{"through the team's access group", restricted, []string{"claude-3-haiku"}, "ok"},
		{"all-team-models", restricted, []string{keys.AllTeamModels}, "ok"},
		{"outside", restricted, []string{"gpt-4o", "claude-3-opus"}, denied + "claude-3-opus"},
		{"a key may not claim every model in a restricted team", restricted, []string{"*"}, denied + "*"},
		{"all-proxy-models in a restricted team", restricted, []string{keys.AllProxyModels}, denied + keys.AllProxyModels},
		{"case matters", restricted, []string{"GPT-4o"}, denied + "GPT-4o"},
		{"a team without models allows any", open, []string{"anything", "*"}, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errText(TeamModels(tt.team, groups, tt.models)); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestTeamAllocation(t *testing.T) {
	team := &keys.Team{TeamID: "t", TPMLimit: i64(2000), RPMLimit: i64(200)}
	perModel := &keys.Team{TeamID: "t", Metadata: map[string]any{"model_rpm_limit": map[string]any{"gpt-4o": 10.0}}}
	others := []*keys.Key{
		{Token: "a", TPMLimit: i64(600), RPMLimit: i64(60), Metadata: map[string]any{"model_rpm_limit": map[string]any{"gpt-4o": 4.0}}},
		{Token: "b", TPMLimit: i64(300)},
		{Token: "self", TPMLimit: i64(500), RPMLimit: i64(50)},
	}
	tests := []struct {
		name string
		team *keys.Team
		k    TeamKey
		want string
	}{
		{"best effort is never checked", team, TeamKey{TPMLimit: i64(5000)}, "ok"},
		{"fits exactly", team, TeamKey{TPMLimit: i64(600), GuaranteedTPM: true}, "ok"},
		{"tpm over", team, TeamKey{TPMLimit: i64(601), GuaranteedTPM: true},
			"Bad Request internal_server_error Allocated TPM limit=1400 + Key TPM limit=601 is greater than team TPM limit=2000"},
		{"the key itself is not counted twice", team, TeamKey{Token: "self", TPMLimit: i64(1100), GuaranteedTPM: true}, "ok"},
		{"rpm over (a guaranteed tpm checks rpm too, as LiteLLM)", team, TeamKey{RPMLimit: i64(91), GuaranteedTPM: true},
			"Bad Request internal_server_error Allocated RPM limit=110 + Key RPM limit=91 is greater than team RPM limit=200"},
		{"model rpm within the team's rpm", team, TeamKey{ModelRPMLimit: map[string]int64{"gpt-4o": 196}, GuaranteedRPM: true}, "ok"},
		{"model rpm over the team's rpm", team, TeamKey{ModelRPMLimit: map[string]int64{"gpt-4o": 197}, GuaranteedRPM: true},
			"Bad Request internal_server_error Allocated RPM limit=4 + Key RPM limit=197 is greater than team RPM limit=200"},
		{"model rpm over the team's model rpm", perModel, TeamKey{ModelRPMLimit: map[string]int64{"gpt-4o": 7}, GuaranteedRPM: true},
			"Bad Request internal_server_error Allocated RPM limit=4 + Key RPM limit=7 is greater than team RPM limit=10"},
		{"a model the team does not limit", perModel, TeamKey{ModelRPMLimit: map[string]int64{"o3": 1000}, GuaranteedRPM: true}, "ok"},
		{"a team without limits", &keys.Team{TeamID: "t"}, TeamKey{TPMLimit: i64(1 << 40), GuaranteedTPM: true}, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errText(TeamAllocation(tt.team, others, tt.k)); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestTeamChange(t *testing.T) {
	ann, bob := "ann", "bob"
	team := &keys.Team{TeamID: "t", Models: []string{"gpt-4o"}, TPMLimit: i64(100), RPMLimit: i64(10),
		MembersWithRoles: []keys.Member{{Role: "admin", UserID: &ann}, {Role: "user", UserID: &bob}}}
	granted := *team
	granted.TeamMemberPermissions = []string{access.RouteUpdate}
	master := access.Caller{Master: true}
	tests := []struct {
		name string
		team *keys.Team
		k    TeamKey
		c    access.Caller
		want string
	}{
		{"proxy admin moves a fitting key", team, TeamKey{Token: "h", Models: []string{"gpt-4o"}, TPMLimit: i64(100)}, master, "ok"},
		{"models outside the team", team, TeamKey{Token: "h", Models: []string{"o3"}}, master,
			"Forbidden team_model_access_denied team not allowed to access model. This team can only access models=['gpt-4o']. Tried to access o3"},
		{"the key's user is not a member", team, TeamKey{Token: "h", UserID: "zed"}, master,
			"Forbidden internal_server_error User=zed is not a member of the team=t. Check team members via `/team/info`."},
		{"tpm over the team's", team, TeamKey{Token: "h", TPMLimit: i64(101)}, master,
			"Forbidden internal_server_error Key=h has a tpm_limit=101 which is greater than the team's tpm_limit=100."},
		{"rpm over the team's", team, TeamKey{Token: "h", RPMLimit: i64(11)}, master,
			"Forbidden internal_server_error Key=h has a rpm_limit=11 which is greater than the team's rpm_limit=10."},
		{"team admin", team, TeamKey{Token: "h", UserID: "bob"}, access.Caller{UserID: "ann", Role: access.RoleInternalUser}, "ok"},
		{"plain member by default", team, TeamKey{Token: "h", UserID: "bob"}, access.Caller{UserID: "bob", Role: access.RoleInternalUser},
			"Forbidden internal_server_error User=bob is not a Proxy Admin or Team Admin for team=t. Please ask your Proxy Admin to allow this action under 'Member Permissions' for this team."},
		{"plain member the team lets update", &granted, TeamKey{Token: "h", UserID: "bob"}, access.Caller{UserID: "bob", Role: access.RoleInternalUser}, "ok"},
		{"a stranger", team, TeamKey{Token: "h"}, access.Caller{UserID: "zed", Role: access.RoleInternalUser},
			"Forbidden internal_server_error User=zed is not a Proxy Admin or Team Admin for team=t. Please ask your Proxy Admin to allow this action under 'Member Permissions' for this team."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errText(TeamChange(tt.team, nil, tt.k, tt.c)); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}
