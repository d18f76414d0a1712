package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

var _ store.Org = (*Store)(nil)

var (
	teamT   = newTable(store.TeamTable)
	userT   = newTable(store.UserTable)
	memberT = newTable(store.MembershipTable)
	budgetT = newTable(store.BudgetTable)

	memberJoin = fmt.Sprintf(`SELECT %s, %s FROM %s x LEFT JOIN %s b ON b.budget_id = x.budget_id`,
		prefixed("x", memberT.sel), prefixed("b", budgetT.sel), memberT.name, budgetT.name)
)

// prefixed qualifies a select list with a table alias.
func prefixed(alias, sel string) string {
	parts := strings.Split(sel, ", ")
	for i, p := range parts {
		parts[i] = alias + "." + p
	}
	return strings.Join(parts, ", ")
}

func teamEvent(id string) store.Event { return store.Event{Kind: store.EventTeamChanged, Team: id} }
func userEvent(id string) store.Event { return store.Event{Kind: store.EventUserChanged, User: id} }
func memberEvent(team, user string) store.Event {
	return store.Event{Kind: store.EventMemberChanged, Team: team, User: user}
}

func fillTimes(created, updated **time.Time) {
	n := now()
	if *created == nil {
		*created = &n
	}
	if *updated == nil {
		*updated = &n
	}
}

func (s *Store) CreateTeam(ctx context.Context, t *keys.Team) error {
	if t == nil || t.TeamID == "" {
		return fmt.Errorf("sqlite: create team: empty team_id: %w", keys.ErrInvalid)
	}
	fillTimes(&t.CreatedAt, &t.UpdatedAt)
	args, err := teamT.args(t)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		if _, err := tx.ExecContext(ctx, teamT.insert, args...); err != nil {
			return nil, fmt.Errorf("sqlite: create team %q: %w", t.TeamID, teamT.conflict(err, t.TeamID))
		}
		return []store.Event{teamEvent(t.TeamID)}, nil
	})
}

func (s *Store) GetTeam(ctx context.Context, id string) (*keys.Team, error) {
	t, err := teamT.one(ctx, s.r, teamT.get, id)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get team %q: %w", id, err)
	}
	return t, nil
}

// modify is the read-modify-write of UpdateTeam and UpdateUser.
func modify[T any](ctx context.Context, tx *sql.Tx, t *table[T], key []any, fn func(*T) error) (*T, error) {
	v, err := t.one(ctx, tx, t.get, key...)
	if err != nil {
		return nil, err
	}
	if err := fn(v); err != nil {
		return nil, err
	}
	args, err := t.updateArgs(v)
	if err != nil {
		return nil, err
	}
	copy(args[len(args)-len(key):], key)
	if _, err := tx.ExecContext(ctx, t.update, args...); err != nil {
		return nil, err
	}
	return v, nil
}

func (s *Store) UpdateTeam(ctx context.Context, id string, fn func(t *keys.Team) error) (*keys.Team, error) {
	var out *keys.Team
	err := s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		var err error
		out, err = modify(ctx, tx, teamT, []any{id}, func(t *keys.Team) error {
			if err := fn(t); err != nil {
				return err
			}
			t.TeamID = id
			n := now()
			t.UpdatedAt = &n
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("sqlite: update team %q: %w", id, err)
		}
		return []store.Event{teamEvent(id)}, nil
	})
	return out, err
}

func (s *Store) DeleteTeams(ctx context.Context, ids []string) ([]*keys.Team, error) {
	ids = sortedUnique(ids)
	var out []*keys.Team
	err := s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		out = []*keys.Team{}
		var evs []store.Event
		for _, id := range ids {
			ms, err := memberT.many(ctx, tx, `DELETE FROM `+memberT.name+` WHERE team_id = ? RETURNING `+memberT.sel, id)
			if err != nil {
				return nil, fmt.Errorf("sqlite: delete team %q: %w", id, err)
			}
			for _, m := range ms {
				evs = append(evs, memberEvent(m.TeamID, m.UserID))
			}
			ts, err := teamT.many(ctx, tx, `DELETE FROM `+teamT.name+` WHERE team_id = ? RETURNING `+teamT.sel, id)
			if err != nil {
				return nil, fmt.Errorf("sqlite: delete team %q: %w", id, err)
			}
			for _, t := range ts {
				out = append(out, t)
				evs = append(evs, teamEvent(t.TeamID))
			}
		}
		return evs, nil
	})
	return out, err
}

