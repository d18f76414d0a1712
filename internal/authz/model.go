package authz

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/virtualkeys/sidecar/internal/apierr"
	"github.com/virtualkeys/sidecar/internal/cache"
	"github.com/virtualkeys/sidecar/internal/keys"
)

// unknownModel says why a request's model cannot be known. For a key with
// a model restriction each is a denial; unrestricted keys ignore it.
type unknownModel uint8

const (
	modelKnown       unknownModel = iota
	bodyTruncated                 // the body was cut before its end
	bodyNotObject                 // a JSON route's body is not one JSON object
	bodyNotSent                   // a body-model route arrived without its body
	bodyBadMultipart              // a multipart body that cannot be read whole
	pathEncodedSlash              // the path hides a '/' or '\' in a segment, has a '#', or is malformed
	pathDotSegment                // the path has "." or ".." segments
	modelNotNamed                 // a body-model route whose body names no model
	numUnknownReasons
)

// models is what a request asks for: every name must be allowed.
// primary is the model the request is for (the identity header value).
// Names live in a fixed array (and more, past four), not a slice into it:
// a models that pointed into itself would be moved to the heap, and the
// Check keeps it on its stack.
type models struct {
	primary   string
	small     [4]string
	n         int
	more      []string
	nonString string // a "model" that is not a string, as JSON text
	unknown   unknownModel
}

// add records s, a model name or a comma-separated list of them.
func (m *models) add(s string) {
	for s != "" {
		var part string
		part, s, _ = strings.Cut(s, ",")
		if p := strings.TrimSpace(part); p != "" {
			if m.n < len(m.small) {
				m.small[m.n] = p
			} else {
				m.more = append(m.more, p)
			}
			m.n++
		}
	}
}

// len is the number of names recorded.
func (m *models) len() int { return m.n }

// at is the i'th name recorded.
func (m *models) at(i int) string {
	if i < len(m.small) {
		return m.small[i]
	}
	return m.more[i-len(m.small)]
}

func (m *models) fail(why unknownModel) {
	if m.unknown == modelKnown {
		m.unknown = why
	}
}

// requestModels finds every model the request names, wherever a provider
// or a router could read one: the body ("model" under any JSON spelling of
// the name, every occurrence, target_model_names, fallbacks; or multipart
// "model" fields), the path (Azure deployments, OpenAI engines, Gemini and
// Vertex models/{m}:method, Bedrock model/{id}/invoke...), the query
// (?model=) and the configured model header. All of them must be allowed.
// The primary is the last body "model", else the first target name, else
// the first name found elsewhere.
//
// m is the caller's (on its stack: the Check does not allocate for it).
func (a *Authorizer) requestModels(r *Request, m *models) {
	path, query, _ := strings.Cut(r.Path, "?")
	ct := r.header("content-type")
	if isMultipart(ct) {
		multipartModels(r.Body, ct, m)
	} else if len(r.Body) > 0 {
		bodyModels(r.Body, m)
	}
	if m.unknown == modelKnown && (r.Truncated || r.header("x-envoy-auth-partial-body") == "true" || cutShort(r)) {
		m.fail(bodyTruncated)
	}
	bodyNames := m.len()
	pathModels(path, m)
	if query != "" {
		queryModels(query, m)
	}
	if a.modelHeader != "" {
		m.add(r.header(a.modelHeader))
	}
	if bodyNames == 0 && m.len() == 0 && m.nonString == "" && (r.Method == "" || strings.EqualFold(r.Method, "POST")) && bodyModelRoute(path) {
		if len(r.Body) == 0 {
			m.fail(bodyNotSent)
		} else {
			m.fail(modelNotNamed)
		}
	}
	if m.primary == "" && m.len() > 0 {
		m.primary = m.at(0)
	}
}

// cutShort reports a body shorter than its Content-Length: Envoy sent only
// the first max_request_bytes, or the HTTP face read only up to its cap.
func cutShort(r *Request) bool {
	cl := r.header("content-length")
	if cl == "" {
		return false
	}
	n, err := strconv.ParseInt(cl, 10, 64)
	return err == nil && n > int64(len(r.Body)) && len(r.Body) > 0
}

// bodyModelRoute reports a route whose model travels in the body (OpenAI,
// Anthropic and LiteLLM request bodies), so a request without one cannot
// be checked.
func bodyModelRoute(path string) bool {
	for _, s := range bodyModelSuffixes {
		if len(path) >= len(s) && strings.EqualFold(path[len(path)-len(s):], s) {
			return true
		}
	}
	return false
}

