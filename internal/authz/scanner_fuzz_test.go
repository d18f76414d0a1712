package authz

import (
	"encoding/json"
	"math"
	"net/url"
	"path"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

// bodyBypasses are the bodies that got past the model check before, and
// their neighbours: the seeds of FuzzModelFromBody and rows of the tests.
var bodyBypasses = []string{
	`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
	`{"mod\u0065l":"gpt-4-32k"}`,
	`{"model":"gpt-4o","mod\u0065l":"gpt-4-32k"}`,
	`{"model":"gpt-4o","model":"gpt-4-32k"}`,
	`{"Model":"gpt-4-32k"}`,
	`{"model":42}`, `{"model":true}`, `{"model":{"a":1}}`, `{"model":null}`, `{"model":["gpt-4o",7]}`,
	"\xef\xbb\xbf{\"model\":\"gpt-4-32k\"}",
	`{"messages":[{"role":"user","content":"long"}],"model":"gpt-4-32k"`,
	`{"messages":[{"role":"user","content":"long`,
	`{"model":["a","b"],"fallbacks":[{"model":"c"},"d"]}`,
	`{"target_model_names":"x,y"}`, `{"fallbac\u212as":["gpt-4-32k"]}`,
	`{"model":"cl\u0061ude"}`, `{"model":"trunc`, `[1,2]`, `"gpt-4-32k"`, `{"a":{"model":"x"}}`, "\x00\xff",
	`{"a":NaN,"model":"gpt-4-32k"}`, `{"a":1,}`, `{"a":"\\"model\\":\"x\""}`, `{"model":"a\ud800"}`,
	"\xff\xfe{\x00\"\x00m\x00o\x00d\x00e\x00l\x00\"\x00:\x00\"\x00x\x00\"\x00}\x00",
}

// FuzzModelFromBody is a differential property: the scanner's models are a
// superset of every model that encoding/json (struct binding, which
// matches names case-insensitively, and a map, which matches exactly) and
// a lenient Python-json-like decoder (BOM, NaN, duplicate keys, lone
// surrogates) read from the same body — unless the scanner fails closed
// (the model cannot be known) or found a non-string model. And a body that
// is a valid JSON object is never failed closed.
func FuzzModelFromBody(f *testing.F) {
	for _, s := range bodyBypasses {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m models
		bodyModels(b, &m)
		if json.Valid(b) && strings.HasPrefix(strings.TrimLeft(string(b), " \t\r\n"), "{") && m.unknown != modelKnown {
			t.Fatalf("valid JSON object %q failed closed (%d)", b, m.unknown)
		}
		if m.unknown != modelKnown || m.nonString != "" {
			return // denied for every restricted key
		}
		var views []map[string]any
		var st struct {
			Model     any `json:"model"`
			Targets   any `json:"target_model_names"`
			Fallbacks any `json:"fallbacks"`
		}
		if json.Unmarshal(b, &st) == nil {
			views = append(views, map[string]any{nameModel: st.Model, nameTargets: st.Targets, nameFallback: st.Fallbacks})
		}
		var mp map[string]any
		if json.Unmarshal(b, &mp) == nil {
			views = append(views, mp)
		}
		if py, ok := pyLoads(b); ok {
			views = append(views, py...)
		}
		for _, v := range views {
			want, nonString := viewModels(v)
			if nonString {
				t.Fatalf("body %q: a decoder reads a non-string model the scanner missed", b)
			}
			for _, w := range want {
				if !contains(m.names(), w) {
					t.Fatalf("body %q: model %q read by a decoder is not among the checked names %q", b, w, m.names())
				}
			}
		}
	})
}

// names lists the names recorded, in order.
func (m *models) names() []string {
	out := make([]string, m.len())
	for i := range out {
		out[i] = m.at(i)
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// viewModels lists the names a decoded top-level object carries, as the
// scanner records them (comma lists split, spaces trimmed).
func viewModels(v map[string]any) (names []string, nonString bool) {
	add := func(x any, objects bool) {
		switch x := x.(type) {
		case nil:
		case string:
			names = append(names, splitNames(x)...)
		case []any:
			for _, e := range x {
				switch e := e.(type) {
				case string:
					names = append(names, splitNames(e)...)
				case map[string]any:
					if objects {
						for k, mv := range e {
							if strings.EqualFold(k, nameModel) {
								if s, ok := mv.(string); ok {
									names = append(names, splitNames(s)...)
								} else if mv != nil {
									nonString = true
								}
							}
						}
					} else {
						nonString = true
					}
				default:
					if !objects {
						nonString = true
					}
				}
			}
		default:
			if !objects {
				nonString = true
			}
		}
	}
	add(v[nameModel], false)
	add(v[nameTargets], false)
	add(v[nameFallback], true)
	return names, nonString
}

func splitNames(s string) []string {
	var m models
	m.add(s)
	return m.names()
}

// pyLoads is a lenient decoder standing in for Python's json.loads on
// bytes: a UTF-8 BOM is skipped, NaN/Infinity/-Infinity are numbers,
// duplicate member names all count (one view per occurrence, so "last
// wins" and "first wins" are both covered), lone surrogates decode to
// U+FFFD. It returns one view per duplicate "model" occurrence.
func pyLoads(b []byte) ([]map[string]any, bool) {
	p := &pyParser{b: []byte(strings.TrimPrefix(string(b), "\xef\xbb\xbf"))}
	p.ws()
	if !p.eat('{') {
		return nil, false
	}
	var views []map[string]any
	last := map[string]any{}
	for first := true; ; first = false {
		p.ws()
		if p.eat('}') {
			break
		}
		if !first && (!p.eat(',') || !p.wsThen()) {
			return nil, false
		}
		k, ok := p.str()
		if !ok {
			return nil, false
		}
		p.ws()
		if !p.eat(':') {
			return nil, false
		}
		v, ok := p.value(0)
		if !ok {
			return nil, false
		}
		last[k] = v
		views = append(views, map[string]any{k: v})
	}
	p.ws()
	if p.i != len(p.b) {
		return nil, false
	}
	return append(views, last), true
}

type pyParser struct {
	b []byte
	i int
}

func (p *pyParser) ws() {
	for p.i < len(p.b) && strings.IndexByte(" \t\r\n", p.b[p.i]) >= 0 {
		p.i++
	}
}
func (p *pyParser) wsThen() bool { p.ws(); return true }
func (p *pyParser) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *pyParser) str() (string, bool) {
	if !p.eat('"') {
		return "", false
	}
	var out []rune
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return string(out), true
		case c < 0x20:
			return "", false
		case c == '\\':
			if p.i+1 >= len(p.b) {
				return "", false
			}
			e := p.b[p.i+1]
			p.i += 2
			switch e {
			case '"', '\\', '/':
				out = append(out, rune(e))
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := p.hex4()
				if !ok {
					return "", false
				}
				if utf16.IsSurrogate(r) && p.i+6 <= len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					save := p.i
					p.i += 2
					if r2, ok := p.hex4(); ok && utf16.DecodeRune(r, r2) != utf8.RuneError {
						r = utf16.DecodeRune(r, r2)
					} else {
						p.i = save
					}
				}
				if utf16.IsSurrogate(r) {
					r = utf8.RuneError
				}
				out = append(out, r)
			default:
				return "", false
			}
		default:
			r, n := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && n == 1 {
				return "", false // Python rejects invalid UTF-8
			}
			out = append(out, r)
			p.i += n
		}
	}
	return "", false
}

func (p *pyParser) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(p.b[p.i:p.i+4]), 16, 16)
	if err != nil || strings.ContainsAny(string(p.b[p.i:p.i+4]), "+-_") {
		return 0, false
	}
	p.i += 4
	return rune(v), true
}

