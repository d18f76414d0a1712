package mgmt_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"

	"github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/mgmt"
)

// team_member_permissions and the self-managed team routes, over real HTTP
// on both stores with the directory over the stores' own team and user
// tables: what a plain member may do to the team's keys follows the
// team's list, a team admin manages members and permissions of its team
// only, and the refusals are LiteLLM's.
func TestTeamMemberPermissions(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newDirEnv(t, open)
		e.admin("POST", "/user/new", `{"user_id": "ann", "user_role": "internal_user", "auto_create_key": false}`, 200)
		e.admin("POST", "/user/new", `{"user_id": "bob", "user_role": "internal_user", "auto_create_key": false}`, 200)
		e.admin("POST", "/user/new", `{"user_id": "cat", "user_role": "internal_user", "auto_create_key": false}`, 200)
		e.admin("POST", "/team/new", `{"team_id": "t1", "members_with_roles": [{"role": "admin", "user_id": "ann"}, {"role": "user", "user_id": "bob"}]}`, 200)
		e.admin("POST", "/team/new", `{"team_id": "t2", "members_with_roles": [{"role": "admin", "user_id": "cat"}]}`, 200)
		ann, _, _ := e.generate(`{"user_id": "ann", "team_id": "t1"}`)
		bob, _, _ := e.generate(`{"user_id": "bob", "team_id": "t1"}`)
		cat, _, _ := e.generate(`{"user_id": "cat", "team_id": "t2"}`)
		teamKey, _, _ := e.generate(`{"team_id": "t1"}`)

		refused := func(route, perms string) string {
			return "Team member does not have permissions for endpoint: " + route + ". You only have access to the following endpoints: " + perms +
				" for team t1. To create keys for this team, please ask your proxy admin to check the team member permission settings and update the settings to allow team member users to create keys."
		}
		notAdmin := func(route, team string) string {
			return fmt.Sprintf("{'error': 'Call not allowed. User not proxy admin OR team admin. route=%s, team_id=%s'}", route, team)
		}
		info := "/key/info?key=" + url.QueryEscape(teamKey)
		defaults := "['/key/info', '/key/health']"
		e.runSteps([]apiStep{
			// defaults: a plain member reads the team's keys and nothing more
			{"member reads a team key", bob, "GET", info, "", 200, "", ""},
			{"member generates by default", bob, "POST", "/key/generate", `{"team_id": "t1"}`, 401, access.TypeTeamMemberPermission, refused("/key/generate", defaults)},
			{"member updates by default", bob, "POST", "/key/update", fmt.Sprintf(`{"key": %q, "max_budget": 1}`, teamKey), 401, access.TypeTeamMemberPermission, refused("/key/update", defaults)},
			{"member deletes by default", bob, "POST", "/key/delete", fmt.Sprintf(`{"keys": [%q]}`, teamKey), 401, access.TypeTeamMemberPermission, refused("/key/delete", defaults)},
			{"team admin generates", ann, "POST", "/key/generate", `{"team_id": "t1"}`, 200, "", ""},
			{"another team's admin reads", cat, "GET", info, "", 403, "internal_server_error", "You are not allowed to access this key's info. Your role=internal_user"},

			// who may read and change the list
			{"member lists permissions", bob, "GET", "/team/permissions_list?team_id=t1", "", 403, "internal_server_error", notAdmin("/team/permissions_list", "t1")},
			{"member updates permissions", bob, "POST", "/team/permissions_update", `{"team_id": "t1", "team_member_permissions": ["/key/generate"]}`, 403, "internal_server_error", notAdmin("/team/permissions_update", "t1")},
			{"admin of another team", cat, "POST", "/team/permissions_update", `{"team_id": "t1", "team_member_permissions": ["/key/generate"]}`, 403, "internal_server_error", notAdmin("/team/permissions_update", "t1")},
			{"unknown permission", ann, "POST", "/team/permissions_update", `{"team_id": "t1", "team_member_permissions": ["/key/*"]}`, 400, "bad_request_error",
				`Invalid team_member_permissions value "/key/*". Allowed values: ` + pyStrings(access.MemberPermissions)},
			{"unknown team", ann, "GET", "/team/permissions_list?team_id=nope", "", 404, "not_found_error", "Team not found, passed team_id=nope"},
			{"missing list", ann, "POST", "/team/permissions_update", `{"team_id": "t1"}`, 422, "validation_error", "team_member_permissions: Field required"},
			{"team admin grants generate and update", ann, "POST", "/team/permissions_update", `{"team_id": "t1", "team_member_permissions": ["/key/generate", "/key/update"]}`, 200, "", ""},

			// the new list is what a member may do, at once
			{"member generates when granted", bob, "POST", "/key/generate", `{"team_id": "t1"}`, 200, "", ""},
			{"member updates when granted", bob, "POST", "/key/update", fmt.Sprintf(`{"key": %q, "max_budget": 1}`, teamKey), 200, "", ""},
			{"member still may not delete", bob, "POST", "/key/delete", fmt.Sprintf(`{"keys": [%q]}`, teamKey), 401, access.TypeTeamMemberPermission, refused("/key/delete", "['/key/generate', '/key/update']")},
			{"info is no longer listed", bob, "GET", info, "", 403, "internal_server_error", "You are not allowed to access this key's info. Your role=internal_user"},

			// members: a team admin manages its own team's
			{"member adds a member", bob, "POST", "/team/member_add", `{"team_id": "t1", "member": {"role": "user", "user_id": "dan"}}`, 403, "internal_server_error", notAdmin("/team/member_add", "t1")},
			{"other team's admin adds a member", cat, "POST", "/team/member_add", `{"team_id": "t1", "member": {"role": "user", "user_id": "dan"}}`, 403, "internal_server_error", notAdmin("/team/member_add", "t1")},
			{"team admin adds a member", ann, "POST", "/team/member_add", `{"team_id": "t1", "member": {"role": "user", "user_id": "dan"}}`, 200, "", ""},
			{"team admin updates a member", ann, "POST", "/team/member_update", `{"team_id": "t1", "user_id": "dan", "max_budget_in_team": 5}`, 200, "", ""},
			{"member deletes a member", bob, "POST", "/team/member_delete", `{"team_id": "t1", "user_id": "dan"}`, 403, "internal_server_error", notAdmin("/team/member_delete", "t1")},
			{"team admin deletes a member", ann, "POST", "/team/member_delete", `{"team_id": "t1", "user_id": "dan"}`, 200, "", ""},
			// lists: a team admin's own keys, and with include_team_keys its teams' keys
			{"team admin lists its teams' keys", ann, "GET", "/key/list?include_team_keys=true&return_full_object=true&size=100", "", 200, "", ""},

			// info: a team's members read it, a user reads itself
			{"member reads its team", bob, "GET", "/team/info?team_id=t1", "", 200, "", ""},
			{"another team's admin reads it", cat, "GET", "/team/info?team_id=t1", "", 403, "auth_error", "key not allowed to access this team's info"},
			{"user reads itself", bob, "GET", "/user/info?user_id=bob", "", 200, "", ""},
			{"user reads itself by default", bob, "GET", "/user/info", "", 200, "", ""},
			{"user reads another", bob, "GET", "/user/info?user_id=ann", "", 403, "auth_error", "key not allowed to access this user's info"},
			{"member lists its teams", bob, "GET", "/team/list?user_id=bob", "", 200, "", ""},
			{"member lists every team", bob, "GET", "/team/list", "", 401, "auth_error", "{'error': 'Only admin users can query all teams/other teams. Your user role=internal_user'}"},
			{"member lists another user's teams", bob, "GET", "/team/list?user_id=ann", "", 401, "auth_error", "{'error': 'Only admin users can query all teams/other teams. Your user role=internal_user'}"},
			{"member lists users", bob, "GET", "/user/list", "", 401, "auth_error", "Authentication Error, only the proxy admin (master key) may call GET /user/list."},
			{"team admin may not create teams", ann, "POST", "/team/new", `{"team_id": "t3"}`, 401, "auth_error", "Authentication Error, only the proxy admin (master key) may call POST /team/new."},
		})

		// include_team_keys: a team admin sees the team's keys, a plain member only its own
		for _, c := range []struct {
			who, auth string
			want      bool
		}{{"team admin", ann, true}, {"plain member", bob, false}, {"team admin without the flag", ann, false}} {
			path := "/key/list?return_full_object=true&size=100"
			if c.who != "team admin without the flag" {
				path += "&include_team_keys=true"
			}
			r := e.call("GET", path, c.auth, "")
			if r.status != 200 {
				t.Fatalf("%s: %d %s", c.who, r.status, r.body)
			}
			var l struct {
				Keys []struct {
					TeamID *string `json:"team_id"`
					UserID *string `json:"user_id"`
				} `json:"keys"`
			}
			if err := json.Unmarshal(r.body, &l); err != nil {
				t.Fatal(err)
			}
			sawTeamKey := false
			for _, k := range l.Keys {
				if k.UserID == nil && k.TeamID != nil && *k.TeamID == "t1" {
					sawTeamKey = true
				}
			}
			if sawTeamKey != c.want {
				t.Errorf("%s: lists the team's keys %v, want %v: %s", c.who, sawTeamKey, c.want, r.body)
			}
		}
		doc := docChecker(t, e)
		r := e.call("POST", "/team/permissions_update", ann, `{"team_id": "t1", "team_member_permissions": ["/key/generate", "/key/update"]}`)
		doc("permissions_update", "POST", "/team/permissions_update", r.status, r.body)
		r = e.call("GET", "/team/permissions_list?team_id=t1", ann, "")
		doc("permissions_list", "GET", "/team/permissions_list", r.status, r.body)
		var got struct {
			TeamID      string   `json:"team_id"`
			Permissions []string `json:"team_member_permissions"`
			All         []string `json:"all_available_permissions"`
		}
		if err := json.Unmarshal(r.body, &got); err != nil || r.status != 200 {
			t.Fatalf("permissions_list: %d %s", r.status, r.body)
		}
		if got.TeamID != "t1" || fmt.Sprint(got.Permissions) != "[/key/generate /key/update]" || len(got.All) != len(access.MemberPermissions) {
			t.Errorf("permissions_list: %+v", got)
		}
		// a team written without a list reads back as LiteLLM's column default
		r = e.call("GET", "/team/permissions_list?team_id=t2", master, "")
		if r.status != 200 || jsonStr(r.obj(t)["team_member_permissions"]) != "[]" {
			t.Errorf("t2: %d %s", r.status, r.body)
		}
		// /team/new and /team/update validate the list too
		for _, c := range []struct{ path, body string }{
			{"/team/new", `{"team_member_permissions": ["/team/new"]}`},
			{"/team/update", `{"team_id": "t1", "team_member_permissions": ["/key/generate", 7]}`},
		} {
			if r := e.call("POST", c.path, master, c.body); r.status != 400 && r.status != 422 {
				t.Errorf("%s %s: %d %s", c.path, c.body, r.status, r.body)
			}
		}
	})
}

