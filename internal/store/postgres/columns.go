package postgres

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/virtualkeys/sidecar/internal/keys"
)

const (
	keyTableName    = "LiteLLM_VerificationToken"
	keyTable        = `"LiteLLM_VerificationToken"`
	auditTable      = `"LiteLLM_AuditLog"`
	deprecatedTable = `"LiteLLM_DeprecatedVerificationToken"`
)

// column is one known key-table column: the value to write for a key and
// the destination to scan it into.
type column struct {
	name string
	arg  func(k *keys.Key) any
	dest func(k *keys.Key) any
}

// nullable scans a possibly NULL column into a non-pointer field: NULL
// reads as the zero value (e.g. rotation_count in old LiteLLM rows).
type nullable[T any] struct{ p *T }

func (n nullable[T]) Scan(src any) error {
	if src == nil {
		var z T
		*n.p = z
		return nil
	}
	v, ok := src.(T)
	if !ok {
		return fmt.Errorf("cannot scan %T into %T", src, *n.p)
	}
	*n.p = v
	return nil
}

func ts(p *time.Time) any {
	if p == nil {
		return nil
	}
	return p.UTC().Truncate(time.Millisecond)
}

func obj(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// jsonColumns are the JSON object columns, with the field each holds.
// An Update writes one only when its value changed (see columns.args), so
// a /key/block never rewrites metadata that another writer may own.
var jsonColumns = map[string]func(k *keys.Key) map[string]any{
	"aliases":          func(k *keys.Key) map[string]any { return k.Aliases },
	"config":           func(k *keys.Key) map[string]any { return k.Config },
	"permissions":      func(k *keys.Key) map[string]any { return k.Permissions },
	"metadata":         func(k *keys.Key) map[string]any { return k.Metadata },
	"model_spend":      func(k *keys.Key) map[string]any { return k.ModelSpend },
	"model_max_budget": func(k *keys.Key) map[string]any { return k.ModelMaxBudget },
}

// jsonObject scans a JSON object column losslessly (keys.DecodeObject:
// numbers as json.Number, so integers above 2^53 survive a round trip).
type jsonObject struct{ p *map[string]any }

func (j jsonObject) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case nil:
		*j.p = nil
		return nil
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		return fmt.Errorf("cannot scan %T into a JSON object", src)
	}
	m, err := keys.DecodeObject(b)
	if err != nil {
		return fmt.Errorf("JSON object column: %w", err)
	}
	*j.p = m
	return nil
}

// jsonSnapshot renders every JSON object column of k, to tell later which
// ones a change touched.
func jsonSnapshot(k *keys.Key) map[string][]byte {
	out := make(map[string][]byte, len(jsonColumns))
	for name, get := range jsonColumns {
		if b, err := json.Marshal(obj(get(k))); err == nil {
			out[name] = b
		}
	}
	return out
}