func (s *Store) ListTeams(ctx context.Context, q store.TeamQuery) ([]*keys.Team, error) {
	var where []string
	var args []any
	if q.UserID != "" {
		where = append(where, `EXISTS (SELECT 1 FROM json_each(members_with_roles) m WHERE json_type(m.value) = 'object' AND json_extract(m.value, '$.user_id') = ?)`)
		args = append(args, q.UserID)
	}
	if q.OrganizationID != "" {
		where = append(where, `organization_id = ?`)
		args = append(args, q.OrganizationID)
	}
	if q.TeamAlias != "" {
		where = append(where, `team_alias = ?`)
		args = append(args, q.TeamAlias)
	}
	query := `SELECT ` + teamT.sel + ` FROM ` + teamT.name
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	ts, err := teamT.many(ctx, s.r, query+` ORDER BY team_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list teams: %w", err)
	}
	return ts, nil
}

func (s *Store) CreateUser(ctx context.Context, u *keys.User) error {
	if u == nil || u.UserID == "" {
		return fmt.Errorf("sqlite: create user: empty user_id: %w", keys.ErrInvalid)
	}
	fillTimes(&u.CreatedAt, &u.UpdatedAt)
	args, err := userT.args(u)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		if _, err := tx.ExecContext(ctx, userT.insert, args...); err != nil {
			return nil, fmt.Errorf("sqlite: create user %q: %w", u.UserID, userT.conflict(err, u.UserID))
		}
		return []store.Event{userEvent(u.UserID)}, nil
	})
}

func (s *Store) GetUser(ctx context.Context, id string) (*keys.User, error) {
	u, err := userT.one(ctx, s.r, userT.get, id)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get user %q: %w", id, err)
	}
	return u, nil
}

func (s *Store) UpdateUser(ctx context.Context, id string, fn func(u *keys.User) error) (*keys.User, error) {
	var out *keys.User
	err := s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		var err error
		out, err = modify(ctx, tx, userT, []any{id}, func(u *keys.User) error {
			if err := fn(u); err != nil {
				return err
			}
			u.UserID = id
			n := now()
			u.UpdatedAt = &n
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("sqlite: update user %q: %w", id, err)
		}
		return []store.Event{userEvent(id)}, nil
	})
	return out, err
}

func (s *Store) DeleteUsers(ctx context.Context, ids []string) ([]*keys.User, error) {
	ids = sortedUnique(ids)
	var out []*keys.User
	err := s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		out = []*keys.User{}
		var evs []store.Event
		for _, id := range ids {
			ms, err := memberT.many(ctx, tx, `DELETE FROM `+memberT.name+` WHERE user_id = ? RETURNING `+memberT.sel, id)
			if err != nil {
				return nil, fmt.Errorf("sqlite: delete user %q: %w", id, err)
			}
			for _, m := range ms {
				evs = append(evs, memberEvent(m.TeamID, m.UserID))
			}
			us, err := userT.many(ctx, tx, `DELETE FROM `+userT.name+` WHERE user_id = ? RETURNING `+userT.sel, id)
			if err != nil {
				return nil, fmt.Errorf("sqlite: delete user %q: %w", id, err)
			}
			for _, u := range us {
				out = append(out, u)
				evs = append(evs, userEvent(u.UserID))
			}
		}
		return evs, nil
	})
	return out, err
}

func (s *Store) ListUsers(ctx context.Context, q store.UserQuery) ([]*keys.User, int, error) {
	var where []string
	var args []any
	if len(q.UserIDs) > 0 {
		where = append(where, `user_id IN (`+strings.TrimSuffix(strings.Repeat("?, ", len(q.UserIDs)), ", ")+`)`)
		for _, id := range q.UserIDs {
			args = append(args, id)
		}
	}
	if q.Role != "" {
		where = append(where, `user_role = ?`)
		args = append(args, q.Role)
	}
	if q.TeamID != "" {
		where = append(where, `EXISTS (SELECT 1 FROM json_each(teams) t WHERE t.value = ?)`)
		args = append(args, q.TeamID)
	}
	if q.Email != "" {
		where = append(where, `user_email = ?`)
		args = append(args, q.Email)
	}
	w := ""
	if len(where) > 0 {
		w = ` WHERE ` + strings.Join(where, " AND ")
	}
	page, size := max(q.Page, 1), q.Size
	if size < 1 {
		size = 10
	}
	var total int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM `+userT.name+w, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("sqlite: list users: %w", err)
	}
	query := `SELECT ` + userT.sel + ` FROM ` + userT.name + w +
		fmt.Sprintf(` ORDER BY created_at IS NULL, created_at DESC, user_id DESC LIMIT %d OFFSET %d`, size, (page-1)*size)
	us, err := userT.many(ctx, s.r, query, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("sqlite: list users: %w", err)
	}
	return us, total, nil
}

