package pricing

import (
	"maps"
	"testing"
)

func TestParseCustom(t *testing.T) {
	t.Parallel()
	got, err := ParseCustom([]byte(`{"m": {"input_cost_per_token": 2e-7, "output_cost_per_token": "4e-7"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got["m"]["input_cost_per_token"] != 2e-7 || got["m"]["output_cost_per_token"] != 4e-7 {
		t.Errorf("got %v", got)
	}
	for _, bad := range []string{`[]`, `{"m": 1}`, `{"m": {"input_cost_per_token": "cheap"}}`, `{"m": {"typo": 1}}`, `{"m": {"input_cost_per_token": -1}}`} {
		if _, err := ParseCustom([]byte(bad)); err == nil {
			t.Errorf("ParseCustom(%s) succeeded", bad)
		}
	}
}

func TestParseDeployments(t *testing.T) {
	t.Parallel()
	got, err := ParseDeployments(" prod-4o = gpt-4o ,mini=gpt-4o-mini,")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"prod-4o": "gpt-4o", "mini": "gpt-4o-mini"}; !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got, err := ParseDeployments(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %v %v", got, err)
	}
	for _, bad := range []string{"x", "=m", "d=", "a=b,c"} {
		if _, err := ParseDeployments(bad); err == nil {
			t.Errorf("ParseDeployments(%q) succeeded", bad)
		}
	}
}
