package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// loadAccessGroups reads a JSON object mapping access-group names to model
// lists, e.g. {"gpt-family": ["gpt-4o", "gpt-4o-mini", "openai/*"]}.
// An empty path means no groups.
func loadAccessGroups(path string) (keys.AccessGroups, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--access-groups-file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var g map[string][]string
	if err := dec.Decode(&g); err != nil {
		return nil, fmt.Errorf("--access-groups-file %s: want a JSON object of string lists: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("--access-groups-file %s: trailing data after the JSON object", path)
	}
	for name, models := range g {
		if name == "" {
			return nil, fmt.Errorf("--access-groups-file %s: empty group name", path)
		}
		for _, m := range models {
			if m == "" {
				return nil, fmt.Errorf("--access-groups-file %s: group %q has an empty model name", path, name)
			}
		}
	}
	return keys.AccessGroups(g), nil
}

// mergeAccessGroups merges the groups of config.yaml's model_list into those
// of --access-groups-file: a group named in both gets the union of its
// models (file order first, then config.yaml's, each once).
func mergeAccessGroups(file keys.AccessGroups, fromConfig map[string][]string) keys.AccessGroups {
	if len(fromConfig) == 0 {
		return file
	}
	out := make(keys.AccessGroups, len(file)+len(fromConfig))
	for g, models := range file {
		out[g] = slices.Clone(models)
	}
	for g, models := range fromConfig {
		for _, m := range models {
			if !slices.Contains(out[g], m) {
				out[g] = append(out[g], m)
			}
		}
	}
	return out
}
