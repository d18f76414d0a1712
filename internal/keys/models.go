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

// ModelAllowed reports whether a key whose models list is allowed may call
// model, by spec section 4: an empty list, "*" or "all-proxy-models" allows
// everything; "all-team-models" defers to the team (no team table yet: allow);
// an entry containing "*" is a glob ("openai/*" allows "openai/gpt-4o");
// otherwise an exact, case-sensitive match. aliases is the key's aliases map
// (requested name -> target model): access to either the alias or its target
// suffices. Access-group names expand to their models.
//
// It must not allocate on the common paths: the ext_authz Check calls it on
// every request.
func ModelAllowed(allowed []string, aliases map[string]any, groups AccessGroups, model string) bool {
	panic("TODO")
}
