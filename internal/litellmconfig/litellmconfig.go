// Package litellmconfig reads an operator's existing LiteLLM config.yaml and
// keeps what concerns the sidecar:
//
//   - general_settings: master_key, database_url (with LiteLLM's
//     "os.environ/NAME" references resolved);
//   - litellm_settings: key_generation_settings,
//     default_key_generate_params, upperbound_key_generate_params (as
//     keygen.Settings);
//   - model_list: each model_name, model_info.access_groups (the access
//     groups the Check expands) and per-model prices
//     (litellm_params.input_cost_per_token, output_cost_per_token and the
//     other LiteLLM cost keys the metering prices: pricing.IsCostKey) for
//     metering; cost keys it cannot price (per second, per image, batch
//     and service-tier prices) are ignored like any other setting;
//   - router_settings: model_group_alias.
//
// Everything else is reported in Config.Ignored so the caller can log it
// in one line. Parse never panics on any input (fuzzed).
package litellmconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/virtualkeys/sidecar/internal/keygen"
	"github.com/virtualkeys/sidecar/internal/pricing"
)

// MaxBytes bounds the config file Load reads.
const MaxBytes = 8 << 20

// envPrefix marks a value LiteLLM reads from the environment.
const envPrefix = "os.environ/"

// Config is what the sidecar takes from a LiteLLM config.yaml. Zero values
// mean "not set in the file".
type Config struct {
	// MasterKey is general_settings.master_key, resolved.
	MasterKey string
	// DatabaseURL is general_settings.database_url, resolved.
	DatabaseURL string
	// KeyGeneration holds litellm_settings' key-generation rules.
	KeyGeneration keygen.Settings
	// Models lists model_list's model_name values, in file order, once each.
	Models []string
	// AccessGroups maps each model_info.access_groups name to the
	// model_names that declare it (file order, once each).
	AccessGroups map[string][]string
	// Prices maps a model_name to its LiteLLM cost keys
	// (input_cost_per_token, output_cost_per_token, ...) found in
	// litellm_params or model_info; the first deployment of a model_name
	// that declares prices wins. Only keys the metering prices
	// (pricing.IsCostKey) are kept; the others are in Ignored. The shape of
	// pricing.Config.Custom (values are finite and non-negative; the caller
	// checks the rest with pricing.ValidateCustom).
	Prices map[string]map[string]float64
	// ModelGroupAlias is router_settings.model_group_alias: alias -> model
	// group (the {"model": ..., "hidden": ...} form gives its model).
	ModelGroupAlias map[string]string
	// Ignored lists, sorted, the settings present in the file that the
	// sidecar does not use (e.g. "general_settings.alerting",
	// "model_list[].litellm_params.api_key", "router_settings.routing_strategy").
	Ignored []string
}

// Load reads and parses the file at path. getenv resolves os.environ/
// references (nil means os.Getenv).
func Load(path string, getenv func(string) string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("litellm config: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxBytes+1)); err != nil {
		return nil, fmt.Errorf("litellm config %s: %w", path, err)
	}
	if buf.Len() > MaxBytes {
		return nil, fmt.Errorf("litellm config %s: larger than %d bytes", path, MaxBytes)
	}
	c, err := Parse(buf.Bytes(), getenv)
	if err != nil {
		return nil, fmt.Errorf("litellm config %s: %w", path, err)
	}
	return c, nil
}

// Parse reads a LiteLLM config.yaml document. getenv resolves os.environ/
// references (nil means os.Getenv); a reference to an unset variable is an
// error, never an empty master key.
func Parse(data []byte, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	c := &Config{}
	var top map[string]json.RawMessage
	if err := unmarshal(js, &top); err != nil {
		return nil, errors.New("the document is not a mapping")
	}
	var ignored []string
	for name, raw := range top {
		var err error
		switch name {
		case "general_settings":
			err = c.general(raw, getenv, &ignored)
		case "litellm_settings":
			err = c.litellm(raw, &ignored)
		case "model_list":
			err = c.modelList(raw, &ignored)
		case "router_settings":
			err = c.router(raw, &ignored)
		default:
			ignored = append(ignored, name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := c.KeyGeneration.Validate(); err != nil {
		return nil, fmt.Errorf("litellm_settings: %w", err)
	}
	slices.Sort(ignored)
	c.Ignored = slices.Compact(ignored)
	return c, nil
}

// section decodes a mapping (null is an empty one).
func section(raw json.RawMessage) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := unmarshal(raw, &m); err != nil {
		return nil, errors.New("want a mapping")
	}
	return m, nil
}

func unmarshal(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return errors.New("empty")
	}
	return json.Unmarshal(raw, v)
}

func (c *Config) general(raw json.RawMessage, getenv func(string) string, ignored *[]string) error {
	m, err := section(raw)
	if err != nil {
		return err
	}
	for k, v := range m {
		var dst *string
		switch k {
		case "master_key":
			dst = &c.MasterKey
		case "database_url":
			dst = &c.DatabaseURL
		default:
			*ignored = append(*ignored, "general_settings."+k)
			continue
		}
		s, err := envString(k, v, getenv)
		if err != nil {
			return err
		}
		*dst = s
	}
	return nil
}

// envString decodes a string setting, resolving os.environ/NAME. null is "".
func envString(name string, raw json.RawMessage, getenv func(string) string) (string, error) {
	var s *string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%s: want a string", name)
	}
	if s == nil {
		return "", nil
	}
	v, ok := strings.CutPrefix(*s, envPrefix)
	if !ok {
		return *s, nil
	}
	if v == "" {
		return "", fmt.Errorf("%s: %q names no environment variable", name, *s)
	}
	r := getenv(v)
	if r == "" {
		return "", fmt.Errorf("%s: environment variable %s (from %q) is not set", name, v, *s)
	}
	return r, nil
}

