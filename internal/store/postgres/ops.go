package postgres

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// utcNow is the database's current time as a UTC TIMESTAMP.
const utcNow = `(now() AT TIME ZONE 'UTC')`

// checkAlias enforces key_alias uniqueness without an index on LiteLLM's
// table (LiteLLM has none, and Prisma would drop ours): under a per-alias
// transaction advisory lock, no other row may hold alias. self is the row
// being written.
func (s *Store) checkAlias(ctx context.Context, tx pgx.Tx, alias *string, self string) error {
	if alias == nil || !s.cols.present["key_alias"] {
		return nil
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, aliasLockClass, *alias); err != nil {
		return err
	}
	var taken bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+keyTable+` WHERE key_alias = $1 AND token <> $2)`, *alias, self).Scan(&taken)
	if err != nil {
		return err
	}
	if taken {
		return &keys.ConflictError{Field: "key_alias", Value: *alias}
	}
	return nil
}

func sameAlias(a, b *string) bool {
	return (a == nil && b == nil) || (a != nil && b != nil && *a == *b)
}

// Create inserts k, filling CreatedAt/UpdatedAt when nil. On success k
// holds what was stored (UTC millisecond times, empty maps and slices).
func (s *Store) Create(ctx context.Context, k *keys.Key) error {
	if k == nil || k.Token == "" {
		return fmt.Errorf("postgres: create: empty token: %w", keys.ErrInvalid)
	}
	t := now()
	if k.CreatedAt == nil {
		k.CreatedAt = &t
	}
	if k.UpdatedAt == nil {
		k.UpdatedAt = &t
	}
	if err := keys.CheckRanges(k); err != nil {
		return fmt.Errorf("postgres: create %s: %w", keys.Redact(k.Token), err)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.checkAlias(ctx, tx, k.KeyAlias, k.Token); err != nil {
			return err
		}
		got, err := s.cols.scan(tx.QueryRow(ctx, s.cols.insertSQL, s.cols.args(k, true, nil)...), false)
		if err != nil {
			return translate(err, k)
		}
		*k = *got
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: create %s: %w", keys.Redact(k.Token), translate(err, k))
	}
	return nil
}

// get reads the key where col = v.
func (s *Store) get(ctx context.Context, q pgx.Tx, col, v string, lock bool) (*keys.Key, error) {
	sql := `SELECT ` + s.cols.selectList + ` FROM ` + keyTable + ` WHERE ` + quote(col) + ` = $1`
	if lock {
		sql += ` FOR UPDATE`
	} else {
		sql += ` ORDER BY token LIMIT 1`
	}
	var row pgx.Row
	if q != nil {
		row = q.QueryRow(ctx, sql, v)
	} else {
		row = s.pool.QueryRow(ctx, sql, v)
	}
	k, err := s.cols.scan(row, false)
	if errNoRows(err) {
		return nil, keys.ErrNotFound
	}
	return k, err
}

// Get returns the key whose token is hash.
func (s *Store) Get(ctx context.Context, hash string) (*keys.Key, error) {
	k, err := s.get(ctx, nil, "token", hash, false)
	if err != nil {
		return nil, fmt.Errorf("postgres: get %s: %w", keys.Redact(hash), translate(err, nil))
	}
	return k, nil
}

// GetByAlias returns the key with that key_alias.
func (s *Store) GetByAlias(ctx context.Context, alias string) (*keys.Key, error) {
	if !s.cols.present["key_alias"] {
		return nil, fmt.Errorf("postgres: get by alias: %w", keys.ErrNotFound)
	}
	k, err := s.get(ctx, nil, "key_alias", alias, false)
	if err != nil {
		return nil, fmt.Errorf("postgres: get by alias: %w", translate(err, nil))
	}
	return k, nil
}

