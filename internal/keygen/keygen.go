// Package keygen holds LiteLLM's key-generation rules, configured in its
// config.yaml under litellm_settings: key_generation_settings
// (team_key_generation / personal_key_generation with
// allowed_team_member_roles, allowed_user_roles and required_params),
// default_key_generate_params and upperbound_key_generate_params.
//
// It is pure: callers resolve the caller's role, the team row and the
// request's fields, and get back nil or LiteLLM's error (apierr), with
// LiteLLM's messages. The order of the steps is LiteLLM's generate_key_fn:
// Check (key_generation_check), then ApplyDefaults, then ApplyUpperbound.
//
// A team key must also fit its team (teamfit.go): its models within the
// team's (TeamModels), its guaranteed-throughput limits within what the
// team has left (TeamAllocation), and a key moved to a team fitting it
// (TeamChange).
package keygen

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/virtualkeys/sidecar/internal/access"
	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// Settings is the whole key-generation configuration. The zero value
// configures nothing: every key request passes these rules unchanged.
type Settings struct {
	// KeyGeneration is litellm_settings.key_generation_settings; nil when
	// absent (LiteLLM's "key_generation_settings is None").
	KeyGeneration *KeyGenerationSettings `json:"key_generation_settings,omitempty"`
	// Defaults is default_key_generate_params; nil when absent.
	Defaults *DefaultParams `json:"default_key_generate_params,omitempty"`
	// Upperbound is upperbound_key_generate_params; nil when absent.
	Upperbound *UpperboundParams `json:"upperbound_key_generate_params,omitempty"`
}

// KeyGenerationSettings is key_generation_settings.
type KeyGenerationSettings struct {
	// Team is team_key_generation; nil when absent (LiteLLM then allows
	// team members with role admin or user).
	Team *TeamKeyGeneration `json:"team_key_generation,omitempty"`
	// Personal is personal_key_generation; nil when absent (no rule).
	Personal *PersonalKeyGeneration `json:"personal_key_generation,omitempty"`
}

// TeamKeyGeneration is team_key_generation.
type TeamKeyGeneration struct {
	// AllowedTeamMemberRoles: nil = key absent (any member may generate);
	// an empty list allows no member.
	AllowedTeamMemberRoles []string `json:"allowed_team_member_roles"`
	// RequiredParams must each be present in the request; nil = none.
	RequiredParams []string `json:"required_params"`
}

// PersonalKeyGeneration is personal_key_generation.
type PersonalKeyGeneration struct {
	// AllowedUserRoles: nil = key absent (any role); an empty list allows
	// no role.
	AllowedUserRoles []string `json:"allowed_user_roles"`
	// RequiredParams must each be present in the request; nil = none.
	RequiredParams []string `json:"required_params"`
}

// DefaultParams is default_key_generate_params: values given to a new key
// whose request leaves them unset or null (models: empty, metadata: empty).
// A nil field has no default.
type DefaultParams struct {
	MaxBudget           *float64       `json:"max_budget"`
	UserID              *string        `json:"user_id"`
	TeamID              *string        `json:"team_id"`
	MaxParallelRequests *int64         `json:"max_parallel_requests"`
	TPMLimit            *int64         `json:"tpm_limit"`
	RPMLimit            *int64         `json:"rpm_limit"`
	BudgetDuration      *string        `json:"budget_duration"`
	Models              []string       `json:"models"`
	Metadata            map[string]any `json:"metadata"`
}

// UpperboundParams is upperbound_key_generate_params: a request's value
// may not exceed these, and an unset value takes the bound. A nil field
// bounds nothing.
type UpperboundParams struct {
	MaxBudget           *float64 `json:"max_budget"`
	BudgetDuration      *string  `json:"budget_duration"`
	Duration            *string  `json:"duration"`
	MaxParallelRequests *int64   `json:"max_parallel_requests"`
	TPMLimit            *int64   `json:"tpm_limit"`
	RPMLimit            *int64   `json:"rpm_limit"`
}

