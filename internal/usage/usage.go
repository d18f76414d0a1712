// Package usage reads token usage from LLM provider responses: every wire
// format the sidecar routes (OpenAI and Azure OpenAI chat completions,
// completions, embeddings and Responses; Anthropic messages; Gemini and
// Vertex generateContent and streamGenerateContent; Bedrock Converse and
// InvokeModel), as one JSON document, a JSON array stream, server-sent events
// or Bedrock's binary event stream, optionally gzip, br, zstd or deflate
// compressed.
//
// An Extractor is fed the response body chunk by chunk as Envoy's ext_proc
// delivers it and keeps only what it needs: the current SSE event or JSON
// value (bounded), never the whole stream. It allocates nothing per chunk in
// steady state, so it can be pooled (Reset) and run on every response.
package usage

// Usage is what one response consumed. Counts are totals as the provider bills them.
type Usage struct {
	Model                 string // model the response names ("" if none)
	PromptTokens          int64  // all input tokens, cached-read and cache-creation included
	CachedReadTokens      int64  // part of PromptTokens read from the prompt cache
	CacheCreationTokens   int64  // part of PromptTokens written to the prompt cache
	CacheCreation1hTokens int64  // part of CacheCreationTokens written with a 1-hour TTL (Anthropic)
	OutputTokens          int64  // all output tokens, reasoning included
	ReasoningTokens       int64  // part of OutputTokens
	AudioInputTokens      int64  // part of PromptTokens
	AudioOutputTokens     int64  // part of OutputTokens
}

// API says which provider wire format a request/response uses.
type API uint8

// The wire formats Detect recognises.
const (
	APIUnknown           API = iota
	APIOpenAIChat            // POST .../chat/completions (OpenAI, Azure OpenAI, compatible servers)
	APIOpenAICompletions     // POST .../completions
	APIOpenAIEmbeddings      // POST .../embeddings
	APIOpenAIResponses       // POST .../responses
	APIAnthropicMessages     // POST .../messages, Vertex :rawPredict / :streamRawPredict
	APIGemini                // Gemini / Vertex :generateContent, :streamGenerateContent
	APIBedrockConverse       // Bedrock /model/{id}/converse, /converse-stream
	APIBedrockInvoke         // Bedrock /model/{id}/invoke, /invoke-with-response-stream
)

var apiNames = [...]string{"unknown", "openai_chat", "openai_completions", "openai_embeddings",
	"openai_responses", "anthropic_messages", "gemini", "bedrock_converse", "bedrock_invoke"}

// String names the API (for logs and metric labels).
func (a API) String() string {
	if int(a) < len(apiNames) {
		return apiNames[a]
	}
	return "unknown"
}

// Raw usage fields as providers name them. Each response shape sets some;
// normalize turns them into Usage.
const (
	fPrompt         = iota // prompt_tokens, promptTokenCount, prompt_token_count: cache included
	fInput                 // input_tokens, inputTokens, inputTokenCount: cache included unless cache keys below
	fCachedIncl            // *_tokens_details.cached_tokens, cachedContentTokenCount: part of the prompt
	fCacheRead             // cache_read_input_tokens, cacheReadInputTokens: in addition to input_tokens
	fCacheWrite            // cache_creation_input_tokens, cacheWriteInputTokens: in addition to input_tokens
	fCacheWrite1h          // cache_creation.ephemeral_1h_input_tokens
	fCacheWriteIncl        // prompt_tokens_details.cache_creation_tokens: part of the prompt
	fOutput                // completion_tokens, output_tokens, outputTokens, generation_token_count
	fCandidates            // Gemini candidatesTokenCount (thoughts excluded)
	fThoughts              // Gemini thoughtsTokenCount
	fReasoning             // *_tokens_details.reasoning_tokens: part of the output
	fAudioIn
	fAudioOut
	nFields
)

type rawUsage struct {
	set uint32
	v   [nFields]int64
}

// put records a count. Within one response every provider's counts are
// cumulative (Anthropic's message_start then message_delta, Gemini's chunks),
// so the largest value seen wins: a later event that reports 0 for a count it
// does not track (some Anthropic-compatible streams repeat input_tokens: 0 in
// message_delta) cannot erase it.
func (r *rawUsage) put(f int, n int64) {
	if r.has(f) && n < r.v[f] {
		return
	}
	r.set |= 1 << f
	r.v[f] = n
}

func (r *rawUsage) has(f int) bool { return r.set&(1<<f) != 0 }

func (r *rawUsage) normalize() Usage {
	var u Usage
	var exclusive bool // cache counts come on top of input_tokens (Anthropic, Bedrock)
	switch {
	case r.has(fPrompt):
		u.PromptTokens = r.v[fPrompt]
	case r.has(fInput):
		u.PromptTokens = r.v[fInput]
		exclusive = r.has(fCacheRead) || r.has(fCacheWrite)
	}
	u.CachedReadTokens = r.v[fCacheRead]
	if r.has(fCachedIncl) {
		u.CachedReadTokens = r.v[fCachedIncl]
	}
	u.CacheCreationTokens = r.v[fCacheWrite]
	if r.has(fCacheWriteIncl) && !r.has(fCacheWrite) {
		u.CacheCreationTokens = r.v[fCacheWriteIncl]
	}
	if exclusive {
		u.PromptTokens += r.v[fCacheRead] + r.v[fCacheWrite]
	}
	u.CacheCreation1hTokens = r.v[fCacheWrite1h]
	if r.has(fCandidates) || r.has(fThoughts) {
		u.OutputTokens = r.v[fCandidates] + r.v[fThoughts]
		u.ReasoningTokens = r.v[fThoughts]
	} else {
		u.OutputTokens = r.v[fOutput]
		u.ReasoningTokens = r.v[fReasoning]
	}
	u.AudioInputTokens = r.v[fAudioIn]
	u.AudioOutputTokens = r.v[fAudioOut]

	// Parts never exceed their totals, whatever a provider (or an attacker
	// upstream) sends: prices must not go negative.
	u.CachedReadTokens = min(u.CachedReadTokens, u.PromptTokens)
	u.CacheCreationTokens = min(u.CacheCreationTokens, u.PromptTokens-u.CachedReadTokens)
	u.CacheCreation1hTokens = min(u.CacheCreation1hTokens, u.CacheCreationTokens)
	u.AudioInputTokens = min(u.AudioInputTokens, u.PromptTokens-u.CachedReadTokens-u.CacheCreationTokens)
	u.ReasoningTokens = min(u.ReasoningTokens, u.OutputTokens)
	u.AudioOutputTokens = min(u.AudioOutputTokens, u.OutputTokens-u.ReasoningTokens)
	return u
}
