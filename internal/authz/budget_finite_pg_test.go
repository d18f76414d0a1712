package authz_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pgtest"
)

// TestNonFiniteBudgetDenies: NaN or ±Infinity written into spend or
// max_budget by SQL (Postgres float8 holds them) must deny as over budget.
// Every comparison with NaN is false, so a plain spend >= max_budget let
// such a key through.
func TestNonFiniteBudgetDenies(t *testing.T) {
	dbURL := pgtest.URL(t)
	r := newReplica(t, dbURL)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, tc := range []struct {
		name, spend, max, want string
	}{
		{"finite under budget", "1", "10", "allow"},
		{"NaN spend", "NaN", "10", "budget_exceeded"},
		{"NaN max_budget", "1", "NaN", "budget_exceeded"},
		{"-Infinity spend", "-Infinity", "10", "budget_exceeded"},
		{"Infinity max_budget", "1", "Infinity", "budget_exceeded"},
		{"Infinity spend", "Infinity", "10", "budget_exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := keys.Generate()
			h := keys.HashHex(raw)
			if err := r.store.Create(ctx, &keys.Key{Token: h, Models: []string{"gpt-4o"}, MaxBudget: ptr(1.0)}); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, `UPDATE "LiteLLM_VerificationToken" SET spend = $1::float8, max_budget = $2::float8 WHERE token = $3`,
				tc.spend, tc.max, h); err != nil {
				t.Fatal(err)
			}
			r.cache.Invalidate(h)
			if got := r.verdict(raw, "gpt-4o"); got != tc.want {
				t.Errorf("spend=%s max_budget=%s: verdict %q, want %q", tc.spend, tc.max, got, tc.want)
			}
		})
	}
}
