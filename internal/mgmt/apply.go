package mgmt

import (
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// metadataFields are request fields LiteLLM keeps inside the key's metadata
// under their own names (soft_budget too: it has no column in the key table).
var metadataFields = []string{
	"model_rpm_limit", "model_tpm_limit", "tpm_limit_type", "rpm_limit_type", "guardrails", "tags",
	"enforced_params", "temp_budget_increase", "temp_budget_expiry", "soft_budget",
}

// plan is a validated change: the parsed durations, ready to apply to a row.
type plan struct {
	f *keyFields
	// expires is set when duration is present: nil means never.
	expiresSet bool
	expires    *keys.Duration
	// budget is set when budget_duration is present: nil means no reset.
	budgetSet bool
	budget    *keys.Duration
	grace     *keys.Duration
}

// validate checks f against the domain rules shared by generate, update and
// regenerate, and parses its durations.
func validate(f *keyFields) (*plan, error) {
	p := &plan{f: f}
	if f.MaxBudget.ok() && f.MaxBudget.V < 0 {
		return nil, badRequest("max_budget", "max_budget cannot be negative. Received: "+numberText(f.MaxBudget.raw))
	}
	if f.SoftBudget.ok() && f.SoftBudget.V < 0 {
		return nil, badRequest("soft_budget", "max_budget cannot be negative. Received: "+numberText(f.SoftBudget.raw))
	}
	for _, n := range []struct {
		name string
		o    *opt[int64]
	}{{"max_parallel_requests", &f.MaxParallelRequests}, {"tpm_limit", &f.TPMLimit}, {"rpm_limit", &f.RPMLimit}} {
		if n.o.ok() && n.o.V < 0 {
			return nil, badRequest(n.name, fmt.Sprintf("%s cannot be negative. Received: %d", n.name, n.o.V))
		}
	}
	// LiteLLM's column is a Postgres integer (int4); tpm_limit and
	// rpm_limit are bigint, which every int64 fits.
	if f.MaxParallelRequests.ok() && f.MaxParallelRequests.V > keys.MaxInt4 {
		return nil, badRequest("max_parallel_requests", fmt.Sprintf("max_parallel_requests must be at most %d. Received: %d", keys.MaxInt4, f.MaxParallelRequests.V))
	}
	if f.Duration.Set {
		p.expiresSet = true
		if f.Duration.ok() && f.Duration.V != "-1" {
			d, err := keys.ParseDuration(f.Duration.V)
			if err == nil && tooFar(d) {
				return nil, badRequest("duration", fmt.Sprintf("Invalid duration %q: it ends after the year 9999", f.Duration.V))
			}
			if err != nil {
				return nil, badRequest("duration", fmt.Sprintf("Invalid duration %q: expected <int> followed by s, m, h, d, w or mo (e.g. 30d)", f.Duration.V))
			}
			p.expires = &d
		}
	}
	if f.BudgetDuration.Set {
		p.budgetSet = true
		if f.BudgetDuration.ok() {
			d, err := keys.ParseDuration(f.BudgetDuration.V)
			if err == nil && tooFar(d) {
				return nil, badRequest("budget_duration", fmt.Sprintf("Invalid budget_duration %q: it ends after the year 9999", f.BudgetDuration.V))
			}
			if err != nil {
				return nil, badRequest("budget_duration", fmt.Sprintf("Invalid budget_duration %q: expected <int> followed by s, m, h, d, w or mo (e.g. 30d)", f.BudgetDuration.V))
			}
			p.budget = &d
		}
	}
	if f.GracePeriod.ok() {
		d, err := keys.ParseDuration(f.GracePeriod.V)
		if err == nil && tooFar(d) {
			return nil, badRequest("grace_period", fmt.Sprintf("Invalid grace_period %q: it ends after the year 9999", f.GracePeriod.V))
		}
		if err != nil {
			return nil, badRequest("grace_period", fmt.Sprintf("Invalid grace_period %q: expected <int> followed by s, m, h, d, w or mo (e.g. 24h)", f.GracePeriod.V))
		}
		p.grace = &d
	}
	if f.TempBudgetExpiry.ok() {
		if _, err := parseTime(f.TempBudgetExpiry.V); err != nil {
			return nil, badRequest("temp_budget_expiry", fmt.Sprintf("Invalid temp_budget_expiry %q: expected an ISO 8601 time", f.TempBudgetExpiry.V))
		}
	}
	if f.NewKey.ok() && !strings.HasPrefix(f.NewKey.V, keys.Prefix) {
		return nil, badRequest("new_key", "New key must start with 'sk-'. This is to distinguish a virtual key from a hashed key.")
	}
	return p, nil
}

// tooFar reports whether d, from now, lands past what JSON and the stores
// can hold (RFC 3339 years end at 9999).
func tooFar(d keys.Duration) bool {
	limit := time.Now().AddDate(100, 0, 0) // margin for a clock that runs ahead
	return d.AddTo(limit).Year() > 9999 || d.NextReset(limit).Year() > 9999
}

// parseTime reads an ISO 8601 time, with or without a zone (UTC assumed).
func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("parse time %q: not ISO 8601", s)
}

