package keys

import (
	"bytes"
	"encoding/json"
	"time"
)

// LiteLLM's table names for the objects keys belong to, used as
// Audit.TableName.
const (
	TeamTable       = "LiteLLM_TeamTable"
	UserTable       = "LiteLLM_UserTable"
	MembershipTable = "LiteLLM_TeamMembership"
	BudgetTable     = "LiteLLM_BudgetTable"
)

// Team roles in members_with_roles.
const (
	TeamRoleAdmin = "admin"
	TeamRoleUser  = "user"
)

// User roles (LiteLLM_UserTable.user_role).
const (
	RoleProxyAdmin         = "proxy_admin"
	RoleProxyAdminViewer   = "proxy_admin_viewer"
	RoleInternalUser       = "internal_user"
	RoleInternalUserViewer = "internal_user_viewer"
)

// Member is one entry of a team's members_with_roles.
type Member struct {
	Role      string  `json:"role"`
	UserID    *string `json:"user_id"`
	UserEmail *string `json:"user_email"`
}

// Members is members_with_roles. LiteLLM's column default is the JSON
// object {}, which reads as an empty list.
type Members []Member

// UnmarshalJSON accepts a list, null or {} (LiteLLM's column default).
func (m *Members) UnmarshalJSON(b []byte) error {
	t := bytes.TrimSpace(b)
	if bytes.Equal(t, []byte("null")) || (len(t) > 0 && t[0] == '{') {
		*m = Members{}
		return nil
	}
	var l []Member
	if err := json.Unmarshal(t, &l); err != nil {
		return err
	}
	if l == nil {
		l = []Member{}
	}
	*m = l
	return nil
}

// Team is one row of "LiteLLM_TeamTable" (the columns the sidecar knows;
// others are left untouched). Pointer fields are nullable columns.
type Team struct {
	TeamID                string         `json:"team_id"`
	TeamAlias             *string        `json:"team_alias"`
	OrganizationID        *string        `json:"organization_id"`
	Admins                []string       `json:"admins"`
	Members               []string       `json:"members"`
	MembersWithRoles      Members        `json:"members_with_roles"`
	Metadata              map[string]any `json:"metadata"`
	MaxBudget             *float64       `json:"max_budget"` // nil = unlimited
	SoftBudget            *float64       `json:"soft_budget"`
	Spend                 float64        `json:"spend"`
	Models                []string       `json:"models"` // empty = every model
	MaxParallelRequests   *int64         `json:"max_parallel_requests"`
	TPMLimit              *int64         `json:"tpm_limit"`
	RPMLimit              *int64         `json:"rpm_limit"`
	BudgetDuration        *string        `json:"budget_duration"`
	BudgetResetAt         *time.Time     `json:"budget_reset_at"`
	Blocked               bool           `json:"blocked"`
	CreatedAt             *time.Time     `json:"created_at"`
	UpdatedAt             *time.Time     `json:"updated_at"`
	ModelSpend            map[string]any `json:"model_spend"`
	ModelMaxBudget        map[string]any `json:"model_max_budget"`
	TeamMemberPermissions []string       `json:"team_member_permissions"`
}

// Role returns userID's role in the team ("" when not a member).
func (t *Team) Role(userID string) string {
	for _, m := range t.MembersWithRoles {
		if m.UserID != nil && *m.UserID == userID {
			return m.Role
		}
	}
	return ""
}

// User is one row of "LiteLLM_UserTable" (the columns the sidecar knows).
type User struct {
	UserID               string         `json:"user_id"`
	UserAlias            *string        `json:"user_alias"`
	TeamID               *string        `json:"team_id"`
	SSOUserID            *string        `json:"sso_user_id"`
	OrganizationID       *string        `json:"organization_id"`
	Teams                []string       `json:"teams"`
	UserRole             *string        `json:"user_role"`
	MaxBudget            *float64       `json:"max_budget"` // nil = unlimited
	Spend                float64        `json:"spend"`
	UserEmail            *string        `json:"user_email"`
	Models               []string       `json:"models"` // empty = every model
	Metadata             map[string]any `json:"metadata"`
	MaxParallelRequests  *int64         `json:"max_parallel_requests"`
	TPMLimit             *int64         `json:"tpm_limit"`
	RPMLimit             *int64         `json:"rpm_limit"`
	BudgetDuration       *string        `json:"budget_duration"`
	BudgetResetAt        *time.Time     `json:"budget_reset_at"`
	AllowedCacheControls []string       `json:"allowed_cache_controls"`
	ModelSpend           map[string]any `json:"model_spend"`
	ModelMaxBudget       map[string]any `json:"model_max_budget"`
	CreatedAt            *time.Time     `json:"created_at"`
	UpdatedAt            *time.Time     `json:"updated_at"`
}

// Budget is one row of "LiteLLM_BudgetTable": limits shared by reference
// (a team membership's budget_id points at one).
type Budget struct {
	BudgetID            string         `json:"budget_id"`
	MaxBudget           *float64       `json:"max_budget"`
	SoftBudget          *float64       `json:"soft_budget"`
	MaxParallelRequests *int64         `json:"max_parallel_requests"`
	TPMLimit            *int64         `json:"tpm_limit"`
	RPMLimit            *int64         `json:"rpm_limit"`
	ModelMaxBudget      map[string]any `json:"model_max_budget"`
	BudgetDuration      *string        `json:"budget_duration"`
	BudgetResetAt       *time.Time     `json:"budget_reset_at"`
	// AllowedModels is a team member's model scope. LiteLLM's later schemas
	// have the column; on a Postgres table without it, it reads empty and
	// is not written.
	AllowedModels []string   `json:"allowed_models"`
	CreatedAt     *time.Time `json:"created_at"`
	CreatedBy     string     `json:"created_by"`
	UpdatedAt     *time.Time `json:"updated_at"`
	UpdatedBy     string     `json:"updated_by"`
}

// Membership is one row of "LiteLLM_TeamMembership", with its budget row
// (nil when budget_id is NULL or names no row).
type Membership struct {
	UserID   string  `json:"user_id"`
	TeamID   string  `json:"team_id"`
	Spend    float64 `json:"spend"`
	BudgetID *string `json:"budget_id"`

	Budget *Budget `json:"litellm_budget_table"`
}

// MemberKey names a membership: (team_id, user_id).
type MemberKey struct{ TeamID, UserID string }
