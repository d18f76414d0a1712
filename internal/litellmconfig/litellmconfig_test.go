package litellmconfig

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// yamlBlock returns the first ```yaml block of a Markdown file.
func yamlBlock(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```yaml\n")
	if !ok {
		t.Fatalf("%s has no ```yaml block", path)
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("%s: unterminated ```yaml block", path)
	}
	return block
}

// The example in docs/config.md parses to what the page says it means.
func TestDocExample(t *testing.T) {
	c, err := Parse([]byte(yamlBlock(t, "../../docs/config.md")), env(map[string]string{
		"LITELLM_MASTER_KEY": "sk-master", "DATABASE_URL": "postgres://db/litellm",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.MasterKey != "sk-master" || c.DatabaseURL != "postgres://db/litellm" {
		t.Errorf("general_settings: %q %q", c.MasterKey, c.DatabaseURL)
	}
	wantGroups := map[string][]string{"gpt-family": {"gpt-4o", "gpt-4o-mini"}, "cheap": {"gpt-4o-mini", "my-llama"}}
	if !reflect.DeepEqual(c.AccessGroups, wantGroups) {
		t.Errorf("access groups %v", c.AccessGroups)
	}
	if !reflect.DeepEqual(c.Models, []string{"gpt-4o", "gpt-4o-mini", "my-llama"}) {
		t.Errorf("models %v", c.Models)
	}
	wantPrices := map[string]map[string]float64{"my-llama": {"input_cost_per_token": 2e-7, "output_cost_per_token": 4e-7}}
	if !reflect.DeepEqual(c.Prices, wantPrices) {
		t.Errorf("prices %v", c.Prices)
	}
	if !reflect.DeepEqual(c.ModelGroupAlias, map[string]string{"gpt-4": "gpt-4o"}) {
		t.Errorf("aliases %v", c.ModelGroupAlias)
	}
	kg := c.KeyGeneration
	if kg.KeyGeneration == nil || !reflect.DeepEqual(kg.KeyGeneration.Team.AllowedTeamMemberRoles, []string{"admin"}) ||
		!reflect.DeepEqual(kg.KeyGeneration.Team.RequiredParams, []string{"tags"}) ||
		!reflect.DeepEqual(kg.KeyGeneration.Personal.AllowedUserRoles, []string{"proxy_admin", "internal_user"}) {
		t.Errorf("key_generation_settings %+v", kg.KeyGeneration)
	}
	if kg.Defaults == nil || *kg.Defaults.MaxBudget != 10 || *kg.Defaults.BudgetDuration != "30d" {
		t.Errorf("defaults %+v", kg.Defaults)
	}
	if u := kg.Upperbound; u == nil || *u.MaxBudget != 100 || *u.Duration != "90d" || *u.TPMLimit != 100000 || *u.RPMLimit != 1000 || u.BudgetDuration != nil {
		t.Errorf("upperbound %+v", kg.Upperbound)
	}
	wantIgnored := []string{
		"general_settings.alerting", "litellm_settings.drop_params",
		"model_list[].litellm_params.api_base", "model_list[].litellm_params.api_key", "model_list[].litellm_params.model",
		"router_settings.routing_strategy",
	}
	if !reflect.DeepEqual(c.Ignored, wantIgnored) {
		t.Errorf("ignored %q", c.Ignored)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		env     map[string]string
		check   func(*Config) bool
		wantErr string
	}{
		{"empty file", "", nil, func(c *Config) bool { return c.MasterKey == "" && c.Ignored == nil }, ""},
		{"comment only", "# nothing\n", nil, func(c *Config) bool { return c.Models == nil }, ""},
		{"literal master key", "general_settings:\n  master_key: sk-1234\n", nil, func(c *Config) bool { return c.MasterKey == "sk-1234" }, ""},
		{"null sections", "general_settings:\nlitellm_settings:\nrouter_settings:\n", nil, func(c *Config) bool { return c.KeyGeneration.KeyGeneration == nil }, ""},
		{"unknown top level", "environment_variables:\n  A: b\ninclude: [x.yaml]\n", nil, func(c *Config) bool {
			return reflect.DeepEqual(c.Ignored, []string{"environment_variables", "include"})
		}, ""},
		{"alias object form", "router_settings:\n  model_group_alias:\n    a: {model: b, hidden: true}\n", nil, func(c *Config) bool { return c.ModelGroupAlias["a"] == "b" }, ""},
		{"numeric string price and model_info price", "model_list:\n- model_name: m\n  litellm_params: {input_cost_per_token: '1e-6'}\n  model_info: {output_cost_per_token: 2e-6, cache_read_input_token_cost: 0}\n", nil, func(c *Config) bool {
			return reflect.DeepEqual(c.Prices["m"], map[string]float64{"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "cache_read_input_token_cost": 0})
		}, ""},
		{"first deployment's price wins", "model_list:\n- model_name: m\n  litellm_params: {input_cost_per_token: 1}\n- model_name: m\n  litellm_params: {input_cost_per_token: 2}\n", nil, func(c *Config) bool {
			return c.Prices["m"]["input_cost_per_token"] == 1 && len(c.Models) == 1
		}, ""},
		{"cost keys the metering cannot price are ignored, not prices", "model_list:\n- model_name: whisper\n  litellm_params: {input_cost_per_second: 1e-4, output_cost_per_image: nope}\n- model_name: m\n  litellm_params: {input_cost_per_token: 1e-6, input_cost_per_token_batches: 5e-7, output_cost_per_token_above_200k_tokens: 3e-6}\n", nil, func(c *Config) bool {
			return reflect.DeepEqual(c.Prices, map[string]map[string]float64{"m": {"input_cost_per_token": 1e-6, "output_cost_per_token_above_200k_tokens": 3e-6}}) &&
				reflect.DeepEqual(c.Ignored, []string{"model_list[].litellm_params.input_cost_per_second", "model_list[].litellm_params.input_cost_per_token_batches", "model_list[].litellm_params.output_cost_per_image"})
		}, ""},
		{"empty allowed roles kept distinct", "litellm_settings:\n  key_generation_settings:\n    personal_key_generation:\n      allowed_user_roles: []\n", nil, func(c *Config) bool {
			r := c.KeyGeneration.KeyGeneration.Personal.AllowedUserRoles
			return r != nil && len(r) == 0
		}, ""},

		{"not YAML", "a: [", nil, nil, "not YAML"},
		{"document is a list", "- a\n- b\n", nil, nil, "not a mapping"},
		{"unset env var", "general_settings:\n  master_key: os.environ/NOPE\n", nil, nil, "general_settings: master_key: environment variable NOPE"},
		{"env ref without a name", "general_settings:\n  database_url: os.environ/\n", nil, nil, "names no environment variable"},
		{"master key not a string", "general_settings:\n  master_key: [a]\n", nil, nil, "master_key: want a string"},
		{"general_settings a list", "general_settings: [a]\n", nil, nil, "general_settings: want a mapping"},
		{"model_list a mapping", "model_list: {a: b}\n", nil, nil, "model_list: want a list of models"},
		{"model without a name", "model_list:\n- litellm_params: {model: x}\n", nil, nil, "entry 0: model_name is required"},
		{"model entry a string", "model_list:\n- gpt-4o\n", nil, nil, "want a list of models"},
		{"bad price", "model_list:\n- model_name: m\n  litellm_params: {input_cost_per_token: cheap}\n", nil, nil, `litellm_params.input_cost_per_token: "cheap" is not a price`},
		{"negative price", "model_list:\n- model_name: m\n  litellm_params: {input_cost_per_token: -1}\n", nil, nil, "is not a price"},
		{"bad access groups", "model_list:\n- model_name: m\n  model_info: {access_groups: a}\n", nil, nil, "access_groups: want a list of strings"},
		{"empty access group", "model_list:\n- model_name: m\n  model_info: {access_groups: ['']}\n", nil, nil, "empty group name"},
		{"bad upperbound type", "litellm_settings:\n  upperbound_key_generate_params: {max_budget: lots}\n", nil, nil, "upperbound_key_generate_params: max_budget: want float64"},
		{"bad upperbound duration", "litellm_settings:\n  upperbound_key_generate_params: {duration: forever}\n", nil, nil, "upperbound_key_generate_params.duration"},
		{"bad default budget_duration", "litellm_settings:\n  default_key_generate_params: {budget_duration: soon}\n", nil, nil, "default_key_generate_params.budget_duration"},
		{"bad roles type", "litellm_settings:\n  key_generation_settings: {team_key_generation: {allowed_team_member_roles: admin}}\n", nil, nil, "key_generation_settings"},
		{"bad alias", "router_settings:\n  model_group_alias: {a: [b]}\n", nil, nil, "model_group_alias.a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected result %+v", c)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte("general_settings: {master_key: sk-x}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, nil)
	if err != nil || c.MasterKey != "sk-x" {
		t.Fatalf("Load: %v %+v", err, c)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), nil); err == nil {
		t.Error("a missing file must be an error")
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big, nil); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: %v", err)
	}
}