// Lookup is Get, falling back to a rotated-out token still in its grace
// period (the active key, with GraceUntil set), in one round trip.
func (s *Store) Lookup(ctx context.Context, hash string) (*keys.Key, error) {
	sql := `SELECT ` + s.cols.selectList + `, NULL::timestamp(3) AS grace_until FROM ` + keyTable + ` WHERE token = $1
		UNION ALL
		SELECT ` + s.cols.selectListT + `, d.revoke_at FROM ` + deprecatedTable + ` d JOIN ` + keyTable + ` t ON t.token = d.active_token_id
		WHERE d.token = $1 AND d.revoke_at > ` + utcNow + `
		ORDER BY grace_until NULLS FIRST LIMIT 1`
	k, err := s.cols.scan(s.pool.QueryRow(ctx, sql, hash), true)
	if errNoRows(err) {
		err = keys.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: lookup %s: %w", keys.Redact(hash), translate(err, nil))
	}
	return k, nil
}

// Update locks the row, calls fn and writes every known existing column
// back except token, with UpdatedAt = now, in one transaction.
func (s *Store) Update(ctx context.Context, hash string, fn func(k *keys.Key) error) (*keys.Key, error) {
	var out *keys.Key
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		k, err := s.get(ctx, tx, "token", hash, true)
		if err != nil {
			return fmt.Errorf("postgres: update %s: %w", keys.Redact(hash), err)
		}
		oldAlias, before := k.KeyAlias, jsonSnapshot(k)
		if err := fn(k); err != nil {
			return err
		}
		if err := keys.CheckRanges(k); err != nil {
			return fmt.Errorf("postgres: update %s: %w", keys.Redact(hash), err)
		}
		k.Token, k.GraceUntil = hash, nil
		t := now()
		k.UpdatedAt = &t
		if !sameAlias(oldAlias, k.KeyAlias) {
			if err := s.checkAlias(ctx, tx, k.KeyAlias, hash); err != nil {
				return fmt.Errorf("postgres: update %s: %w", keys.Redact(hash), err)
			}
		}
		out, err = s.cols.scan(tx.QueryRow(ctx, s.cols.updateSQL, append(s.cols.args(k, false, before), hash)...), false)
		if err != nil {
			return fmt.Errorf("postgres: update %s: %w", keys.Redact(hash), translate(err, k))
		}
		return nil
	})
	if err != nil {
		return nil, translate(err, nil)
	}
	return out, nil
}

// Delete removes the keys with these hashes and returns the removed rows.
// Tokens in grace that point at a removed key die with it.
func (s *Store) Delete(ctx context.Context, hashes []string) ([]*keys.Key, error) {
	hs := slices.Clone(hashes)
	slices.Sort(hs)
	hs = slices.Compact(hs)
	out := []*keys.Key{}
	if len(hs) == 0 {
		return out, nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out = out[:0]
		if _, err := tx.Exec(ctx, `SELECT token FROM `+keyTable+` WHERE token = ANY($1) ORDER BY token FOR UPDATE`, hs); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `DELETE FROM `+keyTable+` WHERE token = ANY($1) RETURNING `+s.cols.selectList, hs)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*keys.Key, error) { return s.cols.scan(r, false) })
		if err != nil {
			return err
		}
		gone := make([]string, len(out))
		for i, k := range out {
			gone[i] = k.Token
		}
		_, err = tx.Exec(ctx, `DELETE FROM `+deprecatedTable+` WHERE active_token_id = ANY($1)`, gone)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: delete: %w", translate(err, nil))
	}
	return out, nil
}

// sortExpr maps store.SortColumns to SQL; nothing else reaches ORDER BY.
// Text compares as bytes (COLLATE "C"), like the embedded store.
var sortExpr = map[string]string{
	"spend":      `"spend"`,
	"max_budget": `"max_budget"`,
	"created_at": `"created_at"`,
	"updated_at": `"updated_at"`,
	"token":      `"token" COLLATE "C"`,
	"key_alias":  `"key_alias" COLLATE "C"`,
}

