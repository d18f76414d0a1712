package mgmt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	perm "github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/store"
)

// teamFields are the fields of /team/new and /team/update.
type teamFields struct {
	TeamID                opt[string]
	TeamAlias             opt[string]
	OrganizationID        opt[string]
	MembersWithRoles      opt[[]memberIn]
	Metadata              opt[map[string]any]
	MaxBudget             opt[float64]
	SoftBudget            opt[float64]
	Models                opt[[]string]
	MaxParallelRequests   opt[int64]
	TPMLimit              opt[int64]
	RPMLimit              opt[int64]
	BudgetDuration        opt[string]
	Blocked               opt[bool]
	ModelMaxBudget        opt[map[string]any]
	TeamMemberPermissions opt[[]string]
	// the team's default member budget (teambudget.go)
	TeamMemberBudget         opt[float64]
	TeamMemberRPMLimit       opt[int64]
	TeamMemberTPMLimit       opt[int64]
	TeamMemberBudgetDuration opt[string]
}

func (f *teamFields) list() []namedField {
	return []namedField{
		{"team_id", &f.TeamID}, {"team_alias", &f.TeamAlias}, {"organization_id", &f.OrganizationID},
		{"members_with_roles", &f.MembersWithRoles}, {"metadata", &f.Metadata}, {"max_budget", &f.MaxBudget},
		{"soft_budget", &f.SoftBudget}, {"models", &f.Models}, {"max_parallel_requests", &f.MaxParallelRequests},
		{"tpm_limit", &f.TPMLimit}, {"rpm_limit", &f.RPMLimit}, {"budget_duration", &f.BudgetDuration},
		{"blocked", &f.Blocked}, {"model_max_budget", &f.ModelMaxBudget}, {"team_member_permissions", &f.TeamMemberPermissions},
		{"team_member_budget", &f.TeamMemberBudget}, {"team_member_rpm_limit", &f.TeamMemberRPMLimit},
		{"team_member_tpm_limit", &f.TeamMemberTPMLimit}, {"team_member_budget_duration", &f.TeamMemberBudgetDuration},
	}
}

// memberIn is a member as requests name it.
type memberIn struct {
	Role      string  `json:"role"`
	UserID    *string `json:"user_id"`
	UserEmail *string `json:"user_email"`
}

// resolve checks the role and finds the member's user_id (by email when
// only that is given: an unknown email gets a new user id).
func (m *memberIn) resolve(ctx context.Context, o OrgStore) error {
	if m.Role == "" {
		m.Role = keys.TeamRoleUser
	}
	if m.Role != keys.TeamRoleAdmin && m.Role != keys.TeamRoleUser {
		return invalid("member.role", "member.role: Input should be 'admin' or 'user'")
	}
	if m.UserID != nil && *m.UserID != "" {
		return nil
	}
	if m.UserEmail == nil || *m.UserEmail == "" {
		return badRequest("member", "Either user_id or user_email must be provided")
	}
	us, _, err := o.ListUsers(ctx, store.UserQuery{Email: *m.UserEmail, Size: 1})
	if err != nil {
		return fmt.Errorf("find user by email: %w", err)
	}
	id := newID()
	if len(us) > 0 {
		id = us[0].UserID
	}
	m.UserID = &id
	return nil
}

func decodeTeamFields(r *http.Request) (*teamFields, error) {
	f := &teamFields{}
	if err := decodeBody(r, f.list()...); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		name string
		o    opt[float64]
	}{{"max_budget", f.MaxBudget}, {"soft_budget", f.SoftBudget}, {"team_member_budget", f.TeamMemberBudget}} {
		if err := checkNonNegative(p.name, p.o); err != nil {
			return nil, err
		}
	}
	if err := perm.ValidatePermissions(f.TeamMemberPermissions.V); err != nil {
		return nil, err
	}
	return f, nil
}

