package main

import (
	"strings"
	"testing"
	"time"
)

// The Check and ext_proc together, as Envoy drives them: a key with
// max_parallel_requests 1 holds its slot from the Check until ext_proc
// sees the response end (the lease travels in the ext_authz metadata), and
// a key with tpm_limit is limited by the tokens ext_proc metered.
func TestRateLimitsEndWithTheResponse(t *testing.T) {
	a := start(t, "--master-key", master)
	ca := newChecker(t, a.grpc)
	t.Run("parallel slot released by ext_proc", func(t *testing.T) {
		_, gen := admin(t, a.http, "/key/generate", map[string]any{"models": []string{"gpt-4o"}, "max_parallel_requests": 1})
		key := gen["key"].(string)
		first := ca.check(t, key, "gpt-4o")
		if !first.allowed {
			t.Fatalf("first request denied: %s", first.body)
		}
		md := allowMetadata(first)
		if md["rl_lease"] == "" {
			t.Fatalf("no rl_lease in the allow's metadata: %v", md)
		}
		if v := ca.check(t, key, "gpt-4o"); v.allowed || v.status != 429 || !strings.Contains(v.body, "max_parallel_requests") {
			t.Fatalf("second request while the first is in flight: allowed %v %d %s, want 429 max_parallel_requests", v.allowed, v.status, v.body)
		}
		respond(t, a, md, "parallel-1")
		eventually(t, "the slot is free once the response ended", 5*time.Second, func() bool { return ca.check(t, key, "gpt-4o").allowed })
	})

	t.Run("tpm counts metered tokens", func(t *testing.T) {
		_, gen := admin(t, a.http, "/key/generate", map[string]any{"models": []string{"gpt-4o"}, "tpm_limit": 1})
		key := gen["key"].(string)
		v := ca.check(t, key, "gpt-4o")
		if !v.allowed {
			t.Fatalf("first request denied: %s", v.body)
		}
		respond(t, a, allowMetadata(v), "tpm-1") // the recorded response has output tokens > 1
		eventually(t, "tokens counted: the next request is limited", 5*time.Second, func() bool {
			v := ca.check(t, key, "gpt-4o")
			return !v.allowed && v.status == 429 && strings.Contains(v.body, "Limit type: tokens")
		})
	})
}

// A team's rpm_limit (LiteLLM's "team" descriptor) limits its keys, read
// from the team row through the team/user cache.
func TestTeamRateLimit(t *testing.T) {
	a := start(t, "--master-key", master)
	ca := newChecker(t, a.grpc)
	admin(t, a.http, "/team/new", map[string]any{"team_id": "rl-team", "rpm_limit": 1})
	_, gen := admin(t, a.http, "/key/generate", map[string]any{"team_id": "rl-team"})
	key := gen["key"].(string)
	if v := ca.check(t, key, "gpt-4o"); !v.allowed {
		t.Fatalf("first request denied: %d %s", v.status, v.body)
	}
	v := ca.check(t, key, "gpt-4o")
	if v.allowed || v.status != 429 || !strings.Contains(v.body, "Rate limit exceeded for team: rl-team") {
		t.Fatalf("second request: allowed %v %d %s, want 429 for team rl-team", v.allowed, v.status, v.body)
	}
}
