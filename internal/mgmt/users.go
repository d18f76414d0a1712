package mgmt

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	perm "github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// userFields are the user columns of /user/new and /user/update.
type userFields struct {
	UserID              opt[string]
	UserAlias           opt[string]
	UserEmail           opt[string]
	UserRole            opt[string]
	Teams               opt[[]string]
	MaxBudget           opt[float64]
	BudgetDuration      opt[string]
	Models              opt[[]string]
	TPMLimit            opt[int64]
	RPMLimit            opt[int64]
	MaxParallelRequests opt[int64]
	Metadata            opt[map[string]any]
	AutoCreateKey       opt[bool]
}

func (f *userFields) list() []namedField {
	return []namedField{
		{"user_id", &f.UserID}, {"user_alias", &f.UserAlias}, {"user_email", &f.UserEmail}, {"user_role", &f.UserRole},
		{"teams", &f.Teams}, {"max_budget", &f.MaxBudget}, {"budget_duration", &f.BudgetDuration}, {"models", &f.Models},
		{"tpm_limit", &f.TPMLimit}, {"rpm_limit", &f.RPMLimit}, {"max_parallel_requests", &f.MaxParallelRequests},
		{"metadata", &f.Metadata}, {"auto_create_key", &f.AutoCreateKey},
	}
}

var userRoles = []string{keys.RoleProxyAdmin, keys.RoleProxyAdminViewer, keys.RoleInternalUser, keys.RoleInternalUserViewer}

func (f *userFields) check() error {
	if f.UserRole.ok() && !slices.Contains(userRoles, f.UserRole.V) {
		return invalid("user_role", "user_role: Input should be 'proxy_admin', 'proxy_admin_viewer', 'internal_user' or 'internal_user_viewer'")
	}
	return checkNonNegative("max_budget", f.MaxBudget)
}

func (f *userFields) apply(u *keys.User, a *API) error {
	if f.BudgetDuration.Set {
		d, at, err := budgetReset("budget_duration", f.BudgetDuration, a.clock())
		if err != nil {
			return err
		}
		u.BudgetDuration, u.BudgetResetAt = d, at
	}
	setPtr(&u.UserAlias, &f.UserAlias)
	setPtr(&u.UserEmail, &f.UserEmail)
	setPtr(&u.UserRole, &f.UserRole)
	setPtr(&u.MaxBudget, &f.MaxBudget)
	setPtr(&u.TPMLimit, &f.TPMLimit)
	setPtr(&u.RPMLimit, &f.RPMLimit)
	setPtr(&u.MaxParallelRequests, &f.MaxParallelRequests)
	if f.Models.Set {
		u.Models = f.Models.V
	}
	if f.Metadata.Set {
		u.Metadata = f.Metadata.V
	}
	return nil
}

func decodeUser(r *http.Request) (*userFields, *keyFields, error) {
	obj, err := readObject(r, true)
	if err != nil {
		return nil, nil, err
	}
	uf := &userFields{}
	if err := decodeFields(obj, uf.list()); err != nil {
		return nil, nil, err
	}
	if err := uf.check(); err != nil {
		return nil, nil, err
	}
	kf, err := keyFieldsFrom(obj)
	if err != nil {
		return nil, nil, err
	}
	return uf, kf, nil
}

