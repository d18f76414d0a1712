package sqlite

import (
	"context"
	"errors"
	"fmt"
)

// tokenPage is how many tokens ListTokens reads per query.
const tokenPage = 10_000

// ListTokens calls fn with every key's token and every rotated-out token
// still in its grace period, a page at a time (keyset paging on token, so
// each page is an index range scan and no read is held while fn runs).
func (s *Store) ListTokens(ctx context.Context, fn func(hash string) error) error {
	for _, q := range []string{
		fmt.Sprintf(`SELECT token FROM %s WHERE token > ? ORDER BY token LIMIT %d`, keyTable, tokenPage),
		fmt.Sprintf(`SELECT token FROM %s WHERE token > ? AND revoke_at > ? ORDER BY token LIMIT %d`, deprecatedTable, tokenPage),
	} {
		after := ""
		for {
			page, err := s.tokenPage(ctx, q, after)
			if err != nil {
				return fmt.Errorf("sqlite: list tokens: %w", err)
			}
			for _, t := range page {
				if err := fn(t); err != nil {
					return err
				}
			}
			if len(page) < tokenPage {
				break
			}
			after = page[len(page)-1]
		}
	}
	return nil
}

func (s *Store) tokenPage(ctx context.Context, q, after string) (page []string, err error) {
	args := []any{after}
	if countArgs(q) == 2 {
		args = append(args, formatTime(now()))
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, rows.Close()) }()
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		page = append(page, t)
	}
	return page, rows.Err()
}

func countArgs(q string) (n int) {
	for i := range len(q) {
		if q[i] == '?' {
			n++
		}
	}
	return n
}
