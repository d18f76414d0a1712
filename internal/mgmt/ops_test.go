package mgmt_test

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
)

func TestDelete(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		raw1, h1, _ := e.generate(`{}`)
		_, h2, _ := e.generate(`{"key_alias":"del-a"}`)
		_, h3, _ := e.generate(`{"key_alias":"del-b"}`)
		keep, _, _ := e.generate(`{}`)
		unknown := keys.Generate()

		t.Run("keys echoed exactly", func(t *testing.T) {
			e := e.T(t)
			body := `{"keys":["` + raw1 + `","` + h2 + `","` + unknown + `"]}`
			out := e.admin("POST", "/key/delete", body, 200)
			want := []any{raw1, h2, unknown}
			if !reflect.DeepEqual(out["deleted_keys"], want) {
				t.Errorf("deleted_keys %v, want %v", out["deleted_keys"], want)
			}
			for _, h := range []string{h1, h2} {
				e.admin("GET", "/key/info?key="+h, "", 404)
				if !e.wasInvalidated(h) {
					t.Errorf("%s not invalidated", keys.Redact(h))
				}
			}
			if r := e.call("GET", "/key/info", raw1, ""); r.status != 401 {
				t.Errorf("deleted key still authenticates: %d", r.status)
			}
			if r := e.call("GET", "/key/info", keep, ""); r.status != 200 {
				t.Errorf("other key harmed: %d %s", r.status, r.body)
			}
		})
		t.Run("by alias", func(t *testing.T) {
			e := e.T(t)
			out := e.admin("POST", "/key/delete", `{"key_aliases":["del-b","nobody"]}`, 200)
			if !reflect.DeepEqual(out["deleted_keys"], []any{"del-b", "nobody"}) {
				t.Errorf("deleted_keys %v", out["deleted_keys"])
			}
			e.admin("GET", "/key/info?key="+h3, "", 404)
		})
		for _, tc := range []errCase{
			{"none found", `{"keys":["` + unknown + `"]}`, 404, "not_found_error", "keys", "No keys found"},
			{"empty list", `{"keys":[]}`, 404, "not_found_error", "keys", "No keys found"},
			{"aliases none found", `{"key_aliases":["nobody"]}`, 404, "not_found_error", "keys", "No keys found"},
			{"neither", `{}`, 422, "validation_error", "keys", "keys"},
			{"keys null", `{"keys":null}`, 422, "validation_error", "keys", "keys"},
			{"keys string", `{"keys":"` + h1 + `"}`, 422, "validation_error", "keys", "keys"},
			{"no body", ``, 422, "validation_error", "body", "body"},
			{"too many", `{"keys":[` + strings.Repeat(`"x",`, 1000) + `"x"]}`, 422, "validation_error", "keys", "at most 1000"},
		} {
			t.Run(tc.name, func(t *testing.T) { e.T(t).checkErr(tc, "POST", "/key/delete") })
		}
	})
}

