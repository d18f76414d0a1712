package budget

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeResetter struct {
	mu    sync.Mutex
	calls []time.Time
	n     int
	err   error
}

func (f *fakeResetter) ResetBudgets(_ context.Context, now time.Time) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, now)
	return f.n, f.err
}

func (f *fakeResetter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{{}, {Store: &fakeResetter{}, Interval: -1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestRunOnceCountsResetsAndErrors(t *testing.T) {
	tests := []struct {
		name               string
		n                  int
		err                error
		wantResets, wantEr float64
	}{
		{"resets", 3, nil, 3, 0},
		{"nothing due", 0, nil, 0, 0},
		{"store error", 0, errors.New("db down"), 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
			f := &fakeResetter{n: tt.n, err: tt.err}
			reg := prometheus.NewRegistry()
			j, err := New(Config{Store: f, Now: func() time.Time { return at }, Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			j.RunOnce(t.Context())
			if len(f.calls) != 1 || !f.calls[0].Equal(at) {
				t.Fatalf("calls = %v, want one at %v", f.calls, at)
			}
			if got := testutil.ToFloat64(j.resets); got != tt.wantResets {
				t.Errorf("resets = %v, want %v", got, tt.wantResets)
			}
			if got := testutil.ToFloat64(j.errs); got != tt.wantEr {
				t.Errorf("errors = %v, want %v", got, tt.wantEr)
			}
		})
	}
}

func TestRunKeepsGoingAfterErrorsAndStopsOnCancel(t *testing.T) {
	f := &fakeResetter{err: errors.New("db down")}
	j, err := New(Config{Store: f, Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for f.count() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d runs", f.count())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

// Against the real embedded store: a key past its reset time is reset to 0
// and moved to its next boundary; a key not yet due is left alone.
func TestResetsRealStore(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2025, 5, 14, 10, 30, 0, 0, time.UTC)
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	dur := "1d"
	for _, k := range []*keys.Key{
		{Token: keys.HashHex("sk-due"), Spend: 7, BudgetDuration: &dur, BudgetResetAt: &past},
		{Token: keys.HashHex("sk-later"), Spend: 7, BudgetDuration: &dur, BudgetResetAt: &future},
	} {
		if err := st.Create(t.Context(), k); err != nil {
			t.Fatal(err)
		}
	}
	j, err := New(Config{Store: st, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if n := j.RunOnce(t.Context()); n != 1 {
		t.Fatalf("reset %d keys, want 1", n)
	}
	due, _ := st.Get(t.Context(), keys.HashHex("sk-due"))
	if due.Spend != 0 || !due.BudgetResetAt.Equal(time.Date(2025, 5, 15, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("due key: spend %v, reset at %v", due.Spend, due.BudgetResetAt)
	}
	later, _ := st.Get(t.Context(), keys.HashHex("sk-later"))
	if later.Spend != 7 {
		t.Errorf("key not due was reset: spend %v", later.Spend)
	}
}
