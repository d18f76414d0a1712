package pricing

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/virtualkeys/sidecar/internal/usage"
)

func near(got, want float64) bool {
	if want == 0 {
		return got == 0
	}
	return math.Abs(got-want)/math.Abs(want) <= 1e-9
}

// TestCostOfRecordedResponses runs the recorded provider responses through
// the extractor and prices them: each value is computed by hand from the
// bundled table's entry as LiteLLM's generic_cost_per_token does.
func TestCostOfRecordedResponses(t *testing.T) {
	t.Parallel()
	table, err := Default().With(
		map[string]map[string]float64{"text-embedding-3-small": {"input_cost_per_token": 2e-8, "output_cost_per_token": 0}},
		nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file, ctype, path string
		requested         string // what the request named
		model             string // table entry priced
		want              float64
	}{
		// (2006-1920)*2.5e-6 + 1920*1.25e-6 + 300*1e-5
		{"openai_chat.json", "application/json", "/v1/chat/completions", "gpt-4o", "gpt-4o-2024-08-06", 86*2.5e-6 + 1920*1.25e-6 + 300*1e-5},
		// reasoning has no own price: all 2200 output tokens at 8e-6
		{"openai_chat_stream.sse", "text/event-stream", "/v1/chat/completions", "o3", "o3-2025-04-16", 476*2e-6 + 1024*5e-7 + 2200*8e-6},
		{"openai_completions.json", "application/json", "/v1/completions", "gpt-3.5-turbo-instruct", "gpt-3.5-turbo-instruct", 5*1.5e-6 + 7*2e-6},
		{"openai_embeddings.json", "application/json", "/v1/embeddings", "text-embedding-3-small", "text-embedding-3-small", 8 * 2e-8},
		{"openai_responses.json", "application/json", "/v1/responses", "gpt-5", "gpt-5-2025-08-07", 36*1.25e-6 + 187*1e-5},
		{"openai_responses.sse", "text/event-stream", "/v1/responses", "gpt-4.1", "gpt-4.1-2025-04-14", 952*2e-6 + 2048*5e-7 + 400*8e-6},
		{"azure_chat.json", "application/json", "/openai/deployments/mini/chat/completions", "mini", "gpt-4o-mini-2024-07-18", 1000*1.5e-7 + 120*6e-7},
		// uncached 2095, read 10000, 5-minute write 1051, 1-hour write 1000, output 503
		{"anthropic_messages.json", "application/json", "/v1/messages", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929",
			2095*3e-6 + 10000*3e-7 + 1051*3.75e-6 + 1000*6e-6 + 503*1.5e-5},
		{"anthropic_messages.sse", "text/event-stream", "/v1/messages", "claude-opus-4-6", "claude-opus-4-6",
			472*5e-6 + 30000*5e-7 + 1200*6.25e-6 + 1515*2.5e-5},
		// 250000 prompt tokens > 200k: every rate is the _above_200k_tokens one;
		// thoughts have no own price: at the (tiered) output rate.
		{"gemini.json", "application/json", "/v1beta/models/gemini-2.5-pro:generateContent", "gemini-2.5-pro", "gemini-2.5-pro",
			150000*2.5e-6 + 100000*2.5e-7 + 3000*1.5e-5},
		// audio input at input_cost_per_audio_token, thoughts at output_cost_per_reasoning_token
		{"gemini_stream.sse", "text/event-stream", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "gemini-2.5-flash", "gemini-2.5-flash",
			600*3e-7 + 300*1e-6 + 75*2.5e-6 + 150*2.5e-6},
		{"gemini_stream_array.json", "application/json", "/v1beta/models/gemini-2.0-flash:streamGenerateContent", "gemini-2.0-flash", "gemini-2.0-flash", 12*1e-7 + 9*4e-7},
		// Converse names no model: the path's is priced.
		{"bedrock_converse.json", "application/json", "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/converse", "", "claude-sonnet-4-5-20250929-v1:0",
			120*3e-6 + 4000*3e-7 + 500*3.75e-6 + 340*1.5e-5},
		{"bedrock_invoke_claude.json", "application/json", "/model/anthropic.claude-sonnet-4-5-20250929-v1:0/invoke", "", "claude-sonnet-4-5-20250929", 50*3e-6 + 25*1.5e-5},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			body, err := os.ReadFile(filepath.Join("..", "usage", "testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			api := usage.Detect("POST", tt.path)
			requested := tt.requested
			if requested == "" {
				requested = usage.ModelFromPath(api, tt.path)
			}
			x := usage.NewExtractor(api, tt.ctype, "", 0)
			if err := x.Write(body); err != nil {
				t.Fatal(err)
			}
			u, found := x.Usage()
			if !found {
				t.Fatal("no usage found")
			}
			if m, ok := table.Lookup(requested, u.Model); !ok || m != tt.model {
				t.Errorf("Lookup(%q, %q) = %q, %v; want %q", requested, u.Model, m, ok, tt.model)
			}
			got, ok := table.Cost(requested, u)
			if !ok || !near(got, tt.want) {
				t.Errorf("Cost = %.15g, %v; want %.15g (usage %+v)", got, ok, tt.want, u)
			}
		})
	}
}

func TestCostRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		model string
		u     usage.Usage
		want  float64
	}{
		{"plain", "gpt-4o", usage.Usage{PromptTokens: 1000, OutputTokens: 100}, 1000*2.5e-6 + 100*1e-5},
		{"exactly 200k is not above", "claude-sonnet-4-5", usage.Usage{PromptTokens: 200000, OutputTokens: 10}, 200000*3e-6 + 10*1.5e-5},
		{"above 200k: every rate tiered, 1-hour writes too", "claude-sonnet-4-5",
			usage.Usage{PromptTokens: 200001, CachedReadTokens: 100000, CacheCreationTokens: 50000, CacheCreation1hTokens: 20000, OutputTokens: 1000},
			50001*6e-6 + 100000*6e-7 + 30000*7.5e-6 + 20000*1.2e-5 + 1000*2.25e-5},
		// Differs from LiteLLM (0): gemini-2.5-pro has no base cache-creation price.
		{"missing cache-creation price: input price", "gemini-2.5-pro",
			usage.Usage{PromptTokens: 1000, CacheCreationTokens: 400, OutputTokens: 10}, 600*1.25e-6 + 400*1.25e-6 + 10*1e-5},
		// Differs from LiteLLM (0): gpt-3.5-turbo-instruct has no cache-read price.
		{"missing cache-read price: input price", "gpt-3.5-turbo-instruct",
			usage.Usage{PromptTokens: 100, CachedReadTokens: 60, OutputTokens: 1}, 100*1.5e-6 + 1*2e-6},
		// 1-hour writes at cache_creation_input_token_cost_above_1hr, the rest at the 5-minute price.
		{"1-hour cache writes", "claude-opus-4-6",
			usage.Usage{PromptTokens: 3000, CacheCreationTokens: 3000, CacheCreation1hTokens: 1000, OutputTokens: 0}, 2000*6.25e-6 + 1000*1e-5},
		{"audio in and out", "gpt-4o-audio-preview",
			usage.Usage{PromptTokens: 1000, AudioInputTokens: 400, OutputTokens: 500, AudioOutputTokens: 300},
			600*2.5e-6 + 400*4e-5 + 200*1e-5 + 300*8e-5},
		{"reasoning price", "gemini-2.5-flash", usage.Usage{PromptTokens: 10, OutputTokens: 100, ReasoningTokens: 60}, 10*3e-7 + 40*2.5e-6 + 60*2.5e-6},
		{"zero usage", "gpt-4o", usage.Usage{}, 0},
		{"negative counts clamp to zero", "gpt-4o", usage.Usage{PromptTokens: -5, OutputTokens: -1, CachedReadTokens: -9}, 0},
		{"parts larger than totals are clamped", "gpt-4o", usage.Usage{PromptTokens: 10, CachedReadTokens: 50, OutputTokens: 5, ReasoningTokens: 50},
			10*1.25e-6 + 5*1e-5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := Default().Cost(tt.model, tt.u)
			if !ok || !near(got, tt.want) {
				t.Errorf("Cost(%s, %+v) = %.15g, %v; want %.15g", tt.model, tt.u, got, ok, tt.want)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	table, err := Default().With(nil, map[string]string{"prod-gpt4o": "gpt-4o", "bad": "no-such-model"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		requested, response string
		want                string // "" = unknown
	}{
		{"gpt-4o", "", "gpt-4o"},
		{"gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-08-06"},
		{"gpt-4o", "gpt-4o-2099-01-01", "gpt-4o"}, // dated name not in the table: its base
		{"gpt-4o", "unknown-response-model", "gpt-4o"},
		{"openai/gpt-4o-mini", "", "gpt-4o-mini"},
		{"azure/prod-gpt4o", "", "gpt-4o"},
		{"prod-gpt4o", "", "gpt-4o"},
		{"bad", "", ""},
		{"prod-gpt4o", "gpt-4o-mini-2024-07-18", "gpt-4o"}, // the deployment's mapping wins (LiteLLM's base_model)
		{"azure/prod-gpt4o", "gpt-4o-mini-2024-07-18", "gpt-4o"},
		{"bad", "gpt-4o-mini", "gpt-4o-mini"},
		{"anthropic/claude-opus-4-6", "", "claude-opus-4-6"},
		{"claude-opus-4-6-20991231", "", "claude-opus-4-6"},
		{"vertex_ai/gemini-2.5-pro", "", "gemini-2.5-pro"},
		{"gemini/gemini-2.5-flash", "", "gemini-2.5-flash"},
		{"models/gemini-2.5-flash", "", "gemini-2.5-flash"},
		{"bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0", "", "claude-sonnet-4-5-20250929-v1:0"},
		{"global.anthropic.claude-opus-4-6-v1:0", "", "claude-opus-4-6"},
		{"GPT-4o", "", "gpt-4o"},
		{"llama-3-70b", "", ""},
		{"", "", ""},
		{"openai/", "", ""},
	}
	for _, tt := range tests {
		got, ok := table.Lookup(tt.requested, tt.response)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("Lookup(%q, %q) = %q, %v; want %q", tt.requested, tt.response, got, ok, tt.want)
		}
	}
	if _, ok := table.Cost("llama-3-70b", usage.Usage{PromptTokens: 1}); ok {
		t.Error("Cost of an unknown model: ok = true")
	}
	var nilTable *Table
	if _, ok := nilTable.Cost("gpt-4o", usage.Usage{PromptTokens: 1}); ok {
		t.Error("nil table priced a model")
	}
}

func TestCustomPrices(t *testing.T) {
	t.Parallel()
	table, err := Default().With(map[string]map[string]float64{
		"gpt-4o":   {"input_cost_per_token": 1e-6},                                // override one key, keep the rest
		"my-llama": {"input_cost_per_token": 2e-7, "output_cost_per_token": 4e-7}, // a model the table lacks
		"tiered":   {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "input_cost_per_token_above_10k_tokens": 3e-6},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	u := usage.Usage{PromptTokens: 100, CachedReadTokens: 40, OutputTokens: 10}
	for _, tt := range []struct {
		model string
		u     usage.Usage
		want  float64
	}{
		{"gpt-4o", u, 60*1e-6 + 40*1.25e-6 + 10*1e-5},
		{"my-llama", u, 60*2e-7 + 40*2e-7 + 10*4e-7},
		{"openai/my-llama", u, 60*2e-7 + 40*2e-7 + 10*4e-7},
		{"tiered", usage.Usage{PromptTokens: 10001, OutputTokens: 1}, 10001*3e-6 + 2e-6},
	} {
		if got, ok := table.Cost(tt.model, tt.u); !ok || !near(got, tt.want) {
			t.Errorf("Cost(%s) = %.15g, %v; want %.15g", tt.model, got, ok, tt.want)
		}
	}
	// A custom price for the requested name wins over the response's model.
	if got, ok := table.Cost("my-llama", usage.Usage{Model: "gpt-4o-2024-08-06", PromptTokens: 10}); !ok || !near(got, 10*2e-7) {
		t.Errorf("custom price for the requested model not used: %g", got)
	}
	if got, _ := Default().Cost("gpt-4o", u); !near(got, 60*2.5e-6+40*1.25e-6+10*1e-5) {
		t.Errorf("With changed the table it was called on: %g", got)
	}
	for name, bad := range map[string]map[string]map[string]float64{
		"unknown key":    {"m": {"input_cost_per_tokens": 1e-6}},
		"negative price": {"m": {"input_cost_per_token": -1}},
		"NaN price":      {"m": {"input_cost_per_token": math.NaN()}},
		"empty name":     {"": {"input_cost_per_token": 1}},
	} {
		if _, err := Default().With(bad, nil); err == nil {
			t.Errorf("%s: With accepted %v", name, bad)
		}
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	good := `{
		"sample_spec": {"input_cost_per_token": 0.0, "max_tokens": "LEGACY parameter"},
		"a": {"input_cost_per_token": "3e-7", "output_cost_per_token": 6e-7, "litellm_provider": "openai", "mode": "chat"},
		"b": {"input_cost_per_token": -1, "output_cost_per_token": 1e-6},
		"c": "not an entry",
		"d": {"max_tokens": 10}
	}`
	table, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if table.Len() != 2 {
		t.Errorf("Len = %d, want 2 (a, b)", table.Len())
	}
	if got, ok := table.Cost("a", usage.Usage{PromptTokens: 10, OutputTokens: 10}); !ok || !near(got, 10*3e-7+10*6e-7) {
		t.Errorf("a: %g %v", got, ok)
	}
	if got, ok := table.Cost("b", usage.Usage{PromptTokens: 10, OutputTokens: 10}); !ok || !near(got, 10*1e-6) {
		t.Errorf("b (negative input price ignored): %g %v", got, ok)
	}
	for _, bad := range []string{``, `[]`, `{}`, `<html>502 Bad Gateway</html>`, `{"a": {"mode": "chat"}}`, `{"a":`} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

func TestDefault(t *testing.T) {
	t.Parallel()
	if n := Default().Len(); n < 200 {
		t.Errorf("bundled table has %d models", n)
	}
	if !strings.Contains(string(bundled), `"gpt-4o"`) {
		t.Error("bundled table lacks gpt-4o")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"m":{"input_cost_per_token":1e-6,"output_cost_per_token":"2e-6","input_cost_per_token_above_1k_tokens":3e-6,"cache_read_input_token_cost_above_1k_tokens":1e-7}}`), int64(2000), int64(10), int64(100))
	f.Add(bundled[:4096], int64(1), int64(1), int64(1))
	f.Fuzz(func(t *testing.T, data []byte, prompt, cached, output int64) {
		table, err := Parse(data)
		if err != nil {
			return
		}
		for name := range table.models {
			c, ok := table.Cost(name, usage.Usage{PromptTokens: prompt, CachedReadTokens: cached, OutputTokens: output, ReasoningTokens: output / 2})
			if !ok || c < 0 || math.IsNaN(c) || math.IsInf(c, 0) {
				t.Fatalf("Cost(%q) = %v, %v", name, c, ok)
			}
		}
	})
}

func BenchmarkCost(b *testing.B) {
	table := Default()
	u := usage.Usage{Model: "gpt-4o-2024-08-06", PromptTokens: 2006, CachedReadTokens: 1920, OutputTokens: 300}
	b.ReportAllocs()
	for b.Loop() {
		table.Cost("gpt-4o", u)
	}
}

func BenchmarkCostPrefixedDated(b *testing.B) {
	table := Default()
	u := usage.Usage{Model: "openai/gpt-4o-2099-01-01", PromptTokens: 2006, CachedReadTokens: 1920, OutputTokens: 300}
	b.ReportAllocs()
	for b.Loop() {
		table.Cost("gpt-4o", u)
	}
}

// TestAliasPricing: with WithAliases (LiteLLM's model_group_alias), a
// request for an alias is priced as a request for its target: the target's
// custom price wins over the response's model, as a custom price for the
// requested name does; an alias with a custom price of its own keeps it.
func TestAliasPricing(t *testing.T) {
	t.Parallel()
	base, err := Default().With(map[string]map[string]float64{
		"team-gpt":     {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
		"priced-alias": {"input_cost_per_token": 5e-6, "output_cost_per_token": 5e-6},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	table := base.WithAliases(map[string]string{
		"fast": "team-gpt", "mini": "gpt-4o-mini", "priced-alias": "team-gpt", "ghost": "no-such-group",
	})
	tests := []struct {
		name, requested, response string
		want                      string // table entry priced; "" = unknown
	}{
		{"alias to a custom-priced group beats the response", "fast", "gpt-4o-2024-08-06", "team-gpt"},
		{"alias to a custom-priced group", "fast", "", "team-gpt"},
		{"alias to a table model: the response's model first", "mini", "gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18"},
		{"alias to a table model: the target when the response names none", "mini", "", "gpt-4o-mini"},
		{"the alias name's own custom price wins", "priced-alias", "gpt-4o", "priced-alias"},
		{"alias to an unknown group: the response's model", "ghost", "gpt-4o", "gpt-4o"},
		{"alias to an unknown group, no response model", "ghost", "", ""},
		{"not an alias", "team-gpt", "gpt-4o", "team-gpt"},
		{"aliases are exact names", "openai/fast", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := table.Lookup(tt.requested, tt.response)
			if got != tt.want || ok != (tt.want != "") {
				t.Errorf("Lookup(%q, %q) = %q, %v; want %q", tt.requested, tt.response, got, ok, tt.want)
			}
		})
	}
	u := usage.Usage{Model: "gpt-4o-2024-08-06", PromptTokens: 100, OutputTokens: 10}
	if got, ok := table.Cost("fast", u); !ok || !near(got, 100*1e-6+10*2e-6) {
		t.Errorf("Cost(fast) = %g, %v; want the target's price %g", got, ok, 100*1e-6+10*2e-6)
	}
	if got, _ := base.Lookup("fast", ""); got != "" {
		t.Errorf("WithAliases changed the table it was called on: fast -> %q", got)
	}
	// With keeps the aliases of the table it is called on (a reload applies
	// custom prices, then aliases; either order gives the same table).
	again, err := table.With(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := again.Lookup("fast", ""); got != "team-gpt" {
		t.Errorf("With dropped the aliases: fast -> %q", got)
	}
}
