package mgmt_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/keygen"
	"github.com/virtualkeys/sidecar/internal/mgmt"
)

// directory is a fixed set of users and teams.
type directory struct {
	users map[string]string   // user_id -> user_role
	teams map[string][]string // user_id -> teams
}

func (d directory) User(_ context.Context, id string) (string, []string, bool, error) {
	role, ok := d.users[id]
	return role, d.teams[id], ok, nil
}

func (d directory) Team(_ context.Context, id string) (*access.Team, error) {
	if id != "t1" {
		return nil, nil
	}
	return &access.Team{TeamID: "t1", Members: map[string]string{"ta": "admin", "tu": "user"}}, nil
}

var testDirectory = directory{
	users: map[string]string{
		"pa": access.RoleProxyAdmin, "pv": access.RoleProxyAdminViewer, "iu": access.RoleInternalUser,
		"iv": access.RoleInternalUserViewer, "ta": access.RoleInternalUser, "tu": access.RoleInternalUser,
	},
	teams: map[string][]string{"iu": {"t1"}, "ta": {"t1"}, "tu": {"t1"}},
}

// matrixRows are docs/api.md's rows: the caller key's user_id and team_id
// ("master" is the master key).
var matrixRows = map[string]struct{ user, team string }{
	"master key": {"master", ""}, "proxy_admin": {"pa", ""}, "proxy_admin_viewer": {"pv", ""},
	"internal_user": {"iu", ""}, "internal_user_viewer": {"iv", ""},
	"team admin": {"ta", "t1"}, "team user": {"tu", "t1"}, "key without a user": {"", ""},
}

var matrixColumns = []string{"generate", "update", "regenerate", "delete", "block", "info", "list"}

// docMatrix reads docs/api.md's permission matrix: row -> cells.
func docMatrix(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- permission-matrix")
	if !ok {
		t.Fatal("docs/api.md has no permission matrix")
	}
	out := map[string][]string{}
	for _, line := range strings.Split(rest, "\n")[3:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		out[cells[0]] = cells[1:]
	}
	if len(out) != len(matrixRows) {
		t.Fatalf("matrix has %d rows, want %d", len(out), len(matrixRows))
	}
	return out
}

// Every cell of docs/api.md's permission matrix, over real HTTP on both
// stores: each action is tried on the caller's own key, a key of team t1
// and a stranger's key, and the outcome must be the cell.
func TestPermissionMatrix(t *testing.T) {
	want := docMatrix(t)
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t), func(c *mgmt.Config) { c.Directory = testDirectory })
		for row, who := range matrixRows {
			auth := master
			if who.user != "master" {
				body := map[string]any{}
				if who.user != "" {
					body["user_id"] = who.user
				}
				if who.team != "" {
					body["team_id"] = who.team
				}
				auth, _, _ = e.generate(jsonStr(body))
			}
			for i, col := range matrixColumns {
				t.Run(row+" × "+col, func(t *testing.T) {
					e := e.T(t)
					if got := matrixCell(e, auth, who.user, col); got != want[row][i] {
						t.Errorf("docs say %q, the API does %q", want[row][i], got)
					}
				})
			}
		}
	})
}

