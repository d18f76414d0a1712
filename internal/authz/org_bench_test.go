package authz_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// teamBenchEnv is an orgEnv with two keys allowed gpt-4o: one without a
// team or user, one in a team with a user and a membership, each with a
// budget, so a team-key Check runs every team and user check.
func teamBenchEnv(tb testing.TB) (e *orgEnv, plain, team *authv3.CheckRequest) {
	tb.Helper()
	e = newOrgEnv(tb)
	e.team(tb, keys.Team{TeamID: "bench-team", Models: []string{"gpt-4o", "gpt-4o-mini"}, MaxBudget: ptr(1000.0)})
	e.user(tb, keys.User{UserID: "bench-user", MaxBudget: ptr(1000.0)})
	e.member(tb, "bench-team", "bench-user", 0, &keys.Budget{BudgetID: "bench-budget", MaxBudget: ptr(1000.0)})
	plainRaw, teamRaw := keys.Generate(), keys.Generate()
	e.key(tb, plainRaw, keys.Key{Models: []string{"gpt-4o", "gpt-4o-mini"}, KeyAlias: ptr("bench"), MaxBudget: ptr(1000.0)})
	e.key(tb, teamRaw, keys.Key{Models: []string{"all-team-models"}, KeyAlias: ptr("bench-team-key"), MaxBudget: ptr(1000.0),
		TeamID: ptr("bench-team"), UserID: ptr("bench-user")})
	plain, team = benchRequest(plainRaw), benchRequest(teamRaw)
	for _, r := range []*authv3.CheckRequest{plain, team} {
		resp, err := e.client.Check(context.Background(), r)
		if err != nil || resp.GetOkResponse() == nil {
			tb.Fatalf("warm-up Check = %v, %v", resp, err)
		}
	}
	e.keys.Wait()
	e.org.Wait()
	return e, plain, team
}

// BenchmarkCheckTeam compares, in one run and over a real gRPC connection,
// a cache-hit Check for a key in a team (with a user, a membership and
// budgets on all three) against a key without a team. "interleaved" runs
// the two alternately and reports the team key's time as a ratio of the
// plain key's (team/plain), so machine noise hits both alike.
func BenchmarkCheckTeam(b *testing.B) {
	e, plain, team := teamBenchEnv(b)
	check := func(b *testing.B, r *authv3.CheckRequest) {
		resp, err := e.client.Check(context.Background(), r)
		if err != nil || resp.GetOkResponse() == nil {
			b.Fatalf("Check = %v, %v", resp, err)
		}
	}
	b.Run("no-team", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			check(b, plain)
		}
	})
	b.Run("team-user-member", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			check(b, team)
		}
	})
	// Process CPU time (client and server), measured in alternating blocks
	// of Checks of each key, so load from other processes on the machine
	// affects neither side more than the other.
	b.Run("interleaved-cpu", func(b *testing.B) {
		const block = 100
		var cPlain, cTeam time.Duration
		for b.Loop() {
			c0 := cpuTime(b)
			for range block {
				check(b, plain)
			}
			c1 := cpuTime(b)
			for range block {
				check(b, team)
			}
			cPlain, cTeam = cPlain+c1-c0, cTeam+cpuTime(b)-c1
		}
		b.ReportMetric(float64(cTeam)/float64(cPlain), "team/plain")
		b.ReportMetric(float64(cPlain.Nanoseconds())/float64(b.N*block), "plain-cpu-ns/check")
		b.ReportMetric(float64(cTeam.Nanoseconds())/float64(b.N*block), "team-cpu-ns/check")
	})
	// The handler alone (no transport): the decision's own cost, where the
	// three extra cache lookups weigh most.
	b.Run("handler-interleaved", func(b *testing.B) {
		var tPlain, tTeam time.Duration
		ctx := context.Background()
		for b.Loop() {
			t0 := time.Now()
			e.server.Check(ctx, plain)
			t1 := time.Now()
			e.server.Check(ctx, team)
			tPlain, tTeam = tPlain+t1.Sub(t0), tTeam+time.Since(t1)
		}
		b.ReportMetric(float64(tTeam)/float64(tPlain), "team/plain")
	})
}

// TestTeamKeyHitAllocations: a cache-hit Check for a team key (team, user
// and membership cached) allocates no more than one for a plain key.
func TestTeamKeyHitAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	e, plain, team := teamBenchEnv(t)
	srv := e.server
	n := func(r *authv3.CheckRequest) float64 {
		return testing.AllocsPerRun(200, func() { srv.Check(context.Background(), r) })
	}
	if p, tm := n(plain), n(team); tm > p {
		t.Errorf("team-key hit allocates %v times, plain key %v", tm, p)
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
