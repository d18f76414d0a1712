package mgmt

import (
	"context"
	"errors"
	"fmt"

	perm "github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// UserTeamReader is what OrgDirectory reads: LiteLLM_UserTable and
// LiteLLM_TeamTable rows (store.Org satisfies it).
type UserTeamReader interface {
	GetUser(ctx context.Context, id string) (*keys.User, error)
	GetTeam(ctx context.Context, id string) (*keys.Team, error)
}

// OrgDirectory is the Directory over the team and user tables.
type OrgDirectory struct{ Org UserTeamReader }

// User returns the user's user_role and teams.
func (d OrgDirectory) User(ctx context.Context, id string) (string, []string, bool, error) {
	u, err := d.Org.GetUser(ctx, id)
	if errors.Is(err, keys.ErrNotFound) {
		return "", nil, false, nil
	}
	if err != nil {
		return "", nil, false, fmt.Errorf("get user: %w", err)
	}
	role := ""
	if u.UserRole != nil {
		role = *u.UserRole
	}
	return role, u.Teams, true, nil
}

// Team returns the team's members_with_roles and team_member_permissions.
func (d OrgDirectory) Team(ctx context.Context, id string) (*perm.Team, error) {
	t, err := d.Org.GetTeam(ctx, id)
	if errors.Is(err, keys.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get team: %w", err)
	}
	return perm.TeamOf(t), nil
}