// scanMember reads a membership joined with its budget.
func scanMember(rows *sql.Rows) (*keys.Membership, error) {
	b := new(keys.Budget)
	var budgetID sql.NullString
	dests := []any{&budgetID}
	var sets []func() error
	for _, c := range store.BudgetTable.Columns[1:] {
		d, set := liteDest(c.Name, c.Field(b))
		dests = append(dests, d)
		sets = append(sets, set)
	}
	m, err := memberT.scan(rows, dests...)
	if err != nil {
		return nil, err
	}
	if budgetID.Valid {
		for _, set := range sets {
			if err := set(); err != nil {
				return nil, err
			}
		}
		b.BudgetID = budgetID.String
		store.BudgetTable.Normalize(b)
		m.Budget = b
	}
	return m, nil
}

func queryMembers(ctx context.Context, q querier, where string, args ...any) ([]*keys.Membership, error) {
	rows, err := q.QueryContext(ctx, memberJoin+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*keys.Membership{}
	for rows.Next() {
		m, err := scanMember(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func (s *Store) GetMembership(ctx context.Context, teamID, userID string) (*keys.Membership, error) {
	ms, err := queryMembers(ctx, s.r, ` WHERE x.user_id = ? AND x.team_id = ?`, userID, teamID)
	if err == nil && len(ms) == 0 {
		err = keys.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get membership %q/%q: %w", teamID, userID, err)
	}
	return ms[0], nil
}

func (s *Store) ListMemberships(ctx context.Context, teamID string) ([]*keys.Membership, error) {
	ms, err := queryMembers(ctx, s.r, ` WHERE x.team_id = ? ORDER BY x.user_id`, teamID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list memberships %q: %w", teamID, err)
	}
	return ms, nil
}

func (s *Store) PutMembership(ctx context.Context, m *keys.Membership, b *keys.Budget) error {
	if m == nil || m.TeamID == "" || m.UserID == "" {
		return fmt.Errorf("sqlite: put membership: empty team_id or user_id: %w", keys.ErrInvalid)
	}
	var bargs []any
	if b != nil {
		var err error
		if bargs, err = budgetArgs(b); err != nil {
			return fmt.Errorf("sqlite: put membership: %w", err)
		}
		m.BudgetID = &b.BudgetID
	}
	return s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		var evs []store.Event
		if b != nil {
			ev, err := upsertBudget(ctx, tx, b.BudgetID, bargs)
			if err != nil {
				return nil, err
			}
			evs = append(evs, ev)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+memberT.name+` (user_id, team_id, budget_id) VALUES (?, ?, ?)
			ON CONFLICT (user_id, team_id) DO UPDATE SET budget_id = excluded.budget_id`, m.UserID, m.TeamID, nullStr(m.BudgetID)); err != nil {
			return nil, fmt.Errorf("sqlite: put membership %q/%q: %w", m.TeamID, m.UserID, err)
		}
		return append(evs, memberEvent(m.TeamID, m.UserID)), nil
	})
}

// budgetArgs validates b and renders its columns.
func budgetArgs(b *keys.Budget) ([]any, error) {
	if b.BudgetID == "" {
		return nil, fmt.Errorf("empty budget_id: %w", keys.ErrInvalid)
	}
	fillTimes(&b.CreatedAt, &b.UpdatedAt)
	return budgetT.args(b)
}

// upsertBudget inserts a budget row or replaces it (all but created_at/_by).
func upsertBudget(ctx context.Context, tx *sql.Tx, id string, args []any) (store.Event, error) {
	var set []string
	for _, c := range store.BudgetTable.Columns[1:] {
		if c.Name != "created_at" && c.Name != "created_by" {
			set = append(set, `"`+c.Name+`" = excluded."`+c.Name+`"`)
		}
	}
	if _, err := tx.ExecContext(ctx, budgetT.insert+` ON CONFLICT (budget_id) DO UPDATE SET `+strings.Join(set, ", "), args...); err != nil {
		return store.Event{}, fmt.Errorf("sqlite: put budget %q: %w", id, err)
	}
	return store.Event{Kind: store.EventBudgetChanged, Budget: id}, nil
}

func (s *Store) PutBudget(ctx context.Context, b *keys.Budget) error {
	if b == nil {
		return fmt.Errorf("sqlite: put budget: nil: %w", keys.ErrInvalid)
	}
	args, err := budgetArgs(b)
	if err != nil {
		return fmt.Errorf("sqlite: put budget: %w", err)
	}
	return s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		ev, err := upsertBudget(ctx, tx, b.BudgetID, args)
		if err != nil {
			return nil, err
		}
		return []store.Event{ev}, nil
	})
}

