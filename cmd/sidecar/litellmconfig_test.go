package main

import (
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
