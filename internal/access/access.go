// Package access decides who may do what to which key, as LiteLLM's proxy
// does: the route check its user_api_key_auth runs for every caller that is
// not a proxy admin (RouteChecks.non_proxy_admin_allowed_routes_check), then
// the key endpoints' own checks (_is_allowed_to_make_key_request,
// can_delete_verification_token / _team_key_deletion_check,
// _can_user_query_key_info, validate_key_list_check), the team member
// permissions LiteLLM layers on them (team_member_permissions), and the
// rules of its self-managed team routes and info routes. It is pure: the
// caller resolves the calling key's user row and the team rows, and gets nil
// or LiteLLM's error (apierr) with LiteLLM's status, type and message.
package access

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// User roles (LiteLLM_UserTable.user_role).
const (
	RoleProxyAdmin         = "proxy_admin"
	RoleProxyAdminViewer   = "proxy_admin_viewer"
	RoleInternalUser       = "internal_user"
	RoleInternalUserViewer = "internal_user_viewer"
)

// Caller is who calls, as LiteLLM's UserAPIKeyAuth sees it.
type Caller struct {
	// Master is the master key: a proxy admin.
	Master bool
	// Role is the user_role of the calling key's user (key.user_id ->
	// LiteLLM_UserTable); "" when the key has no user or the user no row.
	Role string
	// UserID and TeamID are the calling key's user_id and team_id ("" = none).
	UserID, TeamID string
	// Token is the calling key's hash.
	Token string
	// HasUserRow says whether the calling key's user has a
	// LiteLLM_UserTable row; UserTeams are that row's teams.
	HasUserRow bool
	UserTeams  []string
}

// Admin reports whether the caller is a proxy admin (master key included).
func (c Caller) Admin() bool { return c.Master || c.Role == RoleProxyAdmin }

// Routes of the key API, as LiteLLM names them in its route checks.
const (
	RouteGenerate   = "/key/generate"
	RouteUpdate     = "/key/update"
	RouteDelete     = "/key/delete"
	RouteInfo       = "/key/info"
	RouteInfoV2     = "/v2/key/info"
	RouteList       = "/key/list"
	RouteBlock      = "/key/block"
	RouteUnblock    = "/key/unblock"
	RouteRegenerate = "/key/regenerate"
	RouteHealth     = "/key/health"
)

// infoRoutes pass the route check; the endpoint checks ownership itself.
var infoRoutes = []string{RouteInfo, RouteHealth, RouteInfoV2, RouteList}

// internalUserRoutes are LiteLLM's key_management_routes, which an
// internal_user may call.
var internalUserRoutes = []string{RouteGenerate, RouteUpdate, RouteDelete, RouteInfo, RouteRegenerate, RouteList, RouteBlock, RouteUnblock}

// Route is the route check for a caller that is not a proxy admin: info
// routes pass (their endpoints check ownership), a proxy_admin_viewer may
// not call a write route (403), an internal_user may call the key routes,
// and everything else is LiteLLM's 401 "Only proxy admin can be used...".
func Route(c Caller, route string) error {
	switch {
	case c.Admin(), slices.Contains(infoRoutes, route):
		return nil
	case c.Role == RoleProxyAdminViewer:
		return apierr.New(http.StatusForbidden, apierr.TypeAuth, "None",
			fmt.Sprintf("user not allowed to access this route, role= %s. Trying to access: %s", c.Role, route))
	case c.Role == RoleInternalUser && slices.Contains(internalUserRoutes, route):
		return nil
	}
	role, user := "unknown", "unknown"
	if c.HasUserRow {
		if c.Role != "" {
			role = c.Role
		}
		if c.UserID != "" {
			user = c.UserID
		}
	}
	return apierr.New(http.StatusUnauthorized, apierr.TypeAuth, "None",
		fmt.Sprintf("Authentication Error, Only proxy admin can be used to generate, delete, update info for new keys/users/teams. Route=%s. Your role=%s. Your user_id=%s", route, role, user))
}