// apply writes the fields present in f onto t.
func (f *teamFields) apply(t *keys.Team, resetParam string, a *API) error {
	now := a.clock()
	if f.BudgetDuration.Set {
		d, at, err := budgetReset(resetParam, f.BudgetDuration, now)
		if err != nil {
			return err
		}
		t.BudgetDuration, t.BudgetResetAt = d, at
	}
	setPtr(&t.TeamAlias, &f.TeamAlias)
	setPtr(&t.OrganizationID, &f.OrganizationID)
	setPtr(&t.MaxBudget, &f.MaxBudget)
	setPtr(&t.SoftBudget, &f.SoftBudget)
	setPtr(&t.MaxParallelRequests, &f.MaxParallelRequests)
	setPtr(&t.TPMLimit, &f.TPMLimit)
	setPtr(&t.RPMLimit, &f.RPMLimit)
	if f.Metadata.Set {
		t.Metadata = f.Metadata.V
	}
	if f.Models.Set {
		t.Models = f.Models.V
	}
	if f.ModelMaxBudget.Set {
		t.ModelMaxBudget = f.ModelMaxBudget.V
	}
	if f.TeamMemberPermissions.Set {
		t.TeamMemberPermissions = f.TeamMemberPermissions.V
	}
	if f.Blocked.ok() {
		t.Blocked = f.Blocked.V
	}
	return nil
}

func (a *API) teamNew(r *http.Request, c *caller) (any, error) {
	o, f, err := withOrg(a, r, decodeTeamFields)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	id := f.TeamID.V
	if id == "" {
		id = newID()
	}
	if _, err := o.GetTeam(ctx, id); err == nil {
		return nil, badRequest("team_id", "Team id = "+id+" already exists. Please use a different team id.")
	}
	members := f.MembersWithRoles.V
	for i := range members {
		if err := members[i].resolve(ctx, o); err != nil {
			return nil, err
		}
	}
	t := &keys.Team{TeamID: id}
	if err := f.apply(t, "budget_duration", a); err != nil {
		return nil, err
	}
	for _, m := range members {
		t.MembersWithRoles = append(t.MembersWithRoles, keys.Member{Role: m.Role, UserID: m.UserID, UserEmail: m.UserEmail})
		t.Members = append(t.Members, *m.UserID)
		if m.Role == keys.TeamRoleAdmin {
			t.Admins = append(t.Admins, *m.UserID)
		}
	}
	if err := a.putTeamMemberBudget(ctx, r, c, o, t, f); err != nil {
		return nil, err
	}
	now := a.clock()
	t.CreatedAt, t.UpdatedAt = &now, &now
	if err := o.CreateTeam(ctx, t); err != nil {
		var ce *keys.ConflictError
		if errors.As(err, &ce) {
			return nil, badRequest("team_id", "Team id = "+id+" already exists. Please use a different team id.")
		}
		return nil, fmt.Errorf("create team: %w", err)
	}
	a.orgChanged(store.Event{Kind: store.EventTeamChanged, Team: id})
	a.auditOrg(ctx, r, c, keys.ActionCreated, keys.TeamTable, id, nil, t)
	for _, m := range members {
		if err := a.addMember(ctx, r, c, o, t, m, nil); err != nil {
			return nil, err
		}
	}
	return teamView(t), nil
}

// addMember creates the member's user if needed, adds the team to its
// teams and writes its membership: with a budget row of its own when
// maxBudget is set, else pointing at the team's default member budget when
// the team has one.
func (a *API) addMember(ctx context.Context, r *http.Request, c *caller, o OrgStore, t *keys.Team, m memberIn, maxBudget *float64) error {
	teamID := t.TeamID
	if _, err := a.ensureUser(ctx, r, c, o, *m.UserID, m.UserEmail); err != nil {
		return err
	}
	if _, err := a.joinTeam(ctx, o, *m.UserID, teamID, true); err != nil {
		return err
	}
	ms := &keys.Membership{TeamID: teamID, UserID: *m.UserID}
	var b *keys.Budget
	if maxBudget != nil {
		who := changedBy(r, c)
		b = &keys.Budget{BudgetID: newID(), MaxBudget: maxBudget, CreatedBy: who, UpdatedBy: who}
	} else if id := teamMemberBudgetID(t); id != "" {
		ms.BudgetID = &id
	}
	if err := o.PutMembership(ctx, ms, b); err != nil {
		return fmt.Errorf("add membership: %w", err)
	}
	a.orgChanged(store.Event{Kind: store.EventMemberChanged, Team: teamID, User: *m.UserID})
	a.auditOrg(ctx, r, c, keys.ActionCreated, keys.MembershipTable, teamID+":"+*m.UserID, nil, ms)
	return nil
}

// withOrg opens the org store and decodes the request with decode: the
// prelude of the team and user handlers.
func withOrg[T any](a *API, r *http.Request, decode func(*http.Request) (T, error)) (OrgStore, T, error) {
	var zero T
	o, err := a.orgStore()
	if err != nil {
		return nil, zero, err
	}
	f, err := decode(r)
	if err != nil {
		return nil, zero, err
	}
	return o, f, nil
}

