package access

import (
	"os"
	"strings"
	"testing"
)

// rowCallers maps docs/api.md's matrix rows to callers.
var rowCallers = map[string]string{
	"master key": "master", "proxy_admin": "proxy_admin", "proxy_admin_viewer": "proxy_admin_viewer",
	"internal_user": "internal_user", "internal_user_viewer": "internal_user_viewer",
	"team admin": "team admin", "team user": "team user", "key without a user": "no user",
}

var columnRoutes = []string{RouteGenerate, RouteUpdate, RouteRegenerate, RouteDelete, RouteBlock, RouteInfo, RouteList}

// cell computes one matrix cell from the package's decisions: the route
// check, then the endpoint's check on the caller's own key, a key of team
// t1 and a stranger's key.
func cell(c Caller, route string) string {
	if err := Route(c, route); err != nil {
		return strings.Fields(result(err))[0]
	}
	own := Key{Token: "own", UserID: c.UserID}
	if c.UserID == "" {
		own = Key{Token: c.Token}
	}
	teamKey := Key{Token: "tk", TeamID: "t1"}
	other := Key{Token: "ok", UserID: "stranger"}
	var check func(k Key) error
	switch route {
	case RouteInfo:
		check = func(k Key) error { return CanRead(c, k, team1) }
	case RouteList:
		scope, err := ListScope(c, "", "", "")
		switch {
		case err != nil:
			return strings.Fields(result(err))[0]
		case scope == "":
			return "all"
		}
		return "own"
	case RouteGenerate:
		check = func(k Key) error {
			var u, tm *string
			if k.UserID != "" {
				u = &k.UserID
			}
			if k.TeamID != "" {
				tm = &k.TeamID
				if err := KeyRequest(c, u, tm); err != nil {
					return err
				}
				return CanModify(c, k, team1, DefaultTeamMemberRoles, route) // the team-member rule of key_generation_check
			}
			return KeyRequest(c, u, tm)
		}
	default:
		check = func(k Key) error { return CanModify(c, k, team1, DefaultTeamMemberRoles, route) }
	}
	var allowed []string
	for _, t := range []struct {
		name string
		k    Key
	}{{"own", own}, {"team", teamKey}, {"other", other}} {
		if check(t.k) == nil {
			allowed = append(allowed, t.name)
		}
	}
	switch {
	case len(allowed) == 3:
		return "all"
	case len(allowed) == 0:
		return strings.Fields(result(check(own)))[0]
	}
	return strings.Join(allowed, ", ")
}

// docs/api.md's permission matrix is what this package decides.
func TestDocMatrix(t *testing.T) {
	b, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- permission-matrix")
	if !ok {
		t.Fatal("docs/api.md has no permission matrix")
	}
	rows := 0
	for _, line := range strings.Split(rest, "\n")[3:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		name, ok := rowCallers[cells[0]]
		if !ok {
			t.Fatalf("unknown row %q", cells[0])
		}
		if len(cells) != 1+len(columnRoutes) {
			t.Fatalf("row %q has %d cells", cells[0], len(cells))
		}
		for i, r := range columnRoutes {
			if got := cell(callers[name], r); got != cells[i+1] {
				t.Errorf("%s × %s: docs say %q, access decides %q", cells[0], r, cells[i+1], got)
			}
		}
		rows++
	}
	if rows != len(rowCallers) {
		t.Errorf("matrix has %d rows, want %d", rows, len(rowCallers))
	}
}
