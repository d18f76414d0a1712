package main

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/virtualkeys/sidecar/internal/litellmconfig"
)

// The metering's custom prices: config.yaml's model_list prices, with
// --custom-prices-file over them key by key (flags and environment
// override config.yaml); models in only one of the two are taken as they
// are.
func TestCustomPrices(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fromConfig := map[string]map[string]float64{
		"team-gpt": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
		"my-llama": {"input_cost_per_token": 2e-7, "output_cost_per_token": 4e-7},
	}
	override := file("override.json", `{"team-gpt": {"output_cost_per_token": "5e-6", "cache_read_input_token_cost": 1e-7}, "file-only": {"input_cost_per_token": 3e-6}}`)
	tests := []struct {
		name    string
		prices  map[string]map[string]float64 // config.yaml's; nil = no --config
		file    string
		want    map[string]map[string]float64
		wantErr []string
	}{
		{"neither", nil, "", nil, nil},
		{"config.yaml only", fromConfig, "", fromConfig, nil},
		{"file only", nil, override, map[string]map[string]float64{
			"team-gpt":  {"output_cost_per_token": 5e-6, "cache_read_input_token_cost": 1e-7},
			"file-only": {"input_cost_per_token": 3e-6},
		}, nil},
		{"the file wins key by key; the rest is kept and added", fromConfig, override, map[string]map[string]float64{
			"team-gpt":  {"input_cost_per_token": 1e-6, "output_cost_per_token": 5e-6, "cache_read_input_token_cost": 1e-7},
			"my-llama":  {"input_cost_per_token": 2e-7, "output_cost_per_token": 4e-7},
			"file-only": {"input_cost_per_token": 3e-6},
		}, nil},
		{"an invalid config.yaml price names --config and the model", map[string]map[string]float64{
			"ok": {"input_cost_per_token": 1e-6}, "absurd": {"output_cost_per_token": 2e6},
		}, override, nil, []string{"--config config.yaml: ", `model_name "absurd"`, "output_cost_per_token = 2e+06 is not a price"}},
		{"an invalid file names --custom-prices-file", fromConfig, file("bad.json", `{"m": {"typo": 1}}`), nil, []string{"--custom-prices-file ", `unknown key "typo"`}},
		{"a missing file", fromConfig, filepath.Join(dir, "missing.json"), nil, []string{"--custom-prices-file: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &Config{CustomPricesFile: tt.file}
			if tt.prices != nil {
				cfg.ConfigFile, cfg.LiteLLM = "config.yaml", &litellmconfig.Config{Prices: tt.prices}
			}
			before := clonePrices(tt.prices)
			got, err := customPrices(cfg)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("customPrices = %v, want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("customPrices = %v, want %v", got, tt.want)
			}
			if !reflect.DeepEqual(tt.prices, before) {
				t.Errorf("customPrices changed config.yaml's prices: %v", tt.prices)
			}
		})
	}
}

func clonePrices(p map[string]map[string]float64) map[string]map[string]float64 {
	if p == nil {
		return nil
	}
	out := make(map[string]map[string]float64, len(p))
	for m, k := range p {
		out[m] = maps.Clone(k)
	}
	return out
}

// The one ignored-settings line lists model_group_alias unless
// --model-aliases-resolved puts it to use.
func TestIgnoredSettings(t *testing.T) {
	t.Parallel()
	lc := &litellmconfig.Config{Ignored: []string{"general_settings.alerting", "router_settings.routing_strategy"}, ModelGroupAlias: map[string]string{"a": "b"}}
	tests := []struct {
		name string
		cfg  *Config
		want []string
	}{
		{"no --config", &Config{}, nil},
		{"aliases not resolved upstream", &Config{LiteLLM: lc},
			[]string{"general_settings.alerting", "router_settings.model_group_alias", "router_settings.routing_strategy"}},
		{"aliases resolved upstream", &Config{LiteLLM: lc, ModelAliasesResolved: true}, lc.Ignored},
		{"no aliases", &Config{LiteLLM: &litellmconfig.Config{Ignored: []string{"x"}}}, []string{"x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ignoredSettings(tt.cfg); !slices.Equal(got, tt.want) {
				t.Errorf("ignoredSettings = %q, want %q", got, tt.want)
			}
		})
	}
	if !slices.Equal(lc.Ignored, []string{"general_settings.alerting", "router_settings.routing_strategy"}) {
		t.Errorf("ignoredSettings changed the parsed list: %q", lc.Ignored)
	}
}
