package store

import "github.com/virtualkeys/sidecar/internal/keys"

// Column describes one column of a LiteLLM table: its name and the field
// of T it maps to. Field returns a pointer to the field; its Go type says
// how the column is stored:
//
//	*string, **string                      TEXT
//	*float64, **float64                    DOUBLE PRECISION / REAL
//	*int64, **int64                        BIGINT / INTEGER
//	*bool                                  BOOLEAN / INTEGER 0-1
//	**time.Time                            TIMESTAMP(3) / sortable UTC text
//	*[]string                              TEXT[] / JSON array text
//	*map[string]any, *keys.Members         JSONB / JSON text
//
// Each backend builds its insert, update, select and scan code from these
// descriptions, so a new LiteLLM column is one line here plus its migration.
type Column[T any] struct {
	Name  string
	Field func(*T) any
}

// Table describes one LiteLLM table.
type Table[T any] struct {
	Name    string   // LiteLLM's table name, unquoted
	Key     []string // primary-key columns, in order
	Columns []Column[T]
	// Normalize puts a row in the form a read returns (empty, never nil,
	// maps and slices). It runs before writes and after reads.
	Normalize func(*T)
}

func col[T any](name string, f func(*T) any) Column[T] { return Column[T]{name, f} }

func nonNilMap(p *map[string]any) {
	if *p == nil {
		*p = map[string]any{}
	}
}

func nonNilSlice(p *[]string) {
	if *p == nil {
		*p = []string{}
	}
}

// TeamTable describes LiteLLM_TeamTable.
var TeamTable = Table[keys.Team]{
	Name: keys.TeamTable,
	Key:  []string{"team_id"},
	Columns: []Column[keys.Team]{
		col("team_id", func(t *keys.Team) any { return &t.TeamID }),
		col("team_alias", func(t *keys.Team) any { return &t.TeamAlias }),
		col("organization_id", func(t *keys.Team) any { return &t.OrganizationID }),
		col("admins", func(t *keys.Team) any { return &t.Admins }),
		col("members", func(t *keys.Team) any { return &t.Members }),
		col("members_with_roles", func(t *keys.Team) any { return &t.MembersWithRoles }),
		col("metadata", func(t *keys.Team) any { return &t.Metadata }),
		col("max_budget", func(t *keys.Team) any { return &t.MaxBudget }),
		col("soft_budget", func(t *keys.Team) any { return &t.SoftBudget }),
		col("spend", func(t *keys.Team) any { return &t.Spend }),
		col("models", func(t *keys.Team) any { return &t.Models }),
		col("max_parallel_requests", func(t *keys.Team) any { return &t.MaxParallelRequests }),
		col("tpm_limit", func(t *keys.Team) any { return &t.TPMLimit }),
		col("rpm_limit", func(t *keys.Team) any { return &t.RPMLimit }),
		col("budget_duration", func(t *keys.Team) any { return &t.BudgetDuration }),
		col("budget_reset_at", func(t *keys.Team) any { return &t.BudgetResetAt }),
		col("blocked", func(t *keys.Team) any { return &t.Blocked }),
		col("created_at", func(t *keys.Team) any { return &t.CreatedAt }),
		col("updated_at", func(t *keys.Team) any { return &t.UpdatedAt }),
		col("model_spend", func(t *keys.Team) any { return &t.ModelSpend }),
		col("model_max_budget", func(t *keys.Team) any { return &t.ModelMaxBudget }),
		col("team_member_permissions", func(t *keys.Team) any { return &t.TeamMemberPermissions }),
	},
	Normalize: func(t *keys.Team) {
		for _, s := range []*[]string{&t.Admins, &t.Members, &t.Models, &t.TeamMemberPermissions} {
			nonNilSlice(s)
		}
		for _, m := range []*map[string]any{&t.Metadata, &t.ModelSpend, &t.ModelMaxBudget} {
			nonNilMap(m)
		}
		if t.MembersWithRoles == nil {
			t.MembersWithRoles = keys.Members{}
		}
	},
}

