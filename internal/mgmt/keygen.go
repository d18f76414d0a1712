package mgmt

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	perm "github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/keygen"
)

// TeamFinder returns the team a team key is generated for, for the
// key-generation rules: (nil, nil) when no such team exists.
type TeamFinder func(ctx context.Context, teamID string) (*perm.Team, error)

// callerRole is the caller's user_role as LiteLLM's UserAPIKeyAuth carries
// it: the master key is a proxy admin.
func callerRole(c *caller) keygen.Caller {
	if c.admin {
		return keygen.Caller{Role: perm.RoleProxyAdmin, UserID: c.userID()}
	}
	return keygen.Caller{Role: c.acc.Role, UserID: c.userID()}
}

// applyKeyGenRules runs LiteLLM's key-generation rules on a /key/generate
// body, in generate_key_fn's order: key_generation_check, then
// default_key_generate_params, then upperbound_key_generate_params. f is
// updated with the defaults and bounds that apply.
func (a *API) applyKeyGenRules(r *http.Request, c *caller, f *keyFields) error {
	s := a.keyGen // nil: LiteLLM's defaults (team members admin or user; no bounds)
	req := keygen.Request{Present: map[string]bool{}}
	for _, nf := range f.list() {
		if isSet(nf.d) {
			req.Present[nf.name] = true
		}
	}
	if f.TeamID.ok() {
		req.TeamID = &f.TeamID.V
	}
	if f.UserID.ok() {
		req.UserID = &f.UserID.V
	}
	// Without a team table (teams is nil) a team_id is a label: LiteLLM's
	// "team_id without using the team table" case, whose rules are skipped.
	if req.TeamID == nil || a.teams != nil {
		var team *perm.Team
		if req.TeamID != nil {
			t, err := a.teams(r.Context(), *req.TeamID)
			if err != nil {
				return fmt.Errorf("key generation: find team: %w", err)
			}
			team = t
		}
		if err := s.Check(callerRole(c), req, team); err != nil {
			return err
		}
	}
	if a.roles(c) { // common_key_access_checks
		if err := perm.KeyRequest(c.acc, req.UserID, req.TeamID); err != nil {
			return err
		}
	}

	kf := keygen.Fields{
		MaxBudget: optPtr(&f.MaxBudget), UserID: optPtr(&f.UserID), TeamID: optPtr(&f.TeamID),
		MaxParallelRequests: optPtr(&f.MaxParallelRequests), TPMLimit: optPtr(&f.TPMLimit), RPMLimit: optPtr(&f.RPMLimit),
		BudgetDuration: optPtr(&f.BudgetDuration), Duration: optPtr(&f.Duration),
		Models: f.Models.V, Metadata: f.Metadata.V,
	}
	s.ApplyDefaults(&kf)
	if err := s.ApplyUpperbound(&kf, a.clock()); err != nil {
		return err
	}
	setOpt(&f.MaxBudget, kf.MaxBudget)
	setOpt(&f.UserID, kf.UserID)
	setOpt(&f.TeamID, kf.TeamID)
	setOpt(&f.MaxParallelRequests, kf.MaxParallelRequests)
	setOpt(&f.TPMLimit, kf.TPMLimit)
	setOpt(&f.RPMLimit, kf.RPMLimit)
	setOpt(&f.BudgetDuration, kf.BudgetDuration)
	setOpt(&f.Duration, kf.Duration)
	if len(f.Models.V) == 0 && len(kf.Models) > 0 {
		setOpt(&f.Models, &kf.Models)
	}
	if len(f.Metadata.V) == 0 && len(kf.Metadata) > 0 {
		setOpt(&f.Metadata, &kf.Metadata)
	}
	return nil
}

// isSet reports whether a decoded field was present in the body.
func isSet(d decoder) bool {
	s, ok := d.(interface{ present() bool })
	return ok && s.present()
}

func (o *opt[T]) present() bool { return o.Set }

// optPtr is the field's value, nil when absent or null (Python's None).
func optPtr[T any](o *opt[T]) *T {
	if !o.ok() {
		return nil
	}
	v := o.V
	return &v
}

// setOpt gives an absent or null field the value v (nil: unchanged).
func setOpt[T any](o *opt[T], v *T) {
	if v == nil || o.ok() {
		return
	}
	raw, _ := json.Marshal(*v) // config values: cannot fail
	*o = opt[T]{Set: true, V: *v, raw: raw}
}