func (a *API) userNew(r *http.Request, c *caller) (any, error) {
	o, err := a.orgStore()
	if err != nil {
		return nil, err
	}
	uf, kf, err := decodeUser(r)
	if err != nil {
		return nil, err
	}
	// The key gets the request's key fields; the budget is the user's.
	kf.MaxBudget, kf.BudgetDuration, kf.SoftBudget, kf.Spend = opt[float64]{}, opt[string]{}, opt[float64]{}, opt[float64]{}
	kf.TeamID, kf.UserID = opt[string]{}, opt[string]{}
	p, err := validate(kf)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	id := uf.UserID.V
	if id == "" {
		id = newID()
	}
	if _, err := o.GetUser(ctx, id); err == nil {
		return nil, badRequest("user_id", "User with id="+id+" already exists")
	}
	for _, t := range uf.Teams.V {
		if _, err := a.getTeam(ctx, o, t); err != nil {
			return nil, err
		}
	}
	u := &keys.User{UserID: id}
	if err := uf.apply(u, a); err != nil {
		return nil, err
	}
	now := a.clock()
	u.CreatedAt, u.UpdatedAt = &now, &now
	autoKey := !uf.AutoCreateKey.ok() || uf.AutoCreateKey.V
	raw := keys.Generate()
	if kf.Key.ok() {
		if !strings.HasPrefix(kf.Key.V, keys.Prefix) {
			return nil, badRequest("key", "Invalid key format. LiteLLM Virtual Key must start with 'sk-'.")
		}
		raw = kf.Key.V
	}
	if autoKey && kf.KeyAlias.ok() {
		if err := a.checkAlias(ctx, kf.KeyAlias.V, keys.HashHex(raw)); err != nil {
			return nil, err
		}
	}
	if err := o.CreateUser(ctx, u); err != nil {
		if errors.Is(err, keys.ErrConflict) {
			return nil, badRequest("user_id", "User with id="+id+" already exists")
		}
		return nil, fmt.Errorf("create user: %w", err)
	}
	a.orgChanged(store.Event{Kind: store.EventUserChanged, User: id})
	a.auditOrg(ctx, r, c, keys.ActionCreated, keys.UserTable, id, nil, u)
	for _, t := range uf.Teams.V {
		if err := a.joinAsMember(r, c, o, t, id, u.UserEmail); err != nil {
			return nil, err
		}
	}
	if u2, err := o.GetUser(ctx, id); err == nil {
		u = u2
	}
	var out map[string]any
	if autoKey {
		hash := keys.HashHex(raw)
		who := changedBy(r, c)
		name := keys.Name(raw)
		k := &keys.Key{Token: hash, KeyName: &name, UserID: &id, CreatedAt: &now, UpdatedAt: &now, CreatedBy: &who, UpdatedBy: &who}
		p.apply(k, now)
		if err := a.st.Create(ctx, k); err != nil {
			return nil, fmt.Errorf("create the user's key: %w", err)
		}
		a.invalidate(hash)
		a.audit(ctx, r, c, keys.ActionCreated, hash, nil, rowMap(k))
		out = objMap(newGenerateResponse(k, raw, kf, now))
	} else {
		out = map[string]any{"key": nil}
	}
	for k, v := range objMap(userView(u)) {
		out[k] = v
	}
	return out, nil
}

// joinAsMember adds an existing user to a team as a plain member.
func (a *API) joinAsMember(r *http.Request, c *caller, o OrgStore, teamID, userID string, email *string) error {
	t, err := a.getTeam(r.Context(), o, teamID)
	if err != nil {
		return err
	}
	if t.Role(userID) == "" {
		if _, err := a.modifyTeam(r, c, o, teamID, keys.ActionUpdated, func(t *keys.Team) error {
			t.MembersWithRoles = append(t.MembersWithRoles, keys.Member{Role: keys.TeamRoleUser, UserID: &userID, UserEmail: email})
			t.Members = append(t.Members, userID)
			return nil
		}); err != nil {
			return err
		}
	}
	return a.addMember(r.Context(), r, c, o, t, memberIn{Role: keys.TeamRoleUser, UserID: &userID, UserEmail: email}, nil)
}

func userView(u *keys.User) *keys.User {
	v := *u
	store.UserTable.Normalize(&v)
	return &v
}

// userRef finds the user a body names by user_id or user_email.
func (a *API) userRef(r *http.Request, o OrgStore, f *userFields) (string, error) {
	if f.UserID.ok() && f.UserID.V != "" {
		return f.UserID.V, nil
	}
	if f.UserEmail.ok() && f.UserEmail.V != "" {
		us, _, err := o.ListUsers(r.Context(), store.UserQuery{Email: f.UserEmail.V, Size: 1})
		if err != nil {
			return "", fmt.Errorf("find user by email: %w", err)
		}
		if len(us) == 0 {
			return "", errUserNotFound(f.UserEmail.V)
		}
		return us[0].UserID, nil
	}
	return "", invalid("user_id", "user_id: Field required (or user_email)")
}

func (a *API) userUpdate(r *http.Request, c *caller) (any, error) {
	o, err := a.orgStore()
	if err != nil {
		return nil, err
	}
	uf, _, err := decodeUser(r)
	if err != nil {
		return nil, err
	}
	id, err := a.userRef(r, o, uf)
	if err != nil {
		return nil, err
	}
	if uf.UserID.ok() {
		uf.UserEmail.Set = uf.UserEmail.Set && uf.UserEmail.ok() // an email sent with the id is an update
	} else {
		uf.UserEmail = opt[string]{} // the email named the user
	}
	ctx := r.Context()
	var before *keys.User
	u, err := o.UpdateUser(ctx, id, func(u *keys.User) error {
		cp := *u
		before = &cp
		return uf.apply(u, a)
	})
	if errors.Is(err, keys.ErrNotFound) {
		return nil, errUserNotFound(id)
	}
	if err != nil {
		var ae *apierr.Error
		if errors.As(err, &ae) {
			return nil, ae
		}
		return nil, fmt.Errorf("update user: %w", err)
	}
	a.orgChanged(store.Event{Kind: store.EventUserChanged, User: id})
	a.auditOrg(ctx, r, c, keys.ActionUpdated, keys.UserTable, id, before, u)
	return map[string]any{"user_id": id, "data": userView(u)}, nil
}