func (p *pyParser) value(depth int) (any, bool) {
	if depth > 200 {
		return nil, false
	}
	p.ws()
	if p.i >= len(p.b) {
		return nil, false
	}
	switch c := p.b[p.i]; {
	case c == '"':
		return p.str()
	case c == '{':
		p.i++
		obj := map[string]any{}
		for first := true; ; first = false {
			p.ws()
			if p.eat('}') {
				return obj, true
			}
			if !first && (!p.eat(',') || !p.wsThen()) {
				return nil, false
			}
			k, ok := p.str()
			if !ok {
				return nil, false
			}
			p.ws()
			if !p.eat(':') {
				return nil, false
			}
			v, ok := p.value(depth + 1)
			if !ok {
				return nil, false
			}
			obj[k] = v
		}
	case c == '[':
		p.i++
		var arr []any
		for first := true; ; first = false {
			p.ws()
			if p.eat(']') {
				if arr == nil {
					arr = []any{}
				}
				return arr, true
			}
			if !first && !p.eat(',') {
				return nil, false
			}
			v, ok := p.value(depth + 1)
			if !ok {
				return nil, false
			}
			arr = append(arr, v)
		}
	}
	for _, lit := range []struct {
		s string
		v any
	}{{"true", true}, {"false", false}, {"null", nil}, {"NaN", math.NaN()}, {"Infinity", math.Inf(1)}, {"-Infinity", math.Inf(-1)}} {
		if strings.HasPrefix(string(p.b[p.i:]), lit.s) {
			p.i += len(lit.s)
			return lit.v, true
		}
	}
	start := p.i
	for p.i < len(p.b) && strings.IndexByte("0123456789+-.eE", p.b[p.i]) >= 0 {
		p.i++
	}
	f, err := strconv.ParseFloat(string(p.b[start:p.i]), 64)
	if err != nil || p.i == start {
		return nil, false
	}
	return f, true
}

