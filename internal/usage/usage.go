// Package usage reads token usage from LLM provider responses: every wire
// format the sidecar routes (OpenAI and Azure OpenAI chat completions,
// completions, embeddings and Responses; Anthropic messages; Gemini and
// Vertex generateContent; Bedrock Converse and InvokeModel), as JSON or as a
// server-sent event stream, optionally compressed.
package usage

// Usage is what one response consumed. Counts are totals as the provider bills them.
type Usage struct {
	Model               string // model the response names ("" if none)
	PromptTokens        int64  // all input tokens, cached-read and cache-creation included
	CachedReadTokens    int64  // part of PromptTokens read from the prompt cache
	CacheCreationTokens int64  // part of PromptTokens written to the prompt cache
	OutputTokens        int64  // all output tokens, reasoning included
	ReasoningTokens     int64  // part of OutputTokens
	AudioInputTokens    int64  // part of PromptTokens
	AudioOutputTokens   int64  // part of OutputTokens
}

// API says which provider wire format a request/response uses.
type API uint8

// The wire formats Detect recognises.
const (
	APIUnknown API = iota
	APIOpenAIChat
	APIOpenAICompletions
	APIOpenAIEmbeddings
	APIOpenAIResponses
	APIAnthropicMessages
	APIGemini
	APIBedrockConverse
	APIBedrockInvoke
)