func arr(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// knownColumns are the columns the store reads and writes, in LiteLLM's
// order. token is first.
var knownColumns = []column{
	{"token", func(k *keys.Key) any { return k.Token }, func(k *keys.Key) any { return &k.Token }},
	{"key_name", func(k *keys.Key) any { return k.KeyName }, func(k *keys.Key) any { return &k.KeyName }},
	{"key_alias", func(k *keys.Key) any { return k.KeyAlias }, func(k *keys.Key) any { return &k.KeyAlias }},
	{"soft_budget_cooldown", func(k *keys.Key) any { return k.SoftBudgetCooldown }, func(k *keys.Key) any { return nullable[bool]{&k.SoftBudgetCooldown} }},
	{"spend", func(k *keys.Key) any { return k.Spend }, func(k *keys.Key) any { return nullable[float64]{&k.Spend} }},
	{"expires", func(k *keys.Key) any { return ts(k.Expires) }, func(k *keys.Key) any { return &k.Expires }},
	{"models", func(k *keys.Key) any { return arr(k.Models) }, func(k *keys.Key) any { return &k.Models }},
	{"aliases", func(k *keys.Key) any { return obj(k.Aliases) }, func(k *keys.Key) any { return jsonObject{&k.Aliases} }},
	{"config", func(k *keys.Key) any { return obj(k.Config) }, func(k *keys.Key) any { return jsonObject{&k.Config} }},
	{"user_id", func(k *keys.Key) any { return k.UserID }, func(k *keys.Key) any { return &k.UserID }},
	{"team_id", func(k *keys.Key) any { return k.TeamID }, func(k *keys.Key) any { return &k.TeamID }},
	{"permissions", func(k *keys.Key) any { return obj(k.Permissions) }, func(k *keys.Key) any { return jsonObject{&k.Permissions} }},
	{"max_parallel_requests", func(k *keys.Key) any { return k.MaxParallelRequests }, func(k *keys.Key) any { return &k.MaxParallelRequests }},
	{"metadata", func(k *keys.Key) any { return obj(k.Metadata) }, func(k *keys.Key) any { return jsonObject{&k.Metadata} }},
	{"blocked", func(k *keys.Key) any { return k.Blocked }, func(k *keys.Key) any { return &k.Blocked }},
	{"tpm_limit", func(k *keys.Key) any { return k.TPMLimit }, func(k *keys.Key) any { return &k.TPMLimit }},
	{"rpm_limit", func(k *keys.Key) any { return k.RPMLimit }, func(k *keys.Key) any { return &k.RPMLimit }},
	{"max_budget", func(k *keys.Key) any { return k.MaxBudget }, func(k *keys.Key) any { return &k.MaxBudget }},
	{"budget_duration", func(k *keys.Key) any { return k.BudgetDuration }, func(k *keys.Key) any { return &k.BudgetDuration }},
	{"budget_reset_at", func(k *keys.Key) any { return ts(k.BudgetResetAt) }, func(k *keys.Key) any { return &k.BudgetResetAt }},
	{"allowed_cache_controls", func(k *keys.Key) any { return arr(k.AllowedCacheControls) }, func(k *keys.Key) any { return &k.AllowedCacheControls }},
	{"allowed_routes", func(k *keys.Key) any { return arr(k.AllowedRoutes) }, func(k *keys.Key) any { return &k.AllowedRoutes }},
	{"model_spend", func(k *keys.Key) any { return obj(k.ModelSpend) }, func(k *keys.Key) any { return jsonObject{&k.ModelSpend} }},
	{"model_max_budget", func(k *keys.Key) any { return obj(k.ModelMaxBudget) }, func(k *keys.Key) any { return jsonObject{&k.ModelMaxBudget} }},
	{"budget_id", func(k *keys.Key) any { return k.BudgetID }, func(k *keys.Key) any { return &k.BudgetID }},
	{"organization_id", func(k *keys.Key) any { return k.OrganizationID }, func(k *keys.Key) any { return &k.OrganizationID }},
	{"created_at", func(k *keys.Key) any { return ts(k.CreatedAt) }, func(k *keys.Key) any { return &k.CreatedAt }},
	{"created_by", func(k *keys.Key) any { return k.CreatedBy }, func(k *keys.Key) any { return &k.CreatedBy }},
	{"updated_at", func(k *keys.Key) any { return ts(k.UpdatedAt) }, func(k *keys.Key) any { return &k.UpdatedAt }},
	{"updated_by", func(k *keys.Key) any { return k.UpdatedBy }, func(k *keys.Key) any { return &k.UpdatedBy }},
	{"rotation_count", func(k *keys.Key) any { return k.RotationCount }, func(k *keys.Key) any { return nullable[int64]{&k.RotationCount} }},
	{"last_rotation_at", func(k *keys.Key) any { return ts(k.LastRotationAt) }, func(k *keys.Key) any { return &k.LastRotationAt }},
}

// columns is knownColumns ∩ the key table's actual columns, with the SQL
// built from them once at Open.
type columns struct {
	cols    []column // present known columns, token first
	absent  []string // known columns the table lacks
	present map[string]bool

	selectList  string // "token", "key_name", ... (unqualified)
	selectListT string // t."token", ... (qualified with alias t)
	// The writes RETURN selectList, so a write returns what a read gives.
	insertSQL string
	// updateSQL and moveSQL keep a JSON object column as it is when its
	// argument is NULL (the columns are NOT NULL, so NULL means "unchanged").
	updateSQL string // SET every present column except token; WHERE token = last arg
	moveSQL   string // SET every present column including token; WHERE token = last arg
}

func quote(name string) string { return pgx.Identifier{name}.Sanitize() }

func newColumns(existing []string) (*columns, error) {
	c := &columns{present: map[string]bool{}}
	for _, kc := range knownColumns {
		if slices.Contains(existing, kc.name) {
			c.cols = append(c.cols, kc)
			c.present[kc.name] = true
		} else {
			c.absent = append(c.absent, kc.name)
		}
	}
	if !c.present["token"] {
		return nil, fmt.Errorf("table %s has no token column", keyTable)
	}
	var sel, selT, ph, set, move []string
	n := 0
	for i, kc := range c.cols {
		q := quote(kc.name)
		sel = append(sel, q)
		selT = append(selT, "t."+q)
		ph = append(ph, fmt.Sprintf("$%d", i+1))
		assign := func(p int) string { return fmt.Sprintf("%s = $%d", q, p) }
		if _, ok := jsonColumns[kc.name]; ok {
			assign = func(p int) string { return fmt.Sprintf("%s = COALESCE($%d, %s)", q, p, q) }
		}
		move = append(move, assign(i+1))
		if kc.name != "token" {
			n++
			set = append(set, assign(n))
		}
	}
	c.selectList = strings.Join(sel, ", ")
	c.selectListT = strings.Join(selT, ", ")
	c.insertSQL = fmt.Sprintf(`INSERT INTO %s (%s) VALUES (%s) RETURNING %s`, keyTable, c.selectList, strings.Join(ph, ", "), c.selectList)
	c.updateSQL = fmt.Sprintf(`UPDATE %s SET %s WHERE token = $%d RETURNING %s`, keyTable, strings.Join(set, ", "), n+1, c.selectList)
	c.moveSQL = fmt.Sprintf(`UPDATE %s SET %s WHERE token = $%d RETURNING %s`, keyTable, strings.Join(move, ", "), len(c.cols)+1, c.selectList)
	return c, nil
}

func (c *columns) missing() []string { return c.absent }

// args returns the values of every present column, in order. A JSON object
// column whose rendering equals before's is nil: updateSQL and moveSQL then
// keep the stored value byte for byte. before may be nil (write all).
func (c *columns) args(k *keys.Key, withToken bool, before map[string][]byte) []any {
	out := make([]any, 0, len(c.cols)+1)
	for _, kc := range c.cols {
		if kc.name == "token" && !withToken {
			continue
		}
		if get, ok := jsonColumns[kc.name]; ok && before != nil {
			if b, err := json.Marshal(obj(get(k))); err == nil && bytes.Equal(b, before[kc.name]) {
				out = append(out, nil)
				continue
			}
		}
		out = append(out, kc.arg(k))
	}
	return out
}

// scan reads one row selected with selectList, followed by the grace
// column (revoke_at) when withGrace.
func (c *columns) scan(row pgx.Row, withGrace bool) (*keys.Key, error) {
	k := &keys.Key{}
	dests := make([]any, 0, len(c.cols)+1)
	for _, kc := range c.cols {
		dests = append(dests, kc.dest(k))
	}
	if withGrace {
		dests = append(dests, &k.GraceUntil)
	}
	if err := row.Scan(dests...); err != nil {
		return nil, err
	}
	normalize(k)
	return k, nil
}

// normalize puts k in the form a read returns: UTC millisecond times, empty
// (never nil) maps and slices.
func normalize(k *keys.Key) {
	for _, p := range []**time.Time{&k.Expires, &k.BudgetResetAt, &k.CreatedAt, &k.UpdatedAt, &k.LastRotationAt, &k.GraceUntil} {
		if *p != nil {
			t := (*p).UTC().Truncate(time.Millisecond)
			*p = &t
		}
	}
	for _, m := range []*map[string]any{&k.Aliases, &k.Config, &k.Permissions, &k.Metadata, &k.ModelSpend, &k.ModelMaxBudget} {
		if *m == nil {
			*m = map[string]any{}
		}
	}
	for _, s := range []*[]string{&k.Models, &k.AllowedCacheControls, &k.AllowedRoutes} {
		if *s == nil {
			*s = []string{}
		}
	}
}
