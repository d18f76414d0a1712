package postgres

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/pgtest"
)

// countingLoader counts the store lookups a cache makes (reloads).
type countingLoader struct {
	s *Store
	n atomic.Int64
}

func (c *countingLoader) Lookup(ctx context.Context, hash string) (*keys.Key, error) {
	c.n.Add(1)
	return c.s.Lookup(ctx, hash)
}

// TestBulkUpdateWhileServing: two replicas (store + cache each) serve
// cache lookups (what the Check does per request) over a hot set of keys
// while one statement changes every row of the key table. It measures
// notifications sent, store reloads (cache entries dropped and refilled)
// and lookups failed. SIDECAR_BULK_ROWS sets the table size (default
// 5000; docs/benchmarks.md reports 100000).
func TestBulkUpdateWhileServing(t *testing.T) {
	rows := 5000
	if v := os.Getenv("SIDECAR_BULK_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			t.Fatalf("SIDECAR_BULK_ROWS=%q: want an integer >= 1000", v)
		}
		rows = n
	}
	const hot, workers = 2000, 4
	url := pgtest.URL(t)
	c := sqlConn(t, url)
	type replica struct {
		s  *Store
		l  *countingLoader
		kc *cache.Cache
	}
	var reps []*replica
	for range 2 {
		s, err := Open(t.Context(), Config{URL: url, HeartbeatInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		l := &countingLoader{s: s}
		kc, err := cache.New(cache.Config{Loader: l, MaxKeys: rows * 2, SafetyTTL: time.Hour, NegativeTTL: time.Second, LookupTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(kc.Close)
		t.Cleanup(kc.Attach(s))
		reps = append(reps, &replica{s, l, kc})
	}
	start := time.Now()
	exec(t, c, `INSERT INTO "LiteLLM_VerificationToken" (token, spend, max_budget, budget_duration, budget_reset_at)
		SELECT encode(sha256(('sk-bulk-' || g)::bytea), 'hex'), 1, 100, '1d', (now() AT TIME ZONE 'UTC') - interval '1 hour'
		FROM generate_series(1, $1) g`, rows)
	t.Logf("inserted %d keys in %v", rows, time.Since(start).Round(time.Millisecond))
	hashes := make([][32]byte, hot)
	for i := range hot {
		hashes[i] = keys.Hash(fmt.Sprint("sk-bulk-", i+1))
	}
	l := newRawListener(t, url)
	l.drain()

	// serve runs lookups on both replicas until stop, counting failures.
	serve := func(stop <-chan struct{}) (checks, failed int64) {
		var wg sync.WaitGroup
		var nc, nf atomic.Int64
		var firstErr atomic.Value
		for _, r := range reps {
			for w := range workers {
				wg.Go(func() {
					for i := w; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						e, err := r.kc.Get(context.Background(), hashes[i%hot])
						nc.Add(1)
						if err != nil || e == nil {
							nf.Add(1)
							firstErr.CompareAndSwap(nil, fmt.Sprint(err))
						}
						// Paced (about 1000 lookups/s per worker): busy
						// loops on a small machine would starve Postgres
						// and measure only that.
						time.Sleep(time.Millisecond)
					}
				})
			}
		}
		<-stop
		wg.Wait()
		if e := firstErr.Load(); e != nil {
			t.Logf("first failed lookup: %v", e)
		}
		return nc.Load(), nf.Load()
	}
	// Warm both caches with the hot set until a full pass makes no store
	// query (a ristretto Set may be dropped; a later pass refills it).
	for pass := 0; ; pass++ {
		before := reps[0].l.n.Load() + reps[1].l.n.Load()
		for _, r := range reps {
			for _, h := range hashes {
				if e, err := r.kc.Get(t.Context(), h); err != nil || e == nil {
					t.Fatalf("warm: %v", err)
				}
			}
			r.kc.Wait()
		}
		if reps[0].l.n.Load()+reps[1].l.n.Load() == before {
			break
		}
		if pass == 20 {
			t.Fatal("caches do not keep the hot set")
		}
	}

	tests := []struct {
		name string
		// floor is the same kind of statement, run with the update trigger
		// disabled first, for the trigger's cost as a ratio ("" = none).
		floor string
		do    func(t *testing.T)
		// maxNotes: notifications the statement may send; mayReload,
		// wantReload: whether caches may, or must, reload the hot set.
		maxNotes   int
		mayReload  bool
		wantReload bool
	}{
		{"backfill of a column the store does not read", `UPDATE "LiteLLM_VerificationToken" SET updated_at = now()`, func(t *testing.T) {
			exec(t, c, `UPDATE "LiteLLM_VerificationToken" SET updated_at = now()`)
		}, 0, false, false},
		{"budget reset job (in place)", "", func(t *testing.T) {
			n, err := reps[0].s.ResetBudgets(t.Context(), time.Now())
			if err != nil || n != rows {
				t.Fatalf("ResetBudgets = %d, %v", n, err)
			}
		}, (rows + resetChunk - 1) / resetChunk, false, false},
		{"config change on every key", `UPDATE "LiteLLM_VerificationToken" SET metadata = metadata || '{"floor": 1}'`, func(t *testing.T) {
			exec(t, c, `UPDATE "LiteLLM_VerificationToken" SET metadata = metadata || '{"backfill": 1}'`)
		}, 1, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := reps[0].l.n.Load() + reps[1].l.n.Load()
			stop := make(chan struct{})
			type res struct{ checks, failed int64 }
			out := make(chan res)
			go func() { c, f := serve(stop); out <- res{c, f} }()
			time.Sleep(200 * time.Millisecond)
			var floor time.Duration
			if tc.floor != "" {
				exec(t, c, `ALTER TABLE "LiteLLM_VerificationToken" DISABLE TRIGGER litellm_sidecar_update`)
				st := time.Now()
				exec(t, c, tc.floor)
				floor = time.Since(st)
				exec(t, c, `ALTER TABLE "LiteLLM_VerificationToken" ENABLE ALWAYS TRIGGER litellm_sidecar_update`)
			}
			st := time.Now()
			tc.do(t)
			took := time.Since(st)
			notes := l.drain()
			time.Sleep(time.Second) // let the caches apply and refill under load
			close(stop)
			r := <-out
			reloads := reps[0].l.n.Load() + reps[1].l.n.Load() - before
			ratio := ""
			if floor > 0 {
				ratio = fmt.Sprintf(" (%.2fx the same statement without the trigger, %v)", took.Seconds()/floor.Seconds(), floor.Round(time.Millisecond))
			}
			t.Logf("%s: %d rows, statement %v%s, %d notifications, %d store reloads (hot set %d x 2 replicas), %d lookups, %d failed",
				tc.name, rows, took.Round(time.Millisecond), ratio, len(notes), reloads, hot, r.checks, r.failed)
			if len(notes) > tc.maxNotes {
				t.Errorf("%d notifications, want at most %d", len(notes), tc.maxNotes)
			}
			if !tc.mayReload && reloads != 0 {
				t.Errorf("%d reloads, want none (nothing the caches hold changed, or it was applied in place)", reloads)
			}
			if tc.wantReload && reloads == 0 {
				t.Error("no reloads after a change to every key: caches kept stale entries")
			}
		})
	}
	// The hot keys read the reset values in place.
	e, err := reps[1].kc.Get(t.Context(), hashes[0])
	if err != nil || e == nil || e.Spend() != 0 {
		t.Errorf("hot key after the reset: %+v, %v", e, err)
	}
}
