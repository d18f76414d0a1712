package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/virtualkeys/sidecar/internal/store"
)

var _ store.SpendWriter = (*Store)(nil)

const spendLogTable = `"LiteLLM_SpendLogs"`

// spendBatchRetention is how long applied batch ids are remembered; a
// retry comes seconds after the first attempt.
const spendBatchRetention = 24 * time.Hour

// ApplySpend applies b in one transaction: the batch id first (a batch
// already applied returns the keys' current spend without changing them),
// then the key rows locked in token order and updated in one statement
// (spend and model_spend), the roll-ups whose LiteLLM tables exist, and the
// spend-log rows (ON CONFLICT DO NOTHING on request_id).
func (s *Store) ApplySpend(ctx context.Context, b *store.SpendBatch) (map[string]float64, error) {
	out := make(map[string]float64, len(b.Keys))
	toks := make([]string, len(b.Keys))
	deltas := make([]float64, len(b.Keys))
	models := make([]string, len(b.Keys))
	for i, k := range b.Keys {
		toks[i], deltas[i] = k.Token, k.Spend
		ms, err := json.Marshal(nonNil(k.ModelSpend))
		if err != nil {
			return nil, fmt.Errorf("postgres: apply spend: %w", err)
		}
		models[i] = string(ms)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		clear(out)
		if b.ID != "" {
			tag, err := tx.Exec(ctx, `INSERT INTO litellm_sidecar.spend_batches (id, applied_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`, b.ID, now())
			if err != nil {
				return fmt.Errorf("batch id: %w", err)
			}
			if tag.RowsAffected() == 0 { // applied before: report, change nothing
				return s.currentSpend(ctx, tx, toks, out)
			}
			if _, err := tx.Exec(ctx, `DELETE FROM litellm_sidecar.spend_batches WHERE applied_at < $1`, now().Add(-spendBatchRetention)); err != nil {
				return fmt.Errorf("expire batch ids: %w", err)
			}
		}
		if len(toks) > 0 && s.cols.present["spend"] {
			if _, err := tx.Exec(ctx, `SELECT token FROM `+keyTable+` WHERE token = ANY($1) ORDER BY token FOR UPDATE`, toks); err != nil {
				return fmt.Errorf("lock keys: %w", err)
			}
			set := `spend = t.spend + d.delta`
			args := []any{toks, deltas, models}
			if s.cols.present["model_spend"] {
				set += `, model_spend = ` + addModelSpend("t.model_spend", "d.ms")
			}
			if s.cols.present["updated_at"] {
				set += `, updated_at = $4`
				args = append(args, now())
			}
			rows, err := tx.Query(ctx, `UPDATE `+keyTable+` t SET `+set+`
				FROM unnest($1::text[], $2::float8[], $3::text[]) AS d(token, delta, ms)
				WHERE t.token = d.token RETURNING t.token, t.spend`, args...)
			if err != nil {
				return fmt.Errorf("update keys: %w", err)
			}
			if err := collectSpend(rows, out); err != nil {
				return fmt.Errorf("update keys: %w", err)
			}
		}
		if err := s.applyRollups(ctx, tx, b); err != nil {
			return err
		}
		return insertSpendLogs(ctx, tx, b.Logs)
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: apply spend (%d keys, %d logs): %w", len(b.Keys), len(b.Logs), err)
	}
	return out, nil
}

// addModelSpend is the SQL adding the JSON object of deltas d (text) to the
// model_spend object col, member by member; non-numeric members count as 0.
func addModelSpend(col, d string) string {
	return `CASE WHEN ` + d + ` = '{}' THEN ` + col + ` ELSE COALESCE(` + col + `, '{}'::jsonb) || (
		SELECT jsonb_object_agg(e.key, (CASE WHEN jsonb_typeof(` + col + ` -> e.key) = 'number'
			THEN (` + col + ` ->> e.key)::float8 ELSE 0 END) + (e.value #>> '{}')::float8)
		FROM jsonb_each(` + d + `::jsonb) AS e) END`
}

func collectSpend(rows pgx.Rows, out map[string]float64) error {
	defer rows.Close()
	for rows.Next() {
		var tok string
		var spend float64
		if err := rows.Scan(&tok, &spend); err != nil {
			return err
		}
		out[tok] = spend
	}
	return rows.Err()
}

