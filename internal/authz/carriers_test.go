package authz_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	"github.com/virtualkeys/sidecar/internal/authz"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// Keys of the carrier tests.
const (
	kOnly    = "sk-only-gpt4o-0101"     // models: gpt-4o
	kAliased = "sk-aliased-0102"        // models: gpt-4o-mini, aliases gpt-4 -> gpt-4o-mini
	kOther   = "sk-second-key-0103"     // another valid key, unrestricted
	kFree    = "sk-unrestricted-000104" // no model restriction
)

func seedCarriers(t *testing.T, e *env) {
	t.Helper()
	for raw, k := range map[string]keys.Key{
		kOnly:    {Models: []string{"gpt-4o"}},
		kAliased: {Models: []string{"gpt-4o-mini"}, Aliases: map[string]any{"gpt-4": "gpt-4o-mini"}},
		kOther:   {},
		kFree:    {},
	} {
		k.Token = keys.HashHex(raw)
		if err := e.store.Create(context.Background(), &k); err != nil {
			t.Fatal(err)
		}
	}
}

func onlyDenied(m string) want {
	return want{status: 401, typ: "key_model_access_denied", param: "model", code: codes.PermissionDenied,
		msg: "key not allowed to access model. This key can only access models=['gpt-4o']. Tried to access " + m}
}

func onlyUnknown(has string) want {
	w := onlyDenied("")
	w.msg, w.msgPrefix = "key not allowed to access model. This key can only access models=['gpt-4o'], and "+has, true
	return w
}

const (
	cutMsg       = "the request body was cut before its end (it is larger than the proxy sends to the authorization check), so the models it names cannot all be checked. Raise max_request_bytes"
	notObjMsg    = "the request body is not one JSON object in UTF-8"
	noBodyMsg    = "this route carries its model in the request body, which did not reach the authorization check. Send the body"
	multipartMsg = "the multipart/form-data body cannot be read whole"
	slashMsg     = "the request path hides where its model is (a percent-encoded '/'"
	dotMsg       = "the request path has '.' or '..' segments"
)

// longChat is what openai-python sends: messages before model, longer than
// the proxy's cut.
func longChat(model string) string {
	return `{"messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 8000) + `"}],"model":"` + model + `"}`
}

func multipartBody(model string) (body, contentType string) {
	const b = "XyZboundary"
	body = "--" + b + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....WAVE\r\n" +
		"--" + b + "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n" + model + "\r\n--" + b + "--\r\n"
	return body, "multipart/form-data; boundary=" + b
}