// matrixCell performs one action as auth on fresh targets and names the
// outcome as the matrix does.
func matrixCell(e *env, auth, user, action string) string {
	if action == "list" {
		e.generate(`{"user_id": "stranger"}`)
		r := e.call("GET", "/key/list?size=100&return_full_object=true", auth, "")
		if r.status != 200 {
			return fmt.Sprint(r.status)
		}
		if strings.Contains(string(r.body), `"stranger"`) {
			return "all"
		}
		return "own"
	}
	targets := []struct{ name, body string }{
		{"own", fmt.Sprintf(`{"user_id": %q}`, user)},
		{"team", `{"team_id": "t1"}`},
		{"other", `{"user_id": "stranger"}`},
	}
	switch user {
	case "master":
		targets[0].body = "{}" // the master key owns no stored key: any key
	case "":
		targets[0].body = "" // the caller's own key itself
	}
	var allowed []string
	firstStatus := 0
	for _, tg := range targets {
		raw := auth
		if tg.body != "" {
			raw, _, _ = e.generate(tg.body)
		}
		var r resp
		switch action {
		case "generate":
			body := tg.body
			if body == "" {
				body = "{}"
			}
			r = e.call("POST", "/key/generate", auth, body)
			if r.status == 200 {
				k, _ := r.obj(e.t)["key"].(string)
				e.sawRaw(k)
			}
		case "update":
			r = e.call("POST", "/key/update", auth, fmt.Sprintf(`{"key": %q, "metadata": {"x": 1}}`, raw))
		case "regenerate":
			if tg.body == "" {
				{
					r = e.call("POST", "/key/regenerate", auth, fmt.Sprintf(`{"key": %q, "new_key": "sk-%s"}`, raw, strings.Repeat("z", 20)))
					if r.status == 200 { // keep calling with the new key: undo by regenerating back
						e.call("POST", "/key/regenerate", master, fmt.Sprintf(`{"key": "sk-%s", "new_key": %q}`, strings.Repeat("z", 20), raw))
					}
				}
			} else {
				r = e.call("POST", "/key/regenerate", auth, fmt.Sprintf(`{"key": %q}`, raw))
			}
			if r.status == 200 && r.body != nil {
				k, _ := r.obj(e.t)["key"].(string)
				e.sawRaw(k)
			}
		case "delete":
			if tg.body == "" {
				raw, _, _ = e.generate("{}") // a key of no user, not the caller's
				if user == "" {
					// "own" for a key without a user is the key itself: a
					// second key without a user is not it.
					r = e.call("POST", "/key/delete", auth, fmt.Sprintf(`{"keys": [%q]}`, raw))
					if r.status == 200 {
						allowed = append(allowed, "own")
					} else if firstStatus == 0 {
						firstStatus = r.status
					}
					continue
				}
			}
			r = e.call("POST", "/key/delete", auth, fmt.Sprintf(`{"keys": [%q]}`, raw))
		case "block":
			r = e.call("POST", "/key/block", auth, fmt.Sprintf(`{"key": %q}`, raw))
			if r.status == 200 && tg.body == "" {
				e.call("POST", "/key/unblock", master, fmt.Sprintf(`{"key": %q}`, raw))
			}
		case "info":
			r = e.call("GET", "/key/info?key="+url.QueryEscape(raw), auth, "")
		}
		if r.status == 200 {
			allowed = append(allowed, tg.name)
		} else if firstStatus == 0 {
			firstStatus = r.status
		}
	}
	switch {
	case len(allowed) == 3:
		return "all"
	case len(allowed) == 0:
		return fmt.Sprint(firstStatus)
	}
	return strings.Join(allowed, ", ")
}