func TestInfo(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		raw, hash, _ := e.generate(`{"key_alias":"info","models":["m"]}`)
		blockedRaw, blockedHash, _ := e.generate(`{"blocked":true}`)
		_, overHash, _ := e.generate(`{"max_budget":1,"spend":5}`)
		expired := keys.Generate()
		e.sawRaw(expired)
		past := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
		e.create(&keys.Key{Token: keys.HashHex(expired), KeyName: ptr(keys.Name(expired)), Expires: &past})

		tests := []struct {
			name, query, wantKey, wantHash string
		}{
			{"by raw key", raw, raw, hash},
			{"by hash", hash, hash, hash},
			{"blocked", blockedRaw, blockedRaw, blockedHash},
			{"over budget", overHash, overHash, overHash},
			{"expired", expired, expired, keys.HashHex(expired)},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				e := e.T(t)
				out := e.admin("GET", "/key/info?key="+url.QueryEscape(tc.query), "", 200)
				if out["key"] != tc.wantKey {
					t.Errorf("key %v, want as queried", out["key"])
				}
				info := out["info"].(map[string]any)
				if _, ok := info["token"]; ok {
					t.Error("info carries the token")
				}
				if n := info["key_name"]; n == nil || !strings.HasPrefix(n.(string), "sk-...") {
					t.Errorf("key_name %v", n)
				}
				got := e.admin("POST", "/v2/key/info", `{"keys":["`+tc.wantHash+`"]}`, 200)["info"].([]any)
				if len(got) != 1 || got[0].(map[string]any)["token"] != tc.wantHash {
					t.Errorf("v2 info %v", got)
				}
			})
		}
		t.Run("own key implicitly", func(t *testing.T) {
			e := e.T(t)
			r := e.call("GET", "/key/info", raw, "")
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			out := r.obj(t)
			if out["key"] != hash || out["info"].(map[string]any)["key_alias"] != "info" {
				t.Errorf("implicit info: %v", out)
			}
		})
		t.Run("v2 list echoed, unknown skipped", func(t *testing.T) {
			e := e.T(t)
			u := keys.Generate()
			out := e.admin("POST", "/v2/key/info", `{"keys":["`+raw+`","`+u+`","`+overHash+`"]}`, 200)
			if !reflect.DeepEqual(out["key"], []any{raw, u, overHash}) {
				t.Errorf("key %v", out["key"])
			}
			var toks []string
			for _, r := range out["info"].([]any) {
				toks = append(toks, r.(map[string]any)["token"].(string))
			}
			if !reflect.DeepEqual(toks, []string{hash, overHash}) {
				t.Errorf("tokens %v", toks)
			}
		})
		t.Run("not found", func(t *testing.T) {
			e.T(t).checkErr(errCase{"", "", 404, "not_found_error", "key", "Key not found in database"}, "GET", "/key/info?key="+keys.Generate())
		})
		t.Run("master key itself is not a key", func(t *testing.T) {
			e.T(t).checkErr(errCase{"", "", 404, "not_found_error", "key", "Key not found in database"}, "GET", "/key/info")
		})
		for _, tc := range []errCase{
			{"v2 no keys", `{}`, 422, "validation_error", "keys", "keys"},
			{"v2 keys wrong type", `{"keys":[1]}`, 422, "validation_error", "keys", "keys"},
			{"v2 malformed", `{`, 422, "validation_error", "body", "malformed"},
		} {
			t.Run(tc.name, func(t *testing.T) { e.T(t).checkErr(tc, "POST", "/v2/key/info") })
		}
	})
}

func TestBudgetResetOnRead(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		raw := keys.Generate()
		e.sawRaw(raw)
		hash := keys.HashHex(raw)
		past := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
		e.create(&keys.Key{Token: hash, KeyName: ptr(keys.Name(raw)), Spend: 7, BudgetDuration: ptr("1d"), BudgetResetAt: &past, MaxBudget: ptr(10.0)})
		future := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
		notYet := keys.Generate()
		e.create(&keys.Key{Token: keys.HashHex(notYet), Spend: 7, BudgetDuration: ptr("1d"), BudgetResetAt: &future})

		info := e.admin("GET", "/key/info?key="+hash, "", 200)["info"].(map[string]any)
		if info["spend"] != 0.0 {
			t.Errorf("spend %v after the reset boundary, want 0", info["spend"])
		}
		if next := mustTime(t, info["budget_reset_at"]); !next.After(time.Now()) {
			t.Errorf("budget_reset_at %v not moved to the next boundary", next)
		}
		list := e.admin("GET", "/key/list?return_full_object=true&key_hash="+hash, "", 200)["keys"].([]any)
		if len(list) != 1 || list[0].(map[string]any)["spend"] != 0.0 {
			t.Errorf("list full object: %v", list)
		}
		info = e.admin("GET", "/key/info?key="+keys.HashHex(notYet), "", 200)["info"].(map[string]any)
		if info["spend"] != 7.0 {
			t.Errorf("spend %v before the boundary, want 7", info["spend"])
		}
	})
}

