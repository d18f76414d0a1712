package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/virtualkeys/sidecar/internal/mgmt"
)

// The operations openapi.json marks x-served-by (the sidecar's own routes
// around LiteLLM's API) are served as documented: each documented status
// for a plain request is what the running sidecar answers.
func TestOpenAPIServedBySidecar(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			ServedBy  string                     `json:"x-served-by"`
			Responses map[string]json.RawMessage `json:"responses"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(mgmt.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	r := start(t, "--master-key", "sk-test-master")
	cases := map[string]int{ // method path -> status for a request without credentials
		"GET /healthz": 200, "GET /readyz": 200, "GET /metrics": 200,
		"POST /healthz": 404, "GET /authz/{path}": 401, "POST /authz/{path}": 401,
	}
	seen := 0
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if op.ServedBy == "" {
				continue
			}
			seen++
			key := strings.ToUpper(method) + " " + path
			want, ok := cases[key]
			if !ok {
				t.Errorf("%s: no case in this test", key)
				continue
			}
			if _, ok := op.Responses[itoa3(want)]; !ok {
				t.Errorf("%s: answers %d, which openapi.json does not document", key, want)
			}
			code := do(t, strings.ToUpper(method), r.http+strings.Replace(path, "{path}", "v1/chat/completions", 1))
			if code != want {
				t.Errorf("%s = %d, want %d", key, code, want)
			}
		}
	}
	if code := do(t, "POST", r.http+"/healthz"); code != cases["POST /healthz"] {
		t.Errorf("POST /healthz = %d", code)
	}
	if seen != 5 {
		t.Errorf("%d operations marked x-served-by, want 5", seen)
	}
}

func itoa3(n int) string { b, _ := json.Marshal(n); return string(b) }

func do(t *testing.T, method, url string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(`{"model":"gpt-4o"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
