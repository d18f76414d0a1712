package authz

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/virtualkeys/sidecar/internal/apierr"
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
	// Truncated reports that Body is only the start of the body (the face
	// read up to its cap). Envoy says so with x-envoy-auth-partial-body, a
	// Content-Length larger than Body says so too; a model check cannot
	// trust a cut body.
	Truncated bool
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

// numCredentialHeaders is len(credentialHeaders); bit i of a carried set
// is credentialHeaders[i], bit numCredentialHeaders the --key-header.
const numCredentialHeaders = 6

// removeTable holds the constant headers_to_remove answer for every set of
// credential headers a request can carry, so an allow does not allocate.
type removeTable [1 << (numCredentialHeaders + 1)][]string

func newRemoveTable(keyHeader string) *removeTable {
	var t removeTable
	for set := range t {
		var l []string
		for i, h := range credentialHeaders {
			if set&(1<<i) != 0 {
				l = append(l, h)
			}
		}
		if set&(1<<numCredentialHeaders) != 0 && keyHeader != "" {
			l = append(l, keyHeader)
		}
		t[set] = l
	}
	return &t
}

// carried returns every credential header the request carries: all are
// removed on allow, not only the one the key was read from, or a second
// virtual key (x-api-key beside Authorization) would travel upstream.
func (a *Authorizer) carried(r *Request) []string {
	set := 0
	for i, h := range credentialHeaders {
		if r.header(h) != "" {
			set |= 1 << i
		}
	}
	if a.keyHeader != "" && r.header(a.keyHeader) != "" {
		set |= 1 << numCredentialHeaders
	}
	return a.removes[set]
}

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

// queryKey reports whether the query has a "key" parameter (any path: a
// provider may read it anywhere), and whether one is spelled so that a
// proxy removing "key" by its exact name would miss it (k%65y).
func queryKey(path string) (has, disguised bool) {
	_, q, ok := strings.Cut(path, "?")
	if !ok {
		return false, false
	}
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, _, _ := strings.Cut(kv, "=")
		if k == "key" {
			has = true
		} else if strings.ContainsAny(k, "%+") {
			if u, err := url.QueryUnescape(k); err == nil && u == "key" {
				disguised = true
			}
		}
	}
	return has, disguised
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

// errDisguisedQueryKey denies a percent-encoded "key" query parameter: a
// provider decodes it and reads the key, but removing the parameter by name
// would miss it, so the virtual key would reach the provider.
var errDisguisedQueryKey = apierr.New(http.StatusBadRequest, apierr.TypeBadRequest, "key",
	"The query has a percent-encoded \"key\" parameter, which cannot be removed before the request is forwarded. Send the key in a header (x-goog-api-key or Authorization), or as a plain ?key=.")

// credentialsCarried is the credential-removal step: the headers and query
// parameters to remove on allow, which are every credential the request
// carries, not only the one the key was read from.
func (a *Authorizer) credentialsCarried(r *Request) (headers, query []string, err *apierr.Error) {
	has, disguised := queryKey(r.Path)
	if disguised {
		return nil, nil, errDisguisedQueryKey
	}
	if has {
		query = removeQueryKey
	}
	return a.carried(r), query, nil
}
