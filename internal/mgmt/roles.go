package mgmt

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	perm "github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// Directory reads the users and teams behind callers and keys
// (LiteLLM_UserTable, LiteLLM_TeamTable) for LiteLLM's role checks
// (internal/access). With none (Config.Directory nil) only the master key
// manages keys and a virtual key reads its own key.
type Directory interface {
	// User returns a user's user_role and teams; found is false when the
	// user has no row.
	User(ctx context.Context, userID string) (role string, teams []string, found bool, err error)
	// Team returns a team's members_with_roles; nil, nil when no such team.
	Team(ctx context.Context, teamID string) (*perm.Team, error)
}

// resolveRole fills c.acc from the caller key's user row; a proxy_admin's
// key becomes an admin caller.
func (a *API) resolveRole(ctx context.Context, c *caller) error {
	if a.dir == nil || c.key == nil {
		return nil
	}
	c.acc = perm.Caller{Token: c.key.Token, UserID: c.userID()}
	if c.key.TeamID != nil {
		c.acc.TeamID = *c.key.TeamID
	}
	if c.acc.UserID == "" {
		return nil
	}
	role, teams, found, err := a.dir.User(ctx, c.acc.UserID)
	if err != nil {
		return fmt.Errorf("caller's user: %w", err)
	}
	c.acc.Role, c.acc.UserTeams, c.acc.HasUserRow = role, teams, found
	if role == perm.RoleProxyAdmin {
		c.admin = true
	}
	return nil
}

// routeName is LiteLLM's name of a route for its route checks.
func routeName(rt route) string {
	if rt.path == "/key/{key}/regenerate" {
		return perm.RouteRegenerate
	}
	return rt.path
}

// roles reports whether LiteLLM's role checks apply to c: a directory is
// configured and c is not a proxy admin.
func (a *API) roles(c *caller) bool { return a.dir != nil && c != nil && !c.admin }

// teamRoles are the team roles that may manage a team's keys: LiteLLM's
// default without team_key_generation; its allowed_team_member_roles (nil:
// any) with it.
func (a *API) teamRoles() []string {
	if s := a.keyGen; s != nil && s.KeyGeneration != nil && s.KeyGeneration.Team != nil {
		return s.KeyGeneration.Team.AllowedTeamMemberRoles
	}
	return perm.DefaultTeamMemberRoles
}

// canModify is perm.CanModify on the stored key hash (404 when missing),
// for the key route named (perm.Route*). It returns the key it read (nil
// when the role checks do not apply and it read none).
func (a *API) canModify(ctx context.Context, c *caller, hash, route string) (*keys.Key, error) {
	if !a.roles(c) {
		return nil, nil
	}
	k, err := a.st.Get(ctx, hash)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", keys.Redact(hash), err)
	}
	return k, a.canModifyKey(ctx, c, k, route)
}

// mayChange is the check of a request that changes the stored key hash
// with body fields (/key/update, /key/regenerate): the body may not hand
// the key to another user or team (perm.KeyRequest), and the caller must
// be allowed route on the key (canModify). It returns the key it read.
func (a *API) mayChange(ctx context.Context, c *caller, f *keyFields, hash, route string) (*keys.Key, error) {
	if a.roles(c) {
		if err := perm.KeyRequest(c.acc, optPtr(&f.UserID), optPtr(&f.TeamID)); err != nil {
			return nil, err
		}
	}
	return a.canModify(ctx, c, hash, route)
}

func (a *API) canModifyKey(ctx context.Context, c *caller, k *keys.Key, route string) error {
	if !a.roles(c) {
		return nil
	}
	target := accessKey(k)
	var team *perm.Team
	if target.TeamID != "" {
		t, err := a.dir.Team(ctx, target.TeamID)
		if err != nil {
			return fmt.Errorf("key's team: %w", err)
		}
		team = t
	}
	return perm.CanModify(c.acc, target, team, a.teamRoles(), route)
}

func accessKey(k *keys.Key) perm.Key {
	t := perm.Key{Token: k.Token}
	if k.UserID != nil {
		t.UserID = *k.UserID
	}
	if k.TeamID != nil {
		t.TeamID = *k.TeamID
	}
	return t
}

// canRead is perm.CanRead for a key that exists; the key's team row is
// read only when the answer depends on it.
func (a *API) canRead(ctx context.Context, c *caller, k *keys.Key) error {
	if !a.roles(c) {
		return nil
	}
	target := accessKey(k)
	var team *perm.Team
	if perm.NeedsTeam(c.acc, target) {
		t, err := a.dir.Team(ctx, target.TeamID)
		if err != nil {
			return fmt.Errorf("key's team: %w", err)
		}
		team = t
	}
	return perm.CanRead(c.acc, target, team)
}

// routeCheck is LiteLLM's route check for a caller that is not a proxy
// admin; without a directory, the sidecar's own rule (master key only,
// except virtualOK routes).
func (a *API) routeCheck(r *http.Request, rt route, c *caller) error {
	if c.admin {
		return nil
	}
	if a.dir == nil {
		if rt.access != virtualOK {
			return errAdminOnly(rt.method + " " + r.URL.Path)
		}
		return nil
	}
	if rt.path == "/key/health" || rt.access == selfManaged {
		return nil // LiteLLM's self-managed and info routes: the handler decides
	}
	if !strings.HasPrefix(rt.path, "/key/") && rt.path != "/v2/key/info" {
		// /team/* and /user/*: the sidecar's rule (a proxy_admin user is an
		// admin caller) until their own role checks land.
		if rt.access != virtualOK {
			return errAdminOnly(rt.method + " " + r.URL.Path)
		}
		return nil
	}
	return perm.Route(c.acc, routeName(rt))
}

// adminTeam reads team id for one of LiteLLM's self-managed team routes
// (404 when missing) and checks perm.TeamAdmin: a proxy admin, or an admin
// of the team.
func (a *API) adminTeam(ctx context.Context, r *http.Request, c *caller, o OrgStore, id string) (*keys.Team, error) {
	t, err := a.getTeam(ctx, o, id)
	if err != nil {
		return nil, err
	}
	if a.roles(c) {
		if err := perm.TeamAdmin(c.acc, perm.TeamOf(t), r.URL.Path); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// adminTeams are the teams among the caller's user's teams that list it
// as an admin.
func (a *API) adminTeams(ctx context.Context, c *caller) ([]string, error) {
	var out []string
	for _, id := range c.acc.UserTeams {
		t, err := a.dir.Team(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("caller's team: %w", err)
		}
		if t != nil && c.acc.UserID != "" && t.Members[c.acc.UserID] == keys.TeamRoleAdmin {
			out = append(out, t.TeamID)
		}
	}
	return out, nil
}
