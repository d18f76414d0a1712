package mgmt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// OrgStore is what the team and user endpoints need; store.Org satisfies
// it. New takes it from Config.Org, or from Config.Store when the store
// implements it.
type OrgStore interface {
	CreateTeam(ctx context.Context, t *keys.Team) error
	GetTeam(ctx context.Context, id string) (*keys.Team, error)
	UpdateTeam(ctx context.Context, id string, fn func(t *keys.Team) error) (*keys.Team, error)
	DeleteTeams(ctx context.Context, ids []string) ([]*keys.Team, error)
	ListTeams(ctx context.Context, q store.TeamQuery) ([]*keys.Team, error)
	CreateUser(ctx context.Context, u *keys.User) error
	GetUser(ctx context.Context, id string) (*keys.User, error)
	UpdateUser(ctx context.Context, id string, fn func(u *keys.User) error) (*keys.User, error)
	DeleteUsers(ctx context.Context, ids []string) ([]*keys.User, error)
	ListUsers(ctx context.Context, q store.UserQuery) ([]*keys.User, int, error)
	GetMembership(ctx context.Context, teamID, userID string) (*keys.Membership, error)
	ListMemberships(ctx context.Context, teamID string) ([]*keys.Membership, error)
	PutMembership(ctx context.Context, m *keys.Membership, b *keys.Budget) error
	DeleteMembership(ctx context.Context, teamID, userID string) error
	PutBudget(ctx context.Context, b *keys.Budget) error
	GetBudget(ctx context.Context, id string) (*keys.Budget, error)
}

var _ OrgStore = store.Org(nil)

// errNoOrg answers team and user routes on a store without those tables.
var errNoOrg = apierr.New(http.StatusNotImplemented, apierr.TypeInternal, "",
	"Team and user management needs a store with LiteLLM's team and user tables")

func (a *API) orgStore() (OrgStore, error) {
	if a.org == nil {
		return nil, errNoOrg
	}
	return a.org, nil
}

// orgChanged tells this replica's caches at once (other replicas learn
// through the change feed).
func (a *API) orgChanged(evs ...store.Event) {
	for _, e := range evs {
		a.onOrg(e)
	}
}

// auditOrg appends one audit row for a team, user or membership change
// (logged, not reported, when it fails: the change has committed).
func (a *API) auditOrg(ctx context.Context, r *http.Request, c *caller, action, table, id string, before, after any) {
	err := a.st.AppendAudit(ctx, &keys.Audit{
		ChangedBy:       changedBy(r, c),
		ChangedByAPIKey: c.hash,
		Action:          action,
		TableName:       table,
		ObjectID:        id,
		BeforeValue:     objMap(before),
		UpdatedValues:   objMap(after),
	})
	if err != nil {
		a.log.ErrorContext(ctx, "audit log append failed", slog.String("action", action), slog.String("table", table),
			slog.String("object_id", id), slog.Any("error", err))
		return
	}
	a.log.InfoContext(ctx, table+" "+action, slog.String("object_id", id), slog.String("changed_by", changedBy(r, c)))
}

// objMap renders a row as a JSON object for the audit log (nil stays nil).
func objMap(v any) map[string]any {
	if v == nil {
		return nil
	}
	if m, ok := v.(map[string]any); ok {
		return m
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

func errTeamNotFound(id string) *apierr.Error {
	return apierr.New(http.StatusNotFound, apierr.TypeNotFound, "team_id", "Team not found, passed team_id="+id)
}

func errUserNotFound(id string) *apierr.Error {
	return apierr.New(http.StatusNotFound, apierr.TypeNotFound, "user_id", "User not found, passed user_id="+id)
}

// budgetReset validates a budget_duration and returns its first reset.
func budgetReset(param string, d opt[string], now time.Time) (*string, *time.Time, error) {
	if !d.ok() {
		return nil, nil, nil
	}
	at, err := keys.NextResetFromString(d.V, now)
	if err != nil {
		return nil, nil, badRequest(param, fmt.Sprintf("%s: invalid duration %q: %v", param, d.V, err))
	}
	v := d.V
	return &v, &at, nil
}

func checkNonNegative(param string, o opt[float64]) error {
	if o.ok() && o.V < 0 {
		return badRequest(param, param+" must be >= 0")
	}
	return nil
}

// deleteKeysWhere deletes every key matching q (a team's or a user's) and
// returns their hashes.
func (a *API) deleteKeysWhere(ctx context.Context, r *http.Request, c *caller, q store.ListQuery) error {
	rows, err := a.listAll(ctx, q)
	if err != nil {
		return err
	}
	hashes := make([]string, 0, len(rows))
	for _, k := range rows {
		hashes = append(hashes, k.Token)
	}
	if len(hashes) == 0 {
		return nil
	}
	deleted, err := a.st.Delete(ctx, hashes)
	if err != nil {
		return fmt.Errorf("delete keys: %w", err)
	}
	gone := make([]string, 0, len(deleted))
	for _, k := range deleted {
		gone = append(gone, k.Token)
	}
	a.invalidate(gone...)
	for _, k := range deleted {
		a.audit(ctx, r, c, keys.ActionDeleted, k.Token, rowMap(k), map[string]any{})
	}
	return nil
}

// ensureUser returns the user, creating an internal_user row when it does
// not exist (LiteLLM upserts members it is told about).
func (a *API) ensureUser(ctx context.Context, r *http.Request, c *caller, o OrgStore, id string, email *string) (*keys.User, error) {
	u, err := o.GetUser(ctx, id)
	if err == nil {
		return u, nil
	}
	if !errors.Is(err, keys.ErrNotFound) {
		return nil, fmt.Errorf("get user: %w", err)
	}
	role := keys.RoleInternalUser
	u = &keys.User{UserID: id, UserEmail: email, UserRole: &role}
	if err := o.CreateUser(ctx, u); err != nil && !errors.Is(err, keys.ErrConflict) {
		return nil, fmt.Errorf("create user: %w", err)
	}
	a.orgChanged(store.Event{Kind: store.EventUserChanged, User: id})
	a.auditOrg(ctx, r, c, keys.ActionCreated, keys.UserTable, id, nil, u)
	return o.GetUser(ctx, id)
}

// joinTeam adds the team to the user's teams list.
func (a *API) joinTeam(ctx context.Context, o OrgStore, userID, teamID string, join bool) (*keys.User, error) {
	u, err := o.UpdateUser(ctx, userID, func(u *keys.User) error {
		i := slices.Index(u.Teams, teamID)
		switch {
		case join && i < 0:
			u.Teams = append(u.Teams, teamID)
		case !join && i >= 0:
			u.Teams = slices.Delete(u.Teams, i, i+1)
		}
		return nil
	})
	if errors.Is(err, keys.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("update user teams: %w", err)
	}
	a.orgChanged(store.Event{Kind: store.EventUserChanged, User: userID})
	return u, nil
}

func newID() string { return uuid.NewString() }