var bodyModelSuffixes = []string{
	"/chat/completions", "/completions", "/embeddings", "/responses", "/messages",
	"/images/generations", "/images/edits", "/images/variations",
	"/audio/speech", "/audio/transcriptions", "/audio/translations",
	"/moderations", "/rerank",
}

// modelAllowed reports whether a models list (a key's, team's, team
// member's or user's) allows model, as LiteLLM's _can_object_call_model:
// the requested name, else (with Config.ResolveAliases) its key alias
// target, else its model_group_alias target. keyAliases is the key's
// aliases (nil for the other lists, or without ResolveAliases). The
// model_group_alias map is consulted only when the name itself is not
// allowed: a map lookup, no allocation.
func (a *Authorizer) modelAllowed(allowed []string, keyAliases map[string]any, model string) bool {
	if keys.ModelAllowed(allowed, keyAliases, a.groups, model) {
		return true
	}
	if a.groupAlias == nil {
		return false
	}
	target, ok := a.groupAlias[model]
	return ok && target != model && keys.ModelAllowed(allowed, nil, a.groups, target)
}

// checkModels is the model step: every model the request names must be
// allowed, and a key with a model restriction is denied when the model
// cannot be known. Aliases (the key's, and the router's model_group_alias)
// count only when something downstream resolves them
// (Config.ResolveAliases).
func (a *Authorizer) checkModels(r *Request, e *cache.Entry, m *models) *apierr.Error {
	a.requestModels(r, m)
	allowed := e.Key.Models
	if keys.AllowsAll(allowed, a.groups) {
		return nil
	}
	var aliases map[string]any
	if a.aliases {
		aliases = e.Key.Aliases
	}
	if m.nonString != "" {
		return modelDenied(allowed, m.nonString)
	}
	for i := range m.len() {
		name := m.at(i)
		if !a.modelAllowed(allowed, aliases, name) {
			return modelDenied(allowed, name)
		}
	}
	if m.unknown != modelKnown {
		return apierr.New(http.StatusUnauthorized, apierr.TypeKeyModelAccessDenied, "model",
			"key not allowed to access model. This key can only access models="+apierr.PyList(allowed)+", and "+unknownText[m.unknown])
	}
	return nil
}

func modelDenied(allowed []string, name string) *apierr.Error {
	return apierr.New(http.StatusUnauthorized, apierr.TypeKeyModelAccessDenied, "model",
		"key not allowed to access model. This key can only access models="+apierr.PyList(allowed)+". Tried to access "+name)
}

// unknownText ends the denial for a model that cannot be known: what
// happened and what to change.
var unknownText = [numUnknownReasons]string{
	bodyTruncated: "the request body was cut before its end (it is larger than the proxy sends to the authorization check), so the models it names cannot all be checked. " +
		"Raise max_request_bytes in Envoy's ext_authz with_request_body (and the sidecar's --max-body-bytes), or send a smaller body.",
	bodyNotObject: "the request body is not one JSON object in UTF-8, so its model cannot be checked. Send a JSON object with a string \"model\".",
	bodyNotSent: "this route carries its model in the request body, which did not reach the authorization check. " +
		"Send the body to the check (Envoy ext_authz with_request_body), or name the model in the path or in the model header (--model-header).",
	bodyBadMultipart: "the multipart/form-data body cannot be read whole (cut short, malformed, or an encoded \"model\" field), so its model cannot be checked. " +
		"Send a complete body with a plain \"model\" field, and raise max_request_bytes if it is large.",
	pathEncodedSlash: "the request path hides where its model is (a percent-encoded '/' or '\\', an invalid escape, a '\\' in a model, or a '#'), so the model the provider reads cannot be known. " +
		"Send the path unencoded (Envoy: path_with_escaped_slashes_action).",
	pathDotSegment: "the request path has '.' or '..' segments, so the model the provider reads cannot be known. " +
		"Send a normalized path (Envoy: normalize_path).",
	modelNotNamed: "the request names no model. Name an allowed model in the body's \"model\".",
}

// ---- paths and queries ----