func TestList(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		type row struct{ hash, user, team, alias string }
		var rows []row
		for i := range 7 {
			user, team := "ua", "ta"
			if i%2 == 1 {
				user = "ub"
			}
			if i >= 5 {
				team = "tb"
			}
			alias := fmt.Sprintf("list-%d", i)
			_, h, _ := e.generate(fmt.Sprintf(`{"user_id":%q,"team_id":%q,"key_alias":%q,"organization_id":"o1","spend":%d}`, user, team, alias, i))
			rows = append(rows, row{h, user, team, alias})
			e.offset.Add(int64(10 * time.Millisecond)) // distinct created_at
			time.Sleep(10 * time.Millisecond)
		}
		hashesWhere := func(f func(row) bool) []string {
			var out []string
			for _, r := range rows {
				if f(r) {
					out = append(out, r.hash)
				}
			}
			slices.Reverse(out) // newest first
			return out
		}
		all := hashesWhere(func(row) bool { return true })

		tests := []struct {
			name, query string
			want        []string
			total       int
			page, pages int
		}{
			{"default", "", all, 7, 1, 1},
			{"page 1 size 3", "?page=1&size=3", all[:3], 7, 1, 3},
			{"page 3 size 3", "?page=3&size=3", all[6:], 7, 3, 3},
			{"past the end", "?page=5&size=3", []string{}, 7, 5, 3},
			{"user filter", "?user_id=ub", hashesWhere(func(r row) bool { return r.user == "ub" }), 3, 1, 1},
			{"team filter", "?team_id=tb", hashesWhere(func(r row) bool { return r.team == "tb" }), 2, 1, 1},
			{"org filter", "?organization_id=o1&size=100", all, 7, 1, 1},
			{"org filter miss", "?organization_id=o2", []string{}, 0, 1, 0},
			{"alias filter", "?key_alias=list-3", []string{rows[3].hash}, 1, 1, 1},
			{"key_hash filter", "?key_hash=" + rows[2].hash, []string{rows[2].hash}, 1, 1, 1},
			{"injection is a literal", "?user_id=" + url.QueryEscape("ua' OR '1'='1"), []string{}, 0, 1, 0},
			{"sort spend asc", "?sort_by=spend&sort_order=asc", func() []string { s := slices.Clone(all); slices.Reverse(s); return s }(), 7, 1, 1},
			{"sort spend desc", "?sort_by=spend&sort_order=desc", all, 7, 1, 1},
			{"sort created_at asc", "?sort_by=created_at&sort_order=asc", func() []string { s := slices.Clone(all); slices.Reverse(s); return s }(), 7, 1, 1},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				e := e.T(t)
				out := e.admin("GET", "/key/list"+tc.query, "", 200)
				got := []string{}
				for _, k := range out["keys"].([]any) {
					got = append(got, k.(string))
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("keys %v, want %v", got, tc.want)
				}
				if out["total_count"] != float64(tc.total) || out["current_page"] != float64(tc.page) || out["total_pages"] != float64(tc.pages) {
					t.Errorf("total_count %v current_page %v total_pages %v, want %d %d %d", out["total_count"], out["current_page"], out["total_pages"], tc.total, tc.page, tc.pages)
				}
			})
		}
		t.Run("query booleans take pydantic's spellings", func(t *testing.T) {
			e := e.T(t)
			for _, v := range []string{"true", "True", "yes", "YES", "on", "t", "y", "1"} {
				out := e.admin("GET", "/key/list?size=1&return_full_object="+v, "", 200)
				if _, full := out["keys"].([]any)[0].(map[string]any); !full {
					t.Errorf("return_full_object=%s: keys are not full objects", v)
				}
			}
			for _, v := range []string{"false", "No", "off", "f", "n", "0"} {
				out := e.admin("GET", "/key/list?size=1&return_full_object="+v, "", 200)
				if _, hash := out["keys"].([]any)[0].(string); !hash {
					t.Errorf("return_full_object=%s: keys are not hashes", v)
				}
			}
		})
		t.Run("full objects", func(t *testing.T) {
			e := e.T(t)
			out := e.admin("GET", "/key/list?return_full_object=true&size=2", "", 200)
			ks := out["keys"].([]any)
			if len(ks) != 2 {
				t.Fatalf("%d keys", len(ks))
			}
			for i, k := range ks {
				m := k.(map[string]any)
				if m["token"] != all[i] || m["key_alias"] == nil {
					t.Errorf("full object %d: token %v alias %v", i, m["token"], m["key_alias"])
				}
			}
		})
		for _, tc := range []struct {
			errCase
			query string
		}{
			{errCase{"page 0", "", 422, "validation_error", "page", "page"}, "?page=0"},
			{errCase{"page negative", "", 422, "validation_error", "page", "page"}, "?page=-1"},
			{errCase{"page not a number", "", 422, "validation_error", "page", "page"}, "?page=x"},
			{errCase{"page huge", "", 422, "validation_error", "page", "page"}, "?page=99999999999999999999"},
			{errCase{"size 0", "", 422, "validation_error", "size", "size"}, "?size=0"},
			{errCase{"size 101", "", 422, "validation_error", "size", "size"}, "?size=101"},
			{errCase{"bad sort_by", "", 400, "bad_request_error", "sort_by", "sort_by"}, "?sort_by=password"},
			{errCase{"sort_by injection", "", 400, "bad_request_error", "sort_by", "sort_by"}, "?sort_by=" + url.QueryEscape("token; DROP TABLE x")},
			{errCase{"NUL in a filter", "", 422, "validation_error", "query", "NUL"}, "?user_id=a%00b"},
			{errCase{"invalid UTF-8 in a filter", "", 422, "validation_error", "query", "UTF-8"}, "?team_id=%ff%fe"},
			{errCase{"malformed query", "", 422, "validation_error", "query", "query"}, "?sort_by=token;drop"},
			{errCase{"bad sort_order", "", 400, "bad_request_error", "sort_order", "sort_order"}, "?sort_order=sideways"},
			{errCase{"bad return_full_object", "", 422, "validation_error", "return_full_object", "return_full_object"}, "?return_full_object=maybe"},
			{errCase{"bad include_team_keys", "", 422, "validation_error", "include_team_keys", "valid boolean"}, "?include_team_keys=yess"},
		} {
			t.Run(tc.name, func(t *testing.T) { e.T(t).checkErr(tc.errCase, "GET", "/key/list"+tc.query) })
		}
	})
}

