package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

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
