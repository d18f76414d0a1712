package authz_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// groupAliases is a router_settings.model_group_alias for kLimited
// (models gpt-4o, openai/*, grp-claude = claude-3).
var groupAliases = map[string]string{
	"fast":   "gpt-4o",             // target allowed exactly
	"oai":    "openai/gpt-4o-mini", // target allowed by a glob
	"sonnet": "claude-3",           // target allowed through an access group
	"cheap":  "gpt-3.5",            // target allowed nowhere
	"gpt-4o": "gpt-3.5",            // an allowed name that is also an alias: either suffices
	"hop":    "fast",               // one step only: "fast" is not allowed by name
}

// TestModelGroupAlias: with ResolveAliases (LiteLLM's router resolves
// model_group_alias upstream), a requested alias is allowed when its target
// is, wherever the request names it; a denial names the alias, in LiteLLM's
// words. Without ResolveAliases the aliases widen nothing.
func TestModelGroupAlias(t *testing.T) {
	on := newEnv(t, authz.Config{ResolveAliases: true, ModelGroupAlias: groupAliases})
	off := newEnv(t, authz.Config{ModelGroupAlias: groupAliases})
	tests := []struct {
		name string
		e    *env
		key  string
		body string
		want want
	}{
		{"resolved: alias allowed through its target", on, kLimited, body("fast"), allowed("fast", "authorization")},
		{"resolved: target allowed by a glob", on, kLimited, body("oai"), allowed("oai", "authorization")},
		{"resolved: target allowed through an access group", on, kLimited, body("sonnet"), allowed("sonnet", "authorization")},
		{"resolved: target not allowed", on, kLimited, body("cheap"), modelDenied("cheap")},
		{"resolved: an allowed name that is an alias too", on, kLimited, body("gpt-4o"), allowed("gpt-4o", "authorization")},
		{"resolved: aliases do not chain", on, kLimited, body("hop"), modelDenied("hop")},
		{"resolved: an alias in fallbacks", on, kLimited, `{"model":"gpt-4o","fallbacks":["fast",{"model":"oai"}]}`, allowed("gpt-4o", "authorization")},
		{"resolved: a denied alias in fallbacks", on, kLimited, `{"model":"fast","fallbacks":["cheap"]}`, modelDenied("cheap")},
		{"resolved: comma list", on, kLimited, body("fast,cheap"), modelDenied("cheap")},
		{"resolved: the target itself", on, kLimited, body("openai/gpt-4o-mini"), allowed("openai/gpt-4o-mini", "authorization")},
		{"resolved: unrestricted key", on, kAll, body("cheap"), allowed("cheap", "authorization")},
		{"not resolved: alias denied", off, kLimited, body("fast"), modelDenied("fast")},
		{"not resolved: alias to a glob target denied", off, kLimited, body("oai"), modelDenied("oai")},
		{"not resolved: an allowed name stays allowed", off, kLimited, body("gpt-4o"), allowed("gpt-4o", "authorization")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for pass := range 2 { // miss, then hit
				resp, err := tc.e.client.Check(context.Background(), req(chat, bearer(tc.key), tc.body, false))
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				checkResp(t, tc.e, resp, tc.want)
				if pass == 0 {
					tc.e.cache.Wait()
				}
			}
		})
	}
}

