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

// table is the SQL for one described LiteLLM table (store.Table), built
// from the description: SQLite tables are the sidecar's own, so every
// described column exists.
type table[T any] struct {
	desc   store.Table[T]
	name   string // quoted
	sel    string // c1, c2, ... (described order)
	insert string
	update string // SET every non-key column WHERE key = ? (args: non-key, then key)
	get    string
	where  string // key = ? AND ...
}

func newTable[T any](desc store.Table[T]) *table[T] {
	t := &table[T]{desc: desc, name: `"` + desc.Name + `"`}
	var sel, set, where []string
	for _, c := range desc.Columns {
		sel = append(sel, `"`+c.Name+`"`)
		if !t.isKey(c.Name) {
			set = append(set, `"`+c.Name+`" = ?`)
		}
	}
	for _, k := range desc.Key {
		where = append(where, `"`+k+`" = ?`)
	}
	t.sel = strings.Join(sel, ", ")
	t.where = strings.Join(where, " AND ")
	t.insert = fmt.Sprintf(`INSERT INTO %s (%s) VALUES (%s)`, t.name, t.sel, strings.TrimSuffix(strings.Repeat("?, ", len(sel)), ", "))
	t.update = fmt.Sprintf(`UPDATE %s SET %s WHERE %s`, t.name, strings.Join(set, ", "), t.where)
	t.get = fmt.Sprintf(`SELECT %s FROM %s WHERE %s`, t.sel, t.name, t.where)
	return t
}

func (t *table[T]) isKey(name string) bool {
	for _, k := range t.desc.Key {
		if k == name {
			return true
		}
	}
	return false
}

// args renders every column of v, in described order.
func (t *table[T]) args(v *T) ([]any, error) {
	t.desc.Normalize(v)
	out := make([]any, 0, len(t.desc.Columns))
	for _, c := range t.desc.Columns {
		a, err := liteArg(c.Name, c.Field(v))
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// updateArgs renders the non-key columns, then the key.
func (t *table[T]) updateArgs(v *T) ([]any, error) {
	all, err := t.args(v)
	if err != nil {
		return nil, err
	}
	var set, key []any
	for i, c := range t.desc.Columns {
		if t.isKey(c.Name) {
			key = append(key, all[i])
		} else {
			set = append(set, all[i])
		}
	}
	return append(set, key...), nil
}

func liteArg(name string, p any) (any, error) {
	switch p := p.(type) {
	case *string:
		return *p, nil
	case **string:
		return nullStr(*p), nil
	case *float64:
		return *p, nil
	case **float64:
		return nullFloat(*p), nil
	case *int64:
		return *p, nil
	case **int64:
		return nullInt(*p), nil
	case *bool:
		return *p, nil
	case **time.Time:
		if err := checkTime(name, *p); err != nil {
			return nil, err
		}
		return nullTime(*p), nil
	case *[]string:
		return jsonArray(*p), nil
	default: // JSON objects and other JSON values
		b, err := json.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("sqlite: %s: %w: %w", name, keys.ErrInvalid, err)
		}
		return string(b), nil
	}
}

// liteDest is a scan destination for one column and the function that
// moves its value into the field.
func liteDest(name string, p any) (any, func() error) {
	switch p := p.(type) {
	case *string:
		var n sql.NullString
		return &n, func() error { *p = n.String; return nil }
	case **string:
		var n sql.NullString
		return &n, func() error { *p = str(n); return nil }
	case *float64:
		var n sql.NullFloat64
		return &n, func() error { *p = n.Float64; return nil }
	case **float64:
		var n sql.NullFloat64
		return &n, func() error {
			*p = nil
			if n.Valid {
				*p = &n.Float64
			}
			return nil
		}
	case *int64:
		var n sql.NullInt64
		return &n, func() error { *p = n.Int64; return nil }
	case **int64:
		var n sql.NullInt64
		return &n, func() error { *p = i64(n); return nil }
	case *bool:
		var n sql.NullBool
		return &n, func() error { *p = n.Bool; return nil }
	case **time.Time:
		var n sql.NullString
		return &n, func() error {
			*p = nil
			if !n.Valid {
				return nil
			}
			tm, err := parseTime(n.String)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			*p = &tm
			return nil
		}
	default: // JSON ([]string, maps, other values)
		var n sql.NullString
		return &n, func() error {
			if !n.Valid || n.String == "" || n.String == "null" {
				return nil
			}
			if err := json.Unmarshal([]byte(n.String), p); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		}
	}
}

// scan reads one row selected with t.sel, followed by extra destinations.
func (t *table[T]) scan(rows interface{ Scan(...any) error }, extra ...any) (*T, error) {
	v := new(T)
	dests := make([]any, 0, len(t.desc.Columns)+len(extra))
	sets := make([]func() error, 0, len(t.desc.Columns))
	for _, c := range t.desc.Columns {
		d, set := liteDest(c.Name, c.Field(v))
		dests = append(dests, d)
		sets = append(sets, set)
	}
	dests = append(dests, extra...)
	if err := rows.Scan(dests...); err != nil {
		return nil, err
	}
	var errs []error
	for _, set := range sets {
		if err := set(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("sqlite: %s row: %w", t.desc.Name, errors.Join(errs...))
	}
	t.desc.Normalize(v)
	return v, nil
}

func (t *table[T]) many(ctx context.Context, q querier, query string, args ...any) ([]*T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*T{}
	for rows.Next() {
		v, err := t.scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func (t *table[T]) one(ctx context.Context, q querier, query string, args ...any) (*T, error) {
	vs, err := t.many(ctx, q, query, args...)
	if err != nil {
		return nil, err
	}
	if len(vs) == 0 {
		return nil, keys.ErrNotFound
	}
	return vs[0], nil
}

// conflict turns a unique violation into a *keys.ConflictError on the
// first key column, with value v.
func (t *table[T]) conflict(err error, v string) error {
	var ce *keys.ConflictError
	if errors.As(translate(err, nil), &ce) {
		return &keys.ConflictError{Field: t.desc.Key[0], Value: v}
	}
	return err
}
