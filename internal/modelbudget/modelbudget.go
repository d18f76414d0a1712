// Package modelbudget enforces a key's model_max_budget as LiteLLM's
// _PROXY_VirtualKeyModelMaxBudgetLimiter does: a budget per key and model
// over a time period, {"<model>": {"budget_limit": USD, "time_period": "1d"}}.
//
// Window semantics (LiteLLM's): a key-model window opens at the first
// request charged to it and lasts its period; a request charged after the
// window ended opens a new one with that request's cost. A read after the
// end sees 0. The window is per (key, budget model, period): the budget
// model is the name as configured (the request's model, else the model
// without its "provider/" prefix), so "gpt-4o" governs "openai/gpt-4o".
//
// The spend is this replica's: a Tracker is fed by the spend accountant
// (spend.Observer) with every request this replica metered, like LiteLLM's
// in-memory counter when it runs without Redis. With N replicas a key can
// spend up to N times budget_limit per period (plus what is in flight);
// see docs/metering.md.
package modelbudget

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/spend"
)

// Limit is one usable model_max_budget entry.
type Limit struct {
	Model  string  // the budget model, as configured
	Max    float64 // budget_limit (USD), >= 0
	Period string  // time_period as configured, e.g. "1d"
	period keys.Duration
}

// Parse reads a key's model_max_budget. Entries LiteLLM cannot enforce are
// left out as LiteLLM skips them: not an object, no or an unparseable
// time_period (budget_duration), no budget_limit (max_budget) or a
// negative one.
func Parse(m map[string]any) []Limit {
	var out []Limit
	for model, v := range m {
		o, ok := v.(map[string]any)
		if !ok {
			continue
		}
		max, ok := keys.Number(first(o, "budget_limit", "max_budget"))
		if !ok || max < 0 || math.IsNaN(max) {
			continue
		}
		p, _ := first(o, "time_period", "budget_duration").(string)
		d, err := keys.ParseDuration(p)
		if err != nil {
			continue
		}
		out = append(out, Limit{Model: model, Max: max, Period: p, period: d})
	}
	return out
}

func first(o map[string]any, names ...string) any {
	for _, n := range names {
		if v, ok := o[n]; ok && v != nil {
			return v
		}
	}
	return nil
}

// Resolve returns the limit governing a request for model: the entry named
// model, else the one named model's last "/" segment; nil if none.
func Resolve(limits []Limit, model string) *Limit {
	if model == "" {
		return nil
	}
	for i := range limits {
		if limits[i].Model == model {
			return &limits[i]
		}
	}
	if j := strings.LastIndexByte(model, '/'); j >= 0 {
		bare := model[j+1:]
		for i := range limits {
			if limits[i].Model == bare {
				return &limits[i]
			}
		}
	}
	return nil
}

// Keys gives the Tracker the model budgets of a key by hash (lowercase
// hex), without loading it: *cache.Cache's ModelBudgets. nil = not known.
type Keys interface {
	ModelBudgets(hash string) []Limit
}

type counterKey struct{ hash, model, period string }

// window is immutable: a charge replaces it.
type window struct {
	end   time.Time
	spend float64
}

type counter struct{ w atomic.Pointer[window] }

// Tracker keeps the per key-model-period spend windows. Reads (the Check)
// take no lock and allocate nothing; charges (the metering path) take a
// mutex. Create it with NewTracker.
type Tracker struct {
	keys Keys
	now  func() time.Time

	m  atomic.Pointer[map[counterKey]*counter] // copy on insert
	mu sync.Mutex
}

// NewTracker builds a Tracker reading budgets from k; now nil = time.Now.
func NewTracker(k Keys, now func() time.Time) *Tracker {
	if now == nil {
		now = time.Now
	}
	t := &Tracker{keys: k, now: now}
	t.m.Store(&map[counterKey]*counter{})
	return t
}

// Spend is the key's spend on l's budget model in the current window.
func (t *Tracker) Spend(hash string, l *Limit, now time.Time) float64 {
	c := (*t.m.Load())[counterKey{hash, l.Model, l.Period}]
	if c == nil {
		return 0
	}
	w := c.w.Load()
	if w == nil || !now.Before(w.end) {
		return 0
	}
	return w.spend
}

// Spent implements spend.Observer: it charges the request's cost to the
// key's window for the request's model, if the key budgets that model.
func (t *Tracker) Spent(r *spend.Record) {
	if r.KeyHash == "" || r.Cost <= 0 || math.IsNaN(r.Cost) || math.IsInf(r.Cost, 0) {
		return
	}
	l := Resolve(t.keys.ModelBudgets(r.KeyHash), r.Model)
	if l == nil {
		return
	}
	t.charge(r.KeyHash, l, r.Cost, t.now())
}

func (t *Tracker) charge(hash string, l *Limit, cost float64, now time.Time) {
	k := counterKey{hash, l.Model, l.Period}
	t.mu.Lock()
	defer t.mu.Unlock()
	c := (*t.m.Load())[k]
	if c == nil {
		old := *t.m.Load()
		next := make(map[counterKey]*counter, len(old)+1)
		for ok, oc := range old {
			if w := oc.w.Load(); w != nil && now.Before(w.end) { // ended windows read as 0: drop them
				next[ok] = oc
			}
		}
		c = &counter{}
		next[k] = c
		t.m.Store(&next)
	}
	w := c.w.Load()
	if w == nil || !now.Before(w.end) {
		c.w.Store(&window{end: l.period.AddTo(now), spend: cost}) // a new window opens with this request
		return
	}
	c.w.Store(&window{end: w.end, spend: w.spend + cost})
}
