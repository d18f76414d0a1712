// Package pricing prices token usage exactly as LiteLLM does
// (generic_cost_per_token in litellm/litellm_core_utils/llm_cost_calc/utils.py),
// from a price table in LiteLLM's model_prices_and_context_window.json format.
//
// The bundled default table, model_prices_and_context_window.json, is a copy
// of LiteLLM's (https://github.com/BerriAI/litellm, MIT License, Copyright (c)
// 2023 Berri AI); see README.md in this directory. Operators replace it with a
// file or URL (Source, hot-reloaded) and add per-model prices on top.
//
// Deliberate differences from LiteLLM, all so that a budget never undercounts:
// where an entry has no cache-read, cache-creation, 1-hour cache-creation or
// audio-input price, those tokens are charged at the entry's input price
// (LiteLLM charges 0, or the 5-minute cache price for 1-hour writes).
// Service tiers (priority, flex), regional uplifts and per-request tool
// charges (web search) are not priced.
package pricing

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/virtualkeys/sidecar/internal/usage"
)

// The rates an entry may carry, by LiteLLM key.
const (
	rIn           = iota // input_cost_per_token
	rOut                 // output_cost_per_token
	rCacheRead           // cache_read_input_token_cost
	rCacheWrite          // cache_creation_input_token_cost
	rCacheWrite1h        // cache_creation_input_token_cost_above_1hr
	rReasoning           // output_cost_per_reasoning_token
	rAudioIn             // input_cost_per_audio_token
	rAudioOut            // output_cost_per_audio_token
	rOutImage            // output_cost_per_image_token
	nRates
)

var rateKeys = [nRates]string{
	"input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
	"cache_creation_input_token_cost", "cache_creation_input_token_cost_above_1hr",
	"output_cost_per_reasoning_token", "input_cost_per_audio_token",
	"output_cost_per_audio_token", "output_cost_per_image_token",
}

// Tiered rates ("_above_{N}k_tokens"): which base rate each tier prefix replaces.
// Longest prefix first: cache_creation_input_token_cost_above_1hr_above_ is
// the 1-hour rate's tier, not a tier called "1hr".
var tierPrefixes = []struct {
	prefix string
	rate   int
}{
	{"cache_creation_input_token_cost_above_1hr_above_", rCacheWrite1h},
	{"cache_creation_input_token_cost_above_", rCacheWrite},
	{"cache_read_input_token_cost_above_", rCacheRead},
	{"input_cost_per_token_above_", rIn},
	{"output_cost_per_token_above_", rOut},
}

type rates struct {
	v   [nRates]float64
	has uint16
}

func (r *rates) set(i int, v float64) { r.v[i], r.has = v, r.has|1<<i }
func (r *rates) ok(i int) bool        { return r.has&(1<<i) != 0 }

type tier struct {
	above float64 // applies when prompt tokens exceed this
	rates
}

type entry struct {
	name      string
	provider  string
	raw       map[string]float64 // the cost keys as read, for merging custom prices
	base      rates
	tiers     []tier // highest threshold first
	inclusive bool   // the tier threshold is inclusive (LiteLLM: xai)
	custom    bool   // set by the operator (Config.Custom)
}

// Table is an immutable snapshot of a price table, with custom prices and
// Azure deployment names applied. Safe for concurrent use.
type Table struct {
	models      map[string]*entry
	deployments map[string]string
	aliases     map[string]string // requested alias -> model group (WithAliases)
}

// Len is the number of priced models.
func (t *Table) Len() int { return len(t.models) }

//go:embed model_prices_and_context_window.json
var bundled []byte

var defaultTable = sync.OnceValue(func() *Table {
	t, err := Parse(bundled)
	if err != nil {
		panic("pricing: bundled table: " + err.Error()) // a build defect; TestDefault catches it
	}
	return t
})

// Default returns the bundled LiteLLM table.
func Default() *Table { return defaultTable() }

// ErrNoPrices is returned by Parse for a document with no priced model, such
// as an HTML error page or an empty object, so that a reload never replaces a
// good table with it.
var ErrNoPrices = errors.New("pricing: table has no model with a price")

