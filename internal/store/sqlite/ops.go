package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

const (
	keyTable        = `"LiteLLM_VerificationToken"`
	auditTable      = `"LiteLLM_AuditLog"`
	deprecatedTable = `"LiteLLM_DeprecatedVerificationToken"`
)

var (
	insertKeySQL = fmt.Sprintf(`INSERT INTO %s (%s) VALUES (%s)`, keyTable,
		strings.Join(keyColumns, ", "), strings.TrimSuffix(strings.Repeat("?, ", len(keyColumns)), ", "))
	// updateKeySQL writes every known column, token included (Regenerate
	// moves the row), for the row whose token is the last argument.
	// A JSON object column whose argument is NULL keeps its stored text
	// (see keyArgs): the columns are never NULL otherwise.
	updateKeySQL = func() string {
		set := make([]string, len(keyColumns))
		for i, c := range keyColumns {
			set[i] = c + " = ?"
			if jsonColumns[c] {
				set[i] = c + " = COALESCE(?, " + c + ")"
			}
		}
		return fmt.Sprintf(`UPDATE %s SET %s WHERE token = ?`, keyTable, strings.Join(set, ", "))
	}()
)

func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// querier is what reads need from *sql.DB and *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// queryKeys runs q and reads every row as a key.
func queryKeys(ctx context.Context, db querier, q string, args ...any) ([]*keys.Key, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*keys.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// queryKey returns the single key q selects, or keys.ErrNotFound.
func queryKey(ctx context.Context, db querier, q string, args ...any) (*keys.Key, error) {
	ks, err := queryKeys(ctx, db, q, args...)
	if err != nil {
		return nil, err
	}
	if len(ks) == 0 {
		return nil, keys.ErrNotFound
	}
	return ks[0], nil
}

func getSQL(col string) string {
	return fmt.Sprintf(`SELECT * FROM %s WHERE %s = ?`, keyTable, col)
}

// Create inserts k, filling CreatedAt/UpdatedAt when nil.
func (s *Store) Create(ctx context.Context, k *keys.Key) error {
	if k == nil || k.Token == "" {
		return fmt.Errorf("sqlite: create: empty token: %w", keys.ErrInvalid)
	}
	t := now()
	if k.CreatedAt == nil {
		k.CreatedAt = &t
	}
	if k.UpdatedAt == nil {
		k.UpdatedAt = &t
	}
	args, err := keyArgs(k, nil)
	if err != nil {
		return fmt.Errorf("sqlite: create %s: %w", keys.Redact(k.Token), err)
	}
	return translate(s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		if _, err := tx.ExecContext(ctx, insertKeySQL, args...); err != nil {
			return nil, fmt.Errorf("sqlite: create %s: %w", keys.Redact(k.Token), translate(err, k))
		}
		return []store.Event{{Kind: store.EventChanged, Token: k.Token}}, nil
	}), k)
}

// Get returns the key whose token is hash.
func (s *Store) Get(ctx context.Context, hash string) (*keys.Key, error) {
	k, err := queryKey(ctx, s.r, getSQL("token"), hash)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get %s: %w", keys.Redact(hash), translate(err, nil))
	}
	return k, nil
}

// GetByAlias returns the key with that key_alias.
func (s *Store) GetByAlias(ctx context.Context, alias string) (*keys.Key, error) {
	k, err := queryKey(ctx, s.r, getSQL("key_alias"), alias)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get by alias: %w", translate(err, nil))
	}
	return k, nil
}

var lookupGraceSQL = fmt.Sprintf(`SELECT t.*, d.revoke_at AS %s FROM %s d JOIN %s t ON t.token = d.active_token_id
	WHERE d.token = ? AND d.revoke_at > ?`, graceColumn, deprecatedTable, keyTable)

