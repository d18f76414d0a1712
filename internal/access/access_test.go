package access

import (
	"fmt"
	"testing"

	"github.com/virtualkeys/sidecar/internal/apierr"
)

func ptr[T any](v T) *T { return &v }

// callers are every kind of caller the permission matrix (docs/api.md) has.
var callers = map[string]Caller{
	"master":               {Master: true},
	"proxy_admin":          {Role: RoleProxyAdmin, UserID: "pa", HasUserRow: true, Token: "t-pa"},
	"proxy_admin_viewer":   {Role: RoleProxyAdminViewer, UserID: "pv", HasUserRow: true, Token: "t-pv"},
	"internal_user":        {Role: RoleInternalUser, UserID: "iu", HasUserRow: true, Token: "t-iu", UserTeams: []string{"t1"}},
	"internal_user_viewer": {Role: RoleInternalUserViewer, UserID: "iv", HasUserRow: true, Token: "t-iv"},
	"team admin":           {Role: RoleInternalUser, UserID: "ta", TeamID: "t1", HasUserRow: true, Token: "t-ta", UserTeams: []string{"t1"}},
	"team user":            {Role: RoleInternalUser, UserID: "tu", TeamID: "t1", HasUserRow: true, Token: "t-tu", UserTeams: []string{"t1"}},
	"no user":              {Token: "t-none"},
}

var team1 = &Team{TeamID: "t1", Members: map[string]string{"ta": "admin", "tu": "user"}}

// result is status/type/message, "" for allowed.
func result(err error) string {
	if err == nil {
		return "ok"
	}
	e, ok := err.(*apierr.Error)
	if !ok {
		return fmt.Sprintf("non-API error %v", err)
	}
	return fmt.Sprintf("%d %s %s", e.Status, e.Type, e.Message)
}

const adminOnly = "Authentication Error, Only proxy admin can be used to generate, delete, update info for new keys/users/teams. Route=%s. Your role=%s. Your user_id=%s"

func TestRoute(t *testing.T) {
	writes := []string{RouteGenerate, RouteUpdate, RouteDelete, RouteRegenerate, RouteBlock, RouteUnblock}
	for name, c := range callers {
		for _, r := range append(writes, infoRoutes...) {
			t.Run(name+" "+r, func(t *testing.T) {
				want := "ok"
				isWrite := !contains(infoRoutes, r)
				switch {
				case !isWrite, c.Admin():
				case c.Role == RoleProxyAdminViewer:
					want = "403 auth_error user not allowed to access this route, role= proxy_admin_viewer. Trying to access: " + r
				case c.Role == RoleInternalUser:
				case c.HasUserRow:
					want = "401 auth_error " + fmt.Sprintf(adminOnly, r, c.Role, c.UserID)
				default:
					want = "401 auth_error " + fmt.Sprintf(adminOnly, r, "unknown", "unknown")
				}
				if got := result(Route(c, r)); got != want {
					t.Errorf("got  %s\nwant %s", got, want)
				}
			})
		}
	}
}

func contains(l []string, s string) bool {
	for _, v := range l {
		if v == s {
			return true
		}
	}
	return false
}

