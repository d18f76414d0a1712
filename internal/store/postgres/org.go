package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

var _ store.Org = (*Store)(nil)

// orgTables is the SQL for the team, user, membership and budget tables.
type orgTables struct {
	teams   *table[keys.Team]
	users   *table[keys.User]
	members *table[keys.Membership]
	budgets *table[keys.Budget]

	memberGet  string // membership joined with its budget, by (user_id, team_id)
	memberList string // a team's memberships joined with their budgets
}

// errNoOrg: the database has no LiteLLM team and user tables (a key table
// set up without LiteLLM's migrations); teams and users then do not exist.
var errNoOrg = fmt.Errorf("postgres: LiteLLM's team and user tables do not exist on this database: %w", keys.ErrNotFound)

// loadOrg reads the team, user, membership and budget tables' columns. A
// database without LiteLLM's team table has none of these: nil, and the
// Org methods answer as for an empty organisation.
func loadOrg(ctx context.Context, pool *pgxpool.Pool) (*orgTables, error) {
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, quote(store.TeamTable.Name)).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		return nil, nil
	}
	var o orgTables
	var err error
	if o.teams, err = loadTable(ctx, pool, store.TeamTable); err != nil {
		return nil, err
	}
	if o.users, err = loadTable(ctx, pool, store.UserTable); err != nil {
		return nil, err
	}
	if o.members, err = loadTable(ctx, pool, store.MembershipTable); err != nil {
		return nil, err
	}
	if o.budgets, err = loadTable(ctx, pool, store.BudgetTable); err != nil {
		return nil, err
	}
	join := fmt.Sprintf(`SELECT %s, %s FROM %s x LEFT JOIN %s b ON b.budget_id = x.budget_id`,
		o.members.selT, strings.ReplaceAll(o.budgets.selT, "x.", "b."), o.members.name, o.budgets.name)
	o.memberGet = join + ` WHERE x.user_id = $1 AND x.team_id = $2`
	o.memberList = join + ` WHERE x.team_id = $1 ORDER BY x.user_id COLLATE "C"`
	return &o, nil
}

func (s *Store) CreateTeam(ctx context.Context, t *keys.Team) error {
	if s.org == nil {
		return errNoOrg
	}
	if t == nil || t.TeamID == "" {
		return fmt.Errorf("postgres: create team: empty team_id: %w", keys.ErrInvalid)
	}
	fillTimes(&t.CreatedAt, &t.UpdatedAt)
	out, err := s.org.teams.create(ctx, s.pool, t)
	if err != nil {
		return fmt.Errorf("postgres: create team %q: %w", t.TeamID, err)
	}
	*t = *out
	return nil
}

func (s *Store) GetTeam(ctx context.Context, id string) (*keys.Team, error) {
	if s.org == nil {
		return nil, errNoOrg
	}
	t, err := s.org.teams.one(ctx, s.pool, s.org.teams.get, id)
	if err != nil {
		return nil, fmt.Errorf("postgres: get team %q: %w", id, err)
	}
	return t, nil
}

func (s *Store) UpdateTeam(ctx context.Context, id string, fn func(t *keys.Team) error) (*keys.Team, error) {
	if s.org == nil {
		return nil, errNoOrg
	}
	var out *keys.Team
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		out, err = s.org.teams.modify(ctx, tx, []any{id}, func(t *keys.Team) error {
			if err := fn(t); err != nil {
				return err
			}
			t.TeamID = id
			n := now()
			t.UpdatedAt = &n
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: update team %q: %w", id, err)
	}
	return out, nil
}

func (s *Store) DeleteTeams(ctx context.Context, ids []string) ([]*keys.Team, error) {
	if s.org == nil {
		return nil, nil
	}
	ids = sortedUnique(ids)
	out := []*keys.Team{}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out = out[:0]
		if _, err := tx.Exec(ctx, `DELETE FROM `+s.org.members.name+` WHERE team_id = ANY($1)`, ids); err != nil {
			return err
		}
		ts, err := s.org.teams.many(ctx, tx, `DELETE FROM `+s.org.teams.name+` WHERE team_id = ANY($1) RETURNING `+s.org.teams.sel, ids)
		out = ts
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: delete teams: %w", err)
	}
	slices.SortFunc(out, func(a, b *keys.Team) int { return strings.Compare(a.TeamID, b.TeamID) })
	return out, nil
}

