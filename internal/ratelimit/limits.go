package ratelimit

import (
	"math"

	"github.com/virtualkeys/sidecar/internal/keys"
)

// KeyLimits returns a key's own limits: the api_key descriptor (rpm_limit,
// tpm_limit, max_parallel_requests) and one model_per_key descriptor per
// model named in metadata.model_rpm_limit / model_tpm_limit. A key without
// limits gives none.
func KeyLimits(k *keys.Key) []Limit {
	var out []Limit
	if k.RPMLimit != nil || k.TPMLimit != nil || k.MaxParallelRequests != nil {
		out = append(out, Limit{Descriptor: DescAPIKey, Value: k.Token, RPM: opt(k.RPMLimit), TPM: opt(k.TPMLimit), Parallel: opt(k.MaxParallelRequests)})
	}
	rpm, _ := k.Metadata["model_rpm_limit"].(map[string]any)
	tpm, _ := k.Metadata["model_tpm_limit"].(map[string]any)
	seen := map[string]bool{}
	for _, m := range []map[string]any{rpm, tpm} {
		for model := range m {
			if seen[model] {
				continue
			}
			seen[model] = true
			l := Limit{Descriptor: DescModelPerKey, Value: k.Token + ":" + model, Model: model, RPM: num(rpm[model]), TPM: num(tpm[model]), Parallel: NoLimit}
			if l.RPM >= 0 || l.TPM >= 0 {
				out = append(out, l)
			}
		}
	}
	return out
}

// SubjectLimits are the limits of a key's user, team and team membership
// (LiteLLM's user_rpm_limit, team_rpm_limit, team_member_rpm_limit, and
// the tpm likewise). NoLimit (or nil) where there is none.
type SubjectLimits struct {
	UserID, TeamID               string
	UserRPM, UserTPM             *int64
	TeamRPM, TeamTPM             *int64
	TeamMemberRPM, TeamMemberTPM *int64
}

// Limits turns s into descriptors, in LiteLLM's order (user, team,
// team_member).
func (s SubjectLimits) Limits() []Limit {
	var out []Limit
	if s.UserID != "" && (s.UserRPM != nil || s.UserTPM != nil) {
		out = append(out, Limit{Descriptor: DescUser, Value: s.UserID, RPM: opt(s.UserRPM), TPM: opt(s.UserTPM), Parallel: NoLimit})
	}
	if s.TeamID != "" && (s.TeamRPM != nil || s.TeamTPM != nil) {
		out = append(out, Limit{Descriptor: DescTeam, Value: s.TeamID, RPM: opt(s.TeamRPM), TPM: opt(s.TeamTPM), Parallel: NoLimit})
	}
	if s.UserID != "" && (s.TeamMemberRPM != nil || s.TeamMemberTPM != nil) {
		out = append(out, Limit{Descriptor: DescTeamMember, Value: s.TeamID + ":" + s.UserID, RPM: opt(s.TeamMemberRPM), TPM: opt(s.TeamMemberTPM), Parallel: NoLimit})
	}
	return out
}

func opt(p *int64) int64 {
	if p == nil || *p < 0 {
		return NoLimit
	}
	return *p
}

// num reads a JSON number limit; anything else is no limit.
func num(v any) int64 {
	switch n := v.(type) {
	case float64:
		if n >= 0 && n <= math.MaxInt64 {
			return int64(n)
		}
	case int64:
		if n >= 0 {
			return n
		}
	case int:
		if n >= 0 {
			return int64(n)
		}
	}
	return NoLimit
}
