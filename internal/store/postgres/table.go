package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// table is the SQL for one described LiteLLM table (store.Table), built at
// Open from the columns the table really has: known columns it lacks read
// as zero values and are never written.
type table[T any] struct {
	desc   store.Table[T]
	name   string // quoted
	cols   []store.Column[T]
	keyN   int // len(desc.Key): the key columns are cols[:keyN]
	has    map[string]bool
	sel    string // "c1", "c2", ...
	selT   string // x."c1", ...
	insert string
	update string // SET every non-key column WHERE key = ... RETURNING
	get    string
	lock   string
	del    string // DELETE ... WHERE key = ... RETURNING
}

// queryer is what table operations need from a pool or a transaction.
type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func loadTable[T any](ctx context.Context, pool *pgxpool.Pool, desc store.Table[T]) (*table[T], error) {
	rows, err := pool.Query(ctx, `SELECT column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1`, desc.Name)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	return newTable(desc, names)
}

func newTable[T any](desc store.Table[T], existing []string) (*table[T], error) {
	t := &table[T]{desc: desc, name: quote(desc.Name), keyN: len(desc.Key), has: map[string]bool{}}
	// Key columns first, in key order, then the rest in described order.
	for _, k := range desc.Key {
		i := slices.IndexFunc(desc.Columns, func(c store.Column[T]) bool { return c.Name == k })
		if i < 0 || !slices.Contains(existing, k) {
			return nil, fmt.Errorf("table %s has no key column %s", desc.Name, k)
		}
		t.cols = append(t.cols, desc.Columns[i])
	}
	for _, c := range desc.Columns {
		if !slices.Contains(desc.Key, c.Name) && slices.Contains(existing, c.Name) {
			t.cols = append(t.cols, c)
		}
	}
	var sel, selT, ph, set, where []string
	for i, c := range t.cols {
		t.has[c.Name] = true
		q := quote(c.Name)
		sel = append(sel, q)
		selT = append(selT, "x."+q)
		ph = append(ph, fmt.Sprintf("$%d", i+1))
		if i < t.keyN {
			where = append(where, fmt.Sprintf("%s = $%d", q, i+1))
		} else {
			set = append(set, fmt.Sprintf("%s = $%d", q, i+1))
		}
	}
	t.sel, t.selT = strings.Join(sel, ", "), strings.Join(selT, ", ")
	w := strings.Join(where, " AND ")
	t.insert = fmt.Sprintf(`INSERT INTO %s (%s) VALUES (%s) RETURNING %s`, t.name, t.sel, strings.Join(ph, ", "), t.sel)
	if len(set) > 0 {
		t.update = fmt.Sprintf(`UPDATE %s SET %s WHERE %s RETURNING %s`, t.name, strings.Join(set, ", "), w, t.sel)
	}
	t.get = fmt.Sprintf(`SELECT %s FROM %s WHERE %s`, t.sel, t.name, w)
	t.lock = t.get + ` FOR UPDATE`
	t.del = fmt.Sprintf(`DELETE FROM %s WHERE %s RETURNING %s`, t.name, w, t.sel)
	return t, nil
}

// args renders v's present columns, key columns first.
func (t *table[T]) args(v *T) ([]any, error) {
	t.desc.Normalize(v)
	out := make([]any, 0, len(t.cols))
	for _, c := range t.cols {
		a, err := pgArg(c.Field(v))
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %w", c.Name, keys.ErrInvalid, err)
		}
		out = append(out, a)
	}
	return out, nil
}

func pgArg(p any) (any, error) {
	switch p := p.(type) {
	case *string:
		return *p, nil
	case **string:
		return *p, nil
	case *float64:
		return *p, nil
	case **float64:
		return *p, nil
	case *int64:
		return *p, nil
	case **int64:
		return *p, nil
	case *bool:
		return *p, nil
	case **time.Time:
		return ts(*p), nil
	case *[]string:
		return arr(*p), nil
	case *map[string]any:
		return obj(*p), nil
	default: // JSON of any other type
		b, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		return string(b), nil
	}
}

func pgDest(p any) any {
	switch p := p.(type) {
	case *string:
		return nullable[string]{p}
	case *float64:
		return nullable[float64]{p}
	case *int64:
		return nullable[int64]{p}
	case *bool:
		return nullable[bool]{p}
	}
	return p
}

// scan reads one row selected with t.sel (plus extra destinations).
func (t *table[T]) scan(row pgx.Row, extra ...any) (*T, error) {
	v := new(T)
	dests := make([]any, 0, len(t.cols)+len(extra))
	for _, c := range t.cols {
		dests = append(dests, pgDest(c.Field(v)))
	}
	dests = append(dests, extra...)
	if err := row.Scan(dests...); err != nil {
		return nil, err
	}
	t.finish(v)
	return v, nil
}

// finish puts a read row in normal form: UTC millisecond times, empty
// maps and slices.
func (t *table[T]) finish(v *T) {
	for _, c := range t.desc.Columns {
		if p, ok := c.Field(v).(**time.Time); ok && *p != nil {
			u := (*p).UTC().Truncate(time.Millisecond)
			*p = &u
		}
	}
	t.desc.Normalize(v)
}

func (t *table[T]) many(ctx context.Context, q queryer, sql string, args ...any) ([]*T, error) {
	rows, err := q.Query(ctx, sql, args...)
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

func (t *table[T]) one(ctx context.Context, q queryer, sql string, args ...any) (*T, error) {
	v, err := t.scan(q.QueryRow(ctx, sql, args...))
	if errNoRows(err) {
		return nil, keys.ErrNotFound
	}
	return v, err
}

func (t *table[T]) create(ctx context.Context, q queryer, v *T) (*T, error) {
	args, err := t.args(v)
	if err != nil {
		return nil, err
	}
	out, err := t.one(ctx, q, t.insert, args...)
	if err != nil {
		return nil, t.conflict(err, args)
	}
	return out, nil
}

// modify loads the row under a lock, calls fn and writes it back, in tx.
func (t *table[T]) modify(ctx context.Context, tx pgx.Tx, key []any, fn func(*T) error) (*T, error) {
	v, err := t.one(ctx, tx, t.lock, key...)
	if err != nil {
		return nil, err
	}
	if err := fn(v); err != nil {
		return nil, err
	}
	if t.update == "" {
		return v, nil
	}
	args, err := t.args(v)
	if err != nil {
		return nil, err
	}
	// The key is not changed: the WHERE uses the original values.
	copy(args, key)
	out, err := t.one(ctx, tx, t.update, args...)
	if err != nil {
		return nil, t.conflict(err, args)
	}
	return out, nil
}

// conflict turns a unique violation into a *keys.ConflictError on the
// first key column.
func (t *table[T]) conflict(err error, args []any) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		return err
	}
	ce := &keys.ConflictError{Field: t.desc.Key[0]}
	if s, ok := args[0].(string); ok {
		ce.Value = s
	}
	return ce
}
