package usage

// Detect classifies a request by method and path (Azure /openai/deployments/...,
// Gemini/Vertex :generateContent / :streamGenerateContent, Bedrock
// /model/{id}/converse[-stream]|invoke[-with-response-stream]).
func Detect(method, path string) API {
	return APIUnknown // TODO
}
