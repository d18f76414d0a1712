package authz

import (
	"net/url"
	"strings"
)

// Request is what a decision needs, from either face: the gRPC Check
// (Headers from Envoy's map, lower-case names) or the HTTP mode (Header).
type Request struct {
	Method string
	// Path is the original path with its query.
	Path string
	// Headers holds request headers by lower-case name (Envoy's map).
	Headers map[string]string
	// Header, when Headers is nil, looks a header up by lower-case name.
	Header func(lowerName string) string
	// Body is the request body, possibly truncated (Envoy's
	// allow_partial_message), possibly empty.
	Body []byte
}

func (r *Request) header(name string) string {
	if r.Headers != nil {
		return r.Headers[name]
	}
	if r.Header != nil {
		return r.Header(name)
	}
	return ""
}

// Credential headers, in LiteLLM's order.
var credentialHeaders = []string{"x-litellm-api-key", "authorization", "api-key", "x-api-key", "x-goog-api-key", "ocp-apim-subscription-key"}

// removeLists are the constant headers_to_remove answers, one per source,
// so an allow does not allocate them.
var removeLists = func() map[string][]string {
	m := map[string][]string{}
	for _, h := range credentialHeaders {
		m[h] = []string{h}
	}
	return m
}()

var removeQueryKey = []string{"key"}

// credential finds the key. from is the header it came in ("" for the
// query); malformed reports an Authorization header with another scheme.
type credential struct {
	key       string
	from      string
	fromQuery bool
	malformed bool
}

func (a *Authorizer) credential(r *Request) credential {
	if a.keyHeader != "" {
		return credential{key: strings.TrimSpace(r.header(a.keyHeader)), from: a.keyHeader}
	}
	for _, h := range credentialHeaders {
		v := r.header(h)
		if v == "" {
			continue
		}
		if h == "authorization" {
			switch {
			case hasPrefixFold(v, "bearer "):
				v = v[len("bearer "):]
			case hasPrefixFold(v, "basic "):
				v = v[len("basic "):]
			default:
				return credential{from: h, malformed: true}
			}
		}
		return credential{key: strings.TrimSpace(v), from: h}
	}
	if strings.Contains(r.Path, ":generateContent") || strings.Contains(r.Path, ":streamGenerateContent") {
		if k := queryValue(r.Path, "key"); k != "" {
			return credential{key: k, fromQuery: true}
		}
	}
	return credential{}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// queryValue returns the first value of name in path's query, unescaped.
func queryValue(path, name string) string {
	_, q, ok := strings.Cut(path, "?")
	if !ok {
		return ""
	}
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			if u, err := url.QueryUnescape(v); err == nil {
				return u
			}
		}
		return v
	}
	return ""
}