// apply writes the present fields of p onto k. now is the request time.
// Only present fields change; an explicit null sets the column to NULL (or
// the empty value for non-nullable array/object columns).
func (p *plan) apply(k *keys.Key, now time.Time) {
	f := p.f
	setStr(&k.KeyAlias, &f.KeyAlias)
	setStr(&k.UserID, &f.UserID)
	setStr(&k.TeamID, &f.TeamID)
	setStr(&k.OrganizationID, &f.OrganizationID)
	setStr(&k.BudgetID, &f.BudgetID)
	setList(&k.Models, &f.Models)
	setList(&k.AllowedCacheControls, &f.AllowedCacheControls)
	setList(&k.AllowedRoutes, &f.AllowedRoutes)
	setMap(&k.Aliases, &f.Aliases)
	setMap(&k.Config, &f.Config)
	setMap(&k.Permissions, &f.Permissions)
	setMap(&k.ModelMaxBudget, &f.ModelMaxBudget)
	setPtr(&k.MaxBudget, &f.MaxBudget)
	setPtr(&k.MaxParallelRequests, &f.MaxParallelRequests)
	setPtr(&k.TPMLimit, &f.TPMLimit)
	setPtr(&k.RPMLimit, &f.RPMLimit)
	setPtr(&k.Blocked, &f.Blocked)
	if f.Spend.ok() {
		k.Spend = f.Spend.V
	}
	if p.expiresSet {
		k.Expires = nil
		if p.expires != nil {
			t := p.expires.AddTo(now)
			k.Expires = &t
		}
	}
	if p.budgetSet {
		k.BudgetDuration, k.BudgetResetAt = nil, nil
		if p.budget != nil {
			s := f.BudgetDuration.V
			t := p.budget.NextReset(now)
			k.BudgetDuration, k.BudgetResetAt = &s, &t
		}
	}

	// metadata: given = replaces the whole object; then the metadata-bound
	// fields are merged in (explicit null removes one).
	md := map[string]any{}
	if f.Metadata.Set {
		if f.Metadata.ok() {
			maps.Copy(md, f.Metadata.V)
		}
	} else {
		maps.Copy(md, k.Metadata)
	}
	for _, n := range []struct {
		name string
		set  bool
		null bool
		v    any
	}{
		{"model_rpm_limit", f.ModelRPMLimit.Set, f.ModelRPMLimit.Null, f.ModelRPMLimit.V},
		{"model_tpm_limit", f.ModelTPMLimit.Set, f.ModelTPMLimit.Null, f.ModelTPMLimit.V},
		{"tpm_limit_type", f.TPMLimitType.Set, f.TPMLimitType.Null, f.TPMLimitType.V},
		{"rpm_limit_type", f.RPMLimitType.Set, f.RPMLimitType.Null, f.RPMLimitType.V},
		{"guardrails", f.Guardrails.Set, f.Guardrails.Null, nonNilList(f.Guardrails.V)},
		{"tags", f.Tags.Set, f.Tags.Null, nonNilList(f.Tags.V)},
		{"enforced_params", f.EnforcedParams.Set, f.EnforcedParams.Null, nonNilList(f.EnforcedParams.V)},
		{"temp_budget_increase", f.TempBudgetIncrease.Set, f.TempBudgetIncrease.Null, f.TempBudgetIncrease.V},
		{"temp_budget_expiry", f.TempBudgetExpiry.Set, f.TempBudgetExpiry.Null, f.TempBudgetExpiry.V},
		{"soft_budget", f.SoftBudget.Set, f.SoftBudget.Null, f.SoftBudget.V},
	} {
		switch {
		case !n.set:
		case n.null:
			delete(md, n.name)
		default:
			md[n.name] = n.v
		}
	}
	k.Metadata = md
}

func setStr(dst **string, o *opt[string]) {
	if !o.Set {
		return
	}
	if o.Null {
		*dst = nil
		return
	}
	v := o.V
	*dst = &v
}

func setPtr[T any](dst **T, o *opt[T]) {
	if !o.Set {
		return
	}
	if o.Null {
		*dst = nil
		return
	}
	v := o.V
	*dst = &v
}

func setList(dst *[]string, o *opt[[]string]) {
	if o.Set {
		*dst = nonNilList(o.V) // null -> empty list
	}
}

func setMap(dst *map[string]any, o *opt[map[string]any]) {
	if !o.Set {
		return
	}
	if o.V == nil {
		*dst = map[string]any{}
		return
	}
	*dst = o.V
}

func nonNilList(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}
