package mgmt_test

import (
	"testing"

	"github.com/virtualkeys/sidecar/internal/pgtest"
)

// TestTwoReplicas: two APIs, each with its own store, on one Postgres
// database. A key written through one is served by the other at once.
func TestTwoReplicas(t *testing.T) {
	url := pgtest.URL(t)
	a := newEnv(t, openPostgres(t, url))
	b := newEnv(t, openPostgres(t, url))

	raw, hash, _ := a.generate(`{"key_alias":"replica","models":["m"]}`)
	b.sawRaw(raw)
	info := b.admin("GET", "/key/info?key="+hash, "", 200)["info"].(map[string]any)
	if info["key_alias"] != "replica" {
		t.Errorf("replica b sees alias %v", info["key_alias"])
	}
	if r := b.call("GET", "/key/info", raw, ""); r.status != 200 {
		t.Errorf("replica b refuses the new key: %d %s", r.status, r.body)
	}
	b.admin("POST", "/key/block", `{"key":"`+hash+`"}`, 200)
	if r := a.call("GET", "/key/info", raw, ""); r.status != 401 {
		t.Errorf("replica a still accepts the key blocked through b: %d", r.status)
	}
	b.checkErr(errCase{"", `{"key_alias":"replica"}`, 400, "bad_request_error", "key_alias", "already exists"}, "POST", "/key/generate")
	a.admin("POST", "/key/delete", `{"keys":["`+raw+`"]}`, 200)
	b.admin("GET", "/key/info?key="+hash, "", 404)
}
