package authz

import (
	"context"
	"time"

	"github.com/virtualkeys/sidecar/internal/cache"
)

// OrgCache is what the Authorizer needs to find a key's team, user and
// team membership; *cache.OrgCache satisfies it. Resolve returns them (nil
// for an object the key names none of, or that does not exist) and an
// error when the store could not answer.
type OrgCache interface {
	Resolve(ctx context.Context, e *cache.Entry, now time.Time) (cache.OrgView, error)
}

// org is what the team and user checks see of one request: the key's team,
// its user and the user's membership in the team, each nil when the key
// names none or the row does not exist (LiteLLM then skips the checks that
// need it).
type org struct {
	teamID, userID string
	team           *cache.Team
	user           *cache.User
	member         *cache.Member
}

// resolveOrg looks up the key's team, user and membership (OrgCache.Resolve
// reads the user of a team key only when its membership has a budget: the
// member budget check is the only one that needs it). With no OrgCache
// configured every object is absent. A lookup the store could not answer
// fails the Check closed.
func (a *Authorizer) resolveOrg(ctx context.Context, e *cache.Entry, o *org, now time.Time) bool {
	if a.org == nil {
		return true
	}
	if t := e.Key.TeamID; t != nil {
		o.teamID = *t
	}
	if u := e.Key.UserID; u != nil {
		o.userID = *u
	}
	if o.teamID == "" && o.userID == "" {
		return true
	}
	v, err := a.org.Resolve(ctx, e, now)
	if err != nil {
		return false
	}
	o.team, o.user, o.member = v.Team, v.User, v.Member
	return true
}

// orgAccess resolves the key's team, user and membership into o and runs
// LiteLLM's team and user access checks (common_checks 1, 2, 2.2 and 2.1),
// after the key's own model check: team blocked, team model access, the
// team member's model scope, a personal key's user model list.
func (a *Authorizer) orgAccess(ctx context.Context, e *cache.Entry, o *org, m *models, now time.Time) (Decision, bool) {
	if !a.resolveOrg(ctx, e, o, now) {
		if ctx.Err() != nil {
			return unavailable("Authorization deadline passed"), true
		}
		return unavailable("Key store unavailable"), true
	}
	if d, deny := teamBlocked(o); deny {
		return d, true
	}
	// A model the request hides (cut or non-object body, encoded path,
	// non-string "model") is checked as a name no restricted list allows:
	// the team and user rules fail closed like the key's own.
	n := m.len()
	hidden := ""
	switch {
	case m.nonString != "":
		hidden = m.nonString
	case m.unknown != modelKnown:
		hidden = "(a model the request does not show: " + unknownShort[m.unknown] + ")"
	}
	if hidden != "" {
		n++
	}
	for i := range n {
		name := hidden
		if i < m.len() {
			name = m.at(i)
		}
		if d, deny := a.teamModel(o, name); deny {
			return d, true
		}
		if d, deny := a.memberModel(o, name); deny {
			return d, true
		}
		if d, deny := a.userModel(o, name); deny {
			return d, true
		}
	}
	return Decision{}, false
}

// orgBudgets runs LiteLLM's team and user budget checks (common_checks 3,
// 4.1 and 4.2), after the key's own budget: team budget, a personal key's
// user budget, the team member's budget.
func (a *Authorizer) orgBudgets(o *org, now time.Time) (Decision, bool) {
	if d, deny := teamBudget(o, now); deny {
		return d, true
	}
	if d, deny := userBudget(o, now); deny {
		return d, true
	}
	return memberBudget(o, now)
}

// unknownShort names why a request's model cannot be known, for the team
// and user denials (the key's own denial says what to change: unknownText).
var unknownShort = [numUnknownReasons]string{
	bodyTruncated:    "body cut",
	bodyNotObject:    "body not a JSON object",
	bodyNotSent:      "body not sent",
	bodyBadMultipart: "unreadable multipart body",
	pathEncodedSlash: "encoded path",
	pathDotSegment:   "dot segments in the path",
	modelNotNamed:    "no model named",
}
