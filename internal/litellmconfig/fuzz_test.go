package litellmconfig

import (
	"os"
	"strings"
	"testing"

	"github.com/virtualkeys/sidecar/internal/pricing"
)

// FuzzParse: no input panics or hangs; a parsed config is internally
// consistent.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../../docs/config.md"); err == nil {
		if _, rest, ok := strings.Cut(string(b), "```yaml\n"); ok {
			block, _, _ := strings.Cut(rest, "```")
			f.Add(block)
		}
	}
	for _, s := range []string{
		"", "a: [", "- a", "general_settings: {master_key: os.environ/X}",
		"model_list:\n- model_name: m\n  model_info: {access_groups: [g]}\n  litellm_params: {input_cost_per_token: '1e-6'}\n",
		"router_settings: {model_group_alias: {a: {model: b}}}",
		"litellm_settings: {upperbound_key_generate_params: {duration: 1mo, max_budget: 1}}",
		"a: &a [*a]", "x: !!binary aGk=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		c, err := Parse([]byte(doc), func(string) string { return "v" })
		if err != nil {
			return
		}
		for g, models := range c.AccessGroups {
			if g == "" || len(models) == 0 {
				t.Fatalf("group %q with models %v", g, models)
			}
		}
		for m, p := range c.Prices {
			if m == "" {
				t.Fatal("price for an empty model name")
			}
			for k, v := range p {
				if !pricing.IsCostKey(k) {
					t.Fatalf("price %s.%s: not a key the metering prices", m, k)
				}
				if v < 0 || v != v {
					t.Fatalf("price %s.%s = %v", m, k, v)
				}
			}
		}
	})
}