// List returns one page of keys matching q, ordered by q.SortBy (NULLs last
// in both directions), then token in the same direction.
func (s *Store) List(ctx context.Context, q store.ListQuery) (store.ListResult, error) {
	col, dir := "created_at", "DESC"
	if q.SortBy != "" {
		if _, ok := sortExpr[q.SortBy]; !ok || !slices.Contains(store.SortColumns, q.SortBy) {
			return store.ListResult{}, fmt.Errorf("postgres: list: sort column %q: %w", q.SortBy, keys.ErrInvalid)
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
		return store.ListResult{}, fmt.Errorf("postgres: list: %w", &keys.InvalidError{Field: "page", Reason: "too large for the page size"})
	}
	var where []string
	var args []any
	for _, f := range []struct{ col, val string }{
		{"user_id", q.UserID}, {"team_id", q.TeamID}, {"organization_id", q.OrganizationID},
		{"token", q.KeyHash}, {"key_alias", q.KeyAlias},
	} {
		if f.val == "" {
			continue
		}
		if !s.cols.present[f.col] {
			where = append(where, "FALSE") // a missing column reads as NULL
			continue
		}
		args = append(args, f.val)
		where = append(where, fmt.Sprintf("%s = $%d", quote(f.col), len(args)))
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	if len(q.OrTeamIDs) > 0 && s.cols.present["team_id"] {
		if cond == "" {
			cond = " WHERE FALSE"
		}
		args = append(args, q.OrTeamIDs)
		cond = fmt.Sprintf(" WHERE (%s) OR %s = ANY($%d)", strings.TrimPrefix(cond, " WHERE "), quote("team_id"), len(args))
	}
	order := ""
	if s.cols.present[col] {
		order = sortExpr[col] + " " + dir + " NULLS LAST, "
	}
	order += `"token" COLLATE "C" ` + dir
	var res store.ListResult
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+keyTable+cond, args...).Scan(&res.Total); err != nil {
			return err
		}
		n := len(args)
		rows, err := tx.Query(ctx, fmt.Sprintf(`SELECT %s FROM %s%s ORDER BY %s LIMIT $%d OFFSET $%d`,
			s.cols.selectList, keyTable, cond, order, n+1, n+2), append(args, size, int64(page-1)*int64(size))...)
		if err != nil {
			return err
		}
		res.Keys, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*keys.Key, error) { return s.cols.scan(r, false) })
		return err
	})
	if err != nil {
		return store.ListResult{}, fmt.Errorf("postgres: list: %w", translate(err, nil))
	}
	if res.Keys == nil {
		res.Keys = []*keys.Key{}
	}
	return res, nil
}

// SetBlocked sets blocked and returns the updated key.
func (s *Store) SetBlocked(ctx context.Context, hash string, blocked bool) (*keys.Key, error) {
	k, err := s.Update(ctx, hash, func(k *keys.Key) error {
		k.Blocked = &blocked
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: set blocked: %w", err)
	}
	return k, nil
}

// Regenerate moves the row from oldHash to newHash after fn, in one
// transaction. With graceUntil the old token keeps resolving through Lookup
// until then; tokens already in grace for oldHash are re-pointed at newHash.
func (s *Store) Regenerate(ctx context.Context, oldHash, newHash string, graceUntil *time.Time, fn func(k *keys.Key) error) (*keys.Key, error) {
	if newHash == "" {
		return nil, fmt.Errorf("postgres: regenerate: empty new token: %w", keys.ErrInvalid)
	}
	var out *keys.Key
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		k, err := s.get(ctx, tx, "token", oldHash, true)
		if err != nil {
			return fmt.Errorf("postgres: regenerate %s: %w", keys.Redact(oldHash), err)
		}
		oldAlias, before := k.KeyAlias, jsonSnapshot(k)
		if fn != nil {
			if err := fn(k); err != nil {
				return err
			}
		}
		if err := keys.CheckRanges(k); err != nil {
			return fmt.Errorf("postgres: regenerate %s: %w", keys.Redact(oldHash), err)
		}
		k.Token, k.GraceUntil = newHash, nil
		t := now()
		k.UpdatedAt = &t
		if !sameAlias(oldAlias, k.KeyAlias) {
			if err := s.checkAlias(ctx, tx, k.KeyAlias, oldHash); err != nil {
				return fmt.Errorf("postgres: regenerate %s: %w", keys.Redact(oldHash), err)
			}
		}
		out, err = s.cols.scan(tx.QueryRow(ctx, s.cols.moveSQL, append(s.cols.args(k, true, before), oldHash)...), false)
		if err != nil {
			return fmt.Errorf("postgres: regenerate %s: %w", keys.Redact(oldHash), translate(err, k))
		}
		b := &pgx.Batch{}
		// Expired grace records are dead weight; the new token is live, not
		// in grace; older tokens in grace follow the row.
		b.Queue(`DELETE FROM ` + deprecatedTable + ` WHERE revoke_at <= ` + utcNow)
		b.Queue(`DELETE FROM `+deprecatedTable+` WHERE token = $1`, newHash)
		b.Queue(`UPDATE `+deprecatedTable+` SET active_token_id = $1 WHERE active_token_id = $2`, newHash, oldHash)
		if graceUntil != nil {
			b.Queue(`INSERT INTO `+deprecatedTable+` (id, token, active_token_id, revoke_at, created_at)
				VALUES (gen_random_uuid()::text, $1, $2, $3, $4)
				ON CONFLICT (token) DO UPDATE SET active_token_id = excluded.active_token_id,
					revoke_at = excluded.revoke_at, created_at = excluded.created_at`,
				oldHash, newHash, ts(graceUntil), t)
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("postgres: regenerate %s: grace records: %w", keys.Redact(oldHash), err)
		}
		return nil
	})
	if err != nil {
		return nil, translate(err, nil)
	}
	return out, nil
}

