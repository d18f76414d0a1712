package mgmt_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// Every management request is logged once at info — successes, a wrong
// master key, a 404 — with who called and the status, and never a raw key
// (checkNoRawKeys runs at cleanup over the same log).
func TestRequestsAreLogged(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		raw, hash, _ := e.generate(`{}`)
		wrong := keys.Generate()
		e.sawRaw(wrong)
		e.call("GET", "/key/info?key="+hash, "sk-wrong-master", "")
		e.call("GET", "/key/info", raw, "")
		e.call("POST", "/key/"+wrong+"/nothing", master, "{}")

		type line struct {
			Level, Msg, Method, Path, Caller string
			Status                           int
			Duration                         any
		}
		var got []line
		for _, l := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
			var v line
			if json.Unmarshal([]byte(l), &v) == nil && v.Msg == "management request" {
				got = append(got, v)
			}
		}
		want := []struct {
			path, caller string
			status       int
		}{
			{"/key/generate", "master_key", 200},
			{"/key/info", "unauthenticated", 401},
			{"/key/info", keys.Redact(hash), 200},
			{"/key/" + keys.Redact(wrong) + "/nothing", "unauthenticated", 404},
		}
		if len(got) != len(want) {
			t.Fatalf("%d request lines, want %d:\n%s", len(got), len(want), e.logs.String())
		}
		for i, w := range want {
			g := got[i]
			if g.Level != "INFO" || g.Path != w.path || g.Caller != w.caller || g.Status != w.status {
				t.Errorf("line %d = %+v, want path %s caller %s status %d", i, g, w.path, w.caller, w.status)
			}
			if g.Duration == nil {
				t.Errorf("line %d has no duration", i)
			}
		}
	})
}
