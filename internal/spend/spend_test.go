package spend_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/virtualkeys/sidecar/internal/spend"
	"github.com/virtualkeys/sidecar/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeWriter applies batches to a map, once per batch id; down makes it fail.
type fakeWriter struct {
	mu      sync.Mutex
	down    bool
	lost    bool // commit but report an error (ambiguous commit)
	spend   map[string]float64
	models  map[string]map[string]float64
	teams   map[string]float64
	logs    map[string]store.SpendLog
	ids     map[string]bool
	batches []*store.SpendBatch
}

func newWriter() *fakeWriter {
	return &fakeWriter{spend: map[string]float64{}, models: map[string]map[string]float64{},
		teams: map[string]float64{}, logs: map[string]store.SpendLog{}, ids: map[string]bool{}}
}

func (f *fakeWriter) ApplySpend(_ context.Context, b *store.SpendBatch) (map[string]float64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errors.New("store down")
	}
	f.batches = append(f.batches, b)
	out := map[string]float64{}
	if !f.ids[b.ID] {
		f.ids[b.ID] = true
		for _, k := range b.Keys {
			f.spend[k.Token] += k.Spend
			if f.models[k.Token] == nil {
				f.models[k.Token] = map[string]float64{}
			}
			for m, v := range k.ModelSpend {
				f.models[k.Token][m] += v
			}
		}
		for _, t := range b.Teams {
			f.teams[t.ID] += t.Spend
		}
		for _, l := range b.Logs {
			f.logs[l.RequestID] = l
		}
	}
	for _, k := range b.Keys {
		out[k.Token] = f.spend[k.Token]
	}
	if f.lost {
		f.lost = false
		return nil, errors.New("connection lost during commit")
	}
	return out, nil
}

// fakeLocal tracks what the cache would: applied and settled.
type fakeLocal struct {
	mu      sync.Mutex
	added   map[string]float64
	settled map[string]float64
	n       map[string]int
	stored  map[string]float64
}

func newLocal() *fakeLocal {
	return &fakeLocal{added: map[string]float64{}, settled: map[string]float64{}, n: map[string]int{}, stored: map[string]float64{}}
}
func (l *fakeLocal) AddSpend(h string, d float64) {
	l.mu.Lock()
	l.added[h] += d
	l.n[h]++
	l.mu.Unlock()
}
func (l *fakeLocal) SettleSpend(h string, d float64, n int, stored float64) {
	l.mu.Lock()
	l.settled[h] += d
	l.n[h] -= n
	l.stored[h] = stored
	l.mu.Unlock()
}

type countObserver struct {
	mu sync.Mutex
	n  int
}

func (o *countObserver) Spent(*spend.Record) { o.mu.Lock(); o.n++; o.mu.Unlock() }

