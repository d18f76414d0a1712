package storetest

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// RunSpend runs the metering conformance tests (store.SpendWriter) against
// the backend that open opens; the store must implement SpendWriter.
func RunSpend(t *testing.T, open Opener) {
	t.Helper()
	s := &suite{open: open}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"ApplySpend", s.testApplySpend},
		{"ApplySpendIdempotent", s.testApplySpendIdempotent},
		{"ApplySpendConcurrent", s.testApplySpendConcurrent},
		{"ApplySpendEvents", s.testApplySpendEvents},
		{"SpendLogsFilters", s.testSpendLogsFilters},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}

func spendWriter(t *testing.T, st store.Store) store.SpendWriter {
	t.Helper()
	w, ok := st.(store.SpendWriter)
	if !ok {
		t.Fatalf("%T does not implement store.SpendWriter", st)
	}
	return w
}

func (s *suite) testApplySpend(t *testing.T) {
	st := s.store(t)
	w := spendWriter(t, st)
	ctx := t.Context()
	a, b := token("a1"), token("b1")
	ka := meterKey(a)
	ka.Spend = 1.5
	ka.ModelSpend = map[string]any{"gpt-4o": 1.5, "weird": "x"}
	mustCreate(t, st, ka)
	kb := meterKey(b)
	kb.ModelSpend = nil
	mustCreate(t, st, kb)
	missing := token("c1")

	got, err := w.ApplySpend(ctx, &store.SpendBatch{
		ID: "batch-" + a[:8],
		Keys: sortKeys([]store.KeySpend{
			{Token: a, Spend: 0.25, ModelSpend: map[string]float64{"gpt-4o": 0.2, "claude": 0.05}},
			{Token: b, Spend: 0.125},
			{Token: missing, Spend: 9},
		}),
		Teams: []store.EntitySpend{{ID: "team-none", Spend: 1}},
		Logs:  []store.SpendLog{spendLog("req-"+a[:8], a, 0.25, time.Date(2030, 1, 2, 3, 4, 5, 6e6, time.UTC))},
	})
	if err != nil {
		t.Fatalf("ApplySpend: %v", err)
	}
	if len(got) != 2 || got[a] != 1.75 || got[b] != 0.125 {
		t.Fatalf("ApplySpend returned %v, want %s=1.75 %s=0.125 only", got, keys.Redact(a), keys.Redact(b))
	}
	k := mustGet(t, st, a)
	if k.Spend != 1.75 {
		t.Errorf("spend = %v, want 1.75", k.Spend)
	}
	if v := modelSpend(k.ModelSpend["gpt-4o"]); math.Abs(v-1.7) > 1e-12 {
		t.Errorf("model_spend[gpt-4o] = %v, want 1.7", k.ModelSpend["gpt-4o"])
	}
	if v := modelSpend(k.ModelSpend["claude"]); v != 0.05 {
		t.Errorf("model_spend[claude] = %v, want 0.05", k.ModelSpend["claude"])
	}
	if k.ModelSpend["weird"] != "x" {
		t.Errorf("model_spend[weird] = %v, want untouched \"x\"", k.ModelSpend["weird"])
	}
	logs, err := w.SpendLogs(ctx, store.SpendLogQuery{RequestID: "req-" + a[:8]})
	if err != nil || len(logs) != 1 {
		t.Fatalf("SpendLogs = %v, %v; want one row", logs, err)
	}
	want := spendLog("req-"+a[:8], a, 0.25, time.Date(2030, 1, 2, 3, 4, 5, 6e6, time.UTC))
	l := logs[0]
	if l.APIKey != want.APIKey || l.Spend != want.Spend || l.Model != want.Model || l.PromptTokens != 10 ||
		l.CompletionTokens != 5 || l.TotalTokens != 15 || !l.StartTime.Equal(want.StartTime) ||
		!l.EndTime.Equal(want.EndTime) || l.TeamID != "team-1" || l.User != "user-1" || l.Status != "success" ||
		l.CallType != "acompletion" || l.RequestDurationMS != 1500 || l.Metadata["user_api_key_alias"] != "alias" {
		t.Errorf("spend log = %+v, want %+v", l, want)
	}
}

func (s *suite) testApplySpendIdempotent(t *testing.T) {
	st := s.store(t)
	w := spendWriter(t, st)
	a := token("a2")
	mustCreate(t, st, meterKey(a))
	b := &store.SpendBatch{ID: "dup-" + a[:8], Keys: []store.KeySpend{{Token: a, Spend: 1}},
		Logs: []store.SpendLog{spendLog("dup-"+a[:8], a, 1, time.Now())}}
	for i := range 3 {
		got, err := w.ApplySpend(t.Context(), b)
		if err != nil {
			t.Fatalf("ApplySpend #%d: %v", i, err)
		}
		if got[a] != 1 {
			t.Fatalf("ApplySpend #%d returned spend %v, want 1 (applied once)", i, got[a])
		}
	}
	// A new batch id repeating a logged request_id adds the spend but
	// not a second log row.
	b2 := &store.SpendBatch{ID: "dup2-" + a[:8], Keys: []store.KeySpend{{Token: a, Spend: 1}}, Logs: b.Logs}
	if _, err := w.ApplySpend(t.Context(), b2); err != nil {
		t.Fatal(err)
	}
	if k := mustGet(t, st, a); k.Spend != 2 {
		t.Errorf("spend = %v, want 2", k.Spend)
	}
	logs, err := w.SpendLogs(t.Context(), store.SpendLogQuery{APIKey: a})
	if err != nil || len(logs) != 1 {
		t.Errorf("SpendLogs = %d rows, %v; want 1", len(logs), err)
	}
}

