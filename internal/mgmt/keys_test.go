package mgmt_test

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// errCase is one request that must fail with this envelope.
type errCase struct {
	name       string
	body       string
	wantStatus int
	wantType   string
	wantParam  any // nil = JSON null
	wantMsg    string
}

func (e *env) checkErr(tc errCase, method, path string) {
	e.t.Helper()
	r := e.call(method, path, master, tc.body)
	if r.status != tc.wantStatus {
		e.t.Fatalf("status %d, want %d: %s", r.status, tc.wantStatus, r.body)
	}
	typ, msg, param, code := r.errBody(e.t)
	if typ != tc.wantType || param != tc.wantParam || code != strconv.Itoa(tc.wantStatus) {
		e.t.Errorf("got type %q param %v code %q; want type %q param %v (message %q)", typ, param, code, tc.wantType, tc.wantParam, msg)
	}
	if !strings.Contains(msg, tc.wantMsg) {
		e.t.Errorf("message %q does not contain %q", msg, tc.wantMsg)
	}
}

func TestGenerate(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		custom := keys.Generate()
		e.sawRaw(custom)

		t.Run("empty body", func(t *testing.T) {
			e := e.T(t)
			raw, hash, out := e.generate("{}")
			if !strings.HasPrefix(raw, "sk-") || len(raw) != 25 {
				t.Errorf("raw key %q: want sk- + 22 chars", keys.Redact(raw))
			}
			if hash != keys.HashHex(raw) || out["token_id"] != hash {
				t.Errorf("token %v / token_id %v is not the SHA-256 of the key", out["token"], out["token_id"])
			}
			if out["key_name"] != keys.Name(raw) {
				t.Errorf("key_name %v, want %s", out["key_name"], keys.Name(raw))
			}
			for _, f := range []string{"expires", "budget_reset_at", "max_budget", "key_alias", "duration", "user_id", "blocked"} {
				if v, ok := out[f]; !ok || v != nil {
					t.Errorf("%s = %v (present %v), want null", f, v, ok)
				}
			}
			if out["created_by"] != "default_user_id" || out["updated_by"] != "default_user_id" {
				t.Errorf("created_by %v updated_by %v", out["created_by"], out["updated_by"])
			}
			if !e.wasInvalidated(hash) {
				t.Error("Invalidate not called for the new key")
			}
		})

		t.Run("empty request body is {}", func(t *testing.T) {
			e := e.T(t)
			r := e.call("POST", "/key/generate", master, "")
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			e.sawRaw(r.obj(t)["key"].(string))
		})

		t.Run("every field echoed and stored", func(t *testing.T) {
			e := e.T(t)
			body := map[string]any{
				"key":                    custom,
				"key_alias":              "full",
				"models":                 []any{"gpt-4o", "openai/*"},
				"aliases":                map[string]any{"gpt": "gpt-4o"},
				"config":                 map[string]any{"c": "d"},
				"spend":                  1.5,
				"max_budget":             10.0,
				"soft_budget":            5.0,
				"max_parallel_requests":  3.0,
				"metadata":               map[string]any{"team": "core"},
				"tpm_limit":              1000.0,
				"rpm_limit":              10.0,
				"model_rpm_limit":        map[string]any{"gpt-4o": 5.0},
				"model_tpm_limit":        map[string]any{"gpt-4o": 500.0},
				"model_max_budget":       map[string]any{"gpt-4o": map[string]any{"budget_limit": 1.0}},
				"allowed_cache_controls": []any{"no-cache"},
				"allowed_routes":         []any{"/chat/completions"},
				"permissions":            map[string]any{"p": true},
				"blocked":                false,
				"guardrails":             []any{"g1"},
				"tags":                   []any{"t1"},
				"enforced_params":        []any{"user"},
				"user_id":                "u1",
				"team_id":                "t1",
				"organization_id":        "o1",
				"budget_id":              "b1",
				"send_invite_email":      false,
				"key_type":               "llm_api",
				"unknown_field":          "ignored",
			}
			raw, hash, out := e.generate(jsonStr(body))
			if raw != custom || hash != keys.HashHex(custom) {
				t.Fatalf("custom key not used")
			}
			for k, want := range body {
				if k == "unknown_field" || k == "key" || k == "metadata" {
					continue
				}
				if got := out[k]; !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %v, want %v", k, jsonStr(got), jsonStr(want))
				}
			}
			md := out["metadata"].(map[string]any)
			for _, k := range []string{"team", "model_rpm_limit", "model_tpm_limit", "guardrails", "tags", "enforced_params", "soft_budget"} {
				if _, ok := md[k]; !ok {
					t.Errorf("metadata lacks %s: %v", k, md)
				}
			}
			if _, ok := out["unknown_field"]; ok {
				t.Error("unknown field echoed")
			}
			// what info shows is what generate said
			info := e.admin("GET", "/key/info?key="+hash, "", 200)["info"].(map[string]any)
			for k, v := range info {
				if k == "updated_at" || k == "created_at" {
					continue
				}
				if !reflect.DeepEqual(out[k], v) {
					t.Errorf("info %s = %v, generate said %v", k, jsonStr(v), jsonStr(out[k]))
				}
			}
		})

		e.generate(`{"key_alias":"taken"}`)
		for _, tc := range []errCase{
			{"negative max_budget", `{"max_budget":-1}`, 400, "bad_request_error", "max_budget", "max_budget cannot be negative. Received: -1"},
			{"negative soft_budget", `{"soft_budget":-2.5}`, 400, "bad_request_error", "soft_budget", "max_budget cannot be negative. Received: -2.5"},
			{"negative tpm_limit", `{"tpm_limit":-2}`, 400, "bad_request_error", "tpm_limit", "cannot be negative"},
			{"custom key without sk-", `{"key":"mykey-123456"}`, 400, "bad_request_error", "key", "must start with 'sk-'"},
			{"custom key exists", `{"key":"` + custom + `"}`, 400, "bad_request_error", "key", "Key already exists"},
			{"alias exists", `{"key_alias":"taken"}`, 400, "bad_request_error", "key_alias", "Key with alias 'taken' already exists. Unique key aliases across all keys are required."},
			{"models not a list", `{"models":"gpt-4o"}`, 422, "validation_error", "models", "models"},
			{"models list of numbers", `{"models":[1,2]}`, 422, "validation_error", "models", "models"},
			{"max_budget string", `{"max_budget":"10"}`, 422, "validation_error", "max_budget", "max_budget"},
			{"tpm_limit fraction", `{"tpm_limit":1.5}`, 422, "validation_error", "tpm_limit", "tpm_limit"},
			{"metadata list", `{"metadata":[1]}`, 422, "validation_error", "metadata", "metadata"},
			{"blocked string", `{"blocked":"yes"}`, 422, "validation_error", "blocked", "blocked"},
			{"key_alias number", `{"key_alias":5}`, 422, "validation_error", "key_alias", "key_alias"},
			{"spend null", `{"spend":null}`, 422, "validation_error", "spend", "spend"},
			{"malformed json", `{"models":`, 422, "validation_error", "body", "malformed JSON"},
			{"trailing garbage", `{} {}`, 422, "validation_error", "body", "malformed JSON"},
			{"trailing token", `{}x`, 422, "validation_error", "body", "malformed JSON"},
			{"array body", `[]`, 422, "validation_error", "body", "JSON object"},
			{"NUL in a string", `{"key_alias":"a\u0000b"}`, 422, "validation_error", "body", "NUL"},
			{"NUL in metadata key", `{"metadata":{"\u0000":1}}`, 422, "validation_error", "body", "NUL"},
			{"null body", `null`, 422, "validation_error", "body", "JSON object"},
			{"string body", `"x"`, 422, "validation_error", "body", "JSON object"},
			{"too large", `{"metadata":{"x":"` + strings.Repeat("a", 70<<10) + `"}}`, 413, "request_too_large", nil, "too large"},
		} {
			t.Run(tc.name, func(t *testing.T) { e.T(t).checkErr(tc, "POST", "/key/generate") })
		}
	})
}

