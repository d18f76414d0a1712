package store

import (
	"context"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// Org is the store contract for the objects keys belong to: teams, users,
// team memberships and their budgets (LiteLLM_TeamTable, LiteLLM_UserTable,
// LiteLLM_TeamMembership, LiteLLM_BudgetTable). Both backends implement it;
// storetest.RunOrg is its conformance suite. Consumers take the smaller
// interfaces they need.
type Org interface {
	Teams
	Users
	Memberships
	OrgSpender
	// ResetOrgBudgets is ResetBudgets for teams, users and team-member
	// budgets: every team and user whose budget_reset_at <= now gets
	// spend 0 and its next boundary; every LiteLLM_BudgetTable row that is
	// due moves to its next boundary and the memberships pointing at it get
	// spend 0. Rows whose budget_duration is NULL or does not parse are
	// skipped. It returns how many rows it reset.
	ResetOrgBudgets(ctx context.Context, now time.Time) (int, error)
}

// OrgBudgetResetter adapts an Org to the budget job's ResetBudgets.
type OrgBudgetResetter struct{ Org Org }

// ResetBudgets calls ResetOrgBudgets.
func (r OrgBudgetResetter) ResetBudgets(ctx context.Context, now time.Time) (int, error) {
	return r.Org.ResetOrgBudgets(ctx, now)
}

// Teams stores LiteLLM_TeamTable rows.
type Teams interface {
	// CreateTeam inserts t. CreatedAt/UpdatedAt are filled when nil. A
	// duplicate team_id is a *keys.ConflictError on "team_id".
	CreateTeam(ctx context.Context, t *keys.Team) error
	// GetTeam returns the team, or keys.ErrNotFound.
	GetTeam(ctx context.Context, id string) (*keys.Team, error)
	// UpdateTeam loads the team under a row lock, calls fn and writes every
	// known column back except team_id, with UpdatedAt = now.
	UpdateTeam(ctx context.Context, id string, fn func(t *keys.Team) error) (*keys.Team, error)
	// DeleteTeams removes the teams (missing ones are ignored) and their
	// memberships, and returns the team rows it removed.
	DeleteTeams(ctx context.Context, ids []string) ([]*keys.Team, error)
	// ListTeams returns the teams matching q, ordered by team_id.
	ListTeams(ctx context.Context, q TeamQuery) ([]*keys.Team, error)
}

// TeamQuery filters ListTeams. Empty strings mean "no filter".
type TeamQuery struct {
	UserID         string // teams whose members_with_roles names this user
	OrganizationID string
	TeamAlias      string
}

// Users stores LiteLLM_UserTable rows.
type Users interface {
	// CreateUser inserts u. A duplicate user_id is a *keys.ConflictError on
	// "user_id".
	CreateUser(ctx context.Context, u *keys.User) error
	// GetUser returns the user, or keys.ErrNotFound.
	GetUser(ctx context.Context, id string) (*keys.User, error)
	// UpdateUser is UpdateTeam for users.
	UpdateUser(ctx context.Context, id string, fn func(u *keys.User) error) (*keys.User, error)
	// DeleteUsers removes the users (missing ones are ignored) and their
	// memberships, and returns the user rows it removed.
	DeleteUsers(ctx context.Context, ids []string) ([]*keys.User, error)
	// ListUsers returns one page of users matching q (ordered by
	// created_at DESC, user_id DESC) and the total match count.
	ListUsers(ctx context.Context, q UserQuery) ([]*keys.User, int, error)
}

// UserQuery filters and pages ListUsers. Page starts at 1.
type UserQuery struct {
	Page, Size int
	UserIDs    []string // any of these (empty = no filter)
	Role       string
	TeamID     string // users whose teams contains it
	Email      string // exact user_email
}

// Memberships stores LiteLLM_TeamMembership rows and the
// LiteLLM_BudgetTable rows they point at.
type Memberships interface {
	// GetMembership returns the membership with its budget row, or
	// keys.ErrNotFound.
	GetMembership(ctx context.Context, teamID, userID string) (*keys.Membership, error)
	// ListMemberships returns a team's memberships with their budgets,
	// ordered by user_id.
	ListMemberships(ctx context.Context, teamID string) ([]*keys.Membership, error)
	// PutMembership inserts or replaces the membership's budget_id (spend is
	// kept on replace). When b is non-nil it is inserted or replaced first
	// (its budget_id is m.BudgetID's value).
	PutMembership(ctx context.Context, m *keys.Membership, b *keys.Budget) error
	// DeleteMembership removes the membership (a missing one is not an error).
	DeleteMembership(ctx context.Context, teamID, userID string) error
	// PutBudget inserts b, or replaces every column of the row with its
	// budget_id but created_at and created_by: a budget row no one
	// membership owns, such as a team's default member budget.
	PutBudget(ctx context.Context, b *keys.Budget) error
	// GetBudget returns the budget row, or keys.ErrNotFound.
	GetBudget(ctx context.Context, id string) (*keys.Budget, error)
}

// OrgSpender rolls metered spend up to teams, memberships and users.
type OrgSpender interface {
	// AddOrgSpend adds each delta to its row's spend (spend = spend + delta)
	// in one transaction, locking rows in a deterministic order (teams, then
	// memberships, then users, each sorted). Unknown rows are ignored.
	AddOrgSpend(ctx context.Context, d OrgSpend) error
}

// OrgSpend is one batch of spend deltas for AddOrgSpend.
type OrgSpend struct {
	Teams       map[string]float64
	Users       map[string]float64
	Memberships map[keys.MemberKey]float64
}

// Empty reports whether the batch has no deltas.
func (d OrgSpend) Empty() bool {
	return len(d.Teams) == 0 && len(d.Users) == 0 && len(d.Memberships) == 0
}
