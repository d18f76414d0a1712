package modelbudget_test

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/virtualkeys/sidecar/internal/modelbudget"
	"github.com/virtualkeys/sidecar/internal/spend"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // "model max period"
	}{
		{"litellm spelling", `{"gpt-4o": {"budget_limit": 10, "time_period": "1d"}}`, []string{"gpt-4o 10 1d"}},
		{"budget table spelling", `{"gpt-4o": {"max_budget": 0.5, "budget_duration": "30m"}}`, []string{"gpt-4o 0.5 30m"}},
		{"zero limit enforced", `{"m": {"budget_limit": 0, "time_period": "1mo"}}`, []string{"m 0 1mo"}},
		{"no period: ignored", `{"m": {"budget_limit": 1}}`, nil},
		{"bad period: ignored", `{"m": {"budget_limit": 1, "time_period": "soon"}}`, nil},
		{"no limit: not enforced", `{"m": {"time_period": "1d"}}`, nil},
		{"null limit: not enforced", `{"m": {"budget_limit": null, "time_period": "1d"}}`, nil},
		{"negative limit: not enforced", `{"m": {"budget_limit": -1, "time_period": "1d"}}`, nil},
		{"string limit: ignored", `{"m": {"budget_limit": "1", "time_period": "1d"}}`, nil},
		{"not an object", `{"m": 5, "n": [1]}`, nil},
		{"one good one bad", `{"a": {"budget_limit": 1, "time_period": "1h"}, "b": {"budget_limit": 1}}`, []string{"a 1 1h"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := json.NewDecoder(strings.NewReader(tt.in))
			d.UseNumber()
			var m map[string]any
			if err := d.Decode(&m); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range modelbudget.Parse(m) {
				b, _ := json.Marshal(l.Max)
				got = append(got, l.Model+" "+string(b)+" "+l.Period)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	ls := modelbudget.Parse(map[string]any{
		"gpt-4o":        map[string]any{"budget_limit": 1.0, "time_period": "1d"},
		"openai/gpt-4o": map[string]any{"budget_limit": 2.0, "time_period": "1d"},
		"claude":        map[string]any{"budget_limit": 3.0, "time_period": "1d"},
	})
	for _, tt := range []struct{ model, want string }{
		{"gpt-4o", "gpt-4o"},
		{"openai/gpt-4o", "openai/gpt-4o"}, // exact first
		{"azure/gpt-4o", "gpt-4o"},         // then the bare name
		{"bedrock/x/claude", "claude"},
		{"gpt-4o-mini", ""},
		{"", ""},
	} {
		got := ""
		if l := modelbudget.Resolve(ls, tt.model); l != nil {
			got = l.Model
		}
		if got != tt.want {
			t.Errorf("Resolve(%q) = %q, want %q", tt.model, got, tt.want)
		}
	}
}

type fixedKeys []modelbudget.Limit

func (f fixedKeys) ModelBudgets(string) []modelbudget.Limit { return f }

// TestWindow: LiteLLM's window opens at the first charge, sums charges
// until start+period, reads 0 from then on, and the next charge opens a
// new window (synctest's clock).
func TestWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ls := modelbudget.Parse(map[string]any{"gpt-4o": map[string]any{"budget_limit": 1.0, "time_period": "1h"},
			"m": map[string]any{"budget_limit": 1.0, "time_period": "1mo"}})
		tr := modelbudget.NewTracker(fixedKeys(ls), nil)
		l := modelbudget.Resolve(ls, "gpt-4o")
		rec := func(model string, c float64) { tr.Spent(&spend.Record{KeyHash: "k", Model: model, Cost: c}) }
		spent := func() float64 { return tr.Spend("k", l, time.Now()) }

		if s := spent(); s != 0 {
			t.Fatalf("before any charge: %v", s)
		}
		rec("gpt-4o", 0.25)
		time.Sleep(30 * time.Minute)
		rec("openai/gpt-4o", 0.5)
		rec("other", 9)   // no budget: not counted
		rec("gpt-4o", -3) // never a refund
		if s := spent(); s != 0.75 {
			t.Fatalf("in the window: %v, want 0.75", s)
		}
		if s := tr.Spend("other-key", l, time.Now()); s != 0 {
			t.Fatalf("another key: %v", s)
		}
		time.Sleep(30*time.Minute - time.Nanosecond)
		if s := spent(); s != 0.75 {
			t.Fatalf("just before the end: %v", s)
		}
		time.Sleep(time.Nanosecond)
		if s := spent(); s != 0 {
			t.Fatalf("at the end: %v, want 0", s)
		}
		time.Sleep(10 * time.Minute)
		rec("gpt-4o", 0.125) // opens a new window now
		time.Sleep(59 * time.Minute)
		if s := spent(); s != 0.125 {
			t.Fatalf("new window: %v, want 0.125", s)
		}
		time.Sleep(time.Minute)
		if s := spent(); s != 0 {
			t.Fatalf("new window ended: %v", s)
		}
		// Months are calendar months (time.AddDate).
		lm := modelbudget.Resolve(ls, "m")
		rec("m", 1)
		if s := tr.Spend("k", lm, time.Now().AddDate(0, 0, 27)); s != 1 {
			t.Fatalf("month window: %v", s)
		}
		if s := tr.Spend("k", lm, time.Now().AddDate(0, 1, 0)); s != 0 {
			t.Fatalf("month window ended: %v", s)
		}
	})
}

// TestConcurrentCharges loses no charge (go test -race).
func TestConcurrentCharges(t *testing.T) {
	ls := modelbudget.Parse(map[string]any{"gpt-4o": map[string]any{"budget_limit": 1000.0, "time_period": "1d"}})
	tr := modelbudget.NewTracker(fixedKeys(ls), nil)
	l := &ls[0]
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				key := "k"
				if i%2 == 1 {
					key = "k" + string(rune('a'+g))
				}
				tr.Spent(&spend.Record{KeyHash: key, Model: "gpt-4o", Cost: 0.5})
				_ = tr.Spend("k", l, time.Now())
			}
		})
	}
	wg.Wait()
	if s := tr.Spend("k", l, time.Now()); s != 8*100*0.5 {
		t.Fatalf("spend %v, want %v", s, 8*100*0.5)
	}
}

// FuzzParse: any model_max_budget JSON parses without panicking, and every
// limit kept is enforceable (a number >= 0 and a period).
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"gpt-4o": {"budget_limit": 10, "time_period": "1d"}}`, `{"m": {"max_budget": 0, "budget_duration": "1mo"}}`,
		`{"m": {"budget_limit": 1e400, "time_period": "9999999d"}}`, `{"m": null}`, `{}`} {
		f.Add(s, "openai/m")
	}
	f.Fuzz(func(t *testing.T, in, model string) {
		d := json.NewDecoder(strings.NewReader(in))
		d.UseNumber()
		var m map[string]any
		if d.Decode(&m) != nil {
			return
		}
		ls := modelbudget.Parse(m)
		for _, l := range ls {
			if !(l.Max >= 0) || l.Period == "" {
				t.Fatalf("unenforceable limit kept: %+v", l)
			}
		}
		modelbudget.Resolve(ls, model)
	})
}
