package authz

import (
	"math"
	"net/http"
	"time"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/modelbudget"
)

// ModelSpend reads a key's spend in the current window of one of its
// model_max_budget entries (*modelbudget.Tracker). It must not allocate or
// block: the Check calls it on every request of a key with model budgets.
type ModelSpend interface {
	Spend(hash string, l *modelbudget.Limit, now time.Time) float64
}

type noModelSpend struct{}

func (noModelSpend) Spend(string, *modelbudget.Limit, time.Time) float64 { return 0 }

// modelBudgetExceeded is LiteLLM's model_max_budget step (after the key's
// max_budget): the key's spend on the requested model (as its body names
// it: LiteLLM's request_data["model"]) in the current window has reached
// the entry's budget_limit. No model, or a model without an entry: passes.
func (a *Authorizer) modelBudgetExceeded(e *cache.Entry, model string, now time.Time) bool {
	l := modelbudget.Resolve(e.ModelBudgets, model)
	if l == nil {
		return false
	}
	s := a.modelSpend.Spend(e.Key.Token, l, now)
	return s >= l.Max || math.IsNaN(s)
}

// errModelBudget is LiteLLM's BudgetExceededError for a key's model budget:
// 400 budget_exceeded with the limiter's own message (the key's hash,
// its alias or None, the model as requested).
func errModelBudget(e *cache.Entry, model string) *apierr.Error {
	alias := "None"
	if e.Key.KeyAlias != nil {
		alias = *e.Key.KeyAlias
	}
	return apierr.New(http.StatusBadRequest, apierr.TypeBudgetExceeded, "",
		"LiteLLM Virtual Key: "+e.Key.Token+", key_alias: "+alias+", exceeded budget for model="+model)
}
