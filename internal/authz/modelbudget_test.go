package authz_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/modelbudget"
	"github.com/virtualkeys/sidecar/internal/spend"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

// lateSpend lets the test build the Tracker after newEnv made the cache.
type lateSpend struct{ t *modelbudget.Tracker }

func (l *lateSpend) Spend(hash string, lim *modelbudget.Limit, now time.Time) float64 {
	return l.t.Spend(hash, lim, now)
}

// TestModelMaxBudget: over gRPC, a key's model_max_budget denies the
// model (and its provider-prefixed spelling) once the window's metered
// spend reaches budget_limit, with LiteLLM's message; other models pass;
// the window ends after its period and the model passes again.
func TestModelMaxBudget(t *testing.T) {
	ls := &lateSpend{}
	e := newEnv(t, authz.Config{ModelSpend: ls})
	clock := func() time.Time { return e.now.Add(time.Duration(e.skew.Load())) }
	tr := modelbudget.NewTracker(e.cache, clock)
	ls.t = tr

	const raw, rawNoAlias, rawZero = "sk-model-budget-0100", "sk-model-budget-0101", "sk-model-budget-0102"
	mmb := map[string]any{
		"gpt-4o":   map[string]any{"budget_limit": 1.0, "time_period": "1d"},
		"claude-3": map[string]any{"budget_limit": 5.0, "time_period": "1h"},
		"broken":   map[string]any{"budget_limit": 0.0}, // no period: LiteLLM ignores it
	}
	for _, k := range []keys.Key{
		{Token: keys.HashHex(raw), KeyAlias: ptr("mb-key"), ModelMaxBudget: mmb},
		{Token: keys.HashHex(rawNoAlias), ModelMaxBudget: mmb},
		{Token: keys.HashHex(rawZero), ModelMaxBudget: map[string]any{"gpt-4o": map[string]any{"max_budget": 0, "budget_duration": "30d"}}},
	} {
		if err := e.store.Create(context.Background(), &k); err != nil {
			t.Fatal(err)
		}
	}
	denied := func(rawKey, alias, model string) want {
		return want{status: 400, typ: "budget_exceeded", code: codes.ResourceExhausted,
			msg: "LiteLLM Virtual Key: " + keys.HashHex(rawKey) + ", key_alias: " + alias + ", exceeded budget for model=" + model}
	}
	check := func(rawKey, model string, w want) {
		t.Helper()
		resp, err := e.client.Check(context.Background(), req(chat, bearer(rawKey), body(model), false))
		if err != nil {
			t.Fatal(err)
		}
		checkResp(t, e, resp, w)
	}
	charge := func(rawKey, model string, usd float64) {
		e.cache.Wait()
		tr.Spent(&spend.Record{KeyHash: keys.HashHex(rawKey), Model: model, Cost: usd})
	}

	check(raw, "gpt-4o", allowed("gpt-4o", "authorization"))
	check(rawZero, "gpt-4o", denied(rawZero, "None", "gpt-4o")) // a 0 limit denies at once
	check(raw, "broken", allowed("broken", "authorization"))
	charge(raw, "gpt-4o", 0.6)
	check(raw, "gpt-4o", allowed("gpt-4o", "authorization"))
	charge(raw, "openai/gpt-4o", 0.4) // the bare name's budget governs the prefixed one
	check(raw, "gpt-4o", denied(raw, "mb-key", "gpt-4o"))
	check(raw, "openai/gpt-4o", denied(raw, "mb-key", "openai/gpt-4o"))
	check(raw, "claude-3", allowed("claude-3", "authorization"))
	check(raw, "gpt-4o-mini", allowed("gpt-4o-mini", "authorization"))
	check(rawNoAlias, "gpt-4o", allowed("gpt-4o", "authorization")) // per key

	charge(rawNoAlias, "gpt-4o", 2)
	check(rawNoAlias, "gpt-4o", denied(rawNoAlias, "None", "gpt-4o"))

	// The window opened at the first charge and lasts 1d.
	e.skew.Store(int64(24*time.Hour - time.Nanosecond))
	check(raw, "gpt-4o", denied(raw, "mb-key", "gpt-4o"))
	e.skew.Store(int64(24 * time.Hour))
	check(raw, "gpt-4o", allowed("gpt-4o", "authorization"))
	// A charge after the end opens a new window with that cost alone.
	charge(raw, "gpt-4o", 0.5)
	check(raw, "gpt-4o", allowed("gpt-4o", "authorization"))
	charge(raw, "gpt-4o", 0.5)
	check(raw, "gpt-4o", denied(raw, "mb-key", "gpt-4o"))
}

// TestCacheHitModelBudgetAllocations: a key with model_max_budget pays no
// more allocations on a cache hit than one without (TestCacheHitCheckAllocations).
func TestCacheHitModelBudgetAllocations(t *testing.T) {
	srv, c, raw, _ := modelBudgetServer(t)
	r := benchRequest(raw)
	if resp, _ := srv.Check(context.Background(), r); resp.GetOkResponse() == nil {
		t.Fatal("denied")
	}
	c.Wait()
	n := testing.AllocsPerRun(200, func() { srv.Check(context.Background(), r) })
	if n > 2 {
		t.Errorf("cache-hit Check of a key with model_max_budget allocates %v times, want <= 2", n)
	}
}

// BenchmarkCheckModelBudget: parallel cache-hit Checks of one key without
// model_max_budget (the floor) and one with it and a live window, in the
// same run; compare ns/op (the window read takes no lock).
func BenchmarkCheckModelBudget(b *testing.B) {
	srv, c, raw, plain := modelBudgetServer(b)
	for _, bc := range []struct{ name, key string }{{"floor-no-model-budget", plain}, {"model-budget", raw}} {
		r := benchRequest(bc.key)
		if resp, _ := srv.Check(context.Background(), r); resp.GetOkResponse() == nil {
			b.Fatal("denied")
		}
		c.Wait()
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					srv.Check(context.Background(), r)
				}
			})
		})
	}
}

// modelBudgetServer is a Check service with a key budgeting gpt-4o (and a
// live window) and a plain key.
func modelBudgetServer(t testing.TB) (*authz.Server, *cache.Cache, string, string) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "keys.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := cache.New(cache.Config{Loader: st, MaxKeys: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	raw, plain := keys.Generate(), keys.Generate()
	for _, k := range []keys.Key{
		{Token: keys.HashHex(raw), KeyAlias: ptr("b"), ModelMaxBudget: map[string]any{"gpt-4o": map[string]any{"budget_limit": 1e9, "time_period": "1d"}}},
		{Token: keys.HashHex(plain), KeyAlias: ptr("p")},
	} {
		if err := st.Create(context.Background(), &k); err != nil {
			t.Fatal(err)
		}
	}
	tr := modelbudget.NewTracker(c, nil)
	a, err := authz.New(authz.Config{Cache: c, MasterKey: "sk-bench-master", ModelSpend: tr})
	if err != nil {
		t.Fatal(err)
	}
	srv := authz.NewServer(a)
	if resp, _ := srv.Check(context.Background(), benchRequest(raw)); resp.GetOkResponse() == nil {
		t.Fatal("denied")
	}
	c.Wait()
	tr.Spent(&spend.Record{KeyHash: keys.HashHex(raw), Model: "gpt-4o", Cost: 1}) // a live window is read
	return srv, c, raw, plain
}
