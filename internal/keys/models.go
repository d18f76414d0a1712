package keys

// Model-access wildcards in a key's models list.
const (
	AllProxyModels = "all-proxy-models"
	AllTeamModels  = "all-team-models"
)

// AccessGroups maps an access-group name (configured on the sidecar) to the
// models it stands for. A key whose models list names a group may use every
// model of the group.
type AccessGroups map[string][]string

// AllowsAll reports whether a key whose models list is allowed may call
// any model: an empty list, "*", "all-proxy-models", "all-team-models", or
// an access group containing "*". Such a key has no model restriction, so
// a request whose model cannot be known is no reason to deny it.
func AllowsAll(allowed []string, groups AccessGroups) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, a := range allowed {
		switch a {
		case "*", AllProxyModels, AllTeamModels:
			return true
		}
		for _, g := range groups[a] {
			if g == "*" {
				return true
			}
		}
	}
	return false
}

// ModelAllowed reports whether a key whose models list is allowed may call
// model, by spec section 4: an empty list, "*" or "all-proxy-models" allows
// everything; "all-team-models" passes here (the Check then holds the key to
// its team's models);
// an entry containing "*" is a glob ("openai/*" allows "openai/gpt-4o");
// otherwise an exact, case-sensitive match. aliases is the key's aliases map
// (requested name -> target model): access to either the alias or its target
// suffices. Pass nil unless something downstream resolves aliases (a LiteLLM
// proxy or router): otherwise the provider serves the alias name itself, and
// an alias would grant a model the key may not use. Access-group names
// expand to their models (globs allowed there).
//
// It does not allocate: the ext_authz Check calls it on every request.
func ModelAllowed(allowed []string, aliases map[string]any, groups AccessGroups, model string) bool {
	if len(allowed) == 0 || listAllows(allowed, groups, model) {
		return true
	}
	if target, ok := aliases[model].(string); ok && target != model {
		return listAllows(allowed, groups, target)
	}
	return false
}

func listAllows(allowed []string, groups AccessGroups, model string) bool {
	for _, a := range allowed {
		switch a {
		case "*", AllProxyModels, AllTeamModels:
			return true
		}
		if Match(a, model) {
			return true
		}
		for _, g := range groups[a] {
			if g == "*" || Match(g, model) {
				return true
			}
		}
	}
	return false
}

// Match reports whether name matches pattern, where '*' in pattern matches
// any run of characters (including '/' and the empty run) and every other
// byte matches itself, case-sensitively. A pattern without '*' is an exact
// comparison. It does not allocate and runs in O(len(pattern)*len(name))
// at worst.
func Match(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0 // last '*' in pattern, and the name position it took
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0: // let the last '*' swallow one more byte
			mark++
			p, n = star+1, mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