func TestGenerateDurations(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		t.Run("expires and budget_reset_at", func(t *testing.T) {
			e := e.T(t)
			before := time.Now().UTC().Truncate(time.Millisecond)
			_, _, out := e.generate(`{"duration":"1h","budget_duration":"1d"}`)
			after := time.Now().UTC()
			exp := mustTime(t, out["expires"])
			if exp.Before(before.Add(time.Hour)) || exp.After(after.Add(time.Hour)) {
				t.Errorf("expires %v not now+1h", exp)
			}
			reset := mustTime(t, out["budget_reset_at"])
			wantReset := time.Date(before.Year(), before.Month(), before.Day()+1, 0, 0, 0, 0, time.UTC)
			if !reset.Equal(wantReset) && !reset.Equal(wantReset.AddDate(0, 0, 1)) {
				t.Errorf("budget_reset_at %v, want next midnight %v", reset, wantReset)
			}
			if out["duration"] != "1h" || out["budget_duration"] != "1d" {
				t.Errorf("duration %v budget_duration %v", out["duration"], out["budget_duration"])
			}
		})
		for _, tc := range []errCase{
			{"bad duration", `{"duration":"ten days"}`, 400, "bad_request_error", "duration", "duration"},
			{"bare number duration", `{"duration":"30"}`, 400, "bad_request_error", "duration", "duration"},
			{"bad budget_duration", `{"budget_duration":"-1d"}`, 400, "bad_request_error", "budget_duration", "budget_duration"},
			{"duration past year 9999", `{"duration":"1000000mo"}`, 400, "bad_request_error", "duration", "year 9999"},
			{"budget_duration past year 9999", `{"budget_duration":"1000000w"}`, 400, "bad_request_error", "budget_duration", "year 9999"},
			{"duration number", `{"duration":30}`, 422, "validation_error", "duration", "duration"},
			{"bad temp_budget_expiry", `{"temp_budget_expiry":"tomorrow"}`, 400, "bad_request_error", "temp_budget_expiry", "temp_budget_expiry"},
		} {
			t.Run(tc.name, func(t *testing.T) { e.T(t).checkErr(tc, "POST", "/key/generate") })
		}
	})
}