// teamView is a team as responses show it.
func teamView(t *keys.Team) *keys.Team {
	v := *t
	store.TeamTable.Normalize(&v)
	return &v
}

func (a *API) getTeam(ctx context.Context, o OrgStore, id string) (*keys.Team, error) {
	t, err := o.GetTeam(ctx, id)
	if errors.Is(err, keys.ErrNotFound) {
		return nil, errTeamNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("get team: %w", err)
	}
	return t, nil
}

// modifyTeam applies fn to a team, audits and invalidates.
func (a *API) modifyTeam(r *http.Request, c *caller, o OrgStore, id, action string, fn func(t *keys.Team) error) (*keys.Team, error) {
	ctx := r.Context()
	var before *keys.Team
	t, err := o.UpdateTeam(ctx, id, func(t *keys.Team) error {
		cp := *t
		before = &cp
		return fn(t)
	})
	if errors.Is(err, keys.ErrNotFound) {
		return nil, errTeamNotFound(id)
	}
	if err != nil {
		var ae *apierr.Error
		if errors.As(err, &ae) {
			return nil, ae
		}
		return nil, fmt.Errorf("update team: %w", err)
	}
	a.orgChanged(store.Event{Kind: store.EventTeamChanged, Team: id})
	a.auditOrg(ctx, r, c, action, keys.TeamTable, id, before, t)
	return t, nil
}