func TestBlockUnblock(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		raw, hash, _ := e.generate(`{"key_alias":"blk"}`)
		out := e.admin("POST", "/key/block", `{"key":"`+raw+`"}`, 200)
		if out["blocked"] != true || out["token"] != hash || out["key_alias"] != "blk" {
			t.Errorf("block: %v", out)
		}
		if !e.wasInvalidated(hash) {
			t.Error("block did not invalidate")
		}
		if r := e.call("GET", "/key/info", raw, ""); r.status != 401 {
			t.Errorf("blocked key authenticates: %d", r.status)
		}
		out = e.admin("POST", "/key/unblock", `{"key":"`+hash+`"}`, 200)
		if out["blocked"] != false {
			t.Errorf("unblock: blocked = %v", out["blocked"])
		}
		if r := e.call("GET", "/key/info", raw, ""); r.status != 200 {
			t.Errorf("unblocked key refused: %d %s", r.status, r.body)
		}
		for _, path := range []string{"/key/block", "/key/unblock"} {
			for _, tc := range []errCase{
				{"missing key", `{"key":"` + keys.Generate() + `"}`, 404, "not_found_error", "key", "Key not found"},
				{"no key", `{}`, 422, "validation_error", "key", "key"},
				{"key number", `{"key":1}`, 422, "validation_error", "key", "key"},
			} {
				t.Run(path+" "+tc.name, func(t *testing.T) { e.T(t).checkErr(tc, "POST", path) })
			}
		}
	})
}

