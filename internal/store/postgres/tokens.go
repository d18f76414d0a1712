package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// tokenPage is how many tokens ListTokens reads per query.
const tokenPage = 10_000

// ListTokens calls fn with every key's token and every rotated-out token
// still in its grace period, a page at a time (keyset paging on token, so
// each page is a primary-key range scan and no connection is held while fn
// runs).
func (s *Store) ListTokens(ctx context.Context, fn func(hash string) error) error {
	for _, q := range []string{
		`SELECT token FROM ` + keyTable + ` WHERE token > $1 ORDER BY token LIMIT ` + fmt.Sprint(tokenPage),
		`SELECT token FROM ` + deprecatedTable + ` WHERE token > $1 AND revoke_at > ` + utcNow + ` ORDER BY token LIMIT ` + fmt.Sprint(tokenPage),
	} {
		after := ""
		for {
			rows, err := s.pool.Query(ctx, q, after)
			if err != nil {
				return fmt.Errorf("postgres: list tokens: %w", err)
			}
			page, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("postgres: list tokens: %w", err)
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