// LiteLLM's statuses, types and messages for the role checks, over HTTP.
func TestRoleMessages(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t), func(c *mgmt.Config) { c.Directory = testDirectory })
		iu, _, _ := e.generate(`{"user_id": "iu"}`)
		iv, _, _ := e.generate(`{"user_id": "iv"}`)
		pv, _, _ := e.generate(`{"user_id": "pv"}`)
		tu, _, _ := e.generate(`{"user_id": "tu", "team_id": "t1"}`)
		stranger, _, _ := e.generate(`{"user_id": "stranger"}`)
		lost, _, _ := e.generate(`{"team_id": "gone"}`)
		tests := []struct {
			name, auth, method, path, body string
			status                         int
			typ, msg                       string
		}{
			{"info on a missing key: 404 before 403", iu, "GET", "/key/info?key=sk-does-not-exist", "", 404, "not_found_error", "Key not found in database"},
			{"info on another user's key", iu, "GET", "/key/info?key=" + url.QueryEscape(stranger), "", 403, "internal_server_error", "You are not allowed to access this key's info. Your role=internal_user"},
			{"viewer writes", pv, "POST", "/key/generate", "{}", 403, "auth_error", "user not allowed to access this route, role= proxy_admin_viewer. Trying to access: /key/generate"},
			{"internal viewer writes", iv, "POST", "/key/delete", `{"keys": ["x"]}`, 401, "auth_error", "Authentication Error, Only proxy admin can be used to generate, delete, update info for new keys/users/teams. Route=/key/delete. Your role=internal_user_viewer. Your user_id=iv"},
			{"key for another user", iu, "POST", "/key/generate", `{"user_id": "someone"}`, 403, "internal_server_error", "User can only create keys for themselves. Got user_id=someone, Your ID=iu"},
			{"key for another team", tu, "POST", "/key/generate", `{"team_id": "t2"}`, 403, "internal_server_error", "User can only create keys for their own team. Got=t2, Your Team ID=t1"},
			{"delete another user's key", iu, "POST", "/key/delete", fmt.Sprintf(`{"keys": [%q]}`, stranger), 403, "internal_server_error", "{'error': 'You are not authorized to delete this key'}"},
			{"team key of a team that is gone", tu, "POST", "/key/block", fmt.Sprintf(`{"key": %q}`, lost), 404, "internal_server_error", "{'error': 'Team not found in db, and user not proxy admin. Team id = gone'}"},
			{"list another user's keys", iu, "GET", "/key/list?user_id=stranger", "", 403, "bad_request_error", "You are not authorized to check another user's keys"},
			{"list a team the user is not in", iv, "GET", "/key/list?team_id=t1", "", 403, "bad_request_error", "You are not authorized to check this team's keys"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.T(t)
				r := e.call(tt.method, tt.path, tt.auth, tt.body)
				if r.status != tt.status {
					t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
				}
				typ, msg, _, _ := r.errBody(t)
				if typ != tt.typ || msg != tt.msg {
					t.Errorf("got %s %q\nwant %s %q", typ, msg, tt.typ, tt.msg)
				}
			})
		}
		// the stranger's key is untouched by the refused delete
		if r := e.call("GET", "/key/info?key="+url.QueryEscape(stranger), master, ""); r.status != 200 {
			t.Errorf("refused delete removed the key: %d", r.status)
		}
	})
}

// key_generation_settings narrow who generates and manages keys, over HTTP.
func TestKeyGenerationSettingsWithRoles(t *testing.T) {
	settings := &keygen.Settings{KeyGeneration: &keygen.KeyGenerationSettings{
		Team:     &keygen.TeamKeyGeneration{AllowedTeamMemberRoles: []string{"admin"}},
		Personal: &keygen.PersonalKeyGeneration{AllowedUserRoles: []string{"proxy_admin"}},
	}}
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t), func(c *mgmt.Config) { c.Directory = testDirectory; c.KeyGeneration = settings })
		tu, _, _ := e.generate(`{"user_id": "tu", "team_id": "t1"}`)
		ta, _, _ := e.generate(`{"user_id": "ta", "team_id": "t1"}`)
		iu, _, _ := e.generate(`{"user_id": "iu"}`)
		teamKey, _, _ := e.generate(`{"team_id": "t1"}`)
		tests := []struct {
			name, auth, path, body string
			status                 int
			msg                    string
		}{
			{"team user may not generate a team key", tu, "/key/generate", `{"team_id": "t1"}`, 400, "Team member role user not in allowed_team_member_roles=['admin']"},
			{"team admin may", ta, "/key/generate", `{"team_id": "t1"}`, 200, ""},
			{"team user may not delete a team key", tu, "/key/delete", fmt.Sprintf(`{"keys": [%q]}`, teamKey), 400, "Team member role user not in allowed_team_member_roles=['admin']"},
			{"personal keys restricted to proxy admins", iu, "/key/generate", `{}`, 400, "Personal key creation has been restricted by admin. Allowed roles=['proxy_admin']. Your role=internal_user"},
			{"team key for an unknown team", ta, "/key/generate", `{"team_id": "nope"}`, 400, "Unable to find team object in database. Team ID: nope"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.T(t)
				r := e.call("POST", tt.path, tt.auth, tt.body)
				if r.status != tt.status {
					t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
				}
				if tt.status == 200 {
					k, _ := r.obj(t)["key"].(string)
					e.sawRaw(k)
					return
				}
				if _, msg, _, _ := r.errBody(t); msg != tt.msg {
					t.Errorf("got %q\nwant %q", msg, tt.msg)
				}
			})
		}
	})
}