// AddSpend adds each delta to its key's spend in one transaction: it locks
// the rows in token order, then applies every delta in one UPDATE.
func (s *Store) AddSpend(ctx context.Context, deltas map[string]float64) error {
	if len(deltas) == 0 || !s.cols.present["spend"] {
		return nil
	}
	toks := make([]string, 0, len(deltas))
	for t := range deltas {
		toks = append(toks, t)
	}
	slices.Sort(toks)
	ds := make([]float64, len(toks))
	for i, t := range toks {
		ds[i] = deltas[t]
	}
	set := `spend = t.spend + d.delta`
	args := []any{toks, ds}
	if s.cols.present["updated_at"] {
		set += `, updated_at = $3`
		args = append(args, now())
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT token FROM `+keyTable+` WHERE token = ANY($1) ORDER BY token FOR UPDATE`, toks); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE `+keyTable+` t SET `+set+`
			FROM unnest($1::text[], $2::float8[]) AS d(token, delta) WHERE t.token = d.token`, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: add spend (%d keys): %w", len(toks), translate(err, nil))
	}
	return nil
}

// resetChunk is the most rows one ResetBudgets statement changes: the
// change trigger lists up to litellm_sidecar.max_listed() rows in one
// notification (within NOTIFY's 8000-byte payload).
const resetChunk = 50

