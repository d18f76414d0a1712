package usage

import (
	"encoding/json"
	"testing"
)

func TestDetect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		method, path string
		want         API
	}{
		{"POST", "/v1/chat/completions", APIOpenAIChat},
		{"POST", "/chat/completions?x=1", APIOpenAIChat},
		{"POST", "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21", APIOpenAIChat},
		{"POST", "/openai/v1/chat/completions", APIOpenAIChat},
		{"POST", "/v1/completions", APIOpenAICompletions},
		{"POST", "/openai/deployments/emb/embeddings?api-version=2024-10-21", APIOpenAIEmbeddings},
		{"POST", "/v1/embeddings", APIOpenAIEmbeddings},
		{"POST", "/v1/responses", APIOpenAIResponses},
		{"POST", "/openai/v1/responses", APIOpenAIResponses},
		{"POST", "/v1/messages", APIAnthropicMessages},
		{"POST", "/v1/messages/count_tokens", APIUnknown},
		{"POST", "/v1beta/models/gemini-2.5-pro:generateContent", APIGemini},
		{"POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", APIGemini},
		{"POST", "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent", APIGemini},
		{"POST", "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict", APIAnthropicMessages},
		{"POST", "/v1beta/models/gemini-2.5-pro:countTokens", APIUnknown},
		{"POST", "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/converse", APIBedrockConverse},
		{"POST", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream", APIBedrockConverse},
		{"POST", "/model/meta.llama3-70b-instruct-v1:0/invoke", APIBedrockInvoke},
		{"POST", "/model/x/invoke-with-response-stream", APIBedrockInvoke},
		{"GET", "/v1/chat/completions", APIUnknown},
		{"GET", "/v1/models", APIUnknown},
		{"POST", "/v1/files", APIUnknown},
		{"POST", "", APIUnknown},
		{"POST", "/", APIUnknown},
	}
	for _, tt := range tests {
		if got := Detect(tt.method, tt.path); got != tt.want {
			t.Errorf("Detect(%s %s) = %v, want %v", tt.method, tt.path, got, tt.want)
		}
	}
}

func TestModelFromPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		want string
	}{
		{"/v1beta/models/gemini-2.5-pro:generateContent?key=x", "gemini-2.5-pro"},
		{"/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-flash:streamGenerateContent", "gemini-2.5-flash"},
		{"/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/converse", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"},
		{"/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream", "anthropic.claude-3-haiku-20240307-v1:0"},
		{"/openai/deployments/my-gpt4o/chat/completions?api-version=1", "my-gpt4o"},
		{"/v1/chat/completions", ""},
	}
	for _, tt := range tests {
		api := Detect("POST", tt.path)
		if got := ModelFromPath(api, tt.path); got != tt.want {
			t.Errorf("ModelFromPath(%v, %s) = %q, want %q", api, tt.path, got, tt.want)
		}
	}
}

func TestStreamOptionsAndInject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		body          string
		stream, usage bool
		changed       bool
		wantOptions   string // stream_options after injection, as JSON
	}{
		{name: "not streaming", body: `{"model":"m","messages":[]}`},
		{name: "stream false", body: `{"model":"m","stream":false}`},
		{name: "stream without options", body: `{"model":"m","stream":true,"messages":[{"role":"user","content":"\"stream_options\""}]}`,
			stream: true, changed: true, wantOptions: `{"include_usage":true}`},
		{name: "already asks", body: `{"stream":true,"stream_options":{"include_usage":true}}`, stream: true, usage: true},
		{name: "asks for false", body: `{"stream":true,"stream_options":{"include_usage":false,"include_obfuscation":false}}`,
			stream: true, changed: true, wantOptions: `{"include_usage":true,"include_obfuscation":false}`},
		{name: "other options kept", body: `{"stream":true,"stream_options":{"include_obfuscation":false}}`,
			stream: true, changed: true, wantOptions: `{"include_usage":true,"include_obfuscation":false}`},
		{name: "empty options", body: `{"stream":true,"stream_options":{ }}`, stream: true, changed: true, wantOptions: `{"include_usage":true}`},
		{name: "null options", body: `{"stream_options":null,"stream":true}`, stream: true, changed: true, wantOptions: `{"include_usage":true}`},
		{name: "not json", body: `stream=true`},
		{name: "array", body: `[{"stream":true}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stream, usage := StreamOptions([]byte(tt.body))
			if stream != tt.stream || usage != tt.usage {
				t.Errorf("StreamOptions = %v, %v; want %v, %v", stream, usage, tt.stream, tt.usage)
			}
			out, changed := InjectIncludeUsage([]byte(tt.body))
			if changed != tt.changed {
				t.Fatalf("changed = %v, want %v (%s)", changed, tt.changed, out)
			}
			if !changed {
				if string(out) != tt.body {
					t.Errorf("unchanged body rewritten: %s", out)
				}
				return
			}
			var doc map[string]json.RawMessage
			if err := json.Unmarshal(out, &doc); err != nil {
				t.Fatalf("injected body is not JSON: %v: %s", err, out)
			}
			var got, want any
			_ = json.Unmarshal(doc["stream_options"], &got)
			_ = json.Unmarshal([]byte(tt.wantOptions), &want)
			if gj, _ := json.Marshal(got); string(gj) != mustJSON(want) {
				t.Errorf("stream_options = %s, want %s", doc["stream_options"], tt.wantOptions)
			}
			if s, u := StreamOptions(out); !s || !u {
				t.Errorf("after injection StreamOptions = %v, %v", s, u)
			}
		})
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestBedrockHeaderUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		h     map[string]string
		want  Usage
		found bool
	}{
		{"counts", map[string]string{"x-amzn-bedrock-input-token-count": "120", "x-amzn-bedrock-output-token-count": "30"},
			Usage{PromptTokens: 120, OutputTokens: 30}, true},
		{"cache on top of input", map[string]string{"x-amzn-bedrock-input-token-count": "20", "x-amzn-bedrock-output-token-count": "3",
			"x-amzn-bedrock-cache-read-input-token-count": "1000", "x-amzn-bedrock-cache-write-input-token-count": "50"},
			Usage{PromptTokens: 1070, CachedReadTokens: 1000, CacheCreationTokens: 50, OutputTokens: 3}, true},
		{"none", map[string]string{"content-type": "application/json"}, Usage{}, false},
		{"garbage", map[string]string{"x-amzn-bedrock-input-token-count": "-4", "x-amzn-bedrock-output-token-count": "x"}, Usage{}, false},
	}
	for _, tt := range tests {
		u, ok := BedrockHeaderUsage(func(n string) string { return tt.h[n] })
		if u != tt.want || ok != tt.found {
			t.Errorf("%s: got %+v %v, want %+v %v", tt.name, u, ok, tt.want, tt.found)
		}
	}
}