// Validate reports settings LiteLLM could not use: unparseable durations
// and negative bounds.
func (s *Settings) Validate() error {
	if s == nil {
		return nil
	}
	if u := s.Upperbound; u != nil {
		for _, d := range []struct {
			name string
			v    *string
		}{{"budget_duration", u.BudgetDuration}, {"duration", u.Duration}} {
			if d.v != nil {
				if _, err := keys.ParseDuration(*d.v); err != nil {
					return fmt.Errorf("upperbound_key_generate_params.%s: %w", d.name, err)
				}
			}
		}
		if u.MaxBudget != nil && (*u.MaxBudget < 0 || math.IsNaN(*u.MaxBudget) || math.IsInf(*u.MaxBudget, 0)) {
			return fmt.Errorf("upperbound_key_generate_params.max_budget: %v is not a non-negative number", *u.MaxBudget)
		}
	}
	if d := s.Defaults; d != nil && d.BudgetDuration != nil {
		if _, err := keys.ParseDuration(*d.BudgetDuration); err != nil {
			return fmt.Errorf("default_key_generate_params.budget_duration: %w", err)
		}
	}
	return nil
}

// Caller is who asks for the key, as LiteLLM's UserAPIKeyAuth sees it.
type Caller struct {
	// Role is the caller's user_role; the master key is keys.RoleProxyAdmin
	// ("proxy_admin"). Empty when the caller's key has no user row.
	Role string
	// UserID is the caller's user_id ("" when none).
	UserID string
}

// Team is the team a team key is generated for: its members, their roles
// and its team_member_permissions.
type Team = access.Team

// Request is the part of a /key/generate body these rules read.
type Request struct {
	// Present holds every top-level member the body sent (null included):
	// pydantic's exclude_unset view, which required_params reads.
	Present map[string]bool
	// TeamID and UserID are the body's team_id and user_id; nil when
	// absent or null.
	TeamID, UserID *string
}

const proxyAdmin = "proxy_admin"

// Check is LiteLLM's key_generation_check. team is the team row of a team
// key (req.TeamID set); nil when no such team exists.
func (s *Settings) Check(c Caller, req Request, team *Team) error {
	var kg *KeyGenerationSettings
	if s != nil {
		kg = s.KeyGeneration
	}
	if req.TeamID != nil { // a team key
		if team == nil {
			if kg != nil {
				return httpError(http.StatusBadRequest, "Unable to find team object in database. Team ID: "+*req.TeamID)
			}
			return nil // a team_id without a team row
		}
		return teamCheck(kg, c, req, team)
	}
	return personalCheck(kg, c, req)
}

func teamCheck(kg *KeyGenerationSettings, c Caller, req Request, team *Team) error {
	if c.Role == proxyAdmin {
		return nil
	}
	tk := &TeamKeyGeneration{AllowedTeamMemberRoles: []string{"admin", "user"}}
	if kg != nil && kg.Team != nil {
		tk = kg.Team
	}
	if req.UserID != nil {
		if _, ok := team.Members[*req.UserID]; !ok {
			return httpError(http.StatusBadRequest, fmt.Sprintf("User=%s not assigned to team=%s", *req.UserID, team.TeamID))
		}
	}
	// the caller's membership, role and team_member_permissions
	if err := access.TeamMember(access.Caller{Role: c.Role, UserID: c.UserID}, team, tk.AllowedTeamMemberRoles, access.RouteGenerate); err != nil {
		return err
	}
	return requiredParams(req, tk.RequiredParams)
}

func personalCheck(kg *KeyGenerationSettings, c Caller, req Request) error {
	if kg == nil || kg.Personal == nil {
		return nil
	}
	pk := kg.Personal
	if pk.AllowedUserRoles != nil && !slices.Contains(pk.AllowedUserRoles, c.Role) {
		return httpError(http.StatusBadRequest, fmt.Sprintf("Personal key creation has been restricted by admin. Allowed roles=%s. Your role=%s",
			apierr.PyList(pk.AllowedUserRoles), pyNone(c.Role)))
	}
	return requiredParams(req, pk.RequiredParams)
}

func requiredParams(req Request, params []string) error {
	for _, p := range params {
		if !req.Present[p] {
			return httpError(http.StatusBadRequest, fmt.Sprintf("Required param %s not in data", p))
		}
	}
	return nil
}

// Fields are the /key/generate fields default_key_generate_params and
// upperbound_key_generate_params touch. A nil pointer is "None" (absent or
// null); Models and Metadata are nil or empty when not given.
type Fields struct {
	MaxBudget           *float64
	UserID              *string
	TeamID              *string
	MaxParallelRequests *int64
	TPMLimit            *int64
	RPMLimit            *int64
	BudgetDuration      *string
	Duration            *string
	Models              []string
	Metadata            map[string]any
}

