package mgmt_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/virtualkeys/sidecar/internal/mgmt"
	"github.com/virtualkeys/sidecar/internal/store/sqlite"
)

// FuzzTeamAndUserBodies sends arbitrary bodies to the team and user
// routes on a real store: every answer is a 2xx or a 4xx envelope, never a
// 500 or a panic.
func FuzzTeamAndUserBodies(f *testing.F) {
	routes := []string{"/team/new", "/team/update", "/team/delete", "/team/block", "/team/member_add",
		"/team/member_update", "/team/member_delete", "/user/new", "/user/update", "/user/delete", "/team/permissions_update"}
	for i, s := range []string{
		`{}`, `null`, `[]`, `{"team_id":"t","members_with_roles":[{"role":"admin","user_id":"a"}],"max_budget":1}`,
		`{"team_id":"t","max_budget":null,"models":null,"budget_duration":"1mo"}`, `{"team_ids":["t","u"]}`,
		`{"team_id":"t"}`, `{"team_id":"t","member":[{"role":"user","user_email":"x@y"}],"max_budget_in_team":2}`,
		`{"team_id":"t","user_id":"a","role":"admin","max_budget_in_team":null}`, `{"team_id":"t","user_email":"x@y"}`,
		`{"user_id":"u","teams":["t"],"auto_create_key":false,"user_role":"proxy_admin"}`,
		`{"user_email":"x@y","max_budget":-1}`, `{"user_ids":["u"]}`, `{"members_with_roles":{}}`,
		`{"member":{"role":"owner"}}`, `{"budget_duration":"99999999mo"}`, `{"team_id":"\u00e9","metadata":{"a":[1,{"b":null}]}}`,
		`{"team_id":"t","team_member_permissions":["/key/generate","/key/*"]}`, `{"team_id":"t","team_member_permissions":null}`,
		`{"team_id":"t","team_member_budget":1,"team_member_rpm_limit":-5,"team_member_budget_duration":"1d","metadata":{"team_member_budget_id":7}}`,
	} {
		f.Add(uint8(i%len(routes)), []byte(s))
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(f.TempDir(), "fuzz.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	api, err := mgmt.New(mgmt.Config{Store: st, MasterKey: master, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	h := api.Handler()
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		path := routes[int(route)%len(routes)]
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(string(body)))
		r.Header.Set("Authorization", "Bearer "+master)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code >= 500 || (w.Code >= 300 && !strings.Contains(w.Body.String(), `"error"`)) {
			t.Fatalf("%s %q: %d %s", path, body, w.Code, w.Body.String())
		}
	})
}