// pathModels reads the models a provider takes from the path. Empty
// segments are skipped (as merge_slashes does); every carrier found counts.
// It walks the path without allocating.
func pathModels(path string, m *models) {
	if strings.IndexByte(path, '#') >= 0 {
		m.fail(pathEncodedSlash) // servers differ on where a raw '#' ends the path
	}
	var prev2, prev string // the two segments before seg, decoded
	for path != "" {
		var seg string
		seg, path, _ = strings.Cut(path, "/")
		if seg == "" {
			continue
		}
		if strings.IndexByte(seg, '%') >= 0 {
			// A server that decodes before routing sees the decoded
			// segment: deploym%65nts is deployments. A decoded '/' or '\'
			// moves segments around: the model cannot be known.
			u, err := url.PathUnescape(seg)
			if err != nil || strings.ContainsAny(u, `/\`) {
				m.fail(pathEncodedSlash)
				return
			}
			seg = u
		}
		if seg == "." || seg == ".." {
			m.fail(pathDotSegment)
		}
		switch {
		case strings.EqualFold(prev, "deployments"), strings.EqualFold(prev, "engines"):
			pathAdd(seg, false, m)
		case strings.EqualFold(prev, "models"), strings.EqualFold(prev, "tunedModels"):
			pathAdd(seg, true, m)
		case strings.EqualFold(prev2, "model") && bedrockVerb(seg):
			pathAdd(prev, false, m)
		}
		prev2, prev = prev, seg
	}
}

// pathAdd records one (decoded) model segment; with method, a
// trailing ":generateContent" (a Gemini/Vertex method) is not part of the
// model.
func pathAdd(seg string, method bool, m *models) {
	if strings.IndexByte(seg, '\\') >= 0 {
		m.fail(pathEncodedSlash)
		return
	}
	if method {
		if i := strings.LastIndexByte(seg, ':'); i >= 0 && googleMethod(seg[i+1:]) {
			seg = seg[:i]
		}
	}
	m.add(seg)
}

var googleMethods = []string{
	"generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents",
	"predict", "rawPredict", "streamRawPredict", "predictLongRunning", "computeTokens", "batchGenerateContent",
	"serverStreamingPredict", "fetchPredictOperation", "asyncBatchEmbedContent",
}

func googleMethod(s string) bool {
	for _, g := range googleMethods {
		if strings.EqualFold(s, g) {
			return true
		}
	}
	return false
}

func bedrockVerb(s string) bool {
	switch strings.ToLower(s) {
	case "invoke", "converse", "invoke-with-response-stream", "converse-stream", "count-tokens":
		return true
	}
	return false
}

// queryModels records every ?model= value (the name compared after
// decoding, in any case).
func queryModels(q string, m *models) {
	if strings.IndexByte(q, '#') >= 0 {
		m.fail(pathEncodedSlash) // servers differ on where a raw '#' ends the query
	}
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(k, "%+") {
			if u, err := url.QueryUnescape(k); err == nil {
				k = u
			}
		}
		if !strings.EqualFold(k, "model") {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			u, err := url.QueryUnescape(v)
			if err != nil {
				m.fail(pathEncodedSlash)
				continue
			}
			v = u
		}
		m.add(v)
	}
}

// ---- multipart bodies ----

func isMultipart(ct string) bool {
	return len(ct) >= 10 && strings.EqualFold(ct[:10], "multipart/")
}

// multipartModels reads every form field named "model". A body that ends
// before its closing boundary, or cannot be parsed, cannot be checked.
func multipartModels(body []byte, ct string, m *models) {
	if len(body) == 0 {
		return
	}
	_, params, err := mime.ParseMediaType(ct)
	if err != nil || params["boundary"] == "" {
		m.fail(bodyBadMultipart)
		return
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err != nil {
			if err != io.EOF { // exactly io.EOF: the closing boundary was read
				m.fail(bodyBadMultipart)
			}
			return
		}
		_, dp, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
		if err != nil {
			m.fail(bodyBadMultipart)
			return
		}
		if !strings.EqualFold(dp["name"], "model") {
			continue
		}
		switch strings.ToLower(p.Header.Get("Content-Transfer-Encoding")) {
		case "", "7bit", "8bit", "binary":
		default:
			m.fail(bodyBadMultipart)
			return
		}
		var b bytes.Buffer
		if _, err := b.ReadFrom(p); err != nil {
			m.fail(bodyBadMultipart)
			return
		}
		m.add(b.String())
	}
}