// ApplyDefaults fills f from default_key_generate_params as LiteLLM does:
// a None field takes the default; empty models and metadata take theirs.
func (s *Settings) ApplyDefaults(f *Fields) {
	if s == nil || s.Defaults == nil {
		return
	}
	d := s.Defaults
	setIfNil(&f.MaxBudget, d.MaxBudget)
	setIfNil(&f.UserID, d.UserID)
	setIfNil(&f.TeamID, d.TeamID)
	setIfNil(&f.MaxParallelRequests, d.MaxParallelRequests)
	setIfNil(&f.TPMLimit, d.TPMLimit)
	setIfNil(&f.RPMLimit, d.RPMLimit)
	setIfNil(&f.BudgetDuration, d.BudgetDuration)
	if len(f.Models) == 0 && d.Models != nil {
		f.Models = slices.Clone(d.Models)
	}
	if len(f.Metadata) == 0 && d.Metadata != nil {
		f.Metadata = cloneMap(d.Metadata)
	}
}

func setIfNil[T any](p **T, def *T) {
	if *p == nil && def != nil {
		v := *def
		*p = &v
	}
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// ApplyUpperbound enforces upperbound_key_generate_params on f: an unset
// field takes the bound; a larger value is LiteLLM's 400 "<field> is over
// max limit set in config". now anchors calendar durations (months).
// Fields are checked in GenerateKeyRequest's declaration order, so the
// first violation reported is LiteLLM's.
func (s *Settings) ApplyUpperbound(f *Fields, now time.Time) error {
	if s == nil || s.Upperbound == nil {
		return nil
	}
	u := s.Upperbound
	// GenerateKeyRequest's field order: duration, ..., max_budget,
	// budget_duration, ..., max_parallel_requests, ..., tpm_limit, rpm_limit.
	if err := boundDuration("duration", &f.Duration, u.Duration, now); err != nil {
		return err
	}
	if u.MaxBudget != nil {
		if f.MaxBudget == nil {
			v := *u.MaxBudget
			f.MaxBudget = &v
		} else if *f.MaxBudget > *u.MaxBudget {
			return overLimit("max_budget", apierr.PyFloat(*f.MaxBudget), apierr.PyFloat(*u.MaxBudget))
		}
	}
	if err := boundDuration("budget_duration", &f.BudgetDuration, u.BudgetDuration, now); err != nil {
		return err
	}
	for _, n := range []struct {
		name  string
		v     **int64
		bound *int64
	}{{"max_parallel_requests", &f.MaxParallelRequests, u.MaxParallelRequests}, {"tpm_limit", &f.TPMLimit, u.TPMLimit}, {"rpm_limit", &f.RPMLimit, u.RPMLimit}} {
		if n.bound == nil {
			continue
		}
		if *n.v == nil {
			b := *n.bound
			*n.v = &b
		} else if **n.v > *n.bound {
			return overLimit(n.name, strconv.FormatInt(**n.v, 10), strconv.FormatInt(*n.bound, 10))
		}
	}
	return nil
}

func boundDuration(name string, v **string, bound *string, now time.Time) error {
	if bound == nil {
		return nil
	}
	if *v == nil {
		b := *bound
		*v = &b
		return nil
	}
	bd, err := keys.ParseDuration(*bound)
	if err != nil {
		return httpError(http.StatusInternalServerError, fmt.Sprintf("upperbound_key_generate_params.%s %q is not a duration", name, *bound))
	}
	ud, err := keys.ParseDuration(**v)
	if err != nil {
		return nil // the key's own validation reports it
	}
	if ud.AddTo(now).After(bd.AddTo(now)) {
		return overLimit(name, **v, *bound)
	}
	return nil
}

// overLimit is LiteLLM's HTTPException(400, detail={"error": ...}), whose
// message is Python's str() of that dict.
func overLimit(name, user, bound string) *apierr.Error {
	return httpError(http.StatusBadRequest, fmt.Sprintf("{'error': '%s is over max limit set in config - user_value=%s; max_value=%s'}", name, user, bound))
}

// httpError is a FastAPI HTTPException as LiteLLM's
// handle_exception_on_proxy renders it.
func httpError(status int, msg string) *apierr.Error {
	return apierr.New(status, apierr.TypeInternal, "None", msg)
}

// pyNone renders an optional string as Python's f-string would.
func pyNone(s string) string {
	if s == "" {
		return "None"
	}
	return s
}
