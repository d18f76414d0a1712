package mgmt

// Routes lists "METHOD path" for every route a registers (for the OpenAPI test).
func Routes(a *API) []string {
	var out []string
	for _, rt := range a.routes() {
		out = append(out, rt.method+" "+rt.path)
	}
	return out
}
