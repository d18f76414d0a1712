package postgres

import (
	"encoding/json"
	"strings"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// orgPayload is a notification from the team, user, membership and budget
// triggers (migration 0011).
type orgPayload struct {
	Table     string   `json:"table"`
	TeamID    *string  `json:"team_id"`
	UserID    *string  `json:"user_id"`
	BudgetID  *string  `json:"budget_id"`
	SpendOnly bool     `json:"spend_only"`
	Spend     *float64 `json:"spend"`
}

// decodeOrg reads a notification of the org triggers; ok is false for any
// other payload (a key's). One it cannot read in full is EventReset.
func decodeOrg(raw string) (evs []store.Event, ok bool) {
	if !strings.Contains(raw, `"table"`) {
		return nil, false
	}
	var p orgPayload
	if err := json.Unmarshal([]byte(raw), &p); err != nil || p.Table == "" {
		return nil, false
	}
	str := func(s *string) (string, bool) { return deref(s), s != nil && *s != "" }
	reset := []store.Event{{Kind: store.EventReset}}
	spend := p.SpendOnly && p.Spend != nil
	var e store.Event
	switch p.Table {
	case keys.TeamTable:
		id, ok := str(p.TeamID)
		if !ok {
			return reset, true
		}
		e = store.Event{Kind: store.EventTeamChanged, Team: id}
		if spend {
			e.Kind, e.Spend = store.EventTeamSpend, *p.Spend
		}
	case keys.UserTable:
		id, ok := str(p.UserID)
		if !ok {
			return reset, true
		}
		e = store.Event{Kind: store.EventUserChanged, User: id}
		if spend {
			e.Kind, e.Spend = store.EventUserSpend, *p.Spend
		}
	case keys.MembershipTable:
		t, ok1 := str(p.TeamID)
		u, ok2 := str(p.UserID)
		if !ok1 || !ok2 {
			return reset, true
		}
		e = store.Event{Kind: store.EventMemberChanged, Team: t, User: u}
		if spend {
			e.Kind, e.Spend = store.EventMemberSpend, *p.Spend
		}
	case keys.BudgetTable:
		id, ok := str(p.BudgetID)
		if !ok {
			return reset, true
		}
		e = store.Event{Kind: store.EventBudgetChanged, Budget: id}
	default:
		return reset, true
	}
	return []store.Event{e}, true
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