func (s *Store) currentSpend(ctx context.Context, tx pgx.Tx, toks []string, out map[string]float64) error {
	if len(toks) == 0 || !s.cols.present["spend"] {
		return nil
	}
	rows, err := tx.Query(ctx, `SELECT token, spend FROM `+keyTable+` WHERE token = ANY($1)`, toks)
	if err != nil {
		return fmt.Errorf("read spend: %w", err)
	}
	return collectSpend(rows, out)
}

// applyRollups adds the team, user and membership deltas to LiteLLM's
// tables when they exist (a database shared with LiteLLM, or once the
// sidecar manages teams and users); otherwise they are dropped.
func (s *Store) applyRollups(ctx context.Context, tx pgx.Tx, b *store.SpendBatch) error {
	if len(b.Teams)+len(b.Users)+len(b.Memberships) == 0 {
		return nil
	}
	var team, user, member bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('"LiteLLM_TeamTable"') IS NOT NULL,
		to_regclass('"LiteLLM_UserTable"') IS NOT NULL, to_regclass('"LiteLLM_TeamMembership"') IS NOT NULL`).Scan(&team, &user, &member); err != nil {
		return fmt.Errorf("roll-up tables: %w", err)
	}
	entity := func(table, idCol string, es []store.EntitySpend) error {
		if len(es) == 0 {
			return nil
		}
		ids := make([]string, len(es))
		ds := make([]float64, len(es))
		ms := make([]string, len(es))
		for i, e := range es {
			ids[i], ds[i] = e.ID, e.Spend
			b, _ := json.Marshal(nonNil(e.ModelSpend))
			ms[i] = string(b)
		}
		if _, err := tx.Exec(ctx, `SELECT 1 FROM `+table+` WHERE `+idCol+` = ANY($1) ORDER BY `+idCol+` FOR UPDATE`, ids); err != nil {
			return fmt.Errorf("lock %s: %w", table, err)
		}
		_, err := tx.Exec(ctx, `UPDATE `+table+` t SET spend = t.spend + d.delta, model_spend = `+addModelSpend("t.model_spend", "d.ms")+`
			FROM unnest($1::text[], $2::float8[], $3::text[]) AS d(id, delta, ms) WHERE t.`+idCol+` = d.id`, ids, ds, ms)
		if err != nil {
			return fmt.Errorf("update %s: %w", table, err)
		}
		return nil
	}
	if team {
		if err := entity(`"LiteLLM_TeamTable"`, "team_id", b.Teams); err != nil {
			return err
		}
	}
	if user {
		if err := entity(`"LiteLLM_UserTable"`, "user_id", b.Users); err != nil {
			return err
		}
	}
	if member && len(b.Memberships) > 0 {
		teams := make([]string, len(b.Memberships))
		users := make([]string, len(b.Memberships))
		ds := make([]float64, len(b.Memberships))
		for i, m := range b.Memberships {
			teams[i], users[i], ds[i] = m.TeamID, m.UserID, m.Spend
		}
		if _, err := tx.Exec(ctx, `UPDATE "LiteLLM_TeamMembership" t SET spend = t.spend + d.delta
			FROM unnest($1::text[], $2::text[], $3::float8[]) AS d(team_id, user_id, delta)
			WHERE t.team_id = d.team_id AND t.user_id = d.user_id`, teams, users, ds); err != nil {
			return fmt.Errorf("update team memberships: %w", err)
		}
	}
	return nil
}

func nonNil(m map[string]float64) map[string]float64 {
	if m == nil {
		return map[string]float64{}
	}
	return m
}

// spendLogCols are the LiteLLM_SpendLogs columns the sidecar writes, in
// insert order.
var spendLogCols = []string{"request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens",
	"completion_tokens", `"startTime"`, `"endTime"`, "model", "model_group", "custom_llm_provider", `"user"`,
	"team_id", "end_user", "status", "metadata", "request_duration_ms"}

func insertSpendLogs(ctx context.Context, tx pgx.Tx, logs []store.SpendLog) error {
	if len(logs) == 0 {
		return nil
	}
	rows := make([][]any, 0, len(logs))
	for _, l := range logs {
		md, err := json.Marshal(l.Metadata)
		if err != nil {
			return fmt.Errorf("spend log %s metadata: %w", l.RequestID, err)
		}
		if l.Metadata == nil {
			md = []byte("{}")
		}
		rows = append(rows, []any{l.RequestID, l.CallType, l.APIKey, l.Spend, clampInt32(l.TotalTokens),
			clampInt32(l.PromptTokens), clampInt32(l.CompletionTokens), naive(l.StartTime), naive(l.EndTime),
			l.Model, l.ModelGroup, l.CustomLLMProvider, l.User, nullIfEmpty(l.TeamID), nullIfEmpty(l.EndUser),
			l.Status, string(md), clampInt32(l.RequestDurationMS)})
	}
	// One multi-row INSERT per chunk (ON CONFLICT needs INSERT, not COPY).
	const perStmt = 500
	for start := 0; start < len(rows); start += perStmt {
		chunk := rows[start:min(start+perStmt, len(rows))]
		var sb strings.Builder
		sb.WriteString(`INSERT INTO ` + spendLogTable + ` (` + strings.Join(spendLogCols, ", ") + `) VALUES `)
		args := make([]any, 0, len(chunk)*len(spendLogCols))
		for i, r := range chunk {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteByte('(')
			for j := range r {
				if j > 0 {
					sb.WriteString(", ")
				}
				fmt.Fprintf(&sb, "$%d", len(args)+1)
				if spendLogCols[j] == "metadata" {
					sb.WriteString("::jsonb")
				}
				args = append(args, r[j])
			}
			sb.WriteByte(')')
		}
		sb.WriteString(` ON CONFLICT (request_id) DO NOTHING`)
		if _, err := tx.Exec(ctx, sb.String(), args...); err != nil {
			return fmt.Errorf("insert spend logs: %w", err)
		}
	}
	return nil
}

// naive is t as LiteLLM stores it: UTC wall time in a timestamp without
// time zone, millisecond precision.
func naive(t time.Time) time.Time {
	u := t.UTC().Truncate(time.Millisecond)
	return time.Date(u.Year(), u.Month(), u.Day(), u.Hour(), u.Minute(), u.Second(), u.Nanosecond(), time.UTC)
}

func clampInt32(n int64) int32 {
	switch {
	case n > 1<<31-1:
		return 1<<31 - 1
	case n < -1<<31:
		return -1 << 31
	}
	return int32(n)
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// SpendLogs returns the rows matching q, newest first.
func (s *Store) SpendLogs(ctx context.Context, q store.SpendLogQuery) ([]store.SpendLog, error) {
	var conds []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	if q.APIKey != "" {
		add("api_key = $%d", q.APIKey)
	}
	if q.RequestID != "" {
		add("request_id = $%d", q.RequestID)
	}
	if !q.Start.IsZero() {
		add(`"startTime" >= $%d`, naive(q.Start))
	}
	if !q.End.IsZero() {
		add(`"startTime" < $%d`, naive(q.End))
	}
	limit := q.Limit
	if limit <= 0 {
		limit = store.DefaultSpendLogLimit
	}
	where := ""
	if len(conds) > 0 {
		where = " WHERE " + strings.Join(conds, " AND ")
	}
	args = append(args, limit)
	rows, err := s.pool.Query(ctx, `SELECT request_id, call_type, api_key, spend, total_tokens, prompt_tokens,
		completion_tokens, "startTime", "endTime", model, COALESCE(model_group, ''), COALESCE(custom_llm_provider, ''),
		COALESCE("user", ''), COALESCE(team_id, ''), COALESCE(end_user, ''), COALESCE(status, ''),
		COALESCE(metadata, '{}'::jsonb), COALESCE(request_duration_ms, 0)
		FROM `+spendLogTable+where+fmt.Sprintf(` ORDER BY "startTime" DESC, request_id DESC LIMIT $%d`, len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: spend logs: %w", err)
	}
	defer rows.Close()
	var out []store.SpendLog
	for rows.Next() {
		var l store.SpendLog
		var total, prompt, completion, dur int32
		var md []byte
		if err := rows.Scan(&l.RequestID, &l.CallType, &l.APIKey, &l.Spend, &total, &prompt, &completion,
			&l.StartTime, &l.EndTime, &l.Model, &l.ModelGroup, &l.CustomLLMProvider, &l.User, &l.TeamID,
			&l.EndUser, &l.Status, &md, &dur); err != nil {
			return nil, fmt.Errorf("postgres: spend logs: %w", err)
		}
		l.TotalTokens, l.PromptTokens, l.CompletionTokens, l.RequestDurationMS = int64(total), int64(prompt), int64(completion), int64(dur)
		if len(md) > 0 {
			_ = json.Unmarshal(md, &l.Metadata) // LiteLLM may have stored anything; best effort
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: spend logs: %w", err)
	}
	return out, nil
}