// KeyRequest is _is_allowed_to_make_key_request (common_key_access_checks,
// on /key/generate and /key/update): a caller that is not a proxy admin may
// only name itself as user_id and its own key's team as team_id. userID and
// teamID are the body's values, nil when absent or null.
func KeyRequest(c Caller, userID, teamID *string) error {
	if c.Admin() {
		return nil
	}
	if userID != nil && *userID != c.UserID {
		return forbidden(fmt.Sprintf("User can only create keys for themselves. Got user_id=%s, Your ID=%s", *userID, none(c.UserID)))
	}
	if teamID != nil && *teamID != c.TeamID {
		return forbidden(fmt.Sprintf("User can only create keys for their own team. Got=%s, Your Team ID=%s", *teamID, none(c.TeamID)))
	}
	return nil
}

// Key is the key acted on.
type Key struct {
	Token          string
	UserID, TeamID string // "" = none
}

// Team is a team row as these checks need it.
type Team struct {
	TeamID string
	// Members maps each member's user_id to its role (admin or user).
	Members map[string]string
	// Permissions is team_member_permissions: the key routes a member whose
	// role is not admin may call on the team's keys. Empty means
	// DefaultMemberPermissions, as in LiteLLM.
	Permissions []string
}

// DefaultMemberPermissions are the routes a plain team member may call on
// the team's keys when the team lists none (LiteLLM's
// DEFAULT_TEAM_MEMBER_PERMISSIONS).
var DefaultMemberPermissions = []string{RouteInfo, RouteHealth}

// MemberPermissions are the values team_member_permissions may hold:
// LiteLLM's KeyManagementRoutes. The sidecar serves the first ten; the
// others are accepted so that a team written by LiteLLM reads back the same.
var MemberPermissions = []string{
	RouteGenerate, RouteUpdate, RouteDelete, RouteRegenerate, routeRegeneratePath,
	RouteBlock, RouteUnblock, RouteInfo, RouteHealth, RouteList,
	"/key/service-account/generate", "/key/bulk_update", "/team/key/bulk_update",
	"/key/{key_id}/reset_spend", "/key/aliases", "/team/daily/activity",
	"/spend/logs", "/spend/logs/v2",
}

// routeRegeneratePath is LiteLLM's KEY_REGENERATE_WITH_PATH_PARAM: a
// permission that grants /key/regenerate too.
const routeRegeneratePath = "/key/{key_id}/regenerate"

// ValidatePermissions reports a team_member_permissions entry LiteLLM would
// fail on (its KeyManagementRoutes(permission) raises on an unknown one):
// a 400 naming it and the values allowed.
func ValidatePermissions(perms []string) error {
	for _, p := range perms {
		if !slices.Contains(MemberPermissions, p) {
			return apierr.New(http.StatusBadRequest, apierr.TypeBadRequest, "team_member_permissions",
				fmt.Sprintf("Invalid team_member_permissions value %q. Allowed values: %s", p, apierr.PyList(MemberPermissions)))
		}
	}
	return nil
}

// EffectivePermissions are the routes t's plain members may call on its
// keys: t.Permissions, or DefaultMemberPermissions when it lists none.
func (t *Team) EffectivePermissions() []string {
	if len(t.Permissions) == 0 {
		return DefaultMemberPermissions
	}
	return t.Permissions
}

// TeamOf is a team row as these checks read it.
func TeamOf(t *keys.Team) *Team {
	out := &Team{TeamID: t.TeamID, Members: make(map[string]string, len(t.MembersWithRoles)), Permissions: t.TeamMemberPermissions}
	for _, m := range t.MembersWithRoles {
		if m.UserID != nil {
			out.Members[*m.UserID] = m.Role
		}
	}
	return out
}

// MemberMayCall reports whether userID is a member of t who may call route
// on t's keys (an admin, or a member t's team_member_permissions allow).
func (t *Team) MemberMayCall(userID, route string) bool {
	role, ok := t.Members[userID]
	return userID != "" && ok && t.mayCall(role, route)
}

// mayCall reports whether t's member with role may call route on t's keys:
// an admin may; any other role needs route in EffectivePermissions.
func (t *Team) mayCall(role, route string) bool {
	if role == keys.TeamRoleAdmin {
		return true
	}
	perms := t.EffectivePermissions()
	return slices.Contains(perms, route) || (route == RouteRegenerate && slices.Contains(perms, routeRegeneratePath))
}

