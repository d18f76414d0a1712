package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pgtest"
)

func TestTranslate(t *testing.T) {
	k := &keys.Key{Token: "abc", KeyAlias: ptr("al")}
	pg := func(code, table, constraint, detail string) error {
		return fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code, TableName: table, ConstraintName: constraint, Detail: detail, Message: "m"})
	}
	for _, tc := range []struct {
		name  string
		err   error
		check func(t *testing.T, got error)
	}{
		{"unique alias", pg("23505", keyTableName, "sidecar_key_alias_unique", ""), func(t *testing.T, got error) {
			var ce *keys.ConflictError
			if !errors.As(got, &ce) || ce.Field != "key_alias" || ce.Value != "al" {
				t.Errorf("got %v", got)
			}
		}},
		{"unique token", pg("23505", keyTableName, "LiteLLM_VerificationToken_pkey", ""), func(t *testing.T, got error) {
			var ce *keys.ConflictError
			if !errors.As(got, &ce) || ce.Field != "token" || ce.Value != "abc" {
				t.Errorf("got %v", got)
			}
		}},
		{"foreign key from detail", pg("23503", keyTableName, "LiteLLM_VerificationToken_budget_id_fkey",
			`Key (budget_id)=(b-9) is not present in table "LiteLLM_BudgetTable".`), func(t *testing.T, got error) {
			var re *keys.ReferenceError
			if !errors.As(got, &re) || re.Field != "budget_id" || re.Value != "b-9" || re.Table != "LiteLLM_BudgetTable" || !errors.Is(got, keys.ErrNoReference) {
				t.Errorf("got %#v", got)
			}
		}},
		{"foreign key from constraint name", pg("23503", keyTableName, "LiteLLM_VerificationToken_organization_id_fkey", ""), func(t *testing.T, got error) {
			var re *keys.ReferenceError
			if !errors.As(got, &re) || re.Field != "organization_id" {
				t.Errorf("got %#v", got)
			}
		}},
		{"still referenced", pg("23503", "LiteLLM_JWTKeyMapping", "LiteLLM_JWTKeyMapping_token_fkey",
			`Key (token)=(abc) is still referenced from table "LiteLLM_JWTKeyMapping".`), func(t *testing.T, got error) {
			var ie *keys.InvalidError
			if !errors.As(got, &ie) || ie.Field != "key" || errors.Is(got, keys.ErrNoReference) {
				t.Errorf("got %#v", got)
			}
		}},
		{"out of range", pg("22003", keyTableName, "", ""), func(t *testing.T, got error) {
			if !errors.Is(got, keys.ErrInvalid) {
				t.Errorf("got %v", got)
			}
		}},
		{"statement timeout", pg("57014", "", "", ""), unavailableCheck},
		{"admin shutdown", pg("57P01", "", "", ""), unavailableCheck},
		{"connection failure", pg("08006", "", "", ""), unavailableCheck},
		{"too many connections", pg("53300", "", "", ""), unavailableCheck},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), unavailableCheck},
		{"connect error", &pgconn.ConnectError{}, unavailableCheck},
		{"syntax error stays", pg("42601", "", "", ""), func(t *testing.T, got error) {
			if errors.Is(got, keys.ErrUnavailable) || errors.Is(got, keys.ErrInvalid) {
				t.Errorf("got %v", got)
			}
		}},
		{"not found stays", keys.ErrNotFound, func(t *testing.T, got error) {
			if got != keys.ErrNotFound {
				t.Errorf("got %v", got)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, translate(tc.err, k)) })
	}
}

func unavailableCheck(t *testing.T, got error) {
	t.Helper()
	if !errors.Is(got, keys.ErrUnavailable) {
		t.Errorf("got %v, want keys.ErrUnavailable", got)
	}
}

// TestStatementTimeoutIsServerSide: a statement blocked by a lock held
// elsewhere is cancelled by Postgres after Config.StatementTimeout, even
// when the caller's context has no deadline, and reads as ErrUnavailable.
func TestStatementTimeoutIsServerSide(t *testing.T) {
	url := pgtest.URL(t)
	s, err := Open(t.Context(), Config{URL: url, StatementTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := "feedbeef"
	if err := s.Create(t.Context(), &keys.Key{Token: h}); err != nil {
		t.Fatal(err)
	}
	var setting string
	if err := s.pool.QueryRow(t.Context(), `SHOW statement_timeout`).Scan(&setting); err != nil || setting != "200ms" {
		t.Errorf("statement_timeout = %q, %v", setting, err)
	}
	c := sqlConn(t, url)
	tx, err := c.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	exec(t, c, `LOCK TABLE `+keyTable+` IN ACCESS EXCLUSIVE MODE`)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // only so a regression fails instead of hanging
	defer cancel()
	_, err = s.SetBlocked(ctx, h, true)
	if !errors.Is(err, keys.ErrUnavailable) || ctx.Err() != nil {
		t.Fatalf("SetBlocked under a held lock = %v (ctx %v), want ErrUnavailable from the server's statement_timeout", err, ctx.Err())
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Errorf("cause = %v, want SQLSTATE 57014", err)
	}
	if _, err := s.Get(ctx, h); !errors.Is(err, keys.ErrUnavailable) {
		t.Errorf("Get under the lock = %v", err)
	}
}

// TestRangesCheckedBeforeSQL: max_parallel_requests is int4 in LiteLLM's
// schema; the store refuses a larger value with an InvalidError.
func TestRangesCheckedBeforeSQL(t *testing.T) {
	s, err := Open(t.Context(), Config{URL: pgtest.URL(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big := int64(1) << 31
	err = s.Create(t.Context(), &keys.Key{Token: "r1", MaxParallelRequests: &big})
	var ie *keys.InvalidError
	if !errors.As(err, &ie) || ie.Field != "max_parallel_requests" {
		t.Fatalf("Create = %v, want InvalidError on max_parallel_requests", err)
	}
	if err := s.Create(t.Context(), &keys.Key{Token: "r2"}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Update(t.Context(), "r2", func(k *keys.Key) error { k.MaxParallelRequests = &big; return nil })
	if !errors.As(err, &ie) {
		t.Fatalf("Update = %v, want InvalidError", err)
	}
}