func (s *Store) ListTeams(ctx context.Context, q store.TeamQuery) ([]*keys.Team, error) {
	if s.org == nil {
		return nil, nil
	}
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if q.UserID != "" {
		add(`members_with_roles @> jsonb_build_array(jsonb_build_object('user_id', $%d::text))`, q.UserID)
	}
	if q.OrganizationID != "" {
		add(`organization_id = $%d`, q.OrganizationID)
	}
	if q.TeamAlias != "" {
		add(`team_alias = $%d`, q.TeamAlias)
	}
	sql := `SELECT ` + s.org.teams.sel + ` FROM ` + s.org.teams.name
	if len(where) > 0 {
		sql += ` WHERE ` + strings.Join(where, " AND ")
	}
	sql += ` ORDER BY team_id COLLATE "C"`
	ts, err := s.org.teams.many(ctx, s.pool, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list teams: %w", err)
	}
	return ts, nil
}

func (s *Store) CreateUser(ctx context.Context, u *keys.User) error {
	if s.org == nil {
		return errNoOrg
	}
	if u == nil || u.UserID == "" {
		return fmt.Errorf("postgres: create user: empty user_id: %w", keys.ErrInvalid)
	}
	fillTimes(&u.CreatedAt, &u.UpdatedAt)
	out, err := s.org.users.create(ctx, s.pool, u)
	if err != nil {
		return fmt.Errorf("postgres: create user %q: %w", u.UserID, err)
	}
	*u = *out
	return nil
}

func (s *Store) GetUser(ctx context.Context, id string) (*keys.User, error) {
	if s.org == nil {
		return nil, errNoOrg
	}
	u, err := s.org.users.one(ctx, s.pool, s.org.users.get, id)
	if err != nil {
		return nil, fmt.Errorf("postgres: get user %q: %w", id, err)
	}
	return u, nil
}

func (s *Store) UpdateUser(ctx context.Context, id string, fn func(u *keys.User) error) (*keys.User, error) {
	if s.org == nil {
		return nil, errNoOrg
	}
	var out *keys.User
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		out, err = s.org.users.modify(ctx, tx, []any{id}, func(u *keys.User) error {
			if err := fn(u); err != nil {
				return err
			}
			u.UserID = id
			n := now()
			u.UpdatedAt = &n
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: update user %q: %w", id, err)
	}
	return out, nil
}

func (s *Store) DeleteUsers(ctx context.Context, ids []string) ([]*keys.User, error) {
	if s.org == nil {
		return nil, nil
	}
	ids = sortedUnique(ids)
	var out []*keys.User
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM `+s.org.members.name+` WHERE user_id = ANY($1)`, ids); err != nil {
			return err
		}
		us, err := s.org.users.many(ctx, tx, `DELETE FROM `+s.org.users.name+` WHERE user_id = ANY($1) RETURNING `+s.org.users.sel, ids)
		out = us
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: delete users: %w", err)
	}
	slices.SortFunc(out, func(a, b *keys.User) int { return strings.Compare(a.UserID, b.UserID) })
	return out, nil
}

func (s *Store) ListUsers(ctx context.Context, q store.UserQuery) ([]*keys.User, int, error) {
	if s.org == nil {
		return nil, 0, nil
	}
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if len(q.UserIDs) > 0 {
		add(`user_id = ANY($%d)`, q.UserIDs)
	}
	if q.Role != "" {
		add(`user_role = $%d`, q.Role)
	}
	if q.TeamID != "" {
		add(`$%d = ANY(teams)`, q.TeamID)
	}
	if q.Email != "" {
		add(`user_email = $%d`, q.Email)
	}
	w := ""
	if len(where) > 0 {
		w = ` WHERE ` + strings.Join(where, " AND ")
	}
	page, size := pageOf(q.Page, q.Size)
	var total int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM `+s.org.users.name+w, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("postgres: list users: %w", err)
	}
	sql := `SELECT ` + s.org.users.sel + ` FROM ` + s.org.users.name + w +
		fmt.Sprintf(` ORDER BY created_at DESC NULLS LAST, user_id COLLATE "C" DESC LIMIT %d OFFSET %d`, size, (page-1)*size)
	us, err := s.org.users.many(ctx, s.pool, sql, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("postgres: list users: %w", err)
	}
	return us, total, nil
}

// scanMember reads a membership joined with its budget.
func (s *Store) scanMember(row pgx.Row) (*keys.Membership, error) {
	b := new(keys.Budget)
	bt := s.org.budgets
	dests := make([]any, 0, len(bt.cols))
	var budgetID *string
	for i, c := range bt.cols {
		if i == 0 {
			dests = append(dests, &budgetID) // LEFT JOIN: NULL when no row
			continue
		}
		dests = append(dests, pgDest(c.Field(b)))
	}
	m, err := s.org.members.scan(row, dests...)
	if err != nil {
		return nil, err
	}
	if budgetID != nil {
		b.BudgetID = *budgetID
		bt.finish(b)
		m.Budget = b
	}
	return m, nil
}

