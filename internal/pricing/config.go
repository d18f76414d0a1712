package pricing

import (
	"encoding/json"
	"fmt"
	"strings"
)

// ParseCustom reads per-model custom prices given as JSON in LiteLLM's entry
// format, e.g. {"my-llama": {"input_cost_per_token": 2e-7,
// "output_cost_per_token": "4e-7"}} (numbers or numeric strings), for a
// flag or a file; the result is validated as Config.Custom is.
func ParseCustom(data []byte) (map[string]map[string]float64, error) {
	var doc map[string]map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("pricing: custom prices: %w", err)
	}
	out := make(map[string]map[string]float64, len(doc))
	for model, fields := range doc {
		m := make(map[string]float64, len(fields))
		for k, v := range fields {
			f, ok := number(v)
			if !ok {
				return nil, fmt.Errorf("pricing: custom price %q: %s = %s is not a price", model, k, v)
			}
			m[k] = f
		}
		out[model] = m
	}
	if err := ValidateCustom(out); err != nil {
		return nil, err
	}
	return out, nil
}

// ParseDeployments reads Azure deployment mappings written
// "deployment=model,deployment2=model2" (spaces around items are ignored).
func ParseDeployments(s string) (map[string]string, error) {
	out := map[string]string{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		d, m, ok := strings.Cut(item, "=")
		d, m = strings.TrimSpace(d), strings.TrimSpace(m)
		if !ok || d == "" || m == "" {
			return nil, fmt.Errorf("pricing: deployment mapping %q: want deployment=model", item)
		}
		out[d] = m
	}
	return out, nil
}
