package authz_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pgtest"
	"github.com/virtualkeys/sidecar/internal/store"
)

// A team blocked or put over budget through replica A, or by a plain SQL
// UPDATE of LiteLLM_TeamTable, is enforced by replica B within
// propagation (polled with a deadline).
func TestReplicasEnforceTeamChanges(t *testing.T) {
	url := pgtest.URL(t)
	a, b := startReplica(t, url, true), startReplica(t, url, true)
	ctx := context.Background()
	if err := a.store.CreateTeam(ctx, &keys.Team{TeamID: "t", MaxBudget: ptr(10.0)}); err != nil {
		t.Fatal(err)
	}
	if err := a.store.CreateUser(ctx, &keys.User{UserID: "u"}); err != nil {
		t.Fatal(err)
	}
	if err := a.store.PutMembership(ctx, &keys.Membership{TeamID: "t", UserID: "u"},
		&keys.Budget{BudgetID: "bm", MaxBudget: ptr(100.0), CreatedBy: "test", UpdatedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	raw := "sk-replica-team-key-0001"
	if err := a.store.Create(ctx, &keys.Key{Token: keys.HashHex(raw), TeamID: ptr("t"), UserID: ptr("u")}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*replica{a, b} {
		r.eventually(t, raw, "gpt-4o", "allow", propagation)
	}
	setTeam := func(fn func(*keys.Team)) {
		t.Helper()
		if _, err := a.store.UpdateTeam(ctx, "t", func(tm *keys.Team) error { fn(tm); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	sql := func(q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, step := range []struct {
		name   string
		change func()
		want   string
	}{
		{"blocked through A", func() { setTeam(func(tm *keys.Team) { tm.Blocked = true }) }, "auth_error"},
		{"unblocked through A", func() { setTeam(func(tm *keys.Team) { tm.Blocked = false }) }, "allow"},
		{"spend over budget through A (spend-only event)", func() {
			if err := a.store.AddOrgSpend(ctx, store.OrgSpend{Teams: map[string]float64{"t": 10.5}}); err != nil {
				t.Fatal(err)
			}
		}, "budget_exceeded"},
		{"budget raised through A", func() { setTeam(func(tm *keys.Team) { tm.MaxBudget = ptr(20.0) }) }, "allow"},
		{"plain SQL: blocked", func() { sql(`UPDATE "LiteLLM_TeamTable" SET blocked = true WHERE team_id = $1`, "t") }, "auth_error"},
		{"plain SQL: unblocked", func() { sql(`UPDATE "LiteLLM_TeamTable" SET blocked = false WHERE team_id = $1`, "t") }, "allow"},
		{"plain SQL: spend over budget", func() { sql(`UPDATE "LiteLLM_TeamTable" SET spend = 25 WHERE team_id = $1`, "t") }, "budget_exceeded"},
		{"plain SQL: spend reset", func() { sql(`UPDATE "LiteLLM_TeamTable" SET spend = 0 WHERE team_id = $1`, "t") }, "allow"},
		{"plain SQL: member budget lowered", func() { sql(`UPDATE "LiteLLM_BudgetTable" SET max_budget = 0 WHERE budget_id = $1`, "bm") }, "budget_exceeded"},
		{"plain SQL: membership moved off the budget", func() {
			sql(`UPDATE "LiteLLM_TeamMembership" SET budget_id = NULL WHERE team_id = $1 AND user_id = $2`, "t", "u")
		}, "allow"},
		{"plain SQL: blocked again", func() {
			sql(`UPDATE "LiteLLM_TeamTable" SET blocked = true WHERE team_id = $1`, "t")
		}, "auth_error"},
		{"plain SQL: team row deleted", func() {
			sql(`DELETE FROM "LiteLLM_TeamMembership" WHERE team_id = $1`, "t")
			sql(`DELETE FROM "LiteLLM_TeamTable" WHERE team_id = $1`, "t")
		}, "allow"},
	} {
		t.Run(step.name, func(t *testing.T) {
			step.change()
			d := b.eventually(t, raw, "gpt-4o", step.want, propagation)
			a.eventually(t, raw, "gpt-4o", step.want, propagation)
			t.Logf("replica B enforced it after %v", d)
		})
	}
}