// pathBypasses are the paths that got past the model check before.
var pathBypasses = []string{
	"/openai/deployments/gpt-4o/chat/completions?api-version=1",
	"/openai/deployments/gpt-4-32k/chat/completions",
	"/openai/deployments/gpt-4o/../gpt-4-32k/chat/completions",
	"/openai/deployments/gpt-4o/%2e%2e/gpt-4-32k/chat/completions",
	"/openai/deployments/gpt-4o%2F..%2Fgpt-4-32k/chat/completions",
	"/openai//deployments//gpt-4-32k/chat/completions",
	"/v1beta/models/gemini-2.5-pro:generateContent",
	"/v1/projects/p/locations/us/publishers/google/models/gemini-2.5-pro:streamGenerateContent",
	"/model/anthropic.claude-3-opus-v1%3A0/invoke", "/model/x/converse", "/model/x/invoke-with-response-stream", "/model/x/converse-stream",
	"/v1/engines/davinci/completions", "/v1/realtime?model=gpt-4o-realtime", "/OpenAI/Deployments/gpt-4-32k/x",
	"/models/", "/openai/deployments//x", "?/models/a:b", "/v1/models/ft:gpt-4o:org:id", "/a/./b", "/openai/deployments/a%5Cb/x",
	"/openai/deploym%65nts/gpt-4-32k/x", "/openai%2Fdeployments/gpt-4-32k/x", "/openai/deployments/gpt-4o#/../gpt-4-32k", "/v1/realtime?model=a#b",
}

// FuzzModelFromPath: the models read from a path are a superset of what a
// router reading net/url's decoded, path.Clean'ed path would take, unless
// the path fails closed (encoded slash, dot segment).
func FuzzModelFromPath(f *testing.F) {
	for _, s := range pathBypasses {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		var m models
		pth, q, _ := strings.Cut(p, "?")
		pathModels(pth, &m)
		if q != "" {
			queryModels(q, &m)
		}
		if m.unknown != modelKnown {
			return
		}
		u, err := url.Parse(p)
		if err != nil {
			return
		}
		var want []string
		segs := strings.Split(path.Clean("/"+u.Path), "/")
		for i := 0; i+1 < len(segs); i++ {
			s, next := asciiLower(segs[i]), segs[i+1] // routers match ASCII case-insensitively
			switch {
			case s == "deployments" || s == "engines":
				want = append(want, splitNames(next)...)
			case s == "models" || s == "tunedmodels":
				if j := strings.LastIndex(next, ":"); j >= 0 && googleMethod(next[j+1:]) {
					next = next[:j]
				}
				want = append(want, splitNames(next)...)
			case s == "model" && i+2 < len(segs) && bedrockVerb(segs[i+2]):
				want = append(want, splitNames(next)...)
			}
		}
		if vals, err := url.ParseQuery(u.RawQuery); err == nil {
			for k, vs := range vals {
				if strings.EqualFold(k, "model") {
					for _, v := range vs {
						want = append(want, splitNames(v)...)
					}
				}
			}
		}
		for _, w := range want {
			if !contains(m.names(), w) {
				t.Fatalf("path %q: model %q (net/url + path.Clean view) not among checked names %q", p, w, m.names())
			}
		}
	})
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func FuzzCredential(f *testing.F) {
	for _, s := range []string{"Bearer sk-abc", "Basic sk-abc", "bearer  sk-x ", "Token x", "", "Bearer "} {
		f.Add(s, "/v1beta/models/m:generateContent?key=sk-q%2Bx")
	}
	f.Add("", "/x?k%65y=sk-a")
	a := &Authorizer{removes: newRemoveTable("")}
	f.Fuzz(func(t *testing.T, auth, path string) {
		r := &Request{Path: path, Headers: map[string]string{"authorization": auth}}
		c := a.credential(r)
		if c.malformed && c.key != "" {
			t.Fatalf("malformed credential with a key: %+v", c)
		}
		if !c.malformed && auth != "" && c.from != "authorization" {
			t.Fatalf("authorization %q not used: %+v", auth, c)
		}
		h, q, err := a.credentialsCarried(r)
		if auth != "" && (len(h) != 1 || h[0] != "authorization") {
			t.Fatalf("carried headers %q, want authorization", h)
		}
		if err == nil {
			if u, perr := url.ParseQuery(path[strings.IndexByte(path, '?')+1:]); perr == nil && u.Has("key") && strings.Contains(path, "?") && len(q) == 0 {
				t.Fatalf("path %q has a key parameter that is not removed", path)
			}
		}
	})
}