// Lookup is Get, falling back to a rotated-out token still in its grace
// period (the active key, with GraceUntil set).
func (s *Store) Lookup(ctx context.Context, hash string) (*keys.Key, error) {
	k, err := queryKey(ctx, s.r, getSQL("token"), hash)
	if errors.Is(err, keys.ErrNotFound) {
		k, err = queryKey(ctx, s.r, lookupGraceSQL, hash, formatTime(now()))
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: lookup %s: %w", keys.Redact(hash), translate(err, nil))
	}
	return k, nil
}

// Update loads the key, calls fn and writes every known column back except
// token, with UpdatedAt = now, in one write transaction.
func (s *Store) Update(ctx context.Context, hash string, fn func(k *keys.Key) error) (*keys.Key, error) {
	var out *keys.Key
	err := s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		k, err := queryKey(ctx, tx, getSQL("token"), hash)
		if err != nil {
			return nil, fmt.Errorf("sqlite: update %s: %w", keys.Redact(hash), translate(err, nil))
		}
		before := jsonSnapshot(k)
		if err := fn(k); err != nil {
			return nil, err
		}
		k.Token = hash
		k.GraceUntil = nil
		if err := writeBack(ctx, tx, hash, k, before); err != nil {
			return nil, fmt.Errorf("sqlite: update %s: %w", keys.Redact(hash), translate(err, nil))
		}
		out = k
		return []store.Event{{Kind: store.EventChanged, Token: hash}}, nil
	})
	if err != nil {
		return nil, translate(err, nil)
	}
	return out, nil
}

// writeBack stores k (every known column, token = k.Token) over the row
// whose token is old, setting UpdatedAt to now.
// JSON object columns whose rendering equals before's are left as stored.
func writeBack(ctx context.Context, tx *sql.Tx, old string, k *keys.Key, before map[string]string) error {
	t := now()
	k.UpdatedAt = &t
	args, err := keyArgs(k, before)
	if err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, updateKeySQL, append(args, old)...)
	if err != nil {
		return translate(err, k)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return keys.ErrNotFound
	}
	return nil
}

// Delete removes the keys with these hashes and returns the removed rows.
// Tokens in grace that point at a removed key die with it.
func (s *Store) Delete(ctx context.Context, hashes []string) ([]*keys.Key, error) {
	hs := slices.Clone(hashes)
	slices.Sort(hs)
	hs = slices.Compact(hs)
	var out []*keys.Key
	err := s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		out = nil
		var evs []store.Event
		for _, h := range hs {
			ks, err := queryKeys(ctx, tx, fmt.Sprintf(`DELETE FROM %s WHERE token = ? RETURNING *`, keyTable), h)
			if err != nil {
				return nil, fmt.Errorf("sqlite: delete %s: %w", keys.Redact(h), translate(err, nil))
			}
			if len(ks) == 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(`DELETE FROM %s WHERE active_token_id = ?`, deprecatedTable), h); err != nil {
				return nil, fmt.Errorf("sqlite: delete %s: %w", keys.Redact(h), translate(err, nil))
			}
			out = append(out, ks...)
			evs = append(evs, store.Event{Kind: store.EventChanged, Token: h})
		}
		return evs, nil
	})
	if err != nil {
		return nil, translate(err, nil)
	}
	return out, nil
}