func (s *suite) testApplySpendConcurrent(t *testing.T) {
	st := s.store(t)
	w := spendWriter(t, st)
	a, b := token("a3"), token("b3")
	mustCreate(t, st, meterKey(a))
	mustCreate(t, st, meterKey(b))
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := w.ApplySpend(t.Context(), &store.SpendBatch{ID: fmt.Sprintf("c-%s-%d", a[:8], i),
				Keys: sortKeys([]store.KeySpend{{Token: a, Spend: 0.01, ModelSpend: map[string]float64{"m": 0.01}}, {Token: b, Spend: 0.02}})})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("ApplySpend: %v", err)
		}
	}
	if k := mustGet(t, st, a); math.Abs(k.Spend-n*0.01) > 1e-9 {
		t.Errorf("spend a = %v, want %v", k.Spend, n*0.01)
	} else if v := modelSpend(k.ModelSpend["m"]); math.Abs(v-n*0.01) > 1e-9 {
		t.Errorf("model_spend a = %v, want %v", v, n*0.01)
	}
	if k := mustGet(t, st, b); math.Abs(k.Spend-n*0.02) > 1e-9 {
		t.Errorf("spend b = %v, want %v", k.Spend, n*0.02)
	}
}

// testApplySpendEvents: the change feed reports a metered update as
// spend-only (model_spend changes too), with the new spend.
func (s *suite) testApplySpendEvents(t *testing.T) {
	st := s.store(t)
	w := spendWriter(t, st)
	a := token("a4")
	evs := make(chan store.Event, 64)
	unsub := st.Subscribe(func(e store.Event) {
		if e.Token == a {
			evs <- e
		}
	})
	defer unsub()
	mustCreate(t, st, meterKey(a))
	next := func() store.Event {
		t.Helper()
		select {
		case e := <-evs:
			return e
		case <-time.After(EventTimeout):
			t.Fatal("no event")
		}
		return store.Event{}
	}
	if e := next(); e.Kind != store.EventChanged { // the INSERT
		t.Fatalf("after Create: event %+v, want EventChanged", e)
	}
	if _, err := w.ApplySpend(t.Context(), &store.SpendBatch{ID: "ev-" + a[:8],
		Keys: []store.KeySpend{{Token: a, Spend: 0.5, ModelSpend: map[string]float64{"gpt-4o": 0.5}}}}); err != nil {
		t.Fatal(err)
	}
	if e := next(); e.Kind != store.EventSpend || e.Spend != 0.5 {
		t.Fatalf("after ApplySpend: event %+v, want EventSpend with spend 0.5", e)
	}
}

func (s *suite) testSpendLogsFilters(t *testing.T) {
	st := s.store(t)
	w := spendWriter(t, st)
	a, b := token("a5"), token("b5")
	base := time.Date(2030, 5, 1, 0, 0, 0, 0, time.UTC)
	var logs []store.SpendLog
	for i := range 4 {
		tok := a
		if i%2 == 1 {
			tok = b
		}
		logs = append(logs, spendLog(fmt.Sprintf("f-%s-%d", a[:8], i), tok, float64(i), base.Add(time.Duration(i)*time.Hour)))
	}
	if _, err := w.ApplySpend(t.Context(), &store.SpendBatch{ID: "f-" + a[:8], Logs: logs}); err != nil {
		t.Fatal(err)
	}
	ids := func(ls []store.SpendLog) []string {
		var out []string
		for _, l := range ls {
			out = append(out, l.RequestID)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		q    store.SpendLogQuery
		want []string
	}{
		{"api_key", store.SpendLogQuery{APIKey: a}, []string{logs[2].RequestID, logs[0].RequestID}},
		{"request_id", store.SpendLogQuery{RequestID: logs[3].RequestID}, []string{logs[3].RequestID}},
		{"range", store.SpendLogQuery{APIKey: b, Start: base.Add(time.Hour), End: base.Add(3 * time.Hour)}, []string{logs[1].RequestID}},
		{"start only", store.SpendLogQuery{Start: base.Add(3 * time.Hour), APIKey: b}, []string{logs[3].RequestID}},
		{"limit", store.SpendLogQuery{APIKey: a, Limit: 1}, []string{logs[2].RequestID}},
		{"none", store.SpendLogQuery{RequestID: "nope"}, nil},
	} {
		got, err := w.SpendLogs(t.Context(), tc.q)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if g := ids(got); fmt.Sprint(g) != fmt.Sprint(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, g, tc.want)
		}
	}
}

func spendLog(id, tok string, spend float64, start time.Time) store.SpendLog {
	return store.SpendLog{RequestID: id, CallType: "acompletion", APIKey: tok, Spend: spend, TotalTokens: 15,
		PromptTokens: 10, CompletionTokens: 5, StartTime: start, EndTime: start.Add(1500 * time.Millisecond),
		Model: "gpt-4o", User: "user-1", TeamID: "team-1", Status: "success", RequestDurationMS: 1500,
		Metadata: map[string]any{"user_api_key_alias": "alias"}}
}

func sortKeys(ks []store.KeySpend) []store.KeySpend {
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && ks[j].Token < ks[j-1].Token; j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
	return ks
}

// meterKey is a full key with no spend yet and no alias.
func meterKey(tok string) *keys.Key {
	k := fullKey(tok)
	k.Spend, k.KeyAlias, k.ModelSpend = 0, nil, map[string]any{}
	return k
}

// modelSpend reads a model_spend value (json.Number or float64).
func modelSpend(v any) float64 {
	f, _ := keys.Number(v)
	return f
}
