package keygen

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/apierr"
)

func ptr[T any](v T) *T { return &v }

func present(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func TestCheck(t *testing.T) {
	team := &Team{TeamID: "t1", Members: map[string]string{"alice": "admin", "bob": "user"}}
	open := &Team{TeamID: "t1", Members: team.Members, Permissions: []string{"/key/generate", "/key/info"}}
	const bobRefused = "Team member does not have permissions for endpoint: /key/generate. You only have access to the following endpoints: ['/key/info', '/key/health'] for team t1. To create keys for this team, please ask your proxy admin to check the team member permission settings and update the settings to allow team member users to create keys."
	admin := Caller{Role: "proxy_admin"}
	alice := Caller{Role: "internal_user", UserID: "alice"}
	bob := Caller{Role: "internal_user", UserID: "bob"}
	carol := Caller{Role: "internal_user", UserID: "carol"}
	viewer := Caller{Role: "internal_user_viewer", UserID: "vic"}
	onlyAdmins := &Settings{KeyGeneration: &KeyGenerationSettings{
		Team:     &TeamKeyGeneration{AllowedTeamMemberRoles: []string{"admin"}, RequiredParams: []string{"tags"}},
		Personal: &PersonalKeyGeneration{AllowedUserRoles: []string{"proxy_admin", "internal_user"}, RequiredParams: []string{"key_alias"}},
	}}
	emptyKG := &Settings{KeyGeneration: &KeyGenerationSettings{}}
	teamReq := func(p ...string) Request {
		return Request{TeamID: ptr("t1"), Present: present(append(p, "team_id")...)}
	}
	tests := []struct {
		name   string
		s      *Settings
		c      Caller
		req    Request
		team   *Team
		status int
		msg    string
	}{
		{"no settings: personal key passes", nil, carol, Request{}, nil, 0, ""},
		{"no settings: team key without a team row passes", nil, carol, teamReq(), nil, 0, ""},
		{"settings: team key without a team row", emptyKG, admin, teamReq(), nil, 400, "Unable to find team object in database. Team ID: t1"},
		{"default roles: team admin may", nil, alice, teamReq(), team, 0, ""},
		{"default permissions: member user may not", nil, bob, teamReq(), team, 401, bobRefused},
		{"team_member_permissions lists /key/generate: member user may", nil, bob, teamReq(), open, 0, ""},
		{"default roles: non-member", nil, carol, teamReq(), team, 400, "User=carol not assigned to team=t1"},
		{"default roles: caller without user_id", nil, Caller{Role: "internal_user"}, teamReq(), team, 400, "User=None not assigned to team=t1"},
		{"proxy admin skips team rules", onlyAdmins, admin, teamReq(), team, 0, ""},
		{"assigned user not in team", nil, alice, Request{TeamID: ptr("t1"), UserID: ptr("zed"), Present: present("team_id", "user_id")}, team, 400, "User=zed not assigned to team=t1"},
		{"role not allowed", onlyAdmins, bob, teamReq("tags"), team, 400, "Team member role user not in allowed_team_member_roles=['admin']"},
		{"team required param missing", onlyAdmins, alice, teamReq(), team, 400, "Required param tags not in data"},
		{"team required param present", onlyAdmins, alice, teamReq("tags"), team, 0, ""},
		{"empty allowed roles allows nobody", &Settings{KeyGeneration: &KeyGenerationSettings{Team: &TeamKeyGeneration{AllowedTeamMemberRoles: []string{}}}}, alice, teamReq(), team, 400, "Team member role admin not in allowed_team_member_roles=[]"},
		{"absent allowed roles allows any member", &Settings{KeyGeneration: &KeyGenerationSettings{Team: &TeamKeyGeneration{}}}, bob, teamReq(), open, 0, ""},
		{"roles before permissions", onlyAdmins, bob, teamReq("tags"), open, 400, "Team member role user not in allowed_team_member_roles=['admin']"},
		{"personal role not allowed", onlyAdmins, viewer, Request{Present: present("key_alias")}, nil, 400, "Personal key creation has been restricted by admin. Allowed roles=['proxy_admin', 'internal_user']. Your role=internal_user_viewer"},
		{"personal role None", onlyAdmins, Caller{}, Request{}, nil, 400, "Personal key creation has been restricted by admin. Allowed roles=['proxy_admin', 'internal_user']. Your role=None"},
		{"personal required param missing (admin too)", onlyAdmins, admin, Request{}, nil, 400, "Required param key_alias not in data"},
		{"personal required param present", onlyAdmins, alice, Request{Present: present("key_alias")}, nil, 0, ""},
		{"personal: no personal settings", emptyKG, viewer, Request{}, nil, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Check(tt.c, tt.req, tt.team)
			checkErr(t, err, tt.status, tt.msg)
		})
	}
}

func checkErr(t *testing.T, err error, status int, msg string) {
	t.Helper()
	if status == 0 {
		if err != nil {
			t.Fatalf("got %v, want nil", err)
		}
		return
	}
	e, ok := err.(*apierr.Error)
	if !ok {
		t.Fatalf("got %v (%T), want *apierr.Error", err, err)
	}
	typ, param := apierr.TypeInternal, "None"
	if status == http.StatusUnauthorized { // team_member_permissions: the route is the param
		typ, param = access.TypeTeamMemberPermission, access.RouteGenerate
	}
	if e.Status != status || e.Message != msg || e.Type != typ || e.Param == nil || *e.Param != param {
		t.Fatalf("got %d %s %q, want %d %q", e.Status, e.Type, e.Message, status, msg)
	}
}