func newAccountant(t *testing.T, w spend.Writer, l spend.Local, cfg spend.Config) *spend.Accountant {
	t.Helper()
	cfg.Writer, cfg.Local = w, l
	a, err := spend.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func rec(id, key, team, model string, cost float64) *spend.Record {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	return &spend.Record{RequestID: id, KeyHash: key, TeamID: team, UserID: "u", Model: model, Cost: cost,
		Status: "success", HTTPStatus: 200, PromptTokens: 3, CompletionTokens: 4, Start: now, End: now.Add(time.Second)}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []spend.Config{{}, {Writer: newWriter(), Interval: -1}, {Writer: newWriter(), MaxPendingLogs: -1}} {
		if _, err := spend.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestRecordAndFlush(t *testing.T) {
	w, l, obs := newWriter(), newLocal(), &countObserver{}
	a := newAccountant(t, w, l, spend.Config{Observers: []spend.Observer{obs}})
	a.Record(rec("r1", "kb", "t1", "gpt-4o", 0.5))
	a.Record(rec("r2", "ka", "t1", "gpt-4o", 0.25))
	a.Record(rec("r3", "ka", "", "claude", 0.125))
	failed := rec("r4", "ka", "t1", "gpt-4o", 0)
	failed.Status, failed.HTTPStatus = "failure", 500
	a.Record(failed)
	a.Record(rec("r5", "kc", "", "m", math.NaN())) // never a refund or a NaN
	if l.added["ka"] != 0.375 || l.added["kb"] != 0.5 || obs.n != 5 {
		t.Fatalf("local = %v, observer saw %d; want applied at once", l.added, obs.n)
	}
	if len(w.batches) != 0 {
		t.Fatal("Record wrote to the store: requests must make no store query (flushes only)")
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(w.batches) != 1 {
		t.Fatalf("%d batches, want 1", len(w.batches))
	}
	b := w.batches[0]
	if len(b.Keys) != 2 || b.Keys[0].Token != "ka" || b.Keys[1].Token != "kb" {
		t.Fatalf("keys = %+v, want ka, kb in order (kc cost nothing)", b.Keys)
	}
	if b.Keys[0].ModelSpend["gpt-4o"] != 0.25 || b.Keys[0].ModelSpend["claude"] != 0.125 {
		t.Errorf("model spend = %v", b.Keys[0].ModelSpend)
	}
	if w.teams["t1"] != 0.75 || len(b.Users) != 1 || b.Users[0].Spend != 0.875 || len(b.Memberships) != 1 || b.Memberships[0].Spend != 0.75 {
		t.Errorf("roll-ups: teams %v users %+v members %+v", w.teams, b.Users, b.Memberships)
	}
	if len(w.logs) != 5 || w.logs["r4"].Status != "failure" || w.logs["r4"].Spend != 0 || w.logs["r1"].TotalTokens != 7 || w.logs["r1"].RequestDurationMS != 1000 {
		t.Errorf("logs = %+v", w.logs)
	}
	if l.settled["ka"] != 0.375 || l.n["ka"] != 0 || l.stored["ka"] != 0.375 {
		t.Errorf("settled = %v n = %v stored = %v", l.settled, l.n, l.stored)
	}
	if err := a.Flush(t.Context()); err != nil || len(w.batches) != 1 {
		t.Errorf("empty flush: err %v, %d batches", err, len(w.batches))
	}
}

// TestOutageLosesNothing: batches the store refuses are kept and applied
// once it is back, exactly once even when a commit's answer was lost.
func TestOutageLosesNothing(t *testing.T) {
	w, l := newWriter(), newLocal()
	a := newAccountant(t, w, l, spend.Config{MaxPendingLogs: 3})
	a.Record(rec("r1", "k", "", "m", 1))
	w.down = true
	if err := a.Flush(t.Context()); err == nil {
		t.Fatal("Flush with the store down succeeded")
	}
	for i := range 4 {
		a.Record(rec("d"+string(rune('0'+i)), "k", "", "m", 1))
	}
	if usd, n := a.Pending(); usd != 5 || n != 2 { // the failed batch and the new one
		t.Errorf("Pending = %v, %d; want 5, 2", usd, n)
	}
	if err := a.Flush(t.Context()); err == nil {
		t.Fatal("second Flush with the store down succeeded")
	}
	w.down, w.lost = false, true
	if err := a.Flush(t.Context()); err == nil {
		t.Fatal("ambiguous commit reported success")
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if w.spend["k"] != 5 {
		t.Errorf("store spend = %v, want 5", w.spend["k"])
	}
	if l.settled["k"] != 5 || l.n["k"] != 0 {
		t.Errorf("settled %v (n %d), want 5 (0)", l.settled["k"], l.n["k"])
	}
	if len(w.logs) != 4 { // r1 + 3 of 4 (MaxPendingLogs 3): one dropped, counted
		t.Errorf("%d log rows, want 4", len(w.logs))
	}
	if usd, n := a.Pending(); usd != 0 || n != 0 {
		t.Errorf("Pending after recovery = %v, %d", usd, n)
	}
}

// TestConcurrentRecordsLoseNothing: 40 concurrent requests, flushes racing
// them, every cent arrives.
func TestConcurrentRecordsLoseNothing(t *testing.T) {
	w, l := newWriter(), newLocal()
	a := newAccountant(t, w, l, spend.Config{})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.Record(rec(string(rune('A'+i)), "k", "", "m", 0.01))
			if i%7 == 0 {
				_ = a.Flush(context.Background())
			}
		}()
	}
	wg.Wait()
	if err := a.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if math.Abs(w.spend["k"]-0.40) > 1e-12 || len(w.logs) != 40 || l.n["k"] != 0 {
		t.Fatalf("spend %v logs %d unsettled %d; want 0.40, 40, 0", w.spend["k"], len(w.logs), l.n["k"])
	}
}

// TestRunFlushesOnShutdown: cancelling Run flushes what is pending.
func TestRunFlushesOnShutdown(t *testing.T) {
	w := newWriter()
	a := newAccountant(t, w, nil, spend.Config{Interval: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	a.Record(rec("r", "k", "", "m", 2))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w.spend["k"] != 2 {
		t.Fatalf("spend after shutdown = %v, want 2", w.spend["k"])
	}
}

// TestRunFinalFlushGivesUp: a store that never returns fails the final
// flush after the timeout and says so.
func TestRunFinalFlushGivesUp(t *testing.T) {
	w := newWriter()
	w.down = true
	a := newAccountant(t, w, nil, spend.Config{Interval: time.Hour, FlushTimeout: 300 * time.Millisecond})
	a.Record(rec("r", "k", "", "m", 2))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := a.Run(ctx); err == nil {
		t.Fatal("Run returned nil with spend unflushed")
	}
}