func (s *Store) GetBudget(ctx context.Context, id string) (*keys.Budget, error) {
	b, err := budgetT.one(ctx, s.r, budgetT.get, id)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get budget %q: %w", id, err)
	}
	return b, nil
}

func (s *Store) DeleteMembership(ctx context.Context, teamID, userID string) error {
	return s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		res, err := tx.ExecContext(ctx, `DELETE FROM `+memberT.name+` WHERE user_id = ? AND team_id = ?`, userID, teamID)
		if err != nil {
			return nil, fmt.Errorf("sqlite: delete membership %q/%q: %w", teamID, userID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil, nil
		}
		return []store.Event{memberEvent(teamID, userID)}, nil
	})
}

// AddOrgSpend adds the deltas in one write transaction (teams, then
// memberships, then users, each sorted) and emits the spend events.
func (s *Store) AddOrgSpend(ctx context.Context, d store.OrgSpend) error {
	if d.Empty() {
		return nil
	}
	mks := make([]keys.MemberKey, 0, len(d.Memberships))
	for k := range d.Memberships {
		mks = append(mks, k)
	}
	slices.SortFunc(mks, func(a, b keys.MemberKey) int {
		if c := strings.Compare(a.TeamID, b.TeamID); c != 0 {
			return c
		}
		return strings.Compare(a.UserID, b.UserID)
	})
	return s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		t := formatTime(now())
		var evs []store.Event
		one := func(q string, args ...any) (float64, bool, error) {
			var spend float64
			err := tx.QueryRowContext(ctx, q, args...).Scan(&spend)
			if errors.Is(err, sql.ErrNoRows) {
				return 0, false, nil
			}
			return spend, err == nil, err
		}
		for _, id := range sortedKeys(d.Teams) {
			spend, ok, err := one(`UPDATE `+teamT.name+` SET spend = spend + ?, updated_at = ? WHERE team_id = ? RETURNING spend`, d.Teams[id], t, id)
			if err != nil {
				return nil, fmt.Errorf("sqlite: add team spend %q: %w", id, err)
			}
			if ok {
				evs = append(evs, store.Event{Kind: store.EventTeamSpend, Team: id, Spend: spend})
			}
		}
		for _, k := range mks {
			spend, ok, err := one(`UPDATE `+memberT.name+` SET spend = spend + ? WHERE team_id = ? AND user_id = ? RETURNING spend`, d.Memberships[k], k.TeamID, k.UserID)
			if err != nil {
				return nil, fmt.Errorf("sqlite: add membership spend %q/%q: %w", k.TeamID, k.UserID, err)
			}
			if ok {
				evs = append(evs, store.Event{Kind: store.EventMemberSpend, Team: k.TeamID, User: k.UserID, Spend: spend})
			}
		}
		for _, id := range sortedKeys(d.Users) {
			spend, ok, err := one(`UPDATE `+userT.name+` SET spend = spend + ?, updated_at = ? WHERE user_id = ? RETURNING spend`, d.Users[id], t, id)
			if err != nil {
				return nil, fmt.Errorf("sqlite: add user spend %q: %w", id, err)
			}
			if ok {
				evs = append(evs, store.Event{Kind: store.EventUserSpend, User: id, Spend: spend})
			}
		}
		return evs, nil
	})
}