func (s *Store) GetMembership(ctx context.Context, teamID, userID string) (*keys.Membership, error) {
	if s.org == nil {
		return nil, errNoOrg
	}
	m, err := s.scanMember(s.pool.QueryRow(ctx, s.org.memberGet, userID, teamID))
	if errNoRows(err) {
		err = keys.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get membership %q/%q: %w", teamID, userID, err)
	}
	return m, nil
}

func (s *Store) ListMemberships(ctx context.Context, teamID string) ([]*keys.Membership, error) {
	if s.org == nil {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, s.org.memberList, teamID)
	if err != nil {
		return nil, fmt.Errorf("postgres: list memberships %q: %w", teamID, err)
	}
	defer rows.Close()
	out := []*keys.Membership{}
	for rows.Next() {
		m, err := s.scanMember(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list memberships %q: %w", teamID, err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list memberships %q: %w", teamID, err)
	}
	return out, nil
}

func (s *Store) PutMembership(ctx context.Context, m *keys.Membership, b *keys.Budget) error {
	if s.org == nil {
		return errNoOrg
	}
	if m == nil || m.TeamID == "" || m.UserID == "" {
		return fmt.Errorf("postgres: put membership: empty team_id or user_id: %w", keys.ErrInvalid)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if b != nil {
			if err := s.upsertBudget(ctx, tx, b); err != nil {
				return err
			}
			m.BudgetID = &b.BudgetID
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+s.org.members.name+` (user_id, team_id, budget_id) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, team_id) DO UPDATE SET budget_id = EXCLUDED.budget_id`, m.UserID, m.TeamID, m.BudgetID)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: put membership %q/%q: %w", m.TeamID, m.UserID, err)
	}
	return nil
}

// upsertBudget inserts b or replaces its row (all but created_at/_by).
func (s *Store) upsertBudget(ctx context.Context, q queryer, b *keys.Budget) error {
	if b.BudgetID == "" {
		return fmt.Errorf("empty budget_id: %w", keys.ErrInvalid)
	}
	fillTimes(&b.CreatedAt, &b.UpdatedAt)
	args, err := s.org.budgets.args(b)
	if err != nil {
		return err
	}
	var set []string
	for _, c := range s.org.budgets.cols[1:] {
		if c.Name != "created_at" && c.Name != "created_by" {
			set = append(set, fmt.Sprintf("%s = EXCLUDED.%s", quote(c.Name), quote(c.Name)))
		}
	}
	_, err = q.Exec(ctx, strings.Replace(s.org.budgets.insert, " RETURNING ", " ON CONFLICT (budget_id) DO UPDATE SET "+strings.Join(set, ", ")+" RETURNING ", 1), args...)
	return err
}

func (s *Store) PutBudget(ctx context.Context, b *keys.Budget) error {
	if s.org == nil {
		return errNoOrg
	}
	if b == nil {
		return fmt.Errorf("postgres: put budget: nil: %w", keys.ErrInvalid)
	}
	if err := s.upsertBudget(ctx, s.pool, b); err != nil {
		return fmt.Errorf("postgres: put budget %q: %w", b.BudgetID, translate(err, nil))
	}
	return nil
}

func (s *Store) GetBudget(ctx context.Context, id string) (*keys.Budget, error) {
	if s.org == nil {
		return nil, errNoOrg
	}
	b, err := s.org.budgets.one(ctx, s.pool, s.org.budgets.get, id)
	if err != nil {
		return nil, fmt.Errorf("postgres: get budget %q: %w", id, err)
	}
	return b, nil
}

