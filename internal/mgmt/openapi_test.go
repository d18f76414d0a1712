package mgmt_test

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/virtualkeys/sidecar/internal/keys"
	"github.com/virtualkeys/sidecar/internal/mgmt"
	"github.com/virtualkeys/sidecar/internal/store"
)

// schemaChecker validates JSON values against the subset of JSON Schema our
// OpenAPI document uses: $ref, type (string or list), properties, required,
// items, oneOf, additionalProperties.
type schemaChecker struct {
	schemas map[string]any
}

func (c *schemaChecker) resolve(s map[string]any) map[string]any {
	for {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		s = c.schemas[strings.TrimPrefix(ref, "#/components/schemas/")].(map[string]any)
	}
}

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64:
		if v == math.Trunc(v) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "?"
}

func (c *schemaChecker) check(path string, s map[string]any, v any) []string {
	s = c.resolve(s)
	if alts, ok := s["oneOf"].([]any); ok {
		for _, a := range alts {
			if len(c.check(path, a.(map[string]any), v)) == 0 {
				return nil
			}
		}
		return []string{path + ": matches no oneOf alternative"}
	}
	var types []string
	switch t := s["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			types = append(types, x.(string))
		}
	}
	jt := jsonType(v)
	if len(types) > 0 && !slices.Contains(types, jt) && !(jt == "integer" && slices.Contains(types, "number")) {
		return []string{fmt.Sprintf("%s: %s, schema says %v", path, jt, types)}
	}
	var errs []string
	switch v := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		if props == nil {
			return nil // free-form object
		}
		for k, val := range v {
			ps, ok := props[k]
			if !ok {
				errs = append(errs, path+"."+k+": not declared in the schema")
				continue
			}
			errs = append(errs, c.check(path+"."+k, ps.(map[string]any), val)...)
		}
		req, _ := s["required"].([]any)
		for _, r := range req {
			if _, ok := v[r.(string)]; !ok {
				errs = append(errs, path+"."+r.(string)+": required but missing")
			}
		}
	case []any:
		if items, ok := s["items"].(map[string]any); ok {
			for i, it := range v {
				errs = append(errs, c.check(fmt.Sprintf("%s[%d]", path, i), items, it)...)
			}
		}
	}
	return errs
}