// List returns one page of keys matching q. Sorting is by q.SortBy (NULLs
// last in both directions), then token in the same direction.
func (s *Store) List(ctx context.Context, q store.ListQuery) (store.ListResult, error) {
	col, dir := "created_at", "DESC"
	if q.SortBy != "" {
		if !slices.Contains(store.SortColumns, q.SortBy) {
			return store.ListResult{}, fmt.Errorf("sqlite: list: sort column %q: %w", q.SortBy, keys.ErrInvalid)
		}
		col = q.SortBy
		if !q.Desc {
			dir = "ASC"
		}
	}
	page, size := max(q.Page, 1), q.Size
	if size < 1 {
		size = 10
	}
	if int64(page-1) > math.MaxInt64/int64(size) { // the offset would overflow
		return store.ListResult{}, fmt.Errorf("sqlite: list: %w", &keys.InvalidError{Field: "page", Reason: "too large for the page size"})
	}
	var where []string
	var args []any
	for _, f := range []struct{ col, val string }{
		{"user_id", q.UserID}, {"team_id", q.TeamID}, {"organization_id", q.OrganizationID},
		{"token", q.KeyHash}, {"key_alias", q.KeyAlias},
	} {
		if f.val != "" {
			where = append(where, f.col+" = ?")
			args = append(args, f.val)
		}
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	if len(q.OrTeamIDs) > 0 {
		base := "FALSE"
		if len(where) > 0 {
			base = strings.Join(where, " AND ")
		}
		cond = " WHERE (" + base + ") OR team_id IN (?" + strings.Repeat(", ?", len(q.OrTeamIDs)-1) + ")"
		for _, t := range q.OrTeamIDs {
			args = append(args, t)
		}
	}
	var total int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM `+keyTable+cond, args...).Scan(&total); err != nil {
		return store.ListResult{}, fmt.Errorf("sqlite: list: %w", translate(err, nil))
	}
	// col and dir come from the whitelist above, never from input text.
	query := fmt.Sprintf(`SELECT * FROM %s%s ORDER BY %s %s NULLS LAST, token %s LIMIT ? OFFSET ?`, keyTable, cond, col, dir, dir)
	offset := int64(page-1) * int64(size)
	ks, err := queryKeys(ctx, s.r, query, append(args, size, offset)...)
	if err != nil {
		return store.ListResult{}, fmt.Errorf("sqlite: list: %w", translate(err, nil))
	}
	if ks == nil {
		ks = []*keys.Key{}
	}
	return store.ListResult{Keys: ks, Total: total}, nil
}

// SetBlocked sets blocked and returns the updated key.
func (s *Store) SetBlocked(ctx context.Context, hash string, blocked bool) (*keys.Key, error) {
	k, err := s.Update(ctx, hash, func(k *keys.Key) error {
		k.Blocked = &blocked
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: set blocked: %w", err)
	}
	return k, nil
}

// Regenerate moves the row from oldHash to newHash after fn. With
// graceUntil the old token keeps resolving through Lookup until then; tokens
// already in grace for oldHash are re-pointed at newHash.
func (s *Store) Regenerate(ctx context.Context, oldHash, newHash string, graceUntil *time.Time, fn func(k *keys.Key) error) (*keys.Key, error) {
	if newHash == "" {
		return nil, fmt.Errorf("sqlite: regenerate: empty new token: %w", keys.ErrInvalid)
	}
	if err := checkTime("grace", graceUntil); err != nil {
		return nil, translate(err, nil)
	}
	var out *keys.Key
	err := s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		k, err := queryKey(ctx, tx, getSQL("token"), oldHash)
		if err != nil {
			return nil, fmt.Errorf("sqlite: regenerate %s: %w", keys.Redact(oldHash), translate(err, nil))
		}
		before := jsonSnapshot(k)
		if fn != nil {
			if err := fn(k); err != nil {
				return nil, err
			}
		}
		k.Token = newHash
		k.GraceUntil = nil
		if err := writeBack(ctx, tx, oldHash, k, before); err != nil {
			return nil, fmt.Errorf("sqlite: regenerate %s: %w", keys.Redact(oldHash), translate(err, nil))
		}
		t := formatTime(now())
		stmts := []struct {
			q    string
			args []any
		}{
			// Expired grace records are dead weight.
			{`DELETE FROM ` + deprecatedTable + ` WHERE revoke_at <= ?`, []any{t}},
			// The new token is live now; it is not in grace.
			{`DELETE FROM ` + deprecatedTable + ` WHERE token = ?`, []any{newHash}},
			{`UPDATE ` + deprecatedTable + ` SET active_token_id = ? WHERE active_token_id = ?`, []any{newHash, oldHash}},
		}
		if graceUntil != nil {
			stmts = append(stmts, struct {
				q    string
				args []any
			}{`INSERT INTO ` + deprecatedTable + ` (token, active_token_id, revoke_at, created_at) VALUES (?, ?, ?, ?)
				ON CONFLICT (token) DO UPDATE SET active_token_id = excluded.active_token_id, revoke_at = excluded.revoke_at, created_at = excluded.created_at`,
				[]any{oldHash, newHash, formatTime(*graceUntil), t}})
		}
		for _, st := range stmts {
			if _, err := tx.ExecContext(ctx, st.q, st.args...); err != nil {
				return nil, fmt.Errorf("sqlite: regenerate %s: %w", keys.Redact(oldHash), translate(err, nil))
			}
		}
		out = k
		return []store.Event{{Kind: store.EventChanged, Token: oldHash}, {Kind: store.EventChanged, Token: newHash}}, nil
	})
	if err != nil {
		return nil, translate(err, nil)
	}
	return out, nil
}

// AddSpend adds each delta to its key's spend in one transaction, in sorted
// token order. Unknown hashes are ignored.
func (s *Store) AddSpend(ctx context.Context, deltas map[string]float64) error {
	if len(deltas) == 0 {
		return nil
	}
	toks := make([]string, 0, len(deltas))
	for t := range deltas {
		toks = append(toks, t)
	}
	slices.Sort(toks)
	q := fmt.Sprintf(`UPDATE %s SET spend = spend + ?, updated_at = ? WHERE token = ? RETURNING spend`, keyTable)
	return translate(s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		t := formatTime(now())
		var evs []store.Event
		for _, tok := range toks {
			var spend float64
			err := tx.QueryRowContext(ctx, q, deltas[tok], t, tok).Scan(&spend)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("sqlite: add spend %s: %w", keys.Redact(tok), translate(err, nil))
			}
			evs = append(evs, store.Event{Kind: store.EventSpend, Token: tok, Spend: spend})
		}
		return evs, nil
	}), nil)
}

// ResetBudgets zeroes spend and moves budget_reset_at to the next boundary
// for every unexpired key whose budget_reset_at <= now. Keys without a
// budget_duration, or with one that does not parse, are skipped (not
// counted) and logged: without a period there is no next boundary.
func (s *Store) ResetBudgets(ctx context.Context, nowT time.Time) (int, error) {
	n := 0
	nowS := formatTime(nowT)
	err := s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		n = 0
		type due struct {
			token, dur       string
			resetAt, expires sql.NullString
		}
		var dues []due
		rows, err := tx.QueryContext(ctx, fmt.Sprintf(`SELECT token, budget_duration, budget_reset_at, expires FROM %s
			WHERE budget_reset_at IS NOT NULL AND budget_reset_at <= ?
			  AND (expires IS NULL OR expires >= ?) AND budget_duration IS NOT NULL
			ORDER BY token`, keyTable), nowS, nowS)
		if err != nil {
			return nil, fmt.Errorf("sqlite: reset budgets: %w", translate(err, nil))
		}
		for rows.Next() {
			var d due
			if err := rows.Scan(&d.token, &d.dur, &d.resetAt, &d.expires); err != nil {
				rows.Close()
				return nil, fmt.Errorf("sqlite: reset budgets: %w", translate(err, nil))
			}
			dues = append(dues, d)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("sqlite: reset budgets: %w", translate(err, nil))
		}
		q := fmt.Sprintf(`UPDATE %s SET spend = 0, budget_reset_at = ?, updated_at = ? WHERE token = ?`, keyTable)
		upd := formatTime(now())
		var evs []store.Event
		for _, d := range dues {
			if _, err := keys.ParseDuration(d.dur); err != nil {
				s.log.Warn("sqlite: budget reset skipped: bad budget_duration", "key", keys.Redact(d.token), "budget_duration", d.dur, "err", err)
				continue
			}
			// The SQL above selects candidates; the shared rule decides.
			var resetAt, expires *time.Time
			for _, c := range []struct {
				ns  sql.NullString
				out **time.Time
			}{{d.resetAt, &resetAt}, {d.expires, &expires}} {
				if c.ns.Valid {
					t, err := parseTime(c.ns.String)
					if err != nil {
						return nil, fmt.Errorf("sqlite: reset budget %s: %w", keys.Redact(d.token), err)
					}
					*c.out = &t
				}
			}
			next, ok := keys.BudgetResetDue(resetAt, expires, &d.dur, nowT)
			if !ok {
				continue
			}
			if err := checkTime("budget_reset_at", &next); err != nil {
				return nil, err
			}
			if _, err := tx.ExecContext(ctx, q, formatTime(next), upd, d.token); err != nil {
				return nil, fmt.Errorf("sqlite: reset budget %s: %w", keys.Redact(d.token), translate(err, nil))
			}
			n++
			evs = append(evs, store.Event{Kind: store.EventChanged, Token: d.token})
		}
		return evs, nil
	})
	if err != nil {
		return 0, translate(err, nil)
	}
	return n, nil
}

// AppendAudit writes one audit row, filling ID and UpdatedAt when empty.
func (s *Store) AppendAudit(ctx context.Context, a *keys.Audit) error {
	if a == nil {
		return fmt.Errorf("sqlite: append audit: nil: %w", keys.ErrInvalid)
	}
	if a.ID == "" {
		a.ID = uuid.NewString()
	}
	if a.UpdatedAt.IsZero() {
		a.UpdatedAt = now()
	}
	if err := checkTime("updated_at", &a.UpdatedAt); err != nil {
		return err
	}
	before, err := jsonOrNull(a.BeforeValue)
	if err != nil {
		return fmt.Errorf("sqlite: append audit: before_value: %w: %w", keys.ErrInvalid, err)
	}
	updated, err := jsonOrNull(a.UpdatedValues)
	if err != nil {
		return fmt.Errorf("sqlite: append audit: updated_values: %w: %w", keys.ErrInvalid, err)
	}
	return translate(s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+auditTable+` (id, updated_at, changed_by, changed_by_api_key, action, table_name, object_id, before_value, updated_values)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			a.ID, formatTime(a.UpdatedAt), a.ChangedBy, a.ChangedByAPIKey, a.Action, a.TableName, a.ObjectID, before, updated)
		if err != nil {
			return nil, fmt.Errorf("sqlite: append audit: %w", translate(err, nil))
		}
		return nil, nil
	}), nil)
}