func TestKeyRequest(t *testing.T) {
	tests := []struct {
		caller         string
		userID, teamID *string
		want           string
	}{
		{"master", ptr("anyone"), ptr("any"), "ok"},
		{"proxy_admin", ptr("anyone"), ptr("any"), "ok"},
		{"internal_user", nil, nil, "ok"},
		{"internal_user", ptr("iu"), nil, "ok"},
		{"internal_user", ptr("other"), nil, "403 internal_server_error User can only create keys for themselves. Got user_id=other, Your ID=iu"},
		{"internal_user", nil, ptr("t1"), "403 internal_server_error User can only create keys for their own team. Got=t1, Your Team ID=None"},
		{"team admin", nil, ptr("t1"), "ok"},
		{"team admin", nil, ptr("t2"), "403 internal_server_error User can only create keys for their own team. Got=t2, Your Team ID=t1"},
		{"no user", ptr("x"), nil, "403 internal_server_error User can only create keys for themselves. Got user_id=x, Your ID=None"},
	}
	for _, tt := range tests {
		t.Run(tt.caller, func(t *testing.T) {
			if got := result(KeyRequest(callers[tt.caller], tt.userID, tt.teamID)); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// memberRefused is the 401 a plain member of team t1 gets on route when
// the team's team_member_permissions are perms.
func memberRefused(route, perms string) string {
	return "401 team_member_permission_error Team member does not have permissions for endpoint: " + route +
		". You only have access to the following endpoints: " + perms + " for team t1. To create keys for this team, please ask your proxy admin to check the team member permission settings and update the settings to allow team member users to create keys."
}

func TestCanModify(t *testing.T) {
	own := Key{Token: "k1", UserID: "iu"}
	other := Key{Token: "k2", UserID: "someone"}
	teamKey := Key{Token: "k3", TeamID: "t1"}
	tuTeamKey := Key{Token: "k6", TeamID: "t1", UserID: "tu"}
	lost := Key{Token: "k4", TeamID: "gone"}
	granted := &Team{TeamID: "t1", Members: team1.Members, Permissions: []string{RouteUpdate, RouteDelete, "/key/{key_id}/regenerate"}}
	const notYours = "403 internal_server_error {'error': 'You are not authorized to delete this key'}"
	const defaults = "['/key/info', '/key/health']"
	tests := []struct {
		caller string
		key    Key
		team   *Team
		roles  []string
		route  string
		want   string
	}{
		{"master", other, nil, DefaultTeamMemberRoles, RouteDelete, "ok"},
		{"master", lost, nil, DefaultTeamMemberRoles, RouteDelete, "ok"},
		{"proxy_admin", other, nil, DefaultTeamMemberRoles, RouteDelete, "ok"},
		{"internal_user", own, nil, DefaultTeamMemberRoles, RouteDelete, "ok"},
		{"internal_user", other, nil, DefaultTeamMemberRoles, RouteDelete, notYours},
		{"internal_user", Key{Token: "k5"}, nil, DefaultTeamMemberRoles, RouteDelete, notYours},
		{"no user", Key{Token: "k5"}, nil, DefaultTeamMemberRoles, RouteDelete, notYours},
		{"team admin", teamKey, team1, DefaultTeamMemberRoles, RouteDelete, "ok"},
		{"team admin", teamKey, team1, DefaultTeamMemberRoles, RouteGenerate, "ok"},
		// a plain member: only what team_member_permissions lists (default: info, health)
		{"team user", teamKey, team1, DefaultTeamMemberRoles, RouteDelete, memberRefused(RouteDelete, defaults)},
		{"team user", tuTeamKey, team1, DefaultTeamMemberRoles, RouteUpdate, memberRefused(RouteUpdate, defaults)},
		{"team user", teamKey, granted, DefaultTeamMemberRoles, RouteDelete, "ok"},
		{"team user", teamKey, granted, DefaultTeamMemberRoles, RouteRegenerate, "ok"},
		{"team user", teamKey, granted, DefaultTeamMemberRoles, RouteBlock, memberRefused(RouteBlock, "['/key/update', '/key/delete', '/key/{key_id}/regenerate']")},
		{"team user", teamKey, granted, nil, RouteUpdate, "ok"},
		// roles are checked before permissions
		{"team user", teamKey, granted, []string{"admin"}, RouteUpdate, "400 internal_server_error Team member role user not in allowed_team_member_roles=['admin']"},
		{"team admin", teamKey, team1, []string{"user"}, RouteUpdate, "400 internal_server_error Team member role admin not in allowed_team_member_roles=['user']"},
		{"internal_user", teamKey, team1, DefaultTeamMemberRoles, RouteDelete, "400 internal_server_error User=iu not assigned to team=t1"},
		{"no user", teamKey, team1, DefaultTeamMemberRoles, RouteDelete, "400 internal_server_error User=None not assigned to team=t1"},
		{"team admin", lost, nil, DefaultTeamMemberRoles, RouteDelete, "404 internal_server_error {'error': 'Team not found in db, and user not proxy admin. Team id = gone'}"},
		{"proxy_admin_viewer", own, nil, DefaultTeamMemberRoles, RouteDelete, notYours},
	}
	for _, tt := range tests {
		t.Run(tt.caller+" "+tt.key.Token+" "+tt.route, func(t *testing.T) {
			if got := result(CanModify(callers[tt.caller], tt.key, tt.team, tt.roles, tt.route)); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestCanRead(t *testing.T) {
	teamKey := Key{Token: "x", TeamID: "t1"}
	noInfo := &Team{TeamID: "t1", Members: team1.Members, Permissions: []string{RouteGenerate}}
	const refused = "403 internal_server_error You are not allowed to access this key's info. Your role="
	tests := []struct {
		caller string
		key    Key
		team   *Team
		want   string
	}{
		{"master", Key{Token: "x"}, nil, "ok"},
		{"proxy_admin", Key{Token: "x"}, nil, "ok"},
		{"proxy_admin_viewer", Key{Token: "x"}, nil, "ok"},
		{"internal_user", Key{Token: "x", UserID: "iu"}, nil, "ok"},
		{"internal_user", Key{Token: "t-iu"}, nil, "ok"},
		{"internal_user_viewer", Key{Token: "x", UserID: "iv"}, nil, "ok"},
		{"internal_user", Key{Token: "x", UserID: "other"}, nil, refused + "internal_user"},
		{"internal_user_viewer", Key{Token: "x"}, nil, refused + "internal_user_viewer"},
		{"no user", Key{Token: "t-none"}, nil, "ok"},
		{"no user", Key{Token: "x"}, nil, refused + "None"},
		// team members read the team's keys through /key/info, a default permission
		{"team admin", teamKey, team1, "ok"},
		{"team user", teamKey, team1, "ok"},
		{"team admin", teamKey, noInfo, "ok"},
		{"team user", teamKey, noInfo, refused + "internal_user"},
		{"team admin", teamKey, nil, refused + "internal_user"},
		{"internal_user", teamKey, team1, refused + "internal_user"},
		{"team user", Key{Token: "x", TeamID: "t2"}, team1, refused + "internal_user"},
	}
	for _, tt := range tests {
		t.Run(tt.caller+" "+tt.key.Token, func(t *testing.T) {
			if got := result(CanRead(callers[tt.caller], tt.key, tt.team)); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if got, want := NeedsTeam(callers[tt.caller], tt.key), CanRead(callers[tt.caller], tt.key, nil) != nil && tt.key.TeamID != "" && callers[tt.caller].UserID != ""; got != want {
				t.Errorf("NeedsTeam %v", got)
			}
		})
	}
}

func TestTeamAdmin(t *testing.T) {
	for name, want := range map[string]string{
		"master": "ok", "proxy_admin": "ok", "team admin": "ok",
		"team user":          "403 internal_server_error {'error': 'Call not allowed. User not proxy admin OR team admin. route=/team/member_add, team_id=t1'}",
		"proxy_admin_viewer": "403 internal_server_error {'error': 'Call not allowed. User not proxy admin OR team admin. route=/team/member_add, team_id=t1'}",
		"no user":            "403 internal_server_error {'error': 'Call not allowed. User not proxy admin OR team admin. route=/team/member_add, team_id=t1'}",
	} {
		if got := result(TeamAdmin(callers[name], team1, "/team/member_add")); got != want {
			t.Errorf("%s: got %s\nwant %s", name, got, want)
		}
	}
}

func TestValidatePermissions(t *testing.T) {
	if err := ValidatePermissions(MemberPermissions); err != nil {
		t.Errorf("every LiteLLM permission: %v", err)
	}
	if err := ValidatePermissions(nil); err != nil {
		t.Errorf("none: %v", err)
	}
	for _, bad := range []string{"/key/*", "/team/new", "", "/KEY/GENERATE"} {
		got := result(ValidatePermissions([]string{RouteInfo, bad}))
		if want := fmt.Sprintf("400 bad_request_error Invalid team_member_permissions value %q. Allowed values: ", bad); len(got) < len(want) || got[:len(want)] != want {
			t.Errorf("%q: %s", bad, got)
		}
	}
}

func TestListScope(t *testing.T) {
	const noUser = "403 bad_request_error You are not authorized to access this endpoint. No 'user_id' is associated with your API key."
	tests := []struct {
		caller               string
		user, team, org      string
		wantScope, wantError string
	}{
		{"master", "", "", "", "", "ok"},
		{"master", "u", "", "", "u", "ok"},
		{"proxy_admin", "", "", "", "", "ok"},
		{"proxy_admin_viewer", "", "", "", "", "ok"},
		{"internal_user", "", "", "", "iu", "ok"},
		{"internal_user", "iu", "", "", "iu", "ok"},
		{"internal_user", "other", "", "", "", "403 bad_request_error You are not authorized to check another user's keys"},
		{"internal_user", "", "t1", "", "iu", "ok"},
		{"internal_user", "", "t9", "", "", "403 bad_request_error You are not authorized to check this team's keys"},
		{"internal_user", "", "", "o1", "", "403 bad_request_error You are not authorized to check this organization's keys"},
		{"internal_user_viewer", "", "", "", "iv", "ok"},
		{"no user", "", "", "", "", noUser},
		{"team admin", "", "t1", "", "ta", "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.caller, func(t *testing.T) {
			scope, err := ListScope(callers[tt.caller], tt.user, tt.team, tt.org)
			if got := result(err); got != tt.wantError || scope != tt.wantScope {
				t.Errorf("got %q %s\nwant %q %s", scope, got, tt.wantScope, tt.wantError)
			}
		})
	}
}

func TestInfoRoutes(t *testing.T) {
	const noTeam = "403 auth_error key not allowed to access this team's info"
	const noUser = "403 auth_error key not allowed to access this user's info"
	tests := []struct {
		caller, id       string
		wantTeam, wantUs string
	}{
		{"master", "t9", "ok", "ok"},
		{"proxy_admin", "t9", "ok", "ok"},
		{"proxy_admin_viewer", "t9", "ok", "ok"},
		{"internal_user", "t1", "ok", noUser}, // t1 is in its user's teams
		{"team user", "t1", "ok", noUser},     // its key's team
		{"team user", "tu", noTeam, "ok"},     // its own user
		{"internal_user_viewer", "t1", noTeam, noUser},
		{"no user", "", noTeam, noUser},
	}
	for _, tt := range tests {
		c := callers[tt.caller]
		if got := result(TeamInfo(c, tt.id)); got != tt.wantTeam {
			t.Errorf("%s team %q: %s, want %s", tt.caller, tt.id, got, tt.wantTeam)
		}
		if got, want := result(TeamList(c, tt.id)), tt.wantUs; (got == "ok") != (want == "ok") {
			t.Errorf("%s team list for %q: %s", tt.caller, tt.id, got)
		}
		if got := result(UserInfo(c, tt.id)); got != tt.wantUs {
			t.Errorf("%s user %q: %s, want %s", tt.caller, tt.id, got, tt.wantUs)
		}
	}
}
