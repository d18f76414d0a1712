package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A sidecar started with --config takes its master key and key-generation
// bounds from config.yaml and logs the ignored settings in one line.
func TestSidecarWithLiteLLMConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	doc := "general_settings:\n  master_key: sk-from-config\n  alerting: [slack]\n" +
		"litellm_settings:\n  drop_params: true\n  upperbound_key_generate_params: {max_budget: 10}\n" +
		"model_list:\n- model_name: gpt-4o\n  litellm_params: {model: openai/gpt-4o}\n  model_info: {access_groups: [gpt]}\n"
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	r := start(t, "--config", p)
	post := func(body string) (int, string) {
		req, _ := http.NewRequest("POST", r.http+"/key/generate", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer sk-from-config")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := post(`{"max_budget": 11}`); code != 400 || !strings.Contains(body, "max_budget is over max limit set in config - user_value=11.0; max_value=10.0") {
		t.Errorf("over the bound: %d %s", code, body)
	}
	if code, body := post(`{"models": ["gpt"]}`); code != 200 || !strings.Contains(body, `"max_budget":10`) {
		t.Errorf("within the bound: %d %s", code, body)
	}
	logs := r.logs.String()
	if n := strings.Count(logs, "litellm config: settings ignored"); n != 1 {
		t.Fatalf("%d ignored-settings lines, want 1:\n%s", n, logs)
	}
	for _, s := range []string{"general_settings.alerting", "litellm_settings.drop_params", "model_list[].litellm_params.model"} {
		if !strings.Contains(logs, s) {
			t.Errorf("the ignored line does not name %s", s)
		}
	}
}

// The running sidecar applies LiteLLM's roles through the user table: an
// internal_user's key manages its own keys and nobody else's.
func TestSidecarInternalUserManagesOwnKeys(t *testing.T) {
	r := start(t, "--master-key", "sk-master-roles")
	call := func(auth, path, body string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", r.http+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+auth)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(res.Body).Decode(&m)
		return res.StatusCode, m
	}
	code, out := call("sk-master-roles", "/user/new", `{"user_id": "alice", "user_role": "internal_user"}`)
	key, _ := out["key"].(string)
	if code != 200 || key == "" {
		t.Fatalf("/user/new: %d %v", code, out)
	}
	if code, out := call(key, "/key/generate", `{"user_id": "alice"}`); code != 200 {
		t.Errorf("own key: %d %v", code, out)
	}
	code, out = call(key, "/key/generate", `{"user_id": "bob"}`)
	if e, _ := out["error"].(map[string]any); code != 403 || e["message"] != "User can only create keys for themselves. Got user_id=bob, Your ID=alice" {
		t.Errorf("another user's key: %d %v", code, out)
	}
	_, out = call("sk-master-roles", "/key/generate", `{"user_id": "bob"}`)
	bobKey, _ := out["key"].(string)
	if code, out := call(key, "/key/delete", `{"keys": ["`+bobKey+`"]}`); code != 403 {
		t.Errorf("delete bob's key: %d %v", code, out)
	}
}