func jsonOrNull(m map[string]any) (any, error) {
	if m == nil {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// Audits returns the audit rows for objectID, oldest first (for tests and
// tools; it implements storetest.AuditReader).
func (s *Store) Audits(ctx context.Context, objectID string) ([]*keys.Audit, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, updated_at, changed_by, changed_by_api_key, action, table_name, object_id, before_value, updated_values
		FROM `+auditTable+` WHERE object_id = ? ORDER BY updated_at, rowid`, objectID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: audits: %w", err)
	}
	defer rows.Close()
	var out []*keys.Audit
	for rows.Next() {
		var a keys.Audit
		var ts string
		var before, updated sql.NullString
		if err := rows.Scan(&a.ID, &ts, &a.ChangedBy, &a.ChangedByAPIKey, &a.Action, &a.TableName, &a.ObjectID, &before, &updated); err != nil {
			return nil, fmt.Errorf("sqlite: audits: %w", err)
		}
		if a.UpdatedAt, err = parseTime(ts); err != nil {
			return nil, fmt.Errorf("sqlite: audits: %w", err)
		}
		for _, c := range []struct {
			ns  sql.NullString
			dst *map[string]any
		}{{before, &a.BeforeValue}, {updated, &a.UpdatedValues}} {
			if c.ns.Valid {
				if err := json.Unmarshal([]byte(c.ns.String), c.dst); err != nil {
					return nil, fmt.Errorf("sqlite: audits: %w", err)
				}
			}
		}
		out = append(out, &a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: audits: %w", err)
	}
	return out, nil
}