// TestModelCarriers: every way a request could name a model the key may
// not use was allowed by the earlier Check; each is a row here, over real
// gRPC, with a key allowed only gpt-4o.
func TestModelCarriers(t *testing.T) {
	e := newEnv(t, authz.Config{})
	seedCarriers(t, e)
	with := func(h map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range h {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	only := bearer(kOnly)
	long := longChat("gpt-4-32k")
	cut := long[:64<<10]
	mpDenied, mpType := multipartBody("whisper-1")
	mpAllowed, _ := multipartBody("gpt-4o")
	tests := []struct {
		name    string
		path    string
		headers map[string]string
		body    string
		want    want
	}{
		// Body "model" after JSON unescaping, every occurrence, any spelling a parser binds.
		{"escaped member name", chat, only, `{"mod\u0065l":"gpt-4-32k"}`, onlyDenied("gpt-4-32k")},
		{"escaped name after an allowed model", chat, only, `{"model":"gpt-4o","mod\u0065l":"gpt-4-32k"}`, onlyDenied("gpt-4-32k")},
		{"duplicate model, last wins upstream", chat, only, `{"model":"gpt-4o","model":"gpt-4-32k"}`, onlyDenied("gpt-4-32k")},
		{"case-folded name (Go struct binding)", chat, only, `{"Model":"gpt-4o","MODEL":"gpt-4-32k"}`, onlyDenied("gpt-4-32k")},
		{"escaped value", chat, only, `{"model":"gpt-4-32\u006b"}`, onlyDenied("gpt-4-32k")},
		{"non-string model", chat, only, `{"model":42}`, onlyDenied("42")},
		{"non-string model in a list", chat, only, `{"model":["gpt-4o",true]}`, onlyDenied("true")},
		{"UTF-8 BOM", chat, only, "\xef\xbb\xbf" + `{"model":"gpt-4-32k"}`, onlyDenied("gpt-4-32k")},
		{"UTF-8 BOM allowed model", chat, only, "\xef\xbb\xbf" + `{"model":"gpt-4o"}`, allowed("gpt-4o", "authorization")},
		{"target_model_names", chat, only, `{"model":"gpt-4o","target_model_names":["gpt-4-32k"]}`, onlyDenied("gpt-4-32k")},
		{"fallbacks", chat, only, `{"model":"gpt-4o","fallbacks":[{"model":"gpt-4-32k"}]}`, onlyDenied("gpt-4-32k")},
		{"fallbacks with a Kelvin sign (Go folds it)", chat, only, `{"model":"gpt-4o","fallbac\u212as":["gpt-4-32k"]}`, onlyDenied("gpt-4-32k")},
		// Truncated and non-object bodies.
		{"long chat cut by Envoy", chat, with(only, "x-envoy-auth-partial-body", "true"), cut, onlyUnknown(cutMsg)},
		{"long chat, unterminated", chat, only, cut, onlyUnknown(cutMsg)},
		{"cut with the allowed model before the cut", chat, with(only, "x-envoy-auth-partial-body", "true"), `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, onlyUnknown(cutMsg)},
		{"shorter than content-length", chat, with(only, "content-length", "999999"), body("gpt-4o"), onlyUnknown(cutMsg)},
		{"whole long chat", chat, with(only, "x-envoy-auth-partial-body", "false", "content-length", strconv.Itoa(len(longChat("gpt-4o")))), longChat("gpt-4o"), allowed("gpt-4o", "authorization")},
		{"whole long chat, other model", chat, only, long, onlyDenied("gpt-4-32k")},
		{"JSON array body", chat, only, `["gpt-4-32k"]`, onlyUnknown(notObjMsg)},
		{"JSON string body", chat, only, `"gpt-4-32k"`, onlyUnknown(notObjMsg)},
		{"UTF-16 body", chat, only, "\xff\xfe{\x00}\x00", onlyUnknown(notObjMsg)},
		{"body-model route without a body", chat, only, "", onlyUnknown(noBodyMsg)},
		{"no model named", chat, only, `{"messages":[]}`, onlyUnknown("the request names no model")},
		// Path carriers.
		{"Azure deployment", "/openai/deployments/gpt-4-32k/chat/completions?api-version=2024-06-01", only, `{"model":"gpt-4o"}`, onlyDenied("gpt-4-32k")},
		{"Azure deployment, dot segments", "/openai/deployments/gpt-4o/../gpt-4-32k/chat/completions", only, `{"model":"gpt-4o"}`, onlyUnknown(dotMsg)},
		{"Azure deployment, encoded dot segments", "/openai/deployments/gpt-4o/%2E%2e/gpt-4-32k/chat/completions", only, `{"model":"gpt-4o"}`, onlyUnknown(dotMsg)},
		{"Azure deployment, encoded slash", "/openai/deployments/gpt-4o%2F..%2Fgpt-4-32k/chat/completions", only, `{"model":"gpt-4o"}`, onlyUnknown(slashMsg)},
		{"Azure deployment, merged slashes", "/openai//deployments//gpt-4-32k/chat/completions", only, `{"model":"gpt-4o"}`, onlyDenied("gpt-4-32k")},
		{"Azure deployment allowed", "/openai/deployments/gpt-4o/chat/completions", only, `{"model":"gpt-4o"}`, allowed("gpt-4o", "authorization")},
		{"Gemini", "/v1beta/models/gemini-2.5-pro:generateContent", only, `{"contents":[]}`, onlyDenied("gemini-2.5-pro")},
		{"Vertex", "/v1/projects/p/locations/us/publishers/google/models/gemini-2.5-pro:streamGenerateContent", only, "", onlyDenied("gemini-2.5-pro")},
		{"OpenAI engines", "/v1/engines/gpt-4-32k/completions", only, `{"prompt":"x"}`, onlyDenied("gpt-4-32k")},
		{"Bedrock invoke", "/model/gpt-4-32k/invoke", only, `{}`, onlyDenied("gpt-4-32k")},
		{"Bedrock converse", "/model/gpt-4-32k/converse", only, `{}`, onlyDenied("gpt-4-32k")},
		{"Bedrock invoke stream", "/model/gpt-4-32k/invoke-with-response-stream", only, `{}`, onlyDenied("gpt-4-32k")},
		{"Bedrock converse stream", "/model/gpt-4-32k/converse-stream", only, `{}`, onlyDenied("gpt-4-32k")},
		{"Bedrock encoded colon", "/model/anthropic.claude-v2%3A1/invoke", only, `{}`, onlyDenied("anthropic.claude-v2:1")},
		{"query model", "/v1/realtime?model=gpt-4-32k", only, "", onlyDenied("gpt-4-32k")},
		{"query model, encoded name", "/v1/realtime?mod%65l=gpt-4-32k", only, "", onlyDenied("gpt-4-32k")},
		{"query model allowed", "/v1/realtime?model=gpt-4o", only, "", allowed("gpt-4o", "authorization")},
		// Multipart form fields.
		{"multipart model field", "/v1/audio/transcriptions", with(only, "content-type", mpType), mpDenied, onlyDenied("whisper-1")},
		{"multipart allowed", "/v1/audio/transcriptions", with(only, "content-type", mpType), mpAllowed, allowed("gpt-4o", "authorization")},
		{"multipart cut", "/v1/images/edits", with(only, "content-type", mpType), mpAllowed[:len(mpAllowed)-20], onlyUnknown(multipartMsg)},
		// Aliases do not grant access unless something downstream resolves them.
		{"alias not resolved", chat, bearer(kAliased), body("gpt-4"), want{status: 401, typ: "key_model_access_denied", param: "model", code: codes.PermissionDenied,
			msg: "key not allowed to access model. This key can only access models=['gpt-4o-mini']. Tried to access gpt-4"}},
		// Unrestricted keys are unaffected by fail-closed rules.
		{"unrestricted, cut body", chat, with(bearer(kFree), "x-envoy-auth-partial-body", "true"), cut, allowed("", "authorization")},
		{"unrestricted, dot segments", "/openai/deployments/a/../b/chat/completions", bearer(kFree), "", allowed("a", "authorization")},
		{"unrestricted, no body", chat, bearer(kFree), "", allowed("", "authorization")},
		// Every credential the request carried is removed.
		{"second key in x-api-key", chat, with(only, "x-api-key", kOther), body("gpt-4o"), allowed("gpt-4o", "authorization", "x-api-key")},
		{"keys in every header", chat, with(only, "x-litellm-api-key", kOnly, "api-key", kOther, "x-goog-api-key", kOther, "ocp-apim-subscription-key", kOther), body("gpt-4o"),
			allowed("gpt-4o", "x-litellm-api-key", "authorization", "api-key", "x-goog-api-key", "ocp-apim-subscription-key")},
		{"query key beside a header key", "/v1beta/models/gpt-4o:generateContent?key=" + kOther, only, "", want{allow: true, model: "gpt-4o", remove: []string{"authorization"}, removeQ: []string{"key"}}},
		{"disguised query key", "/v1beta/models/gpt-4o:generateContent?k%65y=" + kOther, only, "", want{status: 400, typ: "bad_request_error", param: "key", code: codes.ResourceExhausted,
			msg: "The query has a percent-encoded \"key\" parameter, which cannot be removed before the request is forwarded. Send the key in a header (x-goog-api-key or Authorization), or as a plain ?key=."}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for pass := range 2 { // miss, then hit
				raw := pass == 1 || !utf8.ValidString(tc.body) // a proto string must be UTF-8
				resp, err := e.client.Check(context.Background(), req(tc.path, tc.headers, tc.body, raw))
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				checkResp(t, e, resp, tc.want)
				e.cache.Wait()
			}
		})
	}
}

// TestModelAliasesResolved: with ResolveAliases (a LiteLLM proxy or router
// downstream resolves the alias), an alias grants access to its name.
func TestModelAliasesResolved(t *testing.T) {
	e := newEnv(t, authz.Config{ResolveAliases: true})
	seedCarriers(t, e)
	resp, err := e.client.Check(context.Background(), req(chat, bearer(kAliased), body("gpt-4"), false))
	if err != nil {
		t.Fatal(err)
	}
	checkResp(t, e, resp, allowed("gpt-4", "authorization"))
	resp, err = e.client.Check(context.Background(), req(chat, bearer(kAliased), body("gpt-4o"), false))
	if err != nil {
		t.Fatal(err)
	}
	checkResp(t, e, resp, want{status: 401, typ: "key_model_access_denied", param: "model", code: codes.PermissionDenied,
		msg: "key not allowed to access model. This key can only access models=['gpt-4o-mini']. Tried to access gpt-4o"})
}

// TestModelHeaderChecked: the configured model header is a carrier like
// the others: it must be allowed even when the body's model is.
func TestModelHeaderChecked(t *testing.T) {
	e := newEnv(t, authz.Config{ModelHeader: "x-model"})
	seedCarriers(t, e)
	h := bearer(kOnly)
	h["x-model"] = "gpt-4-32k"
	resp, err := e.client.Check(context.Background(), req(chat, h, body("gpt-4o"), false))
	if err != nil {
		t.Fatal(err)
	}
	checkResp(t, e, resp, onlyDenied("gpt-4-32k"))
	h["x-model"] = "gpt-4o"
	resp, err = e.client.Check(context.Background(), req(chat, h, "", false))
	if err != nil {
		t.Fatal(err)
	}
	checkResp(t, e, resp, allowed("gpt-4o", "authorization"))
}