// pyStrings is a Python list repr of strings, as LiteLLM's messages show.
func pyStrings(l []string) string {
	s := "["
	for i, v := range l {
		if i > 0 {
			s += ", "
		}
		s += "'" + v + "'"
	}
	return s + "]"
}

// apiStep is one call and the answer it must get: the status, and for a
// refusal LiteLLM's error type and message ("" = any message).
type apiStep struct {
	name, auth, method, path, body string
	status                         int
	typ, msg                       string
}

// runSteps makes each call in order; a key in a 200 answer is one more raw
// key that must never be logged.
func (e *env) runSteps(steps []apiStep) {
	e.t.Helper()
	for _, s := range steps {
		r := e.call(s.method, s.path, s.auth, s.body)
		if r.status != s.status {
			e.t.Fatalf("%s: status %d, want %d: %s", s.name, r.status, s.status, r.body)
		}
		if s.status == 200 {
			if len(r.body) > 0 && r.body[0] == '{' {
				if k, ok := r.obj(e.t)["key"].(string); ok {
					e.sawRaw(k)
				}
			}
			continue
		}
		typ, msg, _, _ := r.errBody(e.t)
		if typ != s.typ || (s.msg != "" && msg != s.msg) {
			e.t.Errorf("%s: got %s %q\nwant %s %q", s.name, typ, msg, s.typ, s.msg)
		}
	}
}

// newDirEnv is an env whose roles come from the store's own team and user
// tables, as the sidecar runs.
func newDirEnv(t *testing.T, open opener) *env {
	t.Helper()
	st := open(t)
	return newEnv(t, st, func(c *mgmt.Config) { c.Directory = mgmt.OrgDirectory{Org: st.(mgmt.OrgStore)} })
}
