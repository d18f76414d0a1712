package mgmt_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/mgmt"
)

// orgOf returns the env's store as an OrgStore (both backends are).
func orgOf(t *testing.T, e *env) mgmt.OrgStore {
	t.Helper()
	o, ok := e.st.(mgmt.OrgStore)
	if !ok {
		t.Fatalf("%T is not an OrgStore", e.st)
	}
	return o
}

// docChecker validates responses against /openapi.json.
func docChecker(t *testing.T, e *env) func(name, method, path string, status int, body []byte) {
	t.Helper()
	var doc struct {
		Paths      map[string]map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(e.call("GET", "/openapi.json", "", "").body, &doc); err != nil {
		t.Fatal(err)
	}
	c := &schemaChecker{schemas: doc.Components.Schemas}
	return func(name, method, path string, status int, body []byte) {
		t.Helper()
		op := doc.Paths[path][strings.ToLower(method)]
		resp, ok := op["responses"].(map[string]any)[fmt.Sprint(status)].(map[string]any)
		if !ok {
			t.Errorf("%s: %s %s has no %d response documented", name, method, path, status)
			return
		}
		schema := resp["content"].(map[string]any)["application/json"].(map[string]any)["schema"].(map[string]any)
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, msg := range c.check(name, schema, v) {
			t.Error(msg)
		}
	}
}

func TestTeamsAndUsers(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		o := orgOf(t, e)
		ctx := context.Background()
		doc := docChecker(t, e)
		do := func(name, method, path, body string, want int) map[string]any {
			t.Helper()
			r := e.call(method, path, master, body)
			if r.status != want {
				t.Fatalf("%s: %s %s: %d, want %d: %s", name, method, path, r.status, want, r.body)
			}
			docPath, _, _ := strings.Cut(path, "?")
			doc(name, method, docPath, want, r.body)
			var m map[string]any
			_ = json.Unmarshal(r.body, &m)
			return m
		}

		// /team/new: members become users with memberships.
		tm := do("team new", "POST", "/team/new", `{"team_id":"t1","team_alias":"Team One","members_with_roles":[{"role":"admin","user_id":"alice"}],
			"models":["gpt-4o","grp"],"max_budget":10,"budget_duration":"30d","metadata":{"k":"v"},"tpm_limit":100}`, 200)
		if tm["team_id"] != "t1" || tm["max_budget"] != 10.0 || tm["budget_reset_at"] == nil || tm["blocked"] != false ||
			jsonStr(tm["members_with_roles"]) != `[{"role":"admin","user_email":null,"user_id":"alice"}]` || jsonStr(tm["admins"]) != `["alice"]` {
			t.Errorf("team/new = %v", tm)
		}
		alice, err := o.GetUser(ctx, "alice")
		if err != nil || !slices.Equal(alice.Teams, []string{"t1"}) || alice.UserRole == nil || *alice.UserRole != keys.RoleInternalUser {
			t.Errorf("member user = %+v, %v", alice, err)
		}
		if _, err := o.GetMembership(ctx, "t1", "alice"); err != nil {
			t.Errorf("membership of alice: %v", err)
		}
		generated := do("team new, generated id", "POST", "/team/new", `{}`, 200)
		if id, _ := generated["team_id"].(string); len(id) != 36 {
			t.Errorf("generated team_id = %v", generated["team_id"])
		}

		for _, tc := range []struct {
			errCase
			method, path string
		}{
			{errCase{"duplicate team", `{"team_id":"t1"}`, 400, "bad_request_error", "team_id", "Team id = t1 already exists. Please use a different team id."}, "POST", "/team/new"},
			{errCase{"bad budget_duration", `{"budget_duration":"soon"}`, 400, "bad_request_error", "budget_duration", "invalid duration"}, "POST", "/team/new"},
			{errCase{"negative budget", `{"max_budget":-1}`, 400, "bad_request_error", "max_budget", "max_budget must be >= 0"}, "POST", "/team/new"},
			{errCase{"bad member role", `{"members_with_roles":[{"role":"owner","user_id":"x"}]}`, 422, "validation_error", "member.role", "Input should be 'admin' or 'user'"}, "POST", "/team/new"},
			{errCase{"member without id or email", `{"members_with_roles":[{"role":"user"}]}`, 400, "bad_request_error", "member", "Either user_id or user_email must be provided"}, "POST", "/team/new"},
			{errCase{"wrong type", `{"models":"gpt-4o"}`, 422, "validation_error", "models", "Input should be a valid list of strings"}, "POST", "/team/new"},
			{errCase{"update without team_id", `{"max_budget":1}`, 422, "validation_error", "team_id", "team_id: Field required"}, "POST", "/team/update"},
			{errCase{"update unknown team", `{"team_id":"nope"}`, 404, "not_found_error", "team_id", "Team not found, passed team_id=nope"}, "POST", "/team/update"},
			{errCase{"block unknown team", `{"team_id":"nope"}`, 404, "not_found_error", "team_id", "Team not found, passed team_id=nope"}, "POST", "/team/block"},
			{errCase{"delete unknown team", `{"team_ids":["t1","nope"]}`, 404, "not_found_error", "team_id", "Team not found, passed team_id=nope"}, "POST", "/team/delete"},
			{errCase{"delete without ids", `{}`, 422, "validation_error", "team_ids", "team_ids: Field required"}, "POST", "/team/delete"},
			{errCase{"info unknown team", ``, 404, "not_found_error", "team_id", "Team not found, passed team_id=nope"}, "GET", "/team/info?team_id=nope"},
			{errCase{"info without team_id", ``, 422, "validation_error", "team_id", "No team id passed in"}, "GET", "/team/info"},
			{errCase{"member_add to unknown team", `{"team_id":"nope","member":{"role":"user","user_id":"bob"}}`, 404, "not_found_error", "team_id", "Team not found"}, "POST", "/team/member_add"},
			{errCase{"member_add without member", `{"team_id":"t1"}`, 422, "validation_error", "member", "member: Field required"}, "POST", "/team/member_add"},
			{errCase{"member_add existing member", `{"team_id":"t1","member":{"role":"user","user_id":"alice"}}`, 400, "team_member_already_in_team", "user_id", "User already in team. Member: user_id=alice"}, "POST", "/team/member_add"},
			{errCase{"member_delete non-member", `{"team_id":"t1","user_id":"zed"}`, 400, "bad_request_error", "user_id", "User not found in team"}, "POST", "/team/member_delete"},
			{errCase{"member_update bad role", `{"team_id":"t1","user_id":"alice","role":"owner"}`, 422, "validation_error", "role", "Input should be 'admin' or 'user'"}, "POST", "/team/member_update"},
			{errCase{"user_new bad role", `{"user_role":"root"}`, 422, "validation_error", "user_role", "Input should be 'proxy_admin'"}, "POST", "/user/new"},
			{errCase{"user_new unknown team", `{"teams":["nope"]}`, 404, "not_found_error", "team_id", "Team not found, passed team_id=nope"}, "POST", "/user/new"},
			{errCase{"user_update unknown", `{"user_id":"nope","max_budget":1}`, 404, "not_found_error", "user_id", "User not found, passed user_id=nope"}, "POST", "/user/update"},
			{errCase{"user_update no id", `{"max_budget":1}`, 422, "validation_error", "user_id", "user_id: Field required"}, "POST", "/user/update"},
			{errCase{"user_info unknown", ``, 404, "not_found_error", "user_id", "User not found, passed user_id=nope"}, "GET", "/user/info?user_id=nope"},
			{errCase{"user_delete unknown", `{"user_ids":["nope"]}`, 404, "not_found_error", "user_id", "User not found, passed user_id=nope"}, "POST", "/user/delete"},
			{errCase{"user_list bad page", ``, 422, "validation_error", "page", "page: Input should be an integer"}, "GET", "/user/list?page=0"},
		} {
			t.Run(tc.name, func(t *testing.T) { e.T(t).checkErr(tc.errCase, tc.method, tc.path) })
		}
		// A virtual key may not manage teams or users (for now: master key only).
		raw, _, _ := e.generate(`{}`)
		if r := e.call("POST", "/team/new", raw, `{}`); r.status != 401 {
			t.Errorf("team/new with a virtual key: %d, want 401", r.status)
		}

		up := do("team update", "POST", "/team/update", `{"team_id":"t1","max_budget":null,"models":["gpt-4o"]}`, 200)
		if d, _ := up["data"].(map[string]any); d["max_budget"] != nil || jsonStr(d["models"]) != `["gpt-4o"]` || d["tpm_limit"] != 100.0 {
			t.Errorf("team/update = %v", up)
		}
		if b := do("team block", "POST", "/team/block", `{"team_id":"t1"}`, 200); b["blocked"] != true {
			t.Errorf("team/block = %v", b)
		}
		if b := do("team unblock", "POST", "/team/unblock", `{"team_id":"t1"}`, 200); b["blocked"] != false {
			t.Errorf("team/unblock = %v", b)
		}

		// Members.
		add := do("member add", "POST", "/team/member_add", `{"team_id":"t1","member":{"role":"user","user_id":"bob"},"max_budget_in_team":5}`, 200)
		if ms, _ := add["updated_team_memberships"].([]any); len(ms) != 1 || jsonStr(ms[0].(map[string]any)["litellm_budget_table"].(map[string]any)["max_budget"]) != "5" {
			t.Errorf("member_add = %v", add)
		}
		do("member update", "POST", "/team/member_update", `{"team_id":"t1","user_id":"bob","role":"admin","max_budget_in_team":7}`, 200)
		m, err := o.GetMembership(ctx, "t1", "bob")
		if err != nil || m.Budget == nil || *m.Budget.MaxBudget != 7 {
			t.Errorf("bob's membership after member_update = %+v, %v", m, err)
		}
		if team, _ := o.GetTeam(ctx, "t1"); team.Role("bob") != keys.TeamRoleAdmin {
			t.Errorf("bob's role = %q, want admin", team.Role("bob"))
		}
		del := do("member delete", "POST", "/team/member_delete", `{"team_id":"t1","user_id":"bob"}`, 200)
		if strings.Contains(jsonStr(del["members_with_roles"]), "bob") {
			t.Errorf("member_delete = %v", del)
		}
		if _, err := o.GetMembership(ctx, "t1", "bob"); err == nil {
			t.Error("bob's membership survived member_delete")
		}
		if bob, _ := o.GetUser(ctx, "bob"); len(bob.Teams) != 0 {
			t.Errorf("bob's teams after member_delete = %v", bob.Teams)
		}
		if l := e.call("GET", "/team/list?user_id=alice", master, ""); l.status != 200 || !strings.Contains(string(l.body), `"team_id":"t1"`) {
			t.Errorf("team/list?user_id=alice: %d %s", l.status, l.body)
		}
		doc("team list", "GET", "/team/list", 200, e.call("GET", "/team/list", master, "").body)

		// /user/new creates a key for the user unless auto_create_key is false.
		nu := do("user new", "POST", "/user/new", `{"user_id":"carol","user_email":"carol@example.com","user_role":"internal_user",
			"max_budget":3,"models":["gpt-4o"],"teams":["t1"],"key_alias":"carol-key","duration":"1h"}`, 200)
		carolKey, _ := nu["key"].(string)
		e.sawRaw(carolKey)
		if !strings.HasPrefix(carolKey, "sk-") || nu["user_id"] != "carol" || nu["max_budget"] != 3.0 || nu["key_alias"] != "carol-key" {
			t.Errorf("user/new = %v", nu)
		}
		k, err := e.st.Get(ctx, keys.HashHex(carolKey))
		if err != nil || k.UserID == nil || *k.UserID != "carol" || k.MaxBudget != nil || k.Expires == nil || !slices.Equal(k.Models, []string{"gpt-4o"}) {
			t.Errorf("carol's key = %+v, %v", k, err)
		}
		if team, _ := o.GetTeam(ctx, "t1"); team.Role("carol") != keys.TeamRoleUser {
			t.Errorf("carol not a member of t1: %+v", team.MembersWithRoles)
		}
		nk := do("user new without key", "POST", "/user/new", `{"user_id":"dave","auto_create_key":false}`, 200)
		if nk["key"] != nil || nk["user_id"] != "dave" {
			t.Errorf("user/new auto_create_key false = %v", nk)
		}
		if r := e.call("POST", "/user/new", master, `{"user_id":"dave"}`); r.status != 400 {
			t.Errorf("duplicate user/new: %d", r.status)
		}
		info := do("user info", "GET", "/user/info?user_id=carol", "", 200)
		if ks, _ := info["keys"].([]any); len(ks) != 1 || !strings.Contains(jsonStr(info["teams"]), `"t1"`) {
			t.Errorf("user/info = %v", info)
		}
		uu := do("user update", "POST", "/user/update", `{"user_id":"carol","max_budget":4,"user_alias":"C"}`, 200)
		if d, _ := uu["data"].(map[string]any); d["max_budget"] != 4.0 || d["user_alias"] != "C" || d["user_email"] != "carol@example.com" {
			t.Errorf("user/update = %v", uu)
		}
		do("user update by email", "POST", "/user/update", `{"user_email":"carol@example.com","max_budget":5}`, 200)
		if c, _ := o.GetUser(ctx, "carol"); c.MaxBudget == nil || *c.MaxBudget != 5 {
			t.Errorf("update by email: %+v", c)
		}
		ul := do("user list", "GET", "/user/list?page_size=2", "", 200)
		if ul["total"] != 4.0 || len(ul["users"].([]any)) != 2 || ul["total_pages"] != 2.0 {
			t.Errorf("user/list = %v", ul)
		}
		if r := do("user list by role", "GET", "/user/list?role=internal_user", "", 200); r["total"] != 3.0 {
			t.Errorf("user/list?role=internal_user total = %v, want 3 (alice, bob, carol)", r["total"])
		}
		ti := do("team info", "GET", "/team/info?team_id=t1", "", 200)
		if ms, _ := ti["team_memberships"].([]any); len(ms) != 2 {
			t.Errorf("team/info memberships = %v", ti["team_memberships"])
		}

		// Deleting a user deletes its keys and takes it out of its teams.
		do("user delete", "POST", "/user/delete", `{"user_ids":["carol"]}`, 200)
		if _, err := e.st.Get(ctx, keys.HashHex(carolKey)); err == nil {
			t.Error("carol's key survived user/delete")
		}
		if team, _ := o.GetTeam(ctx, "t1"); team.Role("carol") != "" {
			t.Error("carol still in t1 after user/delete")
		}
		// Deleting a team deletes its keys and memberships.
		_, teamKey, _ := e.generate(`{"team_id":"t1"}`)
		td := do("team delete", "POST", "/team/delete", `{"team_ids":["t1"]}`, 200)
		if jsonStr(td["deleted_teams"]) != `["t1"]` {
			t.Errorf("team/delete = %v", td)
		}
		if _, err := e.st.Get(ctx, teamKey); err == nil {
			t.Error("the team's key survived team/delete")
		}
		if a, _ := o.GetUser(ctx, "alice"); len(a.Teams) != 0 {
			t.Errorf("alice's teams after team/delete = %v", a.Teams)
		}
		if r := e.call("POST", "/team/delete", master, `{"team_ids":["t1"]}`); r.status != 404 {
			t.Errorf("second team/delete: %d, want 404", r.status)
		}

		// Every mutation left an audit row.
		ar, ok := e.st.(auditReader)
		if !ok {
			return
		}
		for obj, want := range map[string][]string{
			"t1":     {"created", "updated", "blocked", "unblocked", "deleted"},
			"alice":  {"created"},
			"carol":  {"created", "updated", "deleted"},
			"t1:bob": {"created", "updated", "deleted"},
		} {
			rows, err := ar.Audits(ctx, obj)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range rows {
				if !slices.Contains(got, a.Action) {
					got = append(got, a.Action)
				}
			}
			for _, w := range want {
				if !slices.Contains(got, w) {
					t.Errorf("audit rows for %s: actions %v, missing %s", obj, got, w)
				}
			}
		}
	})
}