// TestModelGroupAliasTeamsAndUsers: LiteLLM applies model_group_alias to
// every model list it checks (_can_object_call_model): the team's, the
// team member's scope and a personal key's user's, as the key's.
func TestModelGroupAliasTeamsAndUsers(t *testing.T) {
	aliases := map[string]string{"fast": "gpt-4o", "mini": "gpt-4o-mini", "cheap": "gpt-3.5"}
	seed := func(e *orgEnv) {
		e.team(t, keys.Team{TeamID: "t-a", Models: []string{"gpt-4o"}})
		e.team(t, keys.Team{TeamID: "t-b"})
		e.user(t, keys.User{UserID: "u-models", Models: []string{"gpt-4o"}})
		e.user(t, keys.User{UserID: "u-scoped"})
		e.member(t, "t-b", "u-scoped", 0, &keys.Budget{BudgetID: "b-scoped", AllowedModels: []string{"gpt-4o-mini"}})
		e.key(t, "sk-team-a", keys.Key{TeamID: ptr("t-a"), Models: []string{"all-team-models"}})
		e.key(t, "sk-personal", keys.Key{UserID: ptr("u-models")})
		e.key(t, "sk-scoped", keys.Key{TeamID: ptr("t-b"), UserID: ptr("u-scoped")})
	}
	on := newOrgEnv(t, func(c *authz.Config) { c.ResolveAliases, c.ModelGroupAlias = true, aliases })
	off := newOrgEnv(t, func(c *authz.Config) { c.ModelGroupAlias = aliases })
	seed(on)
	seed(off)
	teamDenied := func(m string) want {
		return want{status: 401, typ: "team_model_access_denied", param: "model", code: codes.PermissionDenied,
			msg: "team not allowed to access model. This team can only access models=['gpt-4o']. Tried to access " + m}
	}
	userDenied := func(m string) want {
		return want{status: 401, typ: "user_model_access_denied", param: "model", code: codes.PermissionDenied,
			msg: "user not allowed to access model. This user can only access models=['gpt-4o']. Tried to access " + m}
	}
	memberDenied := func(m string) want {
		return want{status: 401, typ: "team_model_access_denied", param: "model", code: codes.PermissionDenied,
			msg: "Team member not allowed to access model. User=u-scoped, Team=t-b, Model=" + m + ". Allowed member models = ['gpt-4o-mini']"}
	}
	for _, tc := range []struct {
		name, key, model string
		e                *orgEnv
		want             want
	}{
		{"resolved: team models allow an alias of one", "sk-team-a", "fast", on, allowed("fast", "authorization")},
		{"resolved: team models deny an alias of another", "sk-team-a", "cheap", on, teamDenied("cheap")},
		{"resolved: user models allow an alias of one", "sk-personal", "fast", on, allowed("fast", "authorization")},
		{"resolved: user models deny an alias of another", "sk-personal", "cheap", on, userDenied("cheap")},
		{"resolved: member scope allows an alias of one", "sk-scoped", "mini", on, allowed("mini", "authorization")},
		{"resolved: member scope denies an alias of another", "sk-scoped", "fast", on, memberDenied("fast")},
		{"not resolved: team", "sk-team-a", "fast", off, teamDenied("fast")},
		{"not resolved: user", "sk-personal", "fast", off, userDenied("fast")},
		{"not resolved: member scope", "sk-scoped", "mini", off, memberDenied("mini")},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.e.check(t, tc.key, tc.model, tc.want) })
	}
}

// TestGroupAliasCheckAllocations: a cache-hit Check allowed through a
// model_group_alias allocates no more than one allowed by name (the alias
// is one map lookup, made only when the name itself is not allowed).
func TestGroupAliasCheckAllocations(t *testing.T) {
	srv, c, raw := benchServer(t, func(cfg *authz.Config) {
		cfg.ResolveAliases, cfg.ModelGroupAlias = true, map[string]string{"fast": "gpt-4o-mini"}
	})
	r := benchRequest(raw)
	h := r.Attributes.Request.Http
	h.RawBody = []byte(strings.Replace(benchChatBody, `"model":"gpt-4o"`, `"model":"fast"`, 1))
	if resp, _ := srv.Check(context.Background(), r); resp.GetOkResponse() == nil {
		t.Fatalf("alias denied: %v", resp.GetDeniedResponse().GetBody())
	}
	c.Wait()
	if n := testing.AllocsPerRun(200, func() { srv.Check(context.Background(), r) }); n > 2 {
		t.Errorf("cache-hit Check of an alias allocates %v times, want <= 2", n)
	}
}

// noKeys is a key cache that knows no key.
type noKeys struct{}

func (noKeys) Get(context.Context, [32]byte) (*cache.Entry, error) { return nil, nil }

func TestNewRejectsEmptyGroupAlias(t *testing.T) {
	for _, a := range []map[string]string{{"": "gpt-4o"}, {"fast": ""}} {
		if _, err := authz.New(authz.Config{Cache: noKeys{}, MasterKey: master, ModelGroupAlias: a}); err == nil {
			t.Errorf("New accepted model_group_alias %v", a)
		}
	}
}