func (c *Config) litellm(raw json.RawMessage, ignored *[]string) error {
	m, err := section(raw)
	if err != nil {
		return err
	}
	for k, v := range m {
		var dst any
		switch k {
		case "key_generation_settings":
			dst = &c.KeyGeneration.KeyGeneration
		case "default_key_generate_params":
			dst = &c.KeyGeneration.Defaults
		case "upperbound_key_generate_params":
			dst = &c.KeyGeneration.Upperbound
		default:
			*ignored = append(*ignored, "litellm_settings."+k)
			continue
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("%s: %s", k, typeError(err))
		}
	}
	return nil
}

// typeError words a JSON decoding error in the YAML's terms.
func typeError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("%s: want %s, got %s", te.Field, te.Type, te.Value)
		}
		return fmt.Sprintf("want %s, got %s", te.Type, te.Value)
	}
	return err.Error()
}

// deployment is one model_list entry.
type deployment struct {
	ModelName     *string                    `json:"model_name"`
	LiteLLMParams map[string]json.RawMessage `json:"litellm_params"`
	ModelInfo     map[string]json.RawMessage `json:"model_info"`
}

func (c *Config) modelList(raw json.RawMessage, ignored *[]string) error {
	var list []map[string]json.RawMessage
	if err := unmarshal(raw, &list); err != nil {
		return errors.New("want a list of models")
	}
	for i, entry := range list {
		if entry == nil {
			return fmt.Errorf("entry %d: want a mapping", i)
		}
		for k := range entry {
			if k != "model_name" && k != "litellm_params" && k != "model_info" {
				*ignored = append(*ignored, "model_list[]."+k)
			}
		}
		b, _ := json.Marshal(entry) // re-encode the known members: cannot fail
		var d deployment
		if err := json.Unmarshal(b, &d); err != nil {
			return fmt.Errorf("entry %d: %s", i, typeError(err))
		}
		if d.ModelName == nil || *d.ModelName == "" {
			return fmt.Errorf("entry %d: model_name is required", i)
		}
		name := *d.ModelName
		if !slices.Contains(c.Models, name) {
			c.Models = append(c.Models, name)
		}
		prices := map[string]float64{}
		for _, part := range []struct {
			label string
			m     map[string]json.RawMessage
		}{{"litellm_params", d.LiteLLMParams}, {"model_info", d.ModelInfo}} {
			for k, v := range part.m {
				switch {
				case part.label == "model_info" && k == "access_groups":
					if err := c.accessGroups(name, v); err != nil {
						return fmt.Errorf("entry %d (%s): model_info.access_groups: %w", i, name, err)
					}
				case pricing.IsCostKey(k):
					f, ok := number(v)
					if !ok {
						return fmt.Errorf("entry %d (%s): %s.%s: %s is not a price", i, name, part.label, k, v)
					}
					if _, dup := prices[k]; !dup {
						prices[k] = f
					}
				default:
					*ignored = append(*ignored, "model_list[]."+part.label+"."+k)
				}
			}
		}
		if len(prices) > 0 {
			if c.Prices == nil {
				c.Prices = map[string]map[string]float64{}
			}
			if _, seen := c.Prices[name]; !seen {
				c.Prices[name] = prices
			}
		}
	}
	return nil
}

func (c *Config) accessGroups(model string, raw json.RawMessage) error {
	var groups []string
	if err := json.Unmarshal(raw, &groups); err != nil {
		return errors.New("want a list of strings")
	}
	for _, g := range groups {
		if g == "" {
			return errors.New("empty group name")
		}
		if c.AccessGroups == nil {
			c.AccessGroups = map[string][]string{}
		}
		if !slices.Contains(c.AccessGroups[g], model) {
			c.AccessGroups[g] = append(c.AccessGroups[g], model)
		}
	}
	return nil
}

// number reads a finite, non-negative JSON number or numeric string
// ("4e-7" is common in YAML, which reads it as a string).
func number(raw json.RawMessage) (float64, bool) {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		if f, err = strconv.ParseFloat(strings.TrimSpace(s), 64); err != nil {
			return 0, false
		}
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0, false
	}
	return f, true
}

func (c *Config) router(raw json.RawMessage, ignored *[]string) error {
	m, err := section(raw)
	if err != nil {
		return err
	}
	for k, v := range m {
		if k != "model_group_alias" {
			*ignored = append(*ignored, "router_settings."+k)
			continue
		}
		var aliases map[string]json.RawMessage
		if err := json.Unmarshal(v, &aliases); err != nil {
			return errors.New("model_group_alias: want a mapping")
		}
		names := make([]string, 0, len(aliases))
		for a := range aliases {
			names = append(names, a)
		}
		sort.Strings(names)
		for _, a := range names {
			target, err := aliasTarget(aliases[a])
			if err != nil {
				return fmt.Errorf("model_group_alias.%s: %w", a, err)
			}
			if c.ModelGroupAlias == nil {
				c.ModelGroupAlias = map[string]string{}
			}
			c.ModelGroupAlias[a] = target
		}
	}
	return nil
}

// aliasTarget reads "group" or {"model": "group", "hidden": bool}.
func aliasTarget(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil && s != "" {
		return s, nil
	}
	var o struct {
		Model string `json:"model"`
	}
	if err := json.Unmarshal(raw, &o); err == nil && o.Model != "" {
		return o.Model, nil
	}
	return "", errors.New(`want a model group name or {"model": name}`)
}