// ResetBudgets zeroes spend and moves budget_reset_at to the next boundary
// for every unexpired key whose budget_reset_at <= now. Rows another
// replica is resetting are skipped (SKIP LOCKED). Keys whose
// budget_duration is NULL or does not parse are skipped, not counted.
func (s *Store) ResetBudgets(ctx context.Context, nowT time.Time) (int, error) {
	for _, c := range []string{"spend", "budget_reset_at", "budget_duration"} {
		if !s.cols.present[c] {
			return 0, nil
		}
	}
	expires := ""
	if s.cols.present["expires"] {
		expires = ` AND (expires IS NULL OR expires >= $1)` // expired means expires < now (spec section 4), as in the Check and the SQLite store
	}
	cmp := nowT.UTC()
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		n = 0
		expCol := "NULL::timestamp"
		if s.cols.present["expires"] {
			expCol = "expires"
		}
		rows, err := tx.Query(ctx, `SELECT token, budget_duration, budget_reset_at, `+expCol+` FROM `+keyTable+`
			WHERE budget_reset_at <= $1`+expires+` AND budget_duration IS NOT NULL
			ORDER BY token FOR UPDATE SKIP LOCKED`, cmp)
		if err != nil {
			return err
		}
		var toks, durs []string
		var resets, exps []*time.Time
		var tok, dur string
		var resetAt, exp *time.Time
		if _, err := pgx.ForEachRow(rows, []any{&tok, &dur, &resetAt, &exp}, func() error {
			toks, durs, resets, exps = append(toks, tok), append(durs, dur), append(resets, resetAt), append(exps, exp)
			return nil
		}); err != nil {
			return err
		}
		var due []string
		var next []time.Time
		for i, tok := range toks {
			if _, err := keys.ParseDuration(durs[i]); err != nil {
				s.log.Warn("postgres: budget reset skipped: bad budget_duration", "key", keys.Redact(tok), "budget_duration", durs[i], "err", err)
				continue
			}
			// The SQL above selects candidates; the shared rule decides.
			nx, ok := keys.BudgetResetDue(utcPtr(resets[i]), utcPtr(exps[i]), &durs[i], nowT)
			if !ok {
				continue
			}
			due = append(due, tok)
			next = append(next, nx.UTC().Truncate(time.Millisecond))
		}
		if len(due) == 0 {
			return nil
		}
		// Tell the change trigger these are budget resets, so caches apply
		// them in place (EventBudgetReset); statements of resetChunk rows
		// keep each notification a list, never a purge.
		if _, err := tx.Exec(ctx, `SELECT set_config('litellm_sidecar.budget_reset', 'on', true)`); err != nil {
			return err
		}
		set := `spend = 0, budget_reset_at = d.next`
		t := now()
		for len(due) > 0 {
			c := min(len(due), resetChunk)
			args := []any{due[:c], next[:c]}
			if s.cols.present["updated_at"] {
				args = append(args, t)
			}
			sql := `UPDATE ` + keyTable + ` t SET ` + set
			if s.cols.present["updated_at"] {
				sql += `, updated_at = $3`
			}
			tag, err := tx.Exec(ctx, sql+` FROM unnest($1::text[], $2::timestamp[]) AS d(token, next) WHERE t.token = d.token`, args...)
			if err != nil {
				return err
			}
			n += int(tag.RowsAffected())
			due, next = due[c:], next[c:]
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: reset budgets: %w", translate(err, nil))
	}
	return n, nil
}

// AppendAudit writes one "LiteLLM_AuditLog" row, filling ID and UpdatedAt
// when empty.
func (s *Store) AppendAudit(ctx context.Context, a *keys.Audit) error {
	if a == nil {
		return fmt.Errorf("postgres: append audit: nil: %w", keys.ErrInvalid)
	}
	if a.ID == "" {
		a.ID = uuid.NewString()
	}
	if a.UpdatedAt.IsZero() {
		a.UpdatedAt = now()
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO `+auditTable+` (id, updated_at, changed_by, changed_by_api_key, action, table_name, object_id, before_value, updated_values)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		a.ID, a.UpdatedAt.UTC().Truncate(time.Millisecond), a.ChangedBy, a.ChangedByAPIKey, a.Action, a.TableName, a.ObjectID,
		jsonOrNull(a.BeforeValue), jsonOrNull(a.UpdatedValues))
	if err != nil {
		return fmt.Errorf("postgres: append audit %s: %w", a.ID, translate(err, nil))
	}
	return nil
}

// jsonOrNull makes a nil map SQL NULL (pgx would write JSON null).
func jsonOrNull(m map[string]any) any {
	if m == nil {
		return nil
	}
	return m
}

// Audits returns the audit rows for objectID, oldest first (it implements
// storetest.AuditReader).
func (s *Store) Audits(ctx context.Context, objectID string) ([]*keys.Audit, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, updated_at, changed_by, changed_by_api_key, action, table_name, object_id, before_value, updated_values
		FROM `+auditTable+` WHERE object_id = $1 ORDER BY updated_at, id`, objectID)
	if err != nil {
		return nil, fmt.Errorf("postgres: audits: %w", translate(err, nil))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*keys.Audit, error) {
		var a keys.Audit
		err := r.Scan(&a.ID, &a.UpdatedAt, &a.ChangedBy, &a.ChangedByAPIKey, &a.Action, &a.TableName, &a.ObjectID, &a.BeforeValue, &a.UpdatedValues)
		a.UpdatedAt = a.UpdatedAt.UTC()
		return &a, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: audits: %w", err)
	}
	return out, nil
}

// utcPtr reads a timestamp (without time zone) column as UTC.
func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
	return &u
}