func mustTime(t *testing.T, v any) time.Time {
	t.Helper()
	s, _ := v.(string)
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("not a time: %v", v)
	}
	return tm
}

func TestUpdate(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		raw, hash, _ := e.generate(`{"key_alias":"upd","models":["a"],"max_budget":10,"tpm_limit":5,"user_id":"u1",
			"metadata":{"keep":"no","team":"x"},"tags":["t1"],"model_rpm_limit":{"a":1}}`)
		e.generate(`{"key_alias":"other"}`)

		t.Run("present fields change, absent stay, null clears", func(t *testing.T) {
			e := e.T(t)
			out := e.admin("POST", "/key/update", `{"key":"`+raw+`","models":["b","c"],"max_budget":null,"spend":2.5,"tpm_limit":null,"team_id":"t9"}`, 200)
			if out["key"] != raw {
				t.Errorf("key %v: want as sent", out["key"])
			}
			want := map[string]any{"models": []any{"b", "c"}, "max_budget": nil, "spend": 2.5, "tpm_limit": nil, "team_id": "t9",
				"user_id": "u1", "key_alias": "upd", "token": hash}
			for k, w := range want {
				if !reflect.DeepEqual(out[k], w) {
					t.Errorf("%s = %v, want %v", k, jsonStr(out[k]), jsonStr(w))
				}
			}
			info := e.admin("GET", "/key/info?key="+hash, "", 200)["info"].(map[string]any)
			for k, w := range want {
				if k == "token" {
					continue
				}
				if !reflect.DeepEqual(info[k], w) {
					t.Errorf("stored %s = %v, want %v", k, jsonStr(info[k]), jsonStr(w))
				}
			}
			if !e.wasInvalidated(hash) {
				t.Error("Invalidate not called")
			}
		})

		t.Run("metadata replaces, bound fields merged in", func(t *testing.T) {
			e := e.T(t)
			out := e.admin("POST", "/key/update", `{"key":"`+hash+`","metadata":{"team":"y"},"guardrails":["g"]}`, 200)
			want := map[string]any{"team": "y", "guardrails": []any{"g"}}
			if md := out["metadata"]; !reflect.DeepEqual(md, want) {
				t.Errorf("metadata %v, want %v", jsonStr(md), jsonStr(want))
			}
			out = e.admin("POST", "/key/update", `{"key":"`+hash+`","tags":["t2"]}`, 200)
			want = map[string]any{"team": "y", "guardrails": []any{"g"}, "tags": []any{"t2"}}
			if md := out["metadata"]; !reflect.DeepEqual(md, want) {
				t.Errorf("metadata without metadata field: %v, want %v", jsonStr(md), jsonStr(want))
			}
			out = e.admin("POST", "/key/update", `{"key":"`+hash+`","tags":null,"metadata":null}`, 200)
			if md := out["metadata"]; !reflect.DeepEqual(md, map[string]any{}) {
				t.Errorf("metadata after null: %v", jsonStr(md))
			}
		})

		t.Run("alias", func(t *testing.T) {
			e := e.T(t)
			e.checkErr(errCase{"", `{"key":"` + hash + `","key_alias":"other"}`, 400, "bad_request_error", "key_alias",
				"Key with alias 'other' already exists. Unique key aliases across all keys are required."}, "POST", "/key/update")
			e.admin("POST", "/key/update", `{"key":"`+hash+`","key_alias":"upd"}`, 200) // keeps its own
			out := e.admin("POST", "/key/update", `{"key_alias":"upd","rpm_limit":7}`, 200)
			if out["token"] != hash || out["rpm_limit"] != 7.0 || out["key_alias"] != "upd" {
				t.Errorf("update by alias: %v", out)
			}
			out = e.admin("POST", "/key/update", `{"key":"`+hash+`","key_alias":"renamed"}`, 200)
			if out["key_alias"] != "renamed" {
				t.Errorf("rename: %v", out["key_alias"])
			}
		})

		for _, tc := range []errCase{
			{"missing key", `{"key":"` + keys.Generate() + `","max_budget":1}`, 404, "not_found_error", "key", "Key not found in database"},
			{"unknown alias", `{"key_alias":"nobody","max_budget":1}`, 404, "not_found_error", "key", "Key not found"},
			{"no key field", `{"max_budget":1}`, 422, "validation_error", "key", "key"},
			{"empty body", ``, 422, "validation_error", "body", "body"},
			{"key number", `{"key":5}`, 422, "validation_error", "key", "key"},
			{"negative max_budget", `{"key":"` + hash + `","max_budget":-0.5}`, 400, "bad_request_error", "max_budget", "max_budget cannot be negative. Received: -0.5"},
			{"models wrong type", `{"key":"` + hash + `","models":{"a":1}}`, 422, "validation_error", "models", "models"},
		} {
			t.Run(tc.name, func(t *testing.T) { e.T(t).checkErr(tc, "POST", "/key/update") })
		}
	})
}