func TestOpenAPI(t *testing.T) {
	st := backends()[0].open(t)
	e := newEnv(t, st)
	r := e.call("GET", "/openapi.json", "", "")
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %s", r.status, r.header.Get("Content-Type"))
	}
	var doc struct {
		OpenAPI    string                               `json:"openapi"`
		Paths      map[string]map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
	api, err := mgmt.New(mgmt.Config{Store: st, MasterKey: master})
	if err != nil {
		t.Fatal(err)
	}
	routes := mgmt.Routes(api)
	if len(routes) < 12 {
		t.Fatalf("only %d routes", len(routes))
	}
	// Operations served by the sidecar around this API (/healthz, /readyz,
	// /metrics, /authz/*) are marked x-served-by; cmd/sidecar tests them.
	documented := 0
	for _, m := range doc.Paths {
		for _, op := range m {
			if op["x-served-by"] == nil {
				documented++
			}
		}
	}
	if documented != len(routes) {
		t.Errorf("%d operations documented, %d routes served", documented, len(routes))
	}
	for _, rt := range routes {
		method, path, _ := strings.Cut(rt, " ")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("route %s is not in openapi.json", rt)
		}
	}

	// operationIds are LiteLLM's (FastAPI's <function>_<path>_<method>), so
	// generated clients get LiteLLM's method names; unique.
	ids := map[string]bool{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			id, _ := op["operationId"].(string)
			suffix := strings.NewReplacer("/", "_", "{", "", "}", "", ".", "_").Replace(path) + "_" + method
			if !strings.HasSuffix(id, suffix) || len(id) <= len(suffix) {
				t.Errorf("%s %s: operationId %q, want LiteLLM's <function>%s", method, path, id, suffix)
			}
			if ids[id] {
				t.Errorf("operationId %q is used twice", id)
			}
			ids[id] = true
		}
	}

	c := &schemaChecker{schemas: doc.Components.Schemas}
	schemaOf := func(method, path, status string) map[string]any {
		op := doc.Paths[path][strings.ToLower(method)]
		resp, ok := op["responses"].(map[string]any)[status].(map[string]any)
		if !ok {
			t.Fatalf("%s %s: no %s response documented", method, path, status)
		}
		return resp["content"].(map[string]any)["application/json"].(map[string]any)["schema"].(map[string]any)
	}
	// validate calls method path and checks the answer against the schema
	// documented for docMethod docPath and the answer's status.
	validate := func(name, docMethod, docPath, path, auth, body string, status int) map[string]any {
		t.Helper()
		method := docMethod
		if status == 405 { // a wrong method: documented on the right one
			method = "GET"
		}
		r := e.call(method, path, auth, body)
		if r.status != status {
			t.Fatalf("%s: %d %s", name, r.status, r.body)
		}
		var v any
		if err := json.Unmarshal(r.body, &v); err != nil {
			t.Fatal(err)
		}
		for _, msg := range c.check(name, schemaOf(docMethod, docPath, fmt.Sprint(status)), v) {
			t.Error(msg)
		}
		m, _ := v.(map[string]any)
		return m
	}
	full := `{"key_alias":"oa","duration":"1h","budget_duration":"1d","models":["m"],"aliases":{"a":"m"},"config":{},"spend":1,
		"max_budget":9.5,"soft_budget":2,"max_parallel_requests":1,"metadata":{"x":1},"tpm_limit":1,"rpm_limit":1,
		"model_rpm_limit":{"m":1},"model_tpm_limit":{"m":1},"model_max_budget":{},"allowed_cache_controls":[],"allowed_routes":[],
		"permissions":{},"blocked":false,"guardrails":["g"],"tags":["t"],"enforced_params":["p"],"temp_budget_increase":1,
		"temp_budget_expiry":"2030-01-01T00:00:00Z","user_id":"u","team_id":"t","organization_id":"o","budget_id":"b",
		"send_invite_email":false,"key_type":"default"}`
	gen := validate("generate", "POST", "/key/generate", "/key/generate", master, full, 200)
	raw := gen["key"].(string)
	e.sawRaw(raw)
	hash := keys.HashHex(raw)
	validate("generate empty", "POST", "/key/generate", "/key/generate", master, `{}`, 200)
	validate("update", "POST", "/key/update", "/key/update", master, `{"key":"`+hash+`","max_budget":null}`, 200)
	validate("info", "GET", "/key/info", "/key/info?key="+hash, master, "", 200)
	validate("v2 info", "POST", "/v2/key/info", "/v2/key/info", master, `{"keys":["`+hash+`"]}`, 200)
	validate("list", "GET", "/key/list", "/key/list", master, "", 200)
	validate("list full", "GET", "/key/list", "/key/list?return_full_object=true", master, "", 200)
	validate("block", "POST", "/key/block", "/key/block", master, `{"key":"`+hash+`"}`, 200)
	validate("unblock", "POST", "/key/unblock", "/key/unblock", master, `{"key":"`+hash+`"}`, 200)
	rg := validate("regenerate", "POST", "/key/regenerate", "/key/regenerate", master, `{"key":"`+hash+`","duration":"2h"}`, 200)
	raw2 := rg["key"].(string)
	e.sawRaw(raw2)
	rg = validate("regenerate path", "POST", "/key/{key}/regenerate", "/key/"+raw2+"/regenerate", master, ``, 200)
	e.sawRaw(rg["key"].(string))
	validate("health", "POST", "/key/health", "/key/health", master, "", 200)
	validate("delete", "POST", "/key/delete", "/key/delete", master, `{"keys":["`+rg["token"].(string)+`"]}`, 200)
	// spend logs: one metered row
	sw := st.(store.SpendWriter)
	now := time.Now().UTC()
	if _, err := sw.ApplySpend(t.Context(), &store.SpendBatch{ID: "openapi", Logs: []store.SpendLog{{RequestID: "req-openapi",
		CallType: "acompletion", APIKey: hash, Spend: 0.5, PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3,
		StartTime: now, EndTime: now, Model: "gpt-4o", Status: "success"}}}); err != nil {
		t.Fatal(err)
	}
	validate("spend logs", "GET", "/spend/logs", "/spend/logs?api_key="+hash+"&start_date="+now.Format("2006-01-02")+"&end_date="+now.Format("2006-01-02"), master, "", 200)
	validate("spend logs 400", "GET", "/spend/logs", "/spend/logs?start_date=yesterday", master, "", 400)
	validate("spend logs 401", "GET", "/spend/logs", "/spend/logs", "", "", 401)
	// errors
	validate("401", "POST", "/key/generate", "/key/generate", "", `{}`, 401)
	validate("404", "GET", "/key/info", "/key/info?key="+hash, master, "", 404)
	validate("405", "POST", "/key/generate", "/key/generate", master, "", 405)
	validate("422", "POST", "/key/generate", "/key/generate", master, `{"models":1}`, 422)
	validate("400", "POST", "/key/generate", "/key/generate", master, `{"max_budget":-1}`, 400)
}