// UserTable describes LiteLLM_UserTable.
var UserTable = Table[keys.User]{
	Name: keys.UserTable,
	Key:  []string{"user_id"},
	Columns: []Column[keys.User]{
		col("user_id", func(u *keys.User) any { return &u.UserID }),
		col("user_alias", func(u *keys.User) any { return &u.UserAlias }),
		col("team_id", func(u *keys.User) any { return &u.TeamID }),
		col("sso_user_id", func(u *keys.User) any { return &u.SSOUserID }),
		col("organization_id", func(u *keys.User) any { return &u.OrganizationID }),
		col("teams", func(u *keys.User) any { return &u.Teams }),
		col("user_role", func(u *keys.User) any { return &u.UserRole }),
		col("max_budget", func(u *keys.User) any { return &u.MaxBudget }),
		col("spend", func(u *keys.User) any { return &u.Spend }),
		col("user_email", func(u *keys.User) any { return &u.UserEmail }),
		col("models", func(u *keys.User) any { return &u.Models }),
		col("metadata", func(u *keys.User) any { return &u.Metadata }),
		col("max_parallel_requests", func(u *keys.User) any { return &u.MaxParallelRequests }),
		col("tpm_limit", func(u *keys.User) any { return &u.TPMLimit }),
		col("rpm_limit", func(u *keys.User) any { return &u.RPMLimit }),
		col("budget_duration", func(u *keys.User) any { return &u.BudgetDuration }),
		col("budget_reset_at", func(u *keys.User) any { return &u.BudgetResetAt }),
		col("allowed_cache_controls", func(u *keys.User) any { return &u.AllowedCacheControls }),
		col("model_spend", func(u *keys.User) any { return &u.ModelSpend }),
		col("model_max_budget", func(u *keys.User) any { return &u.ModelMaxBudget }),
		col("created_at", func(u *keys.User) any { return &u.CreatedAt }),
		col("updated_at", func(u *keys.User) any { return &u.UpdatedAt }),
	},
	Normalize: func(u *keys.User) {
		for _, s := range []*[]string{&u.Teams, &u.Models, &u.AllowedCacheControls} {
			nonNilSlice(s)
		}
		for _, m := range []*map[string]any{&u.Metadata, &u.ModelSpend, &u.ModelMaxBudget} {
			nonNilMap(m)
		}
	},
}

// BudgetTable describes LiteLLM_BudgetTable.
var BudgetTable = Table[keys.Budget]{
	Name: keys.BudgetTable,
	Key:  []string{"budget_id"},
	Columns: []Column[keys.Budget]{
		col("budget_id", func(b *keys.Budget) any { return &b.BudgetID }),
		col("max_budget", func(b *keys.Budget) any { return &b.MaxBudget }),
		col("soft_budget", func(b *keys.Budget) any { return &b.SoftBudget }),
		col("max_parallel_requests", func(b *keys.Budget) any { return &b.MaxParallelRequests }),
		col("tpm_limit", func(b *keys.Budget) any { return &b.TPMLimit }),
		col("rpm_limit", func(b *keys.Budget) any { return &b.RPMLimit }),
		col("model_max_budget", func(b *keys.Budget) any { return &b.ModelMaxBudget }),
		col("budget_duration", func(b *keys.Budget) any { return &b.BudgetDuration }),
		col("budget_reset_at", func(b *keys.Budget) any { return &b.BudgetResetAt }),
		col("allowed_models", func(b *keys.Budget) any { return &b.AllowedModels }),
		col("created_at", func(b *keys.Budget) any { return &b.CreatedAt }),
		col("created_by", func(b *keys.Budget) any { return &b.CreatedBy }),
		col("updated_at", func(b *keys.Budget) any { return &b.UpdatedAt }),
		col("updated_by", func(b *keys.Budget) any { return &b.UpdatedBy }),
	},
	Normalize: func(b *keys.Budget) {
		nonNilMap(&b.ModelMaxBudget)
		nonNilSlice(&b.AllowedModels)
	},
}

// MembershipTable describes LiteLLM_TeamMembership (Budget is joined, not
// a column).
var MembershipTable = Table[keys.Membership]{
	Name: keys.MembershipTable,
	Key:  []string{"user_id", "team_id"},
	Columns: []Column[keys.Membership]{
		col("user_id", func(m *keys.Membership) any { return &m.UserID }),
		col("team_id", func(m *keys.Membership) any { return &m.TeamID }),
		col("spend", func(m *keys.Membership) any { return &m.Spend }),
		col("budget_id", func(m *keys.Membership) any { return &m.BudgetID }),
	},
	Normalize: func(*keys.Membership) {},
}
