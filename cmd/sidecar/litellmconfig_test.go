package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// keySpend reads a key's spend and model_spend through /key/info.
func keySpend(t *testing.T, base, key string) (float64, map[string]float64) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/key/info?key="+key, nil)
	req.Header.Set("Authorization", "Bearer "+master)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct {
		Info struct {
			Spend      float64            `json:"spend"`
			ModelSpend map[string]float64 `json:"model_spend"`
		} `json:"info"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/key/info: %d %v", resp.StatusCode, err)
	}
	return info.Info.Spend, info.Info.ModelSpend
}

// config.yaml's model_list prices and model_group_alias, end to end: the
// Check allows an alias through its target (with --model-aliases-resolved)
// and ext_proc charges each request at the model_name's config.yaml price
// (with --custom-prices-file over it) instead of the table's price for the
// model the response names. Without --model-aliases-resolved the alias is
// denied and listed as ignored.
func TestConfigPricesAndAliasesMeter(t *testing.T) {
	dir := t.TempDir()
	cfgFile, pricesFile := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "prices.json")
	doc := "model_list:\n" +
		"- model_name: gpt-4o\n  litellm_params: {model: openai/gpt-4o, input_cost_per_token: 1e-6, output_cost_per_token: 2e-6}\n" +
		"- model_name: team-gpt\n  litellm_params: {model: openai/gpt-4o}\n  model_info: {input_cost_per_token: 3e-6, output_cost_per_token: '4e-6'}\n" +
		"router_settings:\n  model_group_alias: {fast: team-gpt}\n"
	if err := os.WriteFile(cfgFile, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pricesFile, []byte(`{"gpt-4o": {"output_cost_per_token": 5e-6}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// The recorded response (openai_chat.json) names gpt-4o-2024-08-06 and
	// reports 2006 prompt tokens (1920 cached) and 300 output tokens.
	// gpt-4o: config.yaml's input price, the file's output price, and the
	// table's gpt-4o cache-read price (custom keys replace the table entry's
	// keys they name, as --custom-prices-file always has).
	const gpt4oCost = 86*1e-6 + 1920*1.25e-6 + 300*5e-6
	// team-gpt is in no table: cached tokens at its input price.
	const teamCost = 2006*3e-6 + 300*4e-6

	r := start(t, "--master-key", master, "--config", cfgFile, "--custom-prices-file", pricesFile,
		"--model-aliases-resolved", "--spend-flush-interval", "100ms")
	c := newChecker(t, r.grpc)
	_, gen := admin(t, r.http, "/key/generate", map[string]any{"models": []string{"gpt-4o"}})
	k4o := gen["key"].(string)
	_, gen = admin(t, r.http, "/key/generate", map[string]any{"models": []string{"team-gpt"}})
	kTeam := gen["key"].(string)

	meter(t, r, c, k4o, "config-price-gpt-4o")
	v := c.check(t, kTeam, "fast")
	if !v.allowed {
		t.Fatalf("alias of an allowed model group denied: %s", v.body)
	}
	respond(t, r, allowMetadata(v), "config-price-alias")
	if v := c.check(t, kTeam, "gpt-4o"); v.allowed {
		t.Fatal("a model outside the key's list allowed")
	}

	for _, tc := range []struct {
		key, model string
		want       float64
	}{{k4o, "gpt-4o", gpt4oCost}, {kTeam, "fast", teamCost}} {
		eventually(t, "spend of "+tc.model+" at its config.yaml price", 5*time.Second, func() bool {
			s, _ := keySpend(t, r.http, tc.key)
			return near(s, tc.want)
		})
		if s, ms := keySpend(t, r.http, tc.key); !near(ms[tc.model], tc.want) || near(s, chatCost) {
			t.Errorf("%s: spend %v model_spend %v, want %v (the table price would be %v)", tc.model, s, ms, tc.want, chatCost)
		}
	}

	// Without --model-aliases-resolved the alias widens nothing.
	off := start(t, "--master-key", master, "--config", cfgFile)
	_, gen = admin(t, off.http, "/key/generate", map[string]any{"models": []string{"team-gpt"}})
	v = newChecker(t, off.grpc).check(t, gen["key"].(string), "fast")
	if v.allowed || v.errType != "key_model_access_denied" ||
		!strings.Contains(v.body, "key not allowed to access model. This key can only access models=['team-gpt']. Tried to access fast") {
		t.Errorf("alias without --model-aliases-resolved: allowed %v %s", v.allowed, v.body)
	}
	for _, run := range []struct {
		r       *running
		ignored bool
	}{{r, false}, {off, true}} {
		line := ""
		for l := range strings.SplitSeq(run.r.logs.String(), "\n") {
			if strings.Contains(l, "litellm config: settings ignored") {
				line = l
			}
		}
		if got := strings.Contains(line, "router_settings.model_group_alias"); got != run.ignored {
			t.Errorf("ignored-settings line %q: lists model_group_alias = %v, want %v", line, got, run.ignored)
		}
		if strings.Contains(line, "cost_per_token") {
			t.Errorf("ignored-settings line lists a price the metering uses: %q", line)
		}
	}
}