func (a *API) userDelete(r *http.Request, c *caller) (any, error) {
	o, err := a.orgStore()
	if err != nil {
		return nil, err
	}
	l, err := decodeLists(r, "user_ids")
	if err != nil {
		return nil, err
	}
	if !l[0].ok() || len(l[0].V) == 0 {
		return nil, invalid("user_ids", "user_ids: Field required")
	}
	ctx := r.Context()
	ids := l[0].V
	for _, id := range ids {
		if _, err := o.GetUser(ctx, id); errors.Is(err, keys.ErrNotFound) {
			return nil, errUserNotFound(id)
		} else if err != nil {
			return nil, fmt.Errorf("get user: %w", err)
		}
	}
	for _, id := range ids {
		if err := a.deleteKeysWhere(ctx, r, c, store.ListQuery{UserID: id}); err != nil {
			return nil, err
		}
		ts, err := o.ListTeams(ctx, store.TeamQuery{UserID: id})
		if err != nil {
			return nil, fmt.Errorf("list user's teams: %w", err)
		}
		for _, t := range ts {
			if _, err := a.modifyTeam(r, c, o, t.TeamID, keys.ActionUpdated, func(t *keys.Team) error {
				t.MembersWithRoles = slices.DeleteFunc(t.MembersWithRoles, func(m keys.Member) bool { return m.UserID != nil && *m.UserID == id })
				t.Members = slices.DeleteFunc(t.Members, func(s string) bool { return s == id })
				t.Admins = slices.DeleteFunc(t.Admins, func(s string) bool { return s == id })
				return nil
			}); err != nil {
				return nil, err
			}
		}
	}
	deleted, err := o.DeleteUsers(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("delete users: %w", err)
	}
	for _, u := range deleted {
		a.orgChanged(store.Event{Kind: store.EventUserChanged, User: u.UserID})
		for _, t := range u.Teams {
			a.orgChanged(store.Event{Kind: store.EventMemberChanged, Team: t, User: u.UserID})
		}
		a.auditOrg(ctx, r, c, keys.ActionDeleted, keys.UserTable, u.UserID, u, map[string]any{})
	}
	return map[string]any{"deleted_users": ids}, nil
}

func (a *API) userInfo(r *http.Request, c *caller) (any, error) {
	o, err := a.orgStore()
	if err != nil {
		return nil, err
	}
	id := r.URL.Query().Get("user_id")
	if id == "" && a.roles(c) {
		id = c.acc.UserID // LiteLLM: a user's own info
	}
	if id == "" {
		return nil, invalid("user_id", "user_id: Field required")
	}
	if a.roles(c) {
		if err := perm.UserInfo(c.acc, id); err != nil {
			return nil, err
		}
	}
	ctx := r.Context()
	u, err := o.GetUser(ctx, id)
	if errors.Is(err, keys.ErrNotFound) {
		return nil, errUserNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("get user: %w", err)
	}
	rows, err := a.listAll(ctx, store.ListQuery{UserID: id})
	if err != nil {
		return nil, fmt.Errorf("user keys: %w", err)
	}
	ks := a.views(rows)
	ts, err := o.ListTeams(ctx, store.TeamQuery{UserID: id})
	if err != nil {
		return nil, fmt.Errorf("list user's teams: %w", err)
	}
	teams := make([]*keys.Team, 0, len(ts))
	for _, t := range ts {
		teams = append(teams, teamView(t))
	}
	return map[string]any{"user_id": id, "user_info": userView(u), "keys": ks, "teams": teams}, nil
}

func (a *API) userList(r *http.Request, _ *caller) (any, error) {
	o, err := a.orgStore()
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	page, size := 1, 25
	for _, p := range []struct {
		name string
		dst  *int
		max  int
	}{{"page", &page, 1 << 30}, {"page_size", &size, 100}} {
		if s := q.Get(p.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > p.max {
				return nil, invalid(p.name, fmt.Sprintf("%s: Input should be an integer between 1 and %d", p.name, p.max))
			}
			*p.dst = n
		}
	}
	uq := store.UserQuery{Page: page, Size: size, Role: q.Get("role"), TeamID: q.Get("team")}
	if ids := q.Get("user_ids"); ids != "" {
		uq.UserIDs = strings.Split(ids, ",")
	}
	us, total, err := o.ListUsers(r.Context(), uq)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	out := make([]*keys.User, 0, len(us))
	for _, u := range us {
		out = append(out, userView(u))
	}
	return map[string]any{"users": out, "total": total, "page": page, "page_size": size, "total_pages": (total + size - 1) / size}, nil
}