func TestUpdateDurations(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		_, hash, _ := e.generate(`{"duration":"1h","budget_duration":"1h"}`)
		out := e.admin("POST", "/key/update", `{"key":"`+hash+`","duration":"2d"}`, 200)
		exp := mustTime(t, out["expires"])
		if d := time.Until(exp); d < 47*time.Hour || d > 49*time.Hour {
			t.Errorf("expires in %v, want ~48h", d)
		}
		for _, never := range []string{`null`, `"-1"`} {
			out = e.admin("POST", "/key/update", `{"key":"`+hash+`","duration":`+never+`}`, 200)
			if out["expires"] != nil {
				t.Errorf("duration %s: expires %v, want null", never, out["expires"])
			}
		}
		out = e.admin("POST", "/key/update", `{"key":"`+hash+`","budget_duration":"1mo"}`, 200)
		reset := mustTime(t, out["budget_reset_at"])
		if reset.Day() != 1 || reset.Hour() != 0 || !reset.After(time.Now()) {
			t.Errorf("budget_reset_at %v, want the 1st of next month", reset)
		}
		out = e.admin("POST", "/key/update", `{"key":"`+hash+`","budget_duration":null}`, 200)
		if out["budget_reset_at"] != nil || out["budget_duration"] != nil {
			t.Errorf("budget_duration null: %v %v", out["budget_duration"], out["budget_reset_at"])
		}
		e.checkErr(errCase{"", `{"key":"` + hash + `","duration":"1x"}`, 400, "bad_request_error", "duration", "duration"}, "POST", "/key/update")
	})
}

var _ = json.Marshal
