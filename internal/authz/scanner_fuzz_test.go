package authz

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzBodyScanner: the scanner never panics, and for any complete JSON
// object whose top-level "model" is a plain string, it finds that model
// (the last one, as JSON parsers do) among the names it checks.
func FuzzModelFromBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":["a","b"],"fallbacks":[{"model":"c"},"d"]}`,
		`{"target_model_names":"x,y"}`, `{"model":"gpt-4o","model":"claude"}`,
		`{"model":"cl\u0061ude"}`, `{"model":"trunc`, `[1,2]`, `{"a":{"model":"x"}}`, "\x00\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m models
		bodyModels(b, &m)
		var doc map[string]json.RawMessage
		if json.Unmarshal(b, &doc) != nil {
			return
		}
		var want string
		if json.Unmarshal(doc["model"], &want) != nil || strings.Contains(want, ",") || strings.TrimSpace(want) != want || want == "" {
			return
		}
		found := false
		for _, n := range m.names {
			found = found || n == want
		}
		if !found {
			t.Fatalf("body %q: model %q not among checked names %q", b, want, m.names)
		}
	})
}

func FuzzModelFromPath(f *testing.F) {
	for _, s := range []string{"/openai/deployments/gpt-4o/chat/completions?x=1", "/v1beta/models/gemini-pro:generateContent", "/vertex_ai/publishers/google/models/gemini", "/models/", "/openai/deployments//x", "?/models/a:b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		m := pathModel(p)
		if m != "" && (strings.ContainsAny(m, "/?") || !strings.Contains(p, m)) {
			t.Fatalf("pathModel(%q) = %q", p, m)
		}
	})
}

func FuzzCredential(f *testing.F) {
	for _, s := range []string{"Bearer sk-abc", "Basic sk-abc", "bearer  sk-x ", "Token x", "", "Bearer "} {
		f.Add(s, "/v1beta/models/m:generateContent?key=sk-q%2Bx")
	}
	a := &Authorizer{}
	f.Fuzz(func(t *testing.T, auth, path string) {
		r := &Request{Path: path, Headers: map[string]string{"authorization": auth}}
		c := a.credential(r)
		if c.malformed && c.key != "" {
			t.Fatalf("malformed credential with a key: %+v", c)
		}
		if !c.malformed && auth != "" && c.from != "authorization" {
			t.Fatalf("authorization %q not used: %+v", auth, c)
		}
		_ = queryValue(path, "key")
	})
}
