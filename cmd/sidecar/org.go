package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/budget"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/ratelimit"
	"github.com/virtualkeys/sidecar/internal/store"
)

// orgParts is the team/user cache of a store that has LiteLLM's team and
// user tables (both backends do). A nil *orgParts is a store without them.
type orgParts struct {
	cache  *cache.OrgCache
	detach func()
}

// buildOrg builds the team/user cache, attaches it to the change feed and
// returns the team/user budget-reset job.
func buildOrg(cfg *Config, st store.Store, log *slog.Logger, reg prometheus.Registerer) (*orgParts, []func(context.Context) error, error) {
	o, ok := st.(store.Org)
	if !ok {
		return nil, nil, nil
	}
	oc, err := cache.NewOrg(cache.OrgConfig{
		Loader: o, MaxEntries: cfg.CacheMaxKeys, NegativeTTL: cfg.NegativeTTL, SafetyTTL: cfg.CacheTTL,
		LookupTimeout: cfg.LookupTimeout, Registerer: reg, Logger: log.With("component", "org-cache"),
	})
	if err != nil {
		return nil, nil, err
	}
	p := &orgParts{cache: oc, detach: oc.Attach(st)}
	resets, err := budget.New(budget.Config{
		// No metrics of its own: the key job's names are taken (the lead
		// may merge both into one job with an object label).
		Store: store.OrgBudgetResetter{Org: o}, Interval: cfg.BudgetResetInterval,
		Logger: log.With("component", "budget", "object", "team_user"),
	})
	if err != nil {
		p.close()
		return nil, nil, fmt.Errorf("team/user budget job: %w", err)
	}
	return p, []func(context.Context) error{resets.Run}, nil
}

func (p *orgParts) close() {
	p.detach()
	p.cache.Close()
}

// checks is the Authorizer's OrgCache (nil: no team/user checks).
func (p *orgParts) checks() authz.OrgCache {
	if p == nil {
		return nil
	}
	return p.cache
}

// changed is the management API's OrgChanged hook.
func (p *orgParts) changed() func(store.Event) {
	if p == nil {
		return nil
	}
	return p.cache.Handle
}

// subjectLimits gives the rate limiter the rpm/tpm limits of a key's user,
// team and team membership (LiteLLM's user, team and team_member
// descriptors), read through the team/user cache when the key's limits are
// compiled: once per cached key entry. A change to a team's or user's limits
// therefore applies to a key when its entry is next loaded (a change to the
// key, a feed reconnect, or the key cache's safety TTL). A row the store
// cannot read in time adds no limit (rate limits fail open; every other
// check still fails closed).
func (p *orgParts) subjectLimits() func(e *cache.Entry) ratelimit.SubjectLimits {
	if p == nil {
		return nil
	}
	return func(e *cache.Entry) ratelimit.SubjectLimits {
		var s ratelimit.SubjectLimits
		k := e.Key
		if k == nil {
			return s
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		now := time.Now()
		if k.UserID != nil && *k.UserID != "" {
			s.UserID = *k.UserID
			if u, err := p.cache.User(ctx, s.UserID, now); err == nil && u != nil && u.Row != nil {
				s.UserRPM, s.UserTPM = u.Row.RPMLimit, u.Row.TPMLimit
			}
		}
		if k.TeamID != nil && *k.TeamID != "" {
			s.TeamID = *k.TeamID
			if t, err := p.cache.Team(ctx, s.TeamID, now); err == nil && t != nil && t.Row != nil {
				s.TeamRPM, s.TeamTPM = t.Row.RPMLimit, t.Row.TPMLimit
			}
			if s.UserID != "" {
				if m, err := p.cache.Member(ctx, s.TeamID, s.UserID, now); err == nil && m != nil && m.Row != nil && m.Row.Budget != nil {
					s.TeamMemberRPM, s.TeamMemberTPM = m.Row.Budget.RPMLimit, m.Row.Budget.TPMLimit
				}
			}
		}
		return s
	}
}