// Parse reads the model_prices_and_context_window.json format: an object of
// model name to entry. Entries that are not objects, "sample_spec" and
// empty or overlong (> 512 bytes) names are skipped; numeric strings ("3e-7") are read as numbers, as LiteLLM does;
// values of unknown keys are ignored.
func Parse(data []byte) (*Table, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("pricing: parse table: %w", err)
	}
	t := &Table{models: make(map[string]*entry, len(doc))}
	for name, msg := range doc {
		if name == "sample_spec" || name == "" || len(name) > maxName || len(msg) == 0 || msg[0] != '{' {
			continue
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(msg, &fields); err != nil {
			continue
		}
		raw := make(map[string]float64)
		var provider string
		for k, v := range fields {
			if k == "litellm_provider" {
				_ = json.Unmarshal(v, &provider)
				continue
			}
			if f, ok := number(v); ok && IsCostKey(k) {
				raw[k] = f
			}
		}
		e := build(name, provider, raw)
		if e.base.has == 0 {
			continue
		}
		t.models[name] = e
	}
	if len(t.models) == 0 {
		return nil, ErrNoPrices
	}
	return t, nil
}

func number(v json.RawMessage) (float64, bool) {
	v = bytes.TrimSpace(v)
	if len(v) > 0 && v[0] == '"' {
		var s string
		if json.Unmarshal(v, &s) != nil {
			return 0, false
		}
		v = []byte(strings.TrimSpace(s))
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f < 0 || f != f || f > 1e6 {
		return 0, false // not a number, negative, NaN or absurd: ignore
	}
	return f, true
}

// IsCostKey reports whether k is a LiteLLM cost key this package prices
// (input_cost_per_token, output_cost_per_token, cache_read_input_token_cost,
// ..., or a *_above_<N>k_tokens tier of one of them). Other LiteLLM cost
// keys (per second, per image, batch and service-tier prices) are not.
func IsCostKey(k string) bool {
	for _, r := range rateKeys {
		if k == r {
			return true
		}
	}
	_, _, ok := tierKey(k)
	return ok
}

// tierKey splits "output_cost_per_token_above_200k_tokens" into the rate and 200000.
func tierKey(k string) (rate int, above float64, ok bool) {
	for _, p := range tierPrefixes {
		rest, found := strings.CutPrefix(k, p.prefix)
		if !found {
			continue
		}
		n, found := strings.CutSuffix(rest, "_tokens")
		if !found || n == "" {
			return 0, 0, false
		}
		mul := 1.0
		if m, cut := strings.CutSuffix(n, "k"); cut {
			n, mul = m, 1000
		}
		v, err := strconv.ParseUint(n, 10, 32)
		if err != nil {
			return 0, 0, false
		}
		return p.rate, float64(v) * mul, true
	}
	return 0, 0, false
}

func build(name, provider string, raw map[string]float64) *entry {
	e := &entry{name: name, provider: provider, raw: raw, inclusive: provider == "xai"}
	for i, k := range rateKeys {
		if v, ok := raw[k]; ok {
			e.base.set(i, v)
		}
	}
	byAbove := map[float64]*tier{}
	for k, v := range raw {
		r, above, ok := tierKey(k)
		if !ok {
			continue
		}
		t := byAbove[above]
		if t == nil {
			t = &tier{above: above}
			byAbove[above] = t
		}
		t.set(r, v)
	}
	for _, t := range byAbove {
		if t.ok(rIn) { // LiteLLM: a tier exists where its input price does
			e.tiers = append(e.tiers, *t)
		}
	}
	sort.Slice(e.tiers, func(i, j int) bool { return e.tiers[i].above > e.tiers[j].above })
	return e
}

// With returns a copy of t with custom per-model prices applied on top and
// Azure deployment names mapped to models. custom maps a model name to
// LiteLLM keys (input_cost_per_token, output_cost_per_token,
// cache_read_input_token_cost, ..., *_above_200k_tokens): keys given replace
// the table's, keys not given keep the table's entry of that name (if any).
// deployments maps a deployment name (what the request names) to the model
// to price it as.
func (t *Table) With(custom map[string]map[string]float64, deployments map[string]string) (*Table, error) {
	if err := ValidateCustom(custom); err != nil {
		return nil, err
	}
	n := &Table{models: make(map[string]*entry, len(t.models)+len(custom)), deployments: t.deployments, aliases: t.aliases}
	for k, e := range t.models {
		n.models[k] = e
	}
	for name, prices := range custom {
		raw := map[string]float64{}
		provider := ""
		if old := n.models[name]; old != nil {
			for k, v := range old.raw {
				raw[k] = v
			}
			provider = old.provider
		}
		for k, v := range prices {
			raw[k] = v
		}
		e := build(name, provider, raw)
		e.custom = true
		n.models[name] = e
	}
	if deployments != nil {
		n.deployments = deployments
	}
	return n, nil
}

// WithAliases returns a copy of t that prices a request for an alias as a
// request for its target: aliases maps a requested model name to the model
// group it stands for (LiteLLM's router_settings.model_group_alias; the
// router serves an alias with its target group's deployments, which LiteLLM
// prices with their own cost keys). A custom price configured for the alias
// name itself still wins. Names are compared exactly. nil means none.
func (t *Table) WithAliases(aliases map[string]string) *Table {
	n := *t
	n.aliases = aliases
	return &n
}

// ValidateCustom checks custom prices: known LiteLLM cost keys, finite
// non-negative values.
func ValidateCustom(custom map[string]map[string]float64) error {
	var errs []error
	for name, prices := range custom {
		if name == "" || len(name) > maxName {
			errs = append(errs, fmt.Errorf("pricing: custom price for model name %.40q: want 1 to %d bytes", name, maxName))
		}
		for k, v := range prices {
			if !IsCostKey(k) {
				errs = append(errs, fmt.Errorf("pricing: custom price %q: unknown key %q (want one of %s or a *_above_<N>k_tokens tier)", name, k, strings.Join(rateKeys[:], ", ")))
			}
			if v < 0 || v != v || v > 1e6 {
				errs = append(errs, fmt.Errorf("pricing: custom price %q: %s = %v is not a price", name, k, v))
			}
		}
	}
	return errors.Join(errs...)
}

// Cost prices u as LiteLLM would. The model priced is the one the response
// names (u.Model) if the table knows it, else requestedModel; each is
// resolved as Lookup says. ok is false when neither is known.
func (t *Table) Cost(requestedModel string, u usage.Usage) (usd float64, ok bool) {
	e := t.resolve(requestedModel, u.Model)
	if e == nil {
		return 0, false
	}
	return e.cost(u), true
}

// Lookup returns the table key Cost would price a response with: the
// requested model's custom price or Azure deployment mapping if configured,
// else responseModel if known, else requestedModel. A requested model that
// is an alias (WithAliases) and has no custom price of its own is replaced
// by its target first. A name is tried as given, then as the model
// its Azure deployment maps to, then without provider prefixes (openai/,
// azure/, anthropic/, gemini/, vertex_ai/, bedrock/, models/, ...), without
// a Bedrock region or vendor prefix and version suffix (us.anthropic.x-v1:0),
// without a date suffix (gpt-4o-2024-08-06, claude-x-20250219), and lower-cased.
func (t *Table) Lookup(requestedModel, responseModel string) (model string, ok bool) {
	if e := t.resolve(requestedModel, responseModel); e != nil {
		return e.name, true
	}
	return "", false
}

func (t *Table) resolve(requested, response string) *entry {
	if t == nil {
		return nil
	}
	if target, ok := t.aliases[requested]; ok {
		// The router resolves the alias before anything else: the request
		// is the target group's, unless the operator priced the alias name.
		if e := t.models[requested]; e == nil || !e.custom {
			requested = target
		}
	}
	// What the operator configured for the requested name wins over the
	// response's model, as LiteLLM's deployment custom pricing and base_model do.
	for _, n := range [2]string{requested, stripProviders(requested)} {
		if e := t.models[n]; e != nil && e.custom {
			return e
		}
		if m, ok := t.deployments[n]; ok {
			if e := t.find(m, false); e != nil {
				return e
			}
		}
	}
	if e := t.find(response, true); e != nil {
		return e
	}
	return t.find(requested, true)
}

// providers are the prefixes LiteLLM puts before a model name ("openai/gpt-4o")
// and that are stripped when looking one up.
// maxName bounds model names: longer ones are neither read nor looked up.
const maxName = 512

var providers = map[string]bool{
	"openai": true, "azure": true, "azure_ai": true, "anthropic": true, "gemini": true, "vertex_ai": true,
	"vertex_ai_beta": true, "bedrock": true, "converse": true, "invoke": true, "text-completion-openai": true,
	"models": true, "xai": true, "deepseek": true, "mistral": true, "groq": true, "openrouter": true,
	"together_ai": true, "fireworks_ai": true, "cohere": true, "moonshot": true, "global": true, "us": true, "eu": true,
}

func stripProviders(n string) string {
	for {
		i := strings.IndexByte(n, '/')
		if i <= 0 || i == len(n)-1 || !providers[n[:i]] {
			return n
		}
		n = n[i+1:]
	}
}

func (t *Table) find(name string, deployments bool) *entry {
	if name == "" || len(name) > maxName {
		return nil
	}
	if e := t.models[name]; e != nil {
		return e
	}
	if deployments {
		if m, ok := t.deployments[name]; ok {
			if e := t.find(m, false); e != nil {
				return e
			}
		}
	}
	n := stripProviders(name)
	try := func(s string) *entry {
		if s == name {
			return nil
		}
		return t.models[s]
	}
	if e := try(n); e != nil {
		return e
	}
	if deployments && n != name {
		if m, ok := t.deployments[n]; ok {
			if e := t.find(m, false); e != nil {
				return e
			}
		}
	}
	n = stripBedrockPrefix(n)
	if e := try(n); e != nil {
		return e
	}
	n = stripBedrockVersion(n)
	if e := try(n); e != nil {
		return e
	}
	if d := stripDate(n); d != n {
		if e := try(d); e != nil {
			return e
		}
	}
	if l := strings.ToLower(n); l != n {
		if e := t.find(l, false); e != nil {
			return e
		}
	}
	return nil
}

// stripBedrockPrefix turns "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
// into "claude-sonnet-4-5-20250929-v1:0": cross-region prefix and vendor.
func stripBedrockPrefix(n string) string {
	for _, p := range []string{"us.", "eu.", "apac.", "global.", "jp.", "au.", "ca.", "us-gov."} {
		n = strings.TrimPrefix(n, p)
	}
	for _, v := range []string{"anthropic.", "amazon.", "meta.", "mistral.", "cohere.", "ai21.", "deepseek.", "openai.", "qwen.", "writer."} {
		if rest, ok := strings.CutPrefix(n, v); ok {
			return rest
		}
	}
	return n
}

// stripBedrockVersion removes a Bedrock version suffix: -v1:0, -v2, :0.
func stripBedrockVersion(n string) string {
	if i := strings.LastIndexByte(n, ':'); i > 0 && allDigits(n[i+1:]) {
		n = n[:i]
	}
	if i := strings.LastIndex(n, "-v"); i > 0 && allDigits(n[i+2:]) {
		n = n[:i]
	}
	return n
}

// stripDate removes a trailing -YYYY-MM-DD or -YYYYMMDD.
func stripDate(n string) string {
	if len(n) > 11 && n[len(n)-11] == '-' && n[len(n)-8] == '-' && n[len(n)-3] == '-' &&
		allDigits(n[len(n)-10:len(n)-8]+n[len(n)-7:len(n)-3]+n[len(n)-2:]) {
		return n[:len(n)-11]
	}
	if len(n) > 9 && n[len(n)-9] == '-' && allDigits(n[len(n)-8:]) && (n[len(n)-8] == '2' || n[len(n)-8] == '1') {
		return n[:len(n)-9]
	}
	return n
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// cost is generic_cost_per_token for one entry.
func (e *entry) cost(u usage.Usage) float64 {
	r := e.base
	prompt := float64(max(u.PromptTokens, 0))
	for i := range e.tiers {
		t := &e.tiers[i]
		if prompt > t.above || e.inclusive && prompt == t.above {
			for k := 0; k < nRates; k++ {
				if t.ok(k) {
					r.set(k, t.v[k])
				}
			}
			break
		}
	}
	in := r.v[rIn]
	out := r.v[rOut]
	if out == 0 && r.ok(rOutImage) {
		out = r.v[rOutImage] // LiteLLM: image models price output as image tokens
	}
	or := func(i int, fallback float64) float64 {
		if r.ok(i) {
			return r.v[i]
		}
		return fallback
	}
	cacheRead := or(rCacheRead, in)
	cacheWrite := or(rCacheWrite, in)
	cacheWrite1h := or(rCacheWrite1h, cacheWrite)
	audioIn := or(rAudioIn, in)

	cached := clamp(u.CachedReadTokens, u.PromptTokens)
	creation := clamp(u.CacheCreationTokens, u.PromptTokens-cached)
	creation1h := clamp(u.CacheCreation1hTokens, creation)
	audio := clamp(u.AudioInputTokens, u.PromptTokens-cached-creation)
	text := max(u.PromptTokens-cached-creation-audio, 0)
	cost := float64(text)*in + float64(cached)*cacheRead +
		float64(creation-creation1h)*cacheWrite + float64(creation1h)*cacheWrite1h +
		float64(audio)*audioIn

	output := max(u.OutputTokens, 0)
	reasoning := clamp(u.ReasoningTokens, output)
	audioOut := clamp(u.AudioOutputTokens, output-reasoning)
	if reasoning == 0 && audioOut == 0 {
		return cost + float64(output)*out
	}
	textOut := output - reasoning - audioOut
	return cost + float64(textOut)*out + float64(audioOut)*or(rAudioOut, out) +
		float64(reasoning)*or(rReasoning, out)
}

func clamp(v, hi int64) int64 { return max(min(v, hi), 0) }