func (s *Store) DeleteMembership(ctx context.Context, teamID, userID string) error {
	if s.org == nil {
		return errNoOrg
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM `+s.org.members.name+` WHERE user_id = $1 AND team_id = $2`, userID, teamID); err != nil {
		return fmt.Errorf("postgres: delete membership %q/%q: %w", teamID, userID, err)
	}
	return nil
}

// AddOrgSpend adds the deltas in one transaction, locking teams, then
// memberships, then users, each in sorted order.
func (s *Store) AddOrgSpend(ctx context.Context, d store.OrgSpend) error {
	if s.org == nil {
		return nil
	}
	if d.Empty() {
		return nil
	}
	teams, tds := sortedDeltas(d.Teams)
	users, uds := sortedDeltas(d.Users)
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
	mt, mu, mds := make([]string, len(mks)), make([]string, len(mks)), make([]float64, len(mks))
	for i, k := range mks {
		mt[i], mu[i], mds[i] = k.TeamID, k.UserID, d.Memberships[k]
	}
	n := now()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if len(teams) > 0 {
			if _, err := tx.Exec(ctx, `SELECT 1 FROM `+s.org.teams.name+` WHERE team_id = ANY($1) ORDER BY team_id COLLATE "C" FOR UPDATE`, teams); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE `+s.org.teams.name+` x SET spend = x.spend + d.delta, updated_at = $3
				FROM unnest($1::text[], $2::float8[]) AS d(id, delta) WHERE x.team_id = d.id`, teams, tds, n); err != nil {
				return err
			}
		}
		if len(mks) > 0 {
			if _, err := tx.Exec(ctx, `SELECT 1 FROM `+s.org.members.name+` x JOIN unnest($1::text[], $2::text[]) AS d(t, u)
				ON x.team_id = d.t AND x.user_id = d.u ORDER BY x.team_id COLLATE "C", x.user_id COLLATE "C" FOR UPDATE OF x`, mt, mu); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE `+s.org.members.name+` x SET spend = x.spend + d.delta
				FROM unnest($1::text[], $2::text[], $3::float8[]) AS d(t, u, delta) WHERE x.team_id = d.t AND x.user_id = d.u`, mt, mu, mds); err != nil {
				return err
			}
		}
		if len(users) > 0 {
			if _, err := tx.Exec(ctx, `SELECT 1 FROM `+s.org.users.name+` WHERE user_id = ANY($1) ORDER BY user_id COLLATE "C" FOR UPDATE`, users); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE `+s.org.users.name+` x SET spend = x.spend + d.delta, updated_at = $3
				FROM unnest($1::text[], $2::float8[]) AS d(id, delta) WHERE x.user_id = d.id`, users, uds, n); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: add org spend: %w", err)
	}
	return nil
}

func sortedDeltas(m map[string]float64) ([]string, []float64) {
	ids := make([]string, 0, len(m))
	for k := range m {
		ids = append(ids, k)
	}
	slices.Sort(ids)
	ds := make([]float64, len(ids))
	for i, id := range ids {
		ds[i] = m[id]
	}
	return ids, ds
}

func sortedUnique(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
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

func pageOf(page, size int) (int, int) {
	if page < 1 {
		page = 1
	}
	if size < 1 {
		size = 10
	}
	return page, size
}

// ResetOrgBudgets resets due teams, users and member budgets (rows another
// replica is resetting are skipped: SKIP LOCKED).
func (s *Store) ResetOrgBudgets(ctx context.Context, nowT time.Time) (int, error) {
	if s.org == nil {
		return 0, nil
	}
	n := 0
	nowT = nowT.UTC().Truncate(time.Millisecond)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		n = 0
		for _, tbl := range []struct{ name, id, extra string }{
			{s.org.teams.name, "team_id", "spend = 0, updated_at = $3, "},
			{s.org.users.name, "user_id", "spend = 0, updated_at = $3, "},
			{s.org.budgets.name, "budget_id", "updated_at = $3, "},
		} {
			rows, err := tx.Query(ctx, `SELECT `+tbl.id+`, budget_duration FROM `+tbl.name+`
				WHERE budget_reset_at IS NOT NULL AND budget_reset_at <= $1 AND budget_duration IS NOT NULL
				ORDER BY `+tbl.id+` COLLATE "C" FOR UPDATE SKIP LOCKED`, nowT)
			if err != nil {
				return err
			}
			type due struct{ id, dur string }
			dues, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (due, error) {
				var d due
				return d, r.Scan(&d.id, &d.dur)
			})
			if err != nil {
				return err
			}
			for _, d := range dues {
				next, err := keys.NextResetFromString(d.dur, nowT)
				if err != nil {
					continue
				}
				if _, err := tx.Exec(ctx, `UPDATE `+tbl.name+` SET `+tbl.extra+`budget_reset_at = $2 WHERE `+tbl.id+` = $1`, d.id, next.UTC(), nowT); err != nil {
					return err
				}
				if tbl.id == "budget_id" {
					if _, err := tx.Exec(ctx, `UPDATE `+s.org.members.name+` SET spend = 0 WHERE budget_id = $1`, d.id); err != nil {
						return err
					}
				}
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: reset team and user budgets: %w", err)
	}
	return n, nil
}