func TestApplyDefaults(t *testing.T) {
	s := &Settings{Defaults: &DefaultParams{
		MaxBudget: ptr(10.0), TeamID: ptr("core"), TPMLimit: ptr(int64(100)), BudgetDuration: ptr("30d"),
		Models: []string{"gpt-4o"}, Metadata: map[string]any{"env": "prod"},
	}}
	var f Fields
	s.ApplyDefaults(&f)
	if *f.MaxBudget != 10 || *f.TeamID != "core" || *f.TPMLimit != 100 || *f.BudgetDuration != "30d" ||
		f.RPMLimit != nil || f.UserID != nil || len(f.Models) != 1 || f.Metadata["env"] != "prod" {
		t.Fatalf("defaults not applied: %+v", f)
	}
	f = Fields{MaxBudget: ptr(3.0), Models: []string{"m"}, Metadata: map[string]any{"a": 1}}
	s.ApplyDefaults(&f)
	if *f.MaxBudget != 3 || f.Models[0] != "m" || f.Metadata["env"] != nil {
		t.Fatalf("given values were overwritten: %+v", f)
	}
	f.Models[0] = "changed"
	if s.Defaults.Models[0] != "gpt-4o" {
		t.Fatal("defaults share memory with a key")
	}
	var none *Settings
	none.ApplyDefaults(&f) // nil settings: no-op, no panic
}

func TestApplyUpperbound(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &Settings{Upperbound: &UpperboundParams{
		MaxBudget: ptr(100.0), BudgetDuration: ptr("30d"), Duration: ptr("1mo"),
		MaxParallelRequests: ptr(int64(5)), TPMLimit: ptr(int64(1000)), RPMLimit: ptr(int64(60)),
	}}
	tests := []struct {
		name   string
		f      Fields
		status int
		msg    string
	}{
		{"within", Fields{MaxBudget: ptr(100.0), TPMLimit: ptr(int64(1000)), Duration: ptr("31d"), BudgetDuration: ptr("4w")}, 0, ""},
		{"max_budget over", Fields{MaxBudget: ptr(200.0)}, 400, "{'error': 'max_budget is over max limit set in config - user_value=200.0; max_value=100.0'}"},
		{"tpm over", Fields{TPMLimit: ptr(int64(1001))}, 400, "{'error': 'tpm_limit is over max limit set in config - user_value=1001; max_value=1000'}"},
		{"rpm over", Fields{RPMLimit: ptr(int64(61))}, 400, "{'error': 'rpm_limit is over max limit set in config - user_value=61; max_value=60'}"},
		{"parallel over", Fields{MaxParallelRequests: ptr(int64(6))}, 400, "{'error': 'max_parallel_requests is over max limit set in config - user_value=6; max_value=5'}"},
		{"budget_duration over", Fields{BudgetDuration: ptr("31d")}, 400, "{'error': 'budget_duration is over max limit set in config - user_value=31d; max_value=30d'}"},
		{"duration over (a calendar month from Jan 1 is 31 days)", Fields{Duration: ptr("32d")}, 400, "{'error': 'duration is over max limit set in config - user_value=32d; max_value=1mo'}"},
		{"duration first in order", Fields{Duration: ptr("2mo"), MaxBudget: ptr(1e9)}, 400, "{'error': 'duration is over max limit set in config - user_value=2mo; max_value=1mo'}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.f
			checkErr(t, s.ApplyUpperbound(&f, now), tt.status, tt.msg)
		})
	}
	var f Fields
	if err := s.ApplyUpperbound(&f, now); err != nil {
		t.Fatal(err)
	}
	if *f.MaxBudget != 100 || *f.Duration != "1mo" || *f.BudgetDuration != "30d" || *f.MaxParallelRequests != 5 || *f.TPMLimit != 1000 || *f.RPMLimit != 60 {
		t.Fatalf("unset fields did not take the bounds: %+v", f)
	}
}

func TestSettingsJSON(t *testing.T) {
	var s Settings
	doc := `{"key_generation_settings":{"team_key_generation":{"allowed_team_member_roles":[]},"personal_key_generation":{"required_params":["key_alias"]}},
	"upperbound_key_generate_params":{"max_budget":100,"duration":"30d"}}`
	if err := json.Unmarshal([]byte(doc), &s); err != nil {
		t.Fatal(err)
	}
	if s.KeyGeneration.Team.AllowedTeamMemberRoles == nil || len(s.KeyGeneration.Team.AllowedTeamMemberRoles) != 0 {
		t.Error("an empty allowed_team_member_roles must stay distinct from an absent one")
	}
	if s.KeyGeneration.Personal.AllowedUserRoles != nil {
		t.Error("absent allowed_user_roles must be nil")
	}
	if err := s.Validate(); err != nil {
		t.Error(err)
	}
	bad := Settings{Upperbound: &UpperboundParams{Duration: ptr("forever")}}
	if bad.Validate() == nil {
		t.Error("an unparseable upperbound duration must be an error")
	}
	bad = Settings{Upperbound: &UpperboundParams{MaxBudget: ptr(-1.0)}}
	if bad.Validate() == nil {
		t.Error("a negative upperbound max_budget must be an error")
	}
}
