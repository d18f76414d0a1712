package mgmt_test

import (
	"context"
	"testing"

	"github.com/virtualkeys/sidecar/internal/keygen"
	"github.com/virtualkeys/sidecar/internal/mgmt"
)

// LiteLLM's key-generation rules from config.yaml, over real HTTP on both
// stores, as the master key (a proxy admin) sees them.
func TestKeyGenerationRules(t *testing.T) {
	settings := &keygen.Settings{
		KeyGeneration: &keygen.KeyGenerationSettings{
			Personal: &keygen.PersonalKeyGeneration{RequiredParams: []string{"key_alias"}},
			Team:     &keygen.TeamKeyGeneration{AllowedTeamMemberRoles: []string{"admin"}, RequiredParams: []string{"tags"}},
		},
		Defaults: &keygen.DefaultParams{
			RPMLimit: ptr(int64(7)), BudgetDuration: ptr("30d"),
			Models: []string{"gpt-4o"}, Metadata: map[string]any{"env": "prod"},
		},
		Upperbound: &keygen.UpperboundParams{
			MaxBudget: ptr(100.0), TPMLimit: ptr(int64(1000)), Duration: ptr("90d"),
		},
	}
	teams := func(_ context.Context, id string) (*keygen.Team, error) {
		if id == "core" {
			return &keygen.Team{TeamID: "core", Members: map[string]string{"alice": "admin"}}, nil
		}
		return nil, nil
	}
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t), func(c *mgmt.Config) { c.KeyGeneration = settings; c.Teams = teams })
		tests := []struct {
			name   string
			body   string
			status int
			msg    string
			check  func(t *testing.T, out map[string]any)
		}{
			{"personal key without the required param", `{}`, 400, "Required param key_alias not in data", nil},
			{"required param present, null counts", `{"key_alias": null}`, 200, "", nil},
			{"max_budget over the bound", `{"key_alias": "a1", "max_budget": 200}`, 400,
				"{'error': 'max_budget is over max limit set in config - user_value=200.0; max_value=100.0'}", nil},
			{"tpm_limit over the bound", `{"key_alias": "a2", "tpm_limit": 1001}`, 400,
				"{'error': 'tpm_limit is over max limit set in config - user_value=1001; max_value=1000'}", nil},
			{"duration over the bound", `{"key_alias": "a3", "duration": "91d"}`, 400,
				"{'error': 'duration is over max limit set in config - user_value=91d; max_value=90d'}", nil},
			{"defaults and bounds fill unset fields", `{"key_alias": "a4"}`, 200, "", func(t *testing.T, out map[string]any) {
				if out["rpm_limit"] != 7.0 || out["tpm_limit"] != 1000.0 || out["max_budget"] != 100.0 || out["budget_duration"] != "30d" || out["expires"] == nil {
					t.Errorf("defaults/bounds not applied: rpm %v tpm %v max_budget %v budget_duration %v expires %v",
						out["rpm_limit"], out["tpm_limit"], out["max_budget"], out["budget_duration"], out["expires"])
				}
				if m, _ := out["models"].([]any); len(m) != 1 || m[0] != "gpt-4o" {
					t.Errorf("models %v", out["models"])
				}
				if md, _ := out["metadata"].(map[string]any); md["env"] != "prod" {
					t.Errorf("metadata %v", out["metadata"])
				}
			}},
			{"given values win over defaults", `{"key_alias": "a5", "rpm_limit": 3, "models": ["m"], "max_budget": 50}`, 200, "", func(t *testing.T, out map[string]any) {
				if out["rpm_limit"] != 3.0 || out["max_budget"] != 50.0 {
					t.Errorf("rpm %v max_budget %v", out["rpm_limit"], out["max_budget"])
				}
				if m, _ := out["models"].([]any); len(m) != 1 || m[0] != "m" {
					t.Errorf("models %v", out["models"])
				}
			}},
			{"team key for a missing team", `{"team_id": "nope"}`, 400, "Unable to find team object in database. Team ID: nope", nil},
			{"team key: a proxy admin skips the team rules", `{"team_id": "core"}`, 200, "", nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.T(t)
				r := e.call("POST", "/key/generate", master, tt.body)
				if r.status != tt.status {
					t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
				}
				if tt.status != 200 {
					typ, msg, param, code := r.errBody(t)
					if msg != tt.msg || typ != "internal_server_error" || param != "None" || code != "400" {
						t.Fatalf("got %s %q %v %s, want %q", typ, msg, param, code, tt.msg)
					}
					return
				}
				out := r.obj(t)
				if raw, _ := out["key"].(string); raw != "" {
					e.sawRaw(raw)
				}
				if tt.check != nil {
					tt.check(t, out)
				}
			})
		}
	})
}

// Without key-generation settings nothing is checked or bounded (LiteLLM's
// defaults: no rules, no bounds).
func TestKeyGenerationNoSettings(t *testing.T) {
	each(t, func(t *testing.T, open opener) {
		e := newEnv(t, open(t))
		e.generate(`{"team_id": "any", "max_budget": 1e6}`)
	})
}