// TeamMember is LiteLLM's _team_key_operation_team_member_check for a
// caller acting on one of t's keys through route: the caller must be a
// member (400), with a role in allowedRoles (nil: any role, as when
// team_key_generation sets no allowed_team_member_roles; 400), and a
// member who is not a team admin needs route in the team's
// team_member_permissions (does_team_member_have_permissions_for_endpoint;
// 401 team_member_permission_error). Proxy admins are not checked.
func TeamMember(c Caller, t *Team, allowedRoles []string, route string) error {
	if c.Admin() {
		return nil
	}
	role, ok := t.Members[c.UserID]
	switch {
	case c.UserID == "" || !ok:
		return badRequest(fmt.Sprintf("User=%s not assigned to team=%s", none(c.UserID), t.TeamID))
	case allowedRoles != nil && !slices.Contains(allowedRoles, role):
		return badRequest(fmt.Sprintf("Team member role %s not in allowed_team_member_roles=%s", role, apierr.PyList(allowedRoles)))
	case !t.mayCall(role, route):
		return apierr.New(http.StatusUnauthorized, TypeTeamMemberPermission, route,
			fmt.Sprintf("Team member does not have permissions for endpoint: %s. You only have access to the following endpoints: %s for team %s. To create keys for this team, please ask your proxy admin to check the team member permission settings and update the settings to allow team member users to create keys.",
				route, apierr.PyList(t.EffectivePermissions()), t.TeamID))
	}
	return nil
}

// TeamInfo is user_api_key_auth's rule for /team/info: proxy admins and
// viewers read every team; another caller reads its key's team and the
// teams its user row lists (LiteLLM's members reading their team); anyone
// else gets its 403.
func TeamInfo(c Caller, teamID string) error {
	if c.Admin() || c.Role == RoleProxyAdminViewer || (teamID != "" && (c.TeamID == teamID || slices.Contains(c.UserTeams, teamID))) {
		return nil
	}
	return apierr.New(http.StatusForbidden, apierr.TypeAuth, "None", "key not allowed to access this team's info")
}

// TeamList is /team/list's allowed_route_check_inside_route: proxy admins
// and viewers list every team; another caller lists only its own user's
// teams, naming itself as user_id; anyone else gets LiteLLM's 401.
func TeamList(c Caller, userID string) error {
	if c.Admin() || c.Role == RoleProxyAdminViewer || (userID != "" && userID == c.UserID) {
		return nil
	}
	return apierr.New(http.StatusUnauthorized, apierr.TypeAuth, "None",
		"{'error': 'Only admin users can query all teams/other teams. Your user role="+none(c.Role)+"'}")
}

// UserInfo is user_api_key_auth's rule for /user/info: proxy admins and
// viewers read every user; another caller reads its own user only.
func UserInfo(c Caller, userID string) error {
	if c.Admin() || c.Role == RoleProxyAdminViewer || (userID != "" && c.UserID == userID) {
		return nil
	}
	return apierr.New(http.StatusForbidden, apierr.TypeAuth, "None", "key not allowed to access this user's info")
}

// TypeTeamMemberPermission is the error type of a team member's refused
// route (LiteLLM's ProxyErrorTypes.team_member_permission_error).
const TypeTeamMemberPermission = "team_member_permission_error"

// TeamAdmin is the check of LiteLLM's self-managed team routes
// (/team/member_add, /team/member_delete, /team/member_update,
// /team/permissions_list, /team/permissions_update): a proxy admin or an
// admin of team t may call them; anyone else gets its 403.
func TeamAdmin(c Caller, t *Team, route string) error {
	if c.Admin() || (c.UserID != "" && t.Members[c.UserID] == keys.TeamRoleAdmin) {
		return nil
	}
	return forbidden(fmt.Sprintf("{'error': 'Call not allowed. User not proxy admin OR team admin. route=%s, team_id=%s'}", route, t.TeamID))
}

