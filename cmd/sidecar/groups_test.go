package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/virtualkeys/sidecar/internal/keys"
)

func TestLoadAccessGroups(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    keys.AccessGroups
		wantErr string
	}{
		{"groups", `{"gpt": ["gpt-4o", "openai/*"], "empty": []}`, keys.AccessGroups{"gpt": {"gpt-4o", "openai/*"}, "empty": {}}, ""},
		{"not an object", `["gpt-4o"]`, nil, "JSON object"},
		{"not string lists", `{"g": "gpt-4o"}`, nil, "JSON object"},
		{"trailing data", `{"g": []} {}`, nil, "trailing data"},
		{"empty model", `{"g": [""]}`, nil, "empty model name"},
		{"empty name", `{"": ["m"]}`, nil, "empty group name"},
		{"malformed", `{"g": [`, nil, "JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "groups.json")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := loadAccessGroups(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if g, err := loadAccessGroups(""); g != nil || err != nil {
		t.Errorf("empty path: %v, %v", g, err)
	}
	if _, err := loadAccessGroups(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file: no error")
	}
}

func TestMergeAccessGroups(t *testing.T) {
	file := keys.AccessGroups{"gpt": {"gpt-4o"}, "only-file": {"a"}}
	got := mergeAccessGroups(file, map[string][]string{"gpt": {"gpt-4o", "gpt-4o-mini"}, "only-config": {"b"}})
	want := keys.AccessGroups{"gpt": {"gpt-4o", "gpt-4o-mini"}, "only-file": {"a"}, "only-config": {"b"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if !reflect.DeepEqual(file["gpt"], []string{"gpt-4o"}) {
		t.Error("the file's groups were modified")
	}
	if got := mergeAccessGroups(file, nil); !reflect.DeepEqual(got, file) {
		t.Errorf("no config groups: got %v", got)
	}
	if got := mergeAccessGroups(nil, map[string][]string{"g": {"m"}}); !reflect.DeepEqual(got, keys.AccessGroups{"g": {"m"}}) {
		t.Errorf("no file: got %v", got)
	}
}
