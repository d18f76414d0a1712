package mgmt

import (
	"context"
	"errors"
	"fmt"
	"time"

	perm "github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/keygen"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// teamKeyRules applies LiteLLM's rules for a key of a team to a key about
// to be written (internal/keygen's TeamModels, TeamChange and
// TeamAllocation): next is the key as it will be stored, before the stored
// row (nil on /key/generate), f the request. A team_id without a team row
// is a label, as elsewhere: no rule applies.
func (a *API) teamKeyRules(ctx context.Context, c *caller, f *keyFields, before, next *keys.Key) error {
	if a.org == nil || next.TeamID == nil || *next.TeamID == "" {
		return nil
	}
	moved := before != nil && (before.TeamID == nil || *before.TeamID != *next.TeamID)
	tk := keygen.TeamKey{
		Token: next.Token, Models: next.Models,
		TPMLimit: optPtr(&f.TPMLimit), RPMLimit: optPtr(&f.RPMLimit),
		ModelTPMLimit: keygen.ModelLimits(f.ModelTPMLimit.V), ModelRPMLimit: keygen.ModelLimits(f.ModelRPMLimit.V),
		GuaranteedTPM: f.TPMLimitType.ok() && f.TPMLimitType.V == keygen.GuaranteedThroughput,
		GuaranteedRPM: f.RPMLimitType.ok() && f.RPMLimitType.V == keygen.GuaranteedThroughput,
	}
	if next.UserID != nil {
		tk.UserID = *next.UserID
	}
	// LiteLLM checks allocations when the request names the team (generate,
	// or an update with team_id) and the fit of a key moved to a team.
	allocate := (tk.GuaranteedTPM || tk.GuaranteedRPM) && (before == nil || f.TeamID.ok())
	if before != nil && !moved && !allocate {
		return nil
	}
	t, err := a.org.GetTeam(ctx, *next.TeamID)
	if errors.Is(err, keys.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("key's team: %w", err)
	}
	switch {
	case before == nil:
		if err := keygen.TeamModels(t, a.groups, next.Models); err != nil {
			return err
		}
	case moved:
		// the key's limits as they will be, not only the request's
		fit := tk
		fit.TPMLimit, fit.RPMLimit = next.TPMLimit, next.RPMLimit
		if err := keygen.TeamChange(t, a.groups, fit, a.accessCaller(c)); err != nil {
			return err
		}
	}
	if !allocate {
		return nil
	}
	others, err := a.listAll(ctx, store.ListQuery{TeamID: t.TeamID})
	if err != nil {
		return err
	}
	return keygen.TeamAllocation(t, others, tk)
}

// teamKeyChange applies teamKeyRules to a change of the stored key hash
// (/key/update, /key/regenerate) when the request can affect them: it names
// a team or asks for guaranteed throughput. cur is the stored row when the
// caller has read it already (nil: read here).
func (a *API) teamKeyChange(ctx context.Context, c *caller, f *keyFields, p *plan, hash string, cur *keys.Key, now time.Time) error {
	if !f.TeamID.ok() && !f.TPMLimitType.ok() && !f.RPMLimitType.ok() {
		return nil
	}
	if cur == nil {
		var err error
		if cur, err = a.st.Get(ctx, hash); err != nil {
			return fmt.Errorf("get: %w", err)
		}
	}
	next := *cur
	p.apply(&next, now)
	return a.teamKeyRules(ctx, c, f, cur, &next)
}

// accessCaller is the caller as internal/access sees it (the master key
// is a proxy admin).
func (a *API) accessCaller(c *caller) perm.Caller {
	acc := c.acc
	if c.admin {
		acc.Master = true
	}
	return acc
}

// listAll lists every key q matches (its page and size are set here),
// page by page.
func (a *API) listAll(ctx context.Context, q store.ListQuery) ([]*keys.Key, error) {
	var out []*keys.Key
	q.Page, q.Size = 1, maxListItems
	for {
		res, err := a.st.List(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
		out = append(out, res.Keys...)
		if len(res.Keys) < q.Size {
			return out, nil
		}
		q.Page++
	}
}