func sortedKeys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sortedUnique(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

// ResetOrgBudgets resets due teams, users and member budgets.
func (s *Store) ResetOrgBudgets(ctx context.Context, nowT time.Time) (int, error) {
	n := 0
	nowS := formatTime(nowT)
	err := s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		n = 0
		var evs []store.Event
		for _, tbl := range []struct{ name, id, extra string }{
			{teamT.name, "team_id", "spend = 0, updated_at = ?3, "},
			{userT.name, "user_id", "spend = 0, updated_at = ?3, "},
			{budgetT.name, "budget_id", "updated_at = ?3, "},
		} {
			rows, err := tx.QueryContext(ctx, `SELECT `+tbl.id+`, budget_duration FROM `+tbl.name+`
				WHERE budget_reset_at IS NOT NULL AND budget_reset_at <= ? AND budget_duration IS NOT NULL ORDER BY `+tbl.id, nowS)
			if err != nil {
				return nil, err
			}
			type due struct{ id, dur string }
			var dues []due
			for rows.Next() {
				var d due
				if err := rows.Scan(&d.id, &d.dur); err != nil {
					rows.Close()
					return nil, err
				}
				dues = append(dues, d)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, err
			}
			for _, d := range dues {
				next, err := keys.NextResetFromString(d.dur, nowT)
				if err != nil {
					continue
				}
				if _, err := tx.ExecContext(ctx, `UPDATE `+tbl.name+` SET `+tbl.extra+`budget_reset_at = ?2 WHERE `+tbl.id+` = ?1`, d.id, formatTime(next), nowS); err != nil {
					return nil, err
				}
				switch tbl.id {
				case "team_id":
					evs = append(evs, teamEvent(d.id))
				case "user_id":
					evs = append(evs, userEvent(d.id))
				default:
					ms, err := memberT.many(ctx, tx, `UPDATE `+memberT.name+` SET spend = 0 WHERE budget_id = ? RETURNING `+memberT.sel, d.id)
					if err != nil {
						return nil, err
					}
					for _, m := range ms {
						evs = append(evs, memberEvent(m.TeamID, m.UserID))
					}
					evs = append(evs, store.Event{Kind: store.EventBudgetChanged, Budget: d.id})
				}
				n++
			}
		}
		return evs, nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: reset team and user budgets: %w", err)
	}
	return n, nil
}
