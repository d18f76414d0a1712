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
	sqlite3 "modernc.org/sqlite/lib"
)

// timeLayout is how timestamps are stored: UTC, milliseconds, sortable as
// text for years 0000-9999.
const timeLayout = "2006-01-02T15:04:05.000Z"

// formatTime renders t in timeLayout (truncating to the millisecond).
func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// checkTime rejects times that do not fit the sortable text form.
func checkTime(col string, t *time.Time) error {
	if t == nil {
		return nil
	}
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Errorf("sqlite: %s year %d out of range 0-9999: %w", col, y, keys.ErrInvalid)
	}
	return nil
}

// parseTime reads a stored timestamp. Besides timeLayout it accepts RFC 3339
// and "YYYY-MM-DD HH:MM:SS[.fff]" (UTC), so rows written by other tools read.
func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{timeLayout, time.RFC3339Nano, "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC().Truncate(time.Millisecond), nil
		}
	}
	return time.Time{}, fmt.Errorf("bad timestamp %q", s)
}

// keyColumns are the columns this store reads and writes, in the order
// keyArgs renders them.
var keyColumns = []string{
	"token", "key_name", "key_alias", "spend", "expires", "models", "aliases", "config",
	"user_id", "team_id", "organization_id", "permissions", "max_parallel_requests", "metadata",
	"blocked", "tpm_limit", "rpm_limit", "max_budget", "budget_duration", "budget_reset_at",
	"allowed_cache_controls", "allowed_routes", "model_spend", "model_max_budget", "budget_id",
	"soft_budget_cooldown", "created_at", "created_by", "updated_at", "updated_by",
	"rotation_count", "last_rotation_at",
}