func (a *API) teamUpdate(r *http.Request, c *caller) (any, error) {
	o, f, err := withOrg(a, r, decodeTeamFields)
	if err != nil {
		return nil, err
	}
	if !f.TeamID.ok() || f.TeamID.V == "" {
		return nil, invalid("team_id", "team_id: Field required")
	}
	if f.MembersWithRoles.Set {
		return nil, badRequest("members_with_roles", "Use /team/member_add and /team/member_delete to change a team's members")
	}
	budgetID := ""
	if f.wantsMemberBudget() {
		cur, err := a.getTeam(r.Context(), o, f.TeamID.V)
		if err != nil {
			return nil, err
		}
		if err := a.putTeamMemberBudget(r.Context(), r, c, o, cur, f); err != nil {
			return nil, err
		}
		budgetID = teamMemberBudgetID(cur)
	}
	t, err := a.modifyTeam(r, c, o, f.TeamID.V, keys.ActionUpdated, func(t *keys.Team) error {
		if err := f.apply(t, "budget_duration", a); err != nil {
			return err
		}
		if budgetID != "" {
			if t.Metadata == nil {
				t.Metadata = map[string]any{}
			}
			t.Metadata[teamMemberBudgetKey] = budgetID
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"team_id": t.TeamID, "data": teamView(t)}, nil
}

func (a *API) teamDelete(r *http.Request, c *caller) (any, error) {
	o, err := a.orgStore()
	if err != nil {
		return nil, err
	}
	l, err := decodeLists(r, "team_ids")
	if err != nil {
		return nil, err
	}
	if !l[0].ok() || len(l[0].V) == 0 {
		return nil, invalid("team_ids", "team_ids: Field required")
	}
	ctx := r.Context()
	ids := l[0].V
	for _, id := range ids {
		if _, err := a.getTeam(ctx, o, id); err != nil {
			return nil, err
		}
	}
	for _, id := range ids {
		if err := a.deleteKeysWhere(ctx, r, c, store.ListQuery{TeamID: id}); err != nil {
			return nil, err
		}
		ms, err := o.ListMemberships(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("list memberships: %w", err)
		}
		t, err := o.GetTeam(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("get team: %w", err)
		}
		users := map[string]bool{}
		for _, m := range ms {
			users[m.UserID] = true
		}
		for _, m := range t.MembersWithRoles {
			if m.UserID != nil {
				users[*m.UserID] = true
			}
		}
		for u := range users {
			if _, err := a.joinTeam(ctx, o, u, id, false); err != nil {
				return nil, err
			}
		}
	}
	deleted, err := o.DeleteTeams(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("delete teams: %w", err)
	}
	for _, t := range deleted {
		a.orgChanged(store.Event{Kind: store.EventTeamChanged, Team: t.TeamID})
		a.auditOrg(ctx, r, c, keys.ActionDeleted, keys.TeamTable, t.TeamID, t, map[string]any{})
	}
	return map[string]any{"deleted_teams": ids}, nil
}

func (a *API) teamInfo(r *http.Request, c *caller) (any, error) {
	o, err := a.orgStore()
	if err != nil {
		return nil, err
	}
	id := r.URL.Query().Get("team_id")
	if id == "" {
		return nil, invalid("team_id", "Malformed request. No team id passed in.")
	}
	if a.roles(c) {
		if err := perm.TeamInfo(c.acc, id); err != nil {
			return nil, err
		}
	}
	ctx := r.Context()
	t, err := a.getTeam(ctx, o, id)
	if err != nil {
		return nil, err
	}
	ks, err := a.teamKeys(ctx, id)
	if err != nil {
		return nil, err
	}
	ms, err := o.ListMemberships(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("list memberships: %w", err)
	}
	return map[string]any{"team_id": id, "team_info": teamView(t), "keys": ks, "team_memberships": ms}, nil
}

// teamKeys lists a team's keys (without their secrets: stored rows carry
// only hashes).
func (a *API) teamKeys(ctx context.Context, teamID string) ([]*wireKey, error) {
	rows, err := a.listAll(ctx, store.ListQuery{TeamID: teamID})
	if err != nil {
		return nil, err
	}
	return a.views(rows), nil
}

// views are keys as responses show them (never nil).
func (a *API) views(rows []*keys.Key) []*wireKey {
	now := a.clock()
	out := make([]*wireKey, 0, len(rows))
	for _, k := range rows {
		out = append(out, view(k, now))
	}
	return out
}

func (a *API) teamList(r *http.Request, c *caller) (any, error) {
	o, err := a.orgStore()
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if a.roles(c) {
		if err := perm.TeamList(c.acc, q.Get("user_id")); err != nil {
			return nil, err
		}
	}
	ts, err := o.ListTeams(r.Context(), store.TeamQuery{UserID: q.Get("user_id"), OrganizationID: q.Get("organization_id"), TeamAlias: q.Get("team_alias")})
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	out := make([]*keys.Team, 0, len(ts))
	for _, t := range ts {
		out = append(out, teamView(t))
	}
	return out, nil
}

func (a *API) teamBlock(r *http.Request, c *caller) (any, error) { return a.setTeamBlocked(r, c, true) }
func (a *API) teamUnblock(r *http.Request, c *caller) (any, error) {
	return a.setTeamBlocked(r, c, false)
}

func (a *API) setTeamBlocked(r *http.Request, c *caller, blocked bool) (any, error) {
	o, err := a.orgStore()
	if err != nil {
		return nil, err
	}
	var id opt[string]
	if err := decodeBody(r, namedField{"team_id", &id}); err != nil {
		return nil, err
	}
	if !id.ok() || id.V == "" {
		return nil, invalid("team_id", "team_id: Field required")
	}
	action := keys.ActionUnblocked
	if blocked {
		action = keys.ActionBlocked
	}
	t, err := a.modifyTeam(r, c, o, id.V, action, func(t *keys.Team) error { t.Blocked = blocked; return nil })
	if err != nil {
		return nil, err
	}
	return teamView(t), nil
}

// memberFields are the fields of the /team/member_* routes.
type memberFields struct {
	TeamID          opt[string]
	Member          opt[json.RawMessage]
	UserID          opt[string]
	UserEmail       opt[string]
	Role            opt[string]
	MaxBudgetInTeam opt[float64]
}

// membersOf reads "member": one member object or a list of them.
func membersOf(raw json.RawMessage) ([]memberIn, error) {
	var one memberIn
	if err := json.Unmarshal(raw, &one); err == nil {
		return []memberIn{one}, nil
	}
	var many []memberIn
	if err := json.Unmarshal(raw, &many); err != nil || len(many) == 0 {
		return nil, invalid("member", "member: Input should be a valid member object or a non-empty list of them")
	}
	return many, nil
}

func decodeMemberFields(r *http.Request) (*memberFields, error) {
	f := &memberFields{}
	if err := decodeBody(r, []namedField{{"team_id", &f.TeamID}, {"member", &f.Member}, {"user_id", &f.UserID},
		{"user_email", &f.UserEmail}, {"role", &f.Role}, {"max_budget_in_team", &f.MaxBudgetInTeam}}...); err != nil {
		return nil, err
	}
	if !f.TeamID.ok() || f.TeamID.V == "" {
		return nil, invalid("team_id", "team_id: Field required")
	}
	if err := checkNonNegative("max_budget_in_team", f.MaxBudgetInTeam); err != nil {
		return nil, err
	}
	return f, nil
}

func (a *API) teamMemberAdd(r *http.Request, c *caller) (any, error) {
	o, f, err := withOrg(a, r, decodeMemberFields)
	if err != nil {
		return nil, err
	}
	if !f.Member.ok() {
		return nil, invalid("member", "member: Field required")
	}
	members, err := membersOf(f.Member.V)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	t, err := a.adminTeam(ctx, r, c, o, f.TeamID.V)
	if err != nil {
		return nil, err
	}
	for i := range members {
		if err := members[i].resolve(ctx, o); err != nil {
			return nil, err
		}
		if t.Role(*members[i].UserID) != "" {
			return nil, apierr.New(http.StatusBadRequest, "team_member_already_in_team", "user_id",
				"User already in team. Member: user_id="+*members[i].UserID)
		}
	}
	t, err = a.modifyTeam(r, c, o, t.TeamID, keys.ActionUpdated, func(t *keys.Team) error {
		for _, m := range members {
			t.MembersWithRoles = append(t.MembersWithRoles, keys.Member{Role: m.Role, UserID: m.UserID, UserEmail: m.UserEmail})
			if !slices.Contains(t.Members, *m.UserID) {
				t.Members = append(t.Members, *m.UserID)
			}
			if m.Role == keys.TeamRoleAdmin && !slices.Contains(t.Admins, *m.UserID) {
				t.Admins = append(t.Admins, *m.UserID)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var budget *float64
	if f.MaxBudgetInTeam.ok() {
		budget = &f.MaxBudgetInTeam.V
	}
	users := []*keys.User{}
	memberships := []*keys.Membership{}
	for _, m := range members {
		if err := a.addMember(ctx, r, c, o, t, m, budget); err != nil {
			return nil, err
		}
		if u, err := o.GetUser(ctx, *m.UserID); err == nil {
			users = append(users, u)
		}
		if ms, err := o.GetMembership(ctx, t.TeamID, *m.UserID); err == nil {
			memberships = append(memberships, ms)
		}
	}
	v := objMap(teamView(t))
	v["updated_users"] = users
	v["updated_team_memberships"] = memberships
	return v, nil
}

// findMember names the member a member_delete/member_update body means.
func findMember(t *keys.Team, f *memberFields) (string, error) {
	for _, m := range t.MembersWithRoles {
		if m.UserID != nil && f.UserID.ok() && *m.UserID == f.UserID.V {
			return *m.UserID, nil
		}
		if m.UserID != nil && f.UserEmail.ok() && m.UserEmail != nil && strings.EqualFold(*m.UserEmail, f.UserEmail.V) {
			return *m.UserID, nil
		}
	}
	if !f.UserID.ok() && !f.UserEmail.ok() {
		return "", badRequest("user_id", "Either user_id or user_email must be provided")
	}
	who := f.UserID.V
	if who == "" {
		who = f.UserEmail.V
	}
	return "", badRequest("user_id", "User not found in team. user="+who+", team_id="+t.TeamID)
}

func (a *API) teamMemberDelete(r *http.Request, c *caller) (any, error) {
	o, f, err := withOrg(a, r, decodeMemberFields)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	t, err := a.adminTeam(ctx, r, c, o, f.TeamID.V)
	if err != nil {
		return nil, err
	}
	uid, err := findMember(t, f)
	if err != nil {
		return nil, err
	}
	t, err = a.modifyTeam(r, c, o, t.TeamID, keys.ActionUpdated, func(t *keys.Team) error {
		t.MembersWithRoles = slices.DeleteFunc(t.MembersWithRoles, func(m keys.Member) bool { return m.UserID != nil && *m.UserID == uid })
		t.Members = slices.DeleteFunc(t.Members, func(s string) bool { return s == uid })
		t.Admins = slices.DeleteFunc(t.Admins, func(s string) bool { return s == uid })
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := a.joinTeam(ctx, o, uid, t.TeamID, false); err != nil {
		return nil, err
	}
	if err := o.DeleteMembership(ctx, t.TeamID, uid); err != nil {
		return nil, fmt.Errorf("delete membership: %w", err)
	}
	a.orgChanged(store.Event{Kind: store.EventMemberChanged, Team: t.TeamID, User: uid})
	a.auditOrg(ctx, r, c, keys.ActionDeleted, keys.MembershipTable, t.TeamID+":"+uid, map[string]any{"team_id": t.TeamID, "user_id": uid}, map[string]any{})
	return teamView(t), nil
}

func (a *API) teamMemberUpdate(r *http.Request, c *caller) (any, error) {
	o, f, err := withOrg(a, r, decodeMemberFields)
	if err != nil {
		return nil, err
	}
	if f.Role.ok() && f.Role.V != keys.TeamRoleAdmin && f.Role.V != keys.TeamRoleUser {
		return nil, invalid("role", "role: Input should be 'admin' or 'user'")
	}
	ctx := r.Context()
	t, err := a.adminTeam(ctx, r, c, o, f.TeamID.V)
	if err != nil {
		return nil, err
	}
	uid, err := findMember(t, f)
	if err != nil {
		return nil, err
	}
	if f.Role.ok() {
		if _, err = a.modifyTeam(r, c, o, t.TeamID, keys.ActionUpdated, func(t *keys.Team) error {
			for i, m := range t.MembersWithRoles {
				if m.UserID != nil && *m.UserID == uid {
					t.MembersWithRoles[i].Role = f.Role.V
				}
			}
			t.Admins = slices.DeleteFunc(t.Admins, func(s string) bool { return s == uid })
			if f.Role.V == keys.TeamRoleAdmin {
				t.Admins = append(t.Admins, uid)
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	var maxInTeam *float64
	if f.MaxBudgetInTeam.Set {
		before, err := o.GetMembership(ctx, t.TeamID, uid)
		if err != nil && !errors.Is(err, keys.ErrNotFound) {
			return nil, fmt.Errorf("get membership: %w", err)
		}
		ms := &keys.Membership{TeamID: t.TeamID, UserID: uid}
		var b *keys.Budget
		if f.MaxBudgetInTeam.ok() {
			maxInTeam = &f.MaxBudgetInTeam.V
			who := changedBy(r, c)
			id := newID()
			if before != nil && before.BudgetID != nil {
				id = *before.BudgetID
			}
			b = &keys.Budget{BudgetID: id, MaxBudget: maxInTeam, CreatedBy: who, UpdatedBy: who}
		}
		if err := o.PutMembership(ctx, ms, b); err != nil {
			return nil, fmt.Errorf("update membership: %w", err)
		}
		a.orgChanged(store.Event{Kind: store.EventMemberChanged, Team: t.TeamID, User: uid})
		a.auditOrg(ctx, r, c, keys.ActionUpdated, keys.MembershipTable, t.TeamID+":"+uid, before, ms)
	}
	var email any
	if f.UserEmail.ok() {
		email = f.UserEmail.V
	}
	return map[string]any{"team_id": t.TeamID, "user_id": uid, "user_email": email, "max_budget_in_team": maxInTeam}, nil
}

// teamPermissionsList is GET /team/permissions_list?team_id=: the team's
// team_member_permissions as stored and every value it may hold.
func (a *API) teamPermissionsList(r *http.Request, c *caller) (any, error) {
	o, err := a.orgStore()
	if err != nil {
		return nil, err
	}
	id := r.URL.Query().Get("team_id")
	if id == "" {
		return nil, invalid("team_id", "team_id: Field required")
	}
	t, err := a.adminTeam(r.Context(), r, c, o, id)
	if err != nil {
		return nil, err
	}
	perms := t.TeamMemberPermissions
	if perms == nil {
		perms = []string{}
	}
	return map[string]any{"team_id": t.TeamID, "team_member_permissions": perms, "all_available_permissions": perm.MemberPermissions}, nil
}

// teamPermissionsUpdate is POST /team/permissions_update {team_id,
// team_member_permissions}: it replaces the list and answers the team row.
func (a *API) teamPermissionsUpdate(r *http.Request, c *caller) (any, error) {
	o, err := a.orgStore()
	if err != nil {
		return nil, err
	}
	var id opt[string]
	var perms opt[[]string]
	if err := decodeBody(r, namedField{"team_id", &id}, namedField{"team_member_permissions", &perms}); err != nil {
		return nil, err
	}
	switch {
	case !id.ok() || id.V == "":
		return nil, invalid("team_id", "team_id: Field required")
	case !perms.ok():
		return nil, invalid("team_member_permissions", "team_member_permissions: Field required")
	}
	if err := perm.ValidatePermissions(perms.V); err != nil {
		return nil, err
	}
	t, err := a.adminTeam(r.Context(), r, c, o, id.V)
	if err != nil {
		return nil, err
	}
	t, err = a.modifyTeam(r, c, o, t.TeamID, keys.ActionUpdated, func(t *keys.Team) error {
		t.TeamMemberPermissions = perms.V
		return nil
	})
	if err != nil {
		return nil, err
	}
	return teamView(t), nil
}