// DefaultTeamMemberRoles are the team roles that may manage a team's keys
// when key_generation_settings has no team_key_generation.
var DefaultTeamMemberRoles = []string{keys.TeamRoleAdmin, keys.TeamRoleUser}

// CanModify is can_delete_verification_token, which LiteLLM applies to
// /key/delete (and the sidecar to every write on an existing key: update,
// regenerate, block, unblock), with the team_member_permissions check
// LiteLLM's key endpoints add: a proxy admin may; a team key needs its team
// to exist and the caller to pass TeamMember for route; a personal key
// needs to be the caller's own. team is the key's team row (nil: none
// found).
func CanModify(c Caller, k Key, team *Team, allowedRoles []string, route string) error {
	if c.Admin() {
		return nil
	}
	if k.TeamID != "" {
		if team == nil {
			return apierr.New(http.StatusNotFound, apierr.TypeInternal, "None",
				fmt.Sprintf("{'error': 'Team not found in db, and user not proxy admin. Team id = %s'}", k.TeamID))
		}
		return TeamMember(c, team, allowedRoles, route)
	}
	if k.UserID != "" && k.UserID == c.UserID {
		return nil
	}
	return forbidden("{'error': 'You are not authorized to delete this key'}")
}

// CanRead is _can_user_query_key_info (/key/info, /v2/key/info): proxy
// admins and viewers read every key; anyone reads the key they call with
// and their own user's keys; a member of a key's team reads it when the
// member may call /key/info on the team's keys (admins, and every member
// by default: LiteLLM's user_belongs_to_keys_team with
// team_member_permissions). team is the key's team row (nil: none or not
// looked up). Check that the key exists first: a missing key answers 404
// before this 403. Unlike LiteLLM, a caller without a user_id does not read
// every other key without one (LiteLLM compares None with None).
func CanRead(c Caller, k Key, team *Team) error {
	if c.Admin() || c.Role == RoleProxyAdminViewer || (c.Token != "" && c.Token == k.Token) ||
		(c.UserID != "" && k.UserID == c.UserID) {
		return nil
	}
	if team != nil && k.TeamID == team.TeamID && team.MemberMayCall(c.UserID, RouteInfo) {
		return nil
	}
	return forbidden("You are not allowed to access this key's info. Your role=" + none(c.Role))
}

// NeedsTeam reports whether CanRead's answer for k can depend on k's team
// row, so that a caller looks the team up only then.
func NeedsTeam(c Caller, k Key) bool {
	return CanRead(c, k, nil) != nil && k.TeamID != "" && c.UserID != ""
}

// ListScope is validate_key_list_check plus list_keys' scoping: it returns
// the user_id a /key/list must be restricted to ("" = no restriction).
// userID, teamID and orgID are the query's filters ("" = absent).
func ListScope(c Caller, userID, teamID, orgID string) (string, error) {
	if c.Admin() {
		return userID, nil
	}
	if c.UserID == "" || !c.HasUserRow {
		return "", apierr.New(http.StatusForbidden, apierr.TypeBadRequest, "user_id",
			"You are not authorized to access this endpoint. No 'user_id' is associated with your API key.")
	}
	if userID != "" && userID != c.UserID {
		return "", apierr.New(http.StatusForbidden, apierr.TypeBadRequest, "user_id", "You are not authorized to check another user's keys")
	}
	if teamID != "" && !slices.Contains(c.UserTeams, teamID) {
		return "", apierr.New(http.StatusForbidden, apierr.TypeBadRequest, "team_id", "You are not authorized to check this team's keys")
	}
	if orgID != "" {
		return "", apierr.New(http.StatusForbidden, apierr.TypeBadRequest, "organization_id", "You are not authorized to check this organization's keys")
	}
	if userID == "" && c.Role != RoleProxyAdminViewer {
		userID = c.UserID
	}
	return userID, nil
}

func forbidden(msg string) *apierr.Error {
	return apierr.New(http.StatusForbidden, apierr.TypeInternal, "None", msg)
}

func badRequest(msg string) *apierr.Error {
	return apierr.New(http.StatusBadRequest, apierr.TypeInternal, "None", msg)
}

func none(s string) string {
	if s == "" {
		return "None"
	}
	return s
}