func TestRegenerate(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		body := `{"key_alias":"rot","models":["gpt-4o"],"max_budget":50,"spend":12.5,"tpm_limit":9,"user_id":"u1","metadata":{"a":1}}`

		check := func(t *testing.T, e *env, oldRaw, oldHash string, out map[string]any, wantRotations float64) string {
			t.Helper()
			newRaw, _ := out["key"].(string)
			e.sawRaw(newRaw)
			newHash := keys.HashHex(newRaw)
			if newRaw == oldRaw || out["token"] != newHash || out["token_id"] != newHash || out["key_name"] != keys.Name(newRaw) {
				t.Errorf("new key/token/key_name wrong: token %v key_name %v", out["token"], out["key_name"])
			}
			for k, want := range map[string]any{"key_alias": "rot", "models": []any{"gpt-4o"}, "max_budget": 50.0, "spend": 12.5, "tpm_limit": 9.0, "user_id": "u1", "rotation_count": wantRotations} {
				if !reflect.DeepEqual(out[k], want) {
					t.Errorf("%s = %v, want %v", k, jsonStr(out[k]), jsonStr(want))
				}
			}
			if out["last_rotation_at"] == nil {
				t.Error("last_rotation_at not set")
			}
			if !e.wasInvalidated(oldHash) || !e.wasInvalidated(newHash) {
				t.Error("old and new hashes not both invalidated")
			}
			if r := e.call("GET", "/key/info", newRaw, ""); r.status != 200 {
				t.Errorf("new key refused: %d %s", r.status, r.body)
			}
			return newRaw
		}

		t.Run("body key, old key dies", func(t *testing.T) {
			e := e.T(t)
			oldRaw, oldHash, _ := e.generate(body)
			out := e.admin("POST", "/key/regenerate", `{"key":"`+oldRaw+`"}`, 200)
			check(t, e, oldRaw, oldHash, out, 1)
			if r := e.call("GET", "/key/info", oldRaw, ""); r.status != 401 {
				t.Errorf("old key still works: %d", r.status)
			}
			e.admin("GET", "/key/info?key="+oldHash, "", 404)
			e.admin("POST", "/key/delete", `{"key_aliases":["rot"]}`, 200)
		})
		t.Run("path key, updates applied, twice", func(t *testing.T) {
			e := e.T(t)
			oldRaw, oldHash, _ := e.generate(body)
			out := e.admin("POST", "/key/"+oldHash+"/regenerate", `{"rpm_limit":3}`, 200)
			mid := check(t, e, oldRaw, oldHash, out, 1)
			if out["rpm_limit"] != 3.0 {
				t.Errorf("rpm_limit %v", out["rpm_limit"])
			}
			out = e.admin("POST", "/key/"+mid+"/regenerate", ``, 200)
			check(t, e, mid, keys.HashHex(mid), out, 2)
			e.admin("POST", "/key/delete", `{"key_aliases":["rot"]}`, 200)
		})
		t.Run("query key, no body (generated OpenAPI and Ruby clients)", func(t *testing.T) {
			e := e.T(t)
			oldRaw, oldHash, _ := e.generate(body)
			out := e.admin("POST", "/key/regenerate?key="+oldRaw, ``, 200)
			check(t, e, oldRaw, oldHash, out, 1)
			e.admin("POST", "/key/delete", `{"key_aliases":["rot"]}`, 200)
		})
		t.Run("body key wins over query key", func(t *testing.T) {
			e := e.T(t)
			oldRaw, oldHash, _ := e.generate(body)
			out := e.admin("POST", "/key/regenerate?key="+keys.Generate(), `{"key":"`+oldRaw+`"}`, 200)
			check(t, e, oldRaw, oldHash, out, 1)
			e.admin("POST", "/key/delete", `{"key_aliases":["rot"]}`, 200)
		})
		t.Run("custom new_key", func(t *testing.T) {
			e := e.T(t)
			oldRaw, oldHash, _ := e.generate(body)
			nk := keys.Generate()
			e.sawRaw(nk)
			out := e.admin("POST", "/key/regenerate", `{"key":"`+oldHash+`","new_key":"`+nk+`"}`, 200)
			if out["key"] != nk {
				t.Errorf("new_key not used")
			}
			check(t, e, oldRaw, oldHash, out, 1)
			e.admin("POST", "/key/delete", `{"key_aliases":["rot"]}`, 200)
		})
		t.Run("grace period keeps the old key", func(t *testing.T) {
			e := e.T(t)
			oldRaw, oldHash, _ := e.generate(body)
			out := e.admin("POST", "/key/regenerate", `{"key":"`+oldRaw+`","grace_period":"1h"}`, 200)
			newRaw := check(t, e, oldRaw, oldHash, out, 1)
			r := e.call("GET", "/key/info", oldRaw, "")
			if r.status != 200 {
				t.Fatalf("old key refused inside its grace period: %d %s", r.status, r.body)
			}
			if got := r.obj(t)["info"].(map[string]any)["key_name"]; got != keys.Name(newRaw) {
				t.Errorf("old key resolves to %v, want the rotated row", got)
			}
			e.admin("POST", "/key/delete", `{"key_aliases":["rot"]}`, 200)
		})
		_, h, _ := e.generate(`{"key_alias":"rot-x"}`)
		e.generate(`{"key_alias":"rot-y"}`)
		for _, tc := range []struct {
			errCase
			path string
		}{
			{errCase{"missing", `{"key":"` + keys.Generate() + `"}`, 404, "not_found_error", "key", "Key not found"}, "/key/regenerate"},
			{errCase{"missing path", ``, 404, "not_found_error", "key", "Key not found"}, "/key/" + keys.Generate() + "/regenerate"},
			{errCase{"no key", `{}`, 400, "bad_request_error", "key", "No key passed in."}, "/key/regenerate"},
			{errCase{"no body", ``, 400, "bad_request_error", "key", "No key passed in."}, "/key/regenerate"},
			{errCase{"empty query key", ``, 400, "bad_request_error", "key", "No key passed in."}, "/key/regenerate?key="},
			{errCase{"missing query key", ``, 404, "not_found_error", "key", "Key not found"}, "/key/regenerate?key=" + keys.Generate()},
			{errCase{"new_key without sk-", `{"key":"` + h + `","new_key":"abc"}`, 400, "bad_request_error", "new_key", "sk-"}, "/key/regenerate"},
			{errCase{"new_key is the same key", `{"new_key":"sk-same"}`, 400, "bad_request_error", "new_key", "Key already exists"}, "/key/" + "sk-same" + "/regenerate"},
			{errCase{"bad grace_period", `{"key":"` + h + `","grace_period":"soon"}`, 400, "bad_request_error", "grace_period", "grace_period"}, "/key/regenerate"},
			{errCase{"alias taken", `{"key":"` + h + `","key_alias":"rot-y"}`, 400, "bad_request_error", "key_alias", "Key with alias 'rot-y' already exists."}, "/key/regenerate"},
			{errCase{"wrong type", `{"key":"` + h + `","models":"x"}`, 422, "validation_error", "models", "models"}, "/key/regenerate"},
		} {
			t.Run(tc.name, func(t *testing.T) { e.T(t).checkErr(tc.errCase, "POST", tc.path) })
		}
	})
}

func TestHealth(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		raw, _, _ := e.generate(`{}`)
		r := e.call("POST", "/key/health", raw, "")
		if r.status != 200 || string(r.body) != `{"key":"healthy","logging_callbacks":null}` {
			t.Errorf("health: %d %s", r.status, r.body)
		}
	})
}