func nullStr(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

func nullInt(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

func nullFloat(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func nullBool(p *bool) any {
	if p == nil {
		return nil
	}
	return *p
}

func nullTime(p *time.Time) any {
	if p == nil {
		return nil
	}
	return formatTime(*p)
}

func jsonObject(m map[string]any) (string, error) {
	if m == nil {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func jsonArray(s []string) string {
	if s == nil {
		return "[]"
	}
	b, _ := json.Marshal(s) // []string always marshals
	return string(b)
}

// jsonColumns are the JSON object columns.
var jsonColumns = map[string]bool{
	"aliases": true, "config": true, "permissions": true,
	"metadata": true, "model_spend": true, "model_max_budget": true,
}

// jsonSnapshot renders k's JSON object columns as keyArgs would, to tell
// later which ones a change touched.
func jsonSnapshot(k *keys.Key) map[string]string {
	out := map[string]string{}
	for col, m := range map[string]map[string]any{
		"aliases": k.Aliases, "config": k.Config, "permissions": k.Permissions,
		"metadata": k.Metadata, "model_spend": k.ModelSpend, "model_max_budget": k.ModelMaxBudget,
	} {
		if s, err := jsonObject(m); err == nil {
			out[col] = s
		}
	}
	return out
}

// keyArgs renders k as arguments for keyColumns. It validates what SQLite
// cannot store faithfully, and what LiteLLM's Postgres schema could not
// hold (keys.CheckRanges), so both stores refuse alike. A JSON object
// column rendered the same as in before (may be nil) is NULL: updateKeySQL
// then keeps the stored text.
func keyArgs(k *keys.Key, before map[string]string) ([]any, error) {
	if err := keys.CheckRanges(k); err != nil {
		return nil, err
	}
	for col, t := range map[string]*time.Time{
		"expires": k.Expires, "budget_reset_at": k.BudgetResetAt, "created_at": k.CreatedAt,
		"updated_at": k.UpdatedAt, "last_rotation_at": k.LastRotationAt,
	} {
		if err := checkTime(col, t); err != nil {
			return nil, err
		}
	}
	objs := make([]any, 0, 6)
	for _, o := range []struct {
		col string
		m   map[string]any
	}{
		{"aliases", k.Aliases}, {"config", k.Config}, {"permissions", k.Permissions},
		{"metadata", k.Metadata}, {"model_spend", k.ModelSpend}, {"model_max_budget", k.ModelMaxBudget},
	} {
		s, err := jsonObject(o.m)
		if err != nil {
			return nil, fmt.Errorf("sqlite: %s: %w: %w", o.col, keys.ErrInvalid, err)
		}
		if b, ok := before[o.col]; ok && b == s {
			objs = append(objs, nil)
			continue
		}
		objs = append(objs, s)
	}
	return []any{
		k.Token, nullStr(k.KeyName), nullStr(k.KeyAlias), k.Spend, nullTime(k.Expires),
		jsonArray(k.Models), objs[0], objs[1],
		nullStr(k.UserID), nullStr(k.TeamID), nullStr(k.OrganizationID), objs[2],
		nullInt(k.MaxParallelRequests), objs[3],
		nullBool(k.Blocked), nullInt(k.TPMLimit), nullInt(k.RPMLimit), nullFloat(k.MaxBudget),
		nullStr(k.BudgetDuration), nullTime(k.BudgetResetAt),
		jsonArray(k.AllowedCacheControls), jsonArray(k.AllowedRoutes), objs[4], objs[5],
		nullStr(k.BudgetID), k.SoftBudgetCooldown, nullTime(k.CreatedAt), nullStr(k.CreatedBy),
		nullTime(k.UpdatedAt), nullStr(k.UpdatedBy), k.RotationCount, nullTime(k.LastRotationAt),
	}, nil
}

// graceColumn is the extra column Lookup selects for a deprecated token.
const graceColumn = "sidecar_grace_until"

// rowScanner is *sql.Rows (the columns are read by name).
type rowScanner interface {
	Columns() ([]string, error)
	Scan(dest ...any) error
}

// scanKey reads the current row by column name; columns it does not know
// (a newer LiteLLM schema) are ignored.
func scanKey(rows rowScanner) (*keys.Key, error) {
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var (
		k                                                                 keys.Key
		keyName, keyAlias, userID, teamID, orgID, budgetDur, budgetID     sql.NullString
		createdBy, updatedBy                                              sql.NullString
		expires, budgetResetAt, createdAt, updatedAt, lastRotation, grace sql.NullString
		models, aliases, config, permissions, metadata, cacheCtl, routes  sql.NullString
		modelSpend, modelMaxBudget                                        sql.NullString
		spend, maxBudget                                                  sql.NullFloat64
		maxPar, tpm, rpm, rotation                                        sql.NullInt64
		blocked, softCooldown                                             sql.NullBool
		token                                                             sql.NullString
	)
	dest := make([]any, len(cols))
	for i, c := range cols {
		switch c {
		case "token":
			dest[i] = &token
		case "key_name":
			dest[i] = &keyName
		case "key_alias":
			dest[i] = &keyAlias
		case "spend":
			dest[i] = &spend
		case "expires":
			dest[i] = &expires
		case "models":
			dest[i] = &models
		case "aliases":
			dest[i] = &aliases
		case "config":
			dest[i] = &config
		case "user_id":
			dest[i] = &userID
		case "team_id":
			dest[i] = &teamID
		case "organization_id":
			dest[i] = &orgID
		case "permissions":
			dest[i] = &permissions
		case "max_parallel_requests":
			dest[i] = &maxPar
		case "metadata":
			dest[i] = &metadata
		case "blocked":
			dest[i] = &blocked
		case "tpm_limit":
			dest[i] = &tpm
		case "rpm_limit":
			dest[i] = &rpm
		case "max_budget":
			dest[i] = &maxBudget
		case "budget_duration":
			dest[i] = &budgetDur
		case "budget_reset_at":
			dest[i] = &budgetResetAt
		case "allowed_cache_controls":
			dest[i] = &cacheCtl
		case "allowed_routes":
			dest[i] = &routes
		case "model_spend":
			dest[i] = &modelSpend
		case "model_max_budget":
			dest[i] = &modelMaxBudget
		case "budget_id":
			dest[i] = &budgetID
		case "soft_budget_cooldown":
			dest[i] = &softCooldown
		case "created_at":
			dest[i] = &createdAt
		case "created_by":
			dest[i] = &createdBy
		case "updated_at":
			dest[i] = &updatedAt
		case "updated_by":
			dest[i] = &updatedBy
		case "rotation_count":
			dest[i] = &rotation
		case "last_rotation_at":
			dest[i] = &lastRotation
		case graceColumn:
			dest[i] = &grace
		default:
			dest[i] = new(any)
		}
	}
	if err := rows.Scan(dest...); err != nil {
		return nil, err
	}
	k.Token = token.String
	k.KeyName, k.KeyAlias, k.UserID, k.TeamID = str(keyName), str(keyAlias), str(userID), str(teamID)
	k.OrganizationID, k.BudgetDuration, k.BudgetID = str(orgID), str(budgetDur), str(budgetID)
	k.CreatedBy, k.UpdatedBy = str(createdBy), str(updatedBy)
	k.Spend = spend.Float64
	if maxBudget.Valid {
		k.MaxBudget = &maxBudget.Float64
	}
	k.MaxParallelRequests, k.TPMLimit, k.RPMLimit = i64(maxPar), i64(tpm), i64(rpm)
	k.RotationCount = rotation.Int64
	if blocked.Valid {
		k.Blocked = &blocked.Bool
	}
	k.SoftBudgetCooldown = softCooldown.Bool

	var errs []error
	tm := func(col string, ns sql.NullString) *time.Time {
		if !ns.Valid {
			return nil
		}
		t, err := parseTime(ns.String)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", col, err))
			return nil
		}
		return &t
	}
	k.Expires = tm("expires", expires)
	k.BudgetResetAt = tm("budget_reset_at", budgetResetAt)
	k.CreatedAt = tm("created_at", createdAt)
	k.UpdatedAt = tm("updated_at", updatedAt)
	k.LastRotationAt = tm("last_rotation_at", lastRotation)
	k.GraceUntil = tm(graceColumn, grace)

	obj := func(col string, ns sql.NullString) map[string]any {
		if !ns.Valid {
			return map[string]any{}
		}
		m, err := keys.DecodeObject([]byte(ns.String)) // lossless: numbers stay json.Number
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", col, err))
			return map[string]any{}
		}
		return m
	}
	arr := func(col string, ns sql.NullString) []string {
		s := []string{}
		if ns.Valid && ns.String != "" && ns.String != "null" {
			if err := json.Unmarshal([]byte(ns.String), &s); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", col, err))
			}
			if s == nil {
				s = []string{}
			}
		}
		return s
	}
	k.Models, k.AllowedCacheControls, k.AllowedRoutes = arr("models", models), arr("allowed_cache_controls", cacheCtl), arr("allowed_routes", routes)
	k.Aliases, k.Config, k.Permissions = obj("aliases", aliases), obj("config", config), obj("permissions", permissions)
	k.Metadata, k.ModelSpend, k.ModelMaxBudget = obj("metadata", metadata), obj("model_spend", modelSpend), obj("model_max_budget", modelMaxBudget)
	if len(errs) > 0 {
		return nil, fmt.Errorf("sqlite: key %s: %w", keys.Redact(k.Token), errors.Join(errs...))
	}
	return &k, nil
}

func str(ns sql.NullString) *string {
	if !ns.Valid {
		return nil
	}
	return &ns.String
}

func i64(n sql.NullInt64) *int64 {
	if !n.Valid {
		return nil
	}
	return &n.Int64
}

// translate turns driver errors into the keys sentinels (see the postgres
// store's translate): a unique violation is a *keys.ConflictError naming
// the column from SQLite's message, a foreign key violation a
// *keys.ReferenceError, a busy or locked database, a full disk or an
// expired context keys.ErrUnavailable. Anything else is returned as is.
func translate(err error, k *keys.Key) error {
	if err == nil || errors.Is(err, keys.ErrUnavailable) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %w", keys.ErrUnavailable, err)
	}
	var se interface{ Code() int }
	if !errors.As(err, &se) {
		return err
	}
	code := se.Code()
	switch {
	case code == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		// SQLite does not say which column.
		return &keys.ReferenceError{Field: "reference"}
	case code&0xff == sqlite3.SQLITE_BUSY, code&0xff == sqlite3.SQLITE_LOCKED,
		code&0xff == sqlite3.SQLITE_FULL, code&0xff == sqlite3.SQLITE_IOERR:
		return fmt.Errorf("%w: %w", keys.ErrUnavailable, err)
	case code != sqlite3.SQLITE_CONSTRAINT_UNIQUE && code != sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return err
	}
	msg := err.Error()
	_, cols, ok := strings.Cut(msg, "constraint failed: ")
	if i := strings.Index(cols, "constraint failed: "); i >= 0 {
		cols = cols[i+len("constraint failed: "):]
	}
	cols, _, _ = strings.Cut(cols, " (")
	field := cols
	if i := strings.LastIndexByte(cols, '.'); ok && i >= 0 {
		field = cols[i+1:]
	}
	ce := &keys.ConflictError{Field: field}
	if k != nil {
		switch field {
		case "token":
			ce.Value = k.Token
		case "key_alias":
			if k.KeyAlias != nil {
				ce.Value = *k.KeyAlias
			}
		}
	}
	return ce
}
