package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

var _ store.SpendWriter = (*Store)(nil)

const spendLogTable = `"LiteLLM_SpendLogs"`

// spendBatchRetention is how long applied batch ids are remembered.
const spendBatchRetention = 24 * time.Hour

// ApplySpend applies b in one write transaction (keys in b's token order)
// and emits an EventSpend per updated key after the commit. A batch id
// already applied changes nothing and returns the keys' current spend.
func (s *Store) ApplySpend(ctx context.Context, b *store.SpendBatch) (map[string]float64, error) {
	out := make(map[string]float64, len(b.Keys))
	err := s.write(ctx, func(tx *sql.Tx) ([]store.Event, error) {
		clear(out)
		t := now()
		if b.ID != "" {
			res, err := tx.ExecContext(ctx, `INSERT INTO sidecar_spend_batches (id, applied_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`, b.ID, formatTime(t))
			if err != nil {
				return nil, fmt.Errorf("sqlite: apply spend: batch id: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				for _, k := range b.Keys {
					var spend float64
					err := tx.QueryRowContext(ctx, `SELECT spend FROM `+keyTable+` WHERE token = ?`, k.Token).Scan(&spend)
					if err == nil {
						out[k.Token] = spend
					} else if !errors.Is(err, sql.ErrNoRows) {
						return nil, fmt.Errorf("sqlite: apply spend: %w", err)
					}
				}
				return nil, nil
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM sidecar_spend_batches WHERE applied_at < ?`, formatTime(t.Add(-spendBatchRetention))); err != nil {
				return nil, fmt.Errorf("sqlite: apply spend: expire batch ids: %w", err)
			}
		}
		var evs []store.Event
		for _, k := range b.Keys {
			var spend float64
			var msText string
			err := tx.QueryRowContext(ctx, `UPDATE `+keyTable+` SET spend = spend + ?, updated_at = ? WHERE token = ? RETURNING spend, model_spend`,
				k.Spend, formatTime(t), k.Token).Scan(&spend, &msText)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("sqlite: apply spend %s: %w", keys.Redact(k.Token), err)
			}
			if len(k.ModelSpend) > 0 {
				ms, err := addModelSpend(msText, k.ModelSpend)
				if err != nil {
					return nil, fmt.Errorf("sqlite: apply spend %s: %w", keys.Redact(k.Token), err)
				}
				if _, err := tx.ExecContext(ctx, `UPDATE `+keyTable+` SET model_spend = ? WHERE token = ?`, ms, k.Token); err != nil {
					return nil, fmt.Errorf("sqlite: apply spend %s: %w", keys.Redact(k.Token), err)
				}
			}
			out[k.Token] = spend
			evs = append(evs, store.Event{Kind: store.EventSpend, Token: k.Token, Spend: spend})
		}
		if err := applyRollups(ctx, tx, b); err != nil {
			return nil, err
		}
		if err := insertSpendLogs(ctx, tx, b.Logs); err != nil {
			return nil, err
		}
		return evs, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// addModelSpend adds deltas to the model_spend JSON text; members that are
// not numbers count as 0.
func addModelSpend(text string, deltas map[string]float64) (string, error) {
	m := map[string]any{}
	if text != "" {
		if err := json.Unmarshal([]byte(text), &m); err != nil || m == nil {
			m = map[string]any{} // unreadable: start over rather than lose the delta
		}
	}
	for model, d := range deltas {
		cur, _ := m[model].(float64)
		m[model] = cur + d
	}
	b, err := json.Marshal(m)
	return string(b), err
}

// applyRollups adds team, user and membership deltas to LiteLLM's tables
// when they exist in this database; otherwise they are dropped.
func applyRollups(ctx context.Context, tx *sql.Tx, b *store.SpendBatch) error {
	if len(b.Teams)+len(b.Users)+len(b.Memberships) == 0 {
		return nil
	}
	exists := func(table string) (bool, error) {
		var n int
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&n)
		return n > 0, err
	}
	entity := func(table, idCol string, es []store.EntitySpend) error {
		if len(es) == 0 {
			return nil
		}
		ok, err := exists(table)
		if err != nil || !ok {
			return err
		}
		for _, e := range es {
			var msText sql.NullString
			err := tx.QueryRowContext(ctx, `UPDATE "`+table+`" SET spend = spend + ? WHERE `+idCol+` = ? RETURNING model_spend`, e.Spend, e.ID).Scan(&msText)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return fmt.Errorf("sqlite: roll up %s: %w", table, err)
			}
			if len(e.ModelSpend) > 0 {
				ms, err := addModelSpend(msText.String, e.ModelSpend)
				if err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, `UPDATE "`+table+`" SET model_spend = ? WHERE `+idCol+` = ?`, ms, e.ID); err != nil {
					return fmt.Errorf("sqlite: roll up %s: %w", table, err)
				}
			}
		}
		return nil
	}
	if err := entity("LiteLLM_TeamTable", "team_id", b.Teams); err != nil {
		return err
	}
	if err := entity("LiteLLM_UserTable", "user_id", b.Users); err != nil {
		return err
	}
	if len(b.Memberships) > 0 {
		ok, err := exists("LiteLLM_TeamMembership")
		if err != nil || !ok {
			return err
		}
		for _, m := range b.Memberships {
			if _, err := tx.ExecContext(ctx, `UPDATE "LiteLLM_TeamMembership" SET spend = spend + ? WHERE team_id = ? AND user_id = ?`, m.Spend, m.TeamID, m.UserID); err != nil {
				return fmt.Errorf("sqlite: roll up team membership: %w", err)
			}
		}
	}
	return nil
}

var spendLogInsert = `INSERT INTO ` + spendLogTable + ` (request_id, call_type, api_key, spend, total_tokens, prompt_tokens,
	completion_tokens, "startTime", "endTime", model, model_group, custom_llm_provider, "user", team_id, end_user,
	status, metadata, request_duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (request_id) DO NOTHING`

func insertSpendLogs(ctx context.Context, tx *sql.Tx, logs []store.SpendLog) error {
	if len(logs) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, spendLogInsert)
	if err != nil {
		return fmt.Errorf("sqlite: insert spend logs: %w", err)
	}
	defer stmt.Close()
	for _, l := range logs {
		md := []byte("{}")
		if l.Metadata != nil {
			if md, err = json.Marshal(l.Metadata); err != nil {
				return fmt.Errorf("sqlite: spend log metadata: %w", err)
			}
		}
		if _, err := stmt.ExecContext(ctx, l.RequestID, l.CallType, l.APIKey, l.Spend, l.TotalTokens, l.PromptTokens,
			l.CompletionTokens, formatTime(l.StartTime), formatTime(l.EndTime), l.Model, l.ModelGroup,
			l.CustomLLMProvider, l.User, nullString(l.TeamID), nullString(l.EndUser), l.Status, string(md),
			l.RequestDurationMS); err != nil {
			return fmt.Errorf("sqlite: insert spend log: %w", err)
		}
	}
	return nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// SpendLogs returns the rows matching q, newest first.
func (s *Store) SpendLogs(ctx context.Context, q store.SpendLogQuery) ([]store.SpendLog, error) {
	var conds []string
	var args []any
	if q.APIKey != "" {
		conds, args = append(conds, "api_key = ?"), append(args, q.APIKey)
	}
	if q.RequestID != "" {
		conds, args = append(conds, "request_id = ?"), append(args, q.RequestID)
	}
	if !q.Start.IsZero() {
		conds, args = append(conds, `"startTime" >= ?`), append(args, formatTime(q.Start))
	}
	if !q.End.IsZero() {
		conds, args = append(conds, `"startTime" < ?`), append(args, formatTime(q.End))
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
	rows, err := s.r.QueryContext(ctx, `SELECT request_id, call_type, api_key, spend, total_tokens, prompt_tokens,
		completion_tokens, "startTime", "endTime", model, COALESCE(model_group, ''), COALESCE(custom_llm_provider, ''),
		COALESCE("user", ''), COALESCE(team_id, ''), COALESCE(end_user, ''), COALESCE(status, ''),
		COALESCE(metadata, '{}'), COALESCE(request_duration_ms, 0)
		FROM `+spendLogTable+where+` ORDER BY "startTime" DESC, request_id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: spend logs: %w", err)
	}
	defer rows.Close()
	var out []store.SpendLog
	for rows.Next() {
		var l store.SpendLog
		var start, end, md string
		if err := rows.Scan(&l.RequestID, &l.CallType, &l.APIKey, &l.Spend, &l.TotalTokens, &l.PromptTokens,
			&l.CompletionTokens, &start, &end, &l.Model, &l.ModelGroup, &l.CustomLLMProvider, &l.User, &l.TeamID,
			&l.EndUser, &l.Status, &md, &l.RequestDurationMS); err != nil {
			return nil, fmt.Errorf("sqlite: spend logs: %w", err)
		}
		if l.StartTime, err = parseTime(start); err != nil {
			return nil, fmt.Errorf("sqlite: spend logs: %w", err)
		}
		if l.EndTime, err = parseTime(end); err != nil {
			return nil, fmt.Errorf("sqlite: spend logs: %w", err)
		}
		_ = json.Unmarshal([]byte(md), &l.Metadata) // best effort, like Postgres
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: spend logs: %w", err)
	}
	return out, nil
}
