package usage

import (
	"net/url"
	"strings"
)

// Detect classifies a request by method and path: OpenAI-style paths by their
// last segments (so /v1/..., Azure's /openai/deployments/{d}/... and
// /openai/v1/... all match), Gemini/Vertex by the :generateContent and
// :streamGenerateContent verbs, Anthropic on Vertex by :rawPredict and
// :streamRawPredict, Bedrock by /model/{id}/converse[-stream] and
// /model/{id}/invoke[-with-response-stream]. Only POST is metered.
func Detect(method, path string) API {
	if method != "POST" {
		return APIUnknown
	}
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	path = strings.TrimSuffix(path, "/")
	if i := strings.LastIndexByte(path, ':'); i >= 0 && i > strings.LastIndexByte(path, '/') {
		switch path[i+1:] {
		case "generateContent", "streamGenerateContent":
			return APIGemini
		case "rawPredict", "streamRawPredict":
			return APIAnthropicMessages
		}
		return APIUnknown
	}
	last := path[strings.LastIndexByte(path, '/')+1:]
	if strings.Contains(path, "/model/") {
		switch last {
		case "converse", "converse-stream":
			return APIBedrockConverse
		case "invoke", "invoke-with-response-stream":
			return APIBedrockInvoke
		}
	}
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		return APIOpenAIChat
	case last == "completions":
		return APIOpenAICompletions
	case last == "embeddings":
		return APIOpenAIEmbeddings
	case last == "responses":
		return APIOpenAIResponses
	case last == "messages":
		return APIAnthropicMessages
	}
	return APIUnknown
}

// ModelFromPath returns the model a path names, for APIs that put it there:
// Gemini/Vertex (.../models/{model}:verb), Bedrock (/model/{id}/...; the id
// is URL-decoded) and Azure OpenAI (/openai/deployments/{deployment}/...,
// a deployment name to map to a model). "" when the path names none.
func ModelFromPath(api API, path string) string {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	switch api {
	case APIGemini, APIAnthropicMessages:
		i := strings.LastIndex(path, "/models/")
		if i < 0 {
			return ""
		}
		m := path[i+len("/models/"):]
		if j := strings.IndexByte(m, ':'); j >= 0 {
			m = m[:j]
		}
		return m
	case APIBedrockConverse, APIBedrockInvoke:
		i := strings.Index(path, "/model/")
		if i < 0 {
			return ""
		}
		m := path[i+len("/model/"):]
		j := strings.LastIndexByte(m, '/')
		if j < 0 {
			return ""
		}
		if d, err := url.PathUnescape(m[:j]); err == nil {
			return d
		}
		return m[:j]
	default:
		const p = "/openai/deployments/"
		i := strings.Index(path, p)
		if i < 0 {
			return ""
		}
		m := path[i+len(p):]
		if j := strings.IndexByte(m, '/'); j >= 0 {
			m = m[:j]
		}
		return m
	}
}
