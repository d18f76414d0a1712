// Package access decides who may do what to which key, as LiteLLM's proxy
// does: the route check its user_api_key_auth runs for every caller that is
// not a proxy admin (RouteChecks.non_proxy_admin_allowed_routes_check), then
// the key endpoints' own checks (_is_allowed_to_make_key_request,
// can_delete_verification_token / _team_key_deletion_check,
// _can_user_query_key_info, validate_key_list_check). It is pure: the
// caller resolves the calling key's user row and the team rows, and gets nil
// or LiteLLM's error (apierr) with LiteLLM's status, type and message.
package access

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/virtualkeys/sidecar/internal/apierr"
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
}

// DefaultTeamMemberRoles are the team roles that may manage a team's keys
// when key_generation_settings.team_key_generation does not say.
var DefaultTeamMemberRoles = []string{"admin", "user"}

// CanModify is can_delete_verification_token, which LiteLLM applies to
// /key/delete (and the sidecar to every write on an existing key: update,
// regenerate, block, unblock): a proxy admin may; a team key needs its team
// to exist and the caller to be a member whose role is in allowedRoles (nil
// = DefaultTeamMemberRoles); a personal key needs to be the caller's own.
// team is the key's team row (nil: none found).
func CanModify(c Caller, k Key, team *Team, allowedRoles []string) error {
	if c.Admin() {
		return nil
	}
	if k.TeamID != "" {
		if team == nil {
			return apierr.New(http.StatusNotFound, apierr.TypeInternal, "None",
				fmt.Sprintf("{'error': 'Team not found in db, and user not proxy admin. Team id = %s'}", k.TeamID))
		}
		if allowedRoles == nil {
			allowedRoles = DefaultTeamMemberRoles
		}
		role, ok := team.Members[c.UserID]
		switch {
		case c.UserID == "" || !ok:
			return badRequest(fmt.Sprintf("User=%s not assigned to team=%s", none(c.UserID), team.TeamID))
		case !slices.Contains(allowedRoles, role):
			return badRequest(fmt.Sprintf("Team member role %s not in allowed_team_member_roles=%s", role, pyList(allowedRoles)))
		}
		return nil
	}
	if k.UserID != "" && k.UserID == c.UserID {
		return nil
	}
	return forbidden("{'error': 'You are not authorized to delete this key'}")
}

// CanRead is _can_user_query_key_info (/key/info, /v2/key/info): proxy
// admins and viewers read every key; anyone reads the key they call with
// and their own user's keys. Check that the key exists first: a missing key
// answers 404 before this 403. Unlike LiteLLM, a caller without a user_id
// does not read every other key without one (LiteLLM compares None with
// None).
func CanRead(c Caller, k Key) error {
	if c.Admin() || c.Role == RoleProxyAdminViewer || (c.Token != "" && c.Token == k.Token) ||
		(c.UserID != "" && k.UserID == c.UserID) {
		return nil
	}
	return forbidden("You are not allowed to access this key's info. Your role=" + none(c.Role))
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

func pyList(l []string) string {
	s := "["
	for i, v := range l {
		if i > 0 {
			s += ", "
		}
		s += "'" + v + "'"
	}
	return s + "]"
}
