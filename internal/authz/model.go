package authz

import (
	"encoding/json"
	"strings"
)

// models is what a request asks for: every name must be allowed.
// primary is the model the request is for (the identity header value).
type models struct {
	primary string
	names   []string
}

func (m *models) add(s string) {
	for part := range strings.SplitSeq(s, ",") {
		if p := strings.TrimSpace(part); p != "" {
			if m.primary == "" {
				m.primary = p
			}
			m.names = append(m.names, p)
		}
	}
}

// requestModels finds the models a request names, first source wins for
// the primary: the body's model (string, comma list or JSON list), then
// target_model_names, then fallbacks (each must be allowed too), then the
// Azure/Gemini/Vertex path, then the configured header.
func (a *Authorizer) requestModels(r *Request) models {
	var m models
	bodyModels(r.Body, &m)
	if m.primary == "" {
		if p := pathModel(r.Path); p != "" {
			m.add(p)
		}
	}
	if m.primary == "" && a.modelHeader != "" {
		m.add(r.header(a.modelHeader))
	}
	return m
}

// pathModel reads the model from provider-specific paths:
// /openai/deployments/{model}/..., /(v1beta|beta)/models/{model}:...,
// /models/{model}:..., and .../models/{model} under /vertex.
func pathModel(path string) string {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if _, rest, ok := strings.Cut(path, "/openai/deployments/"); ok {
		if m, _, _ := strings.Cut(rest, "/"); m != "" {
			return m
		}
	}
	_, rest, ok := strings.Cut(path, "/models/")
	if !ok {
		return ""
	}
	if i := strings.IndexByte(rest, ':'); i > 0 && !strings.Contains(rest[:i], "/") {
		return rest[:i]
	}
	if strings.Contains(path, "/vertex") {
		if i := strings.IndexAny(rest, ":/"); i > 0 {
			return rest[:i]
		}
		return rest
	}
	return ""
}

// bodyModels scans the top-level JSON object for "model",
// "target_model_names" and "fallbacks" without decoding the rest. A
// truncated body yields what was complete before the cut; anything that is
// not a JSON object yields nothing.
func bodyModels(b []byte, m *models) {
	s := scanner{b: b}
	s.ws()
	if !s.eat('{') {
		return
	}
	var target, fallbacks []string
	var model string
	for {
		s.ws()
		if s.eat('}') || s.done() {
			break
		}
		key, ok := s.str()
		if !ok {
			break
		}
		s.ws()
		if !s.eat(':') {
			break
		}
		s.ws()
		switch key {
		case "model":
			if v, ok := s.names(false); ok && model == "" {
				model = strings.Join(v, ",")
			}
		case "target_model_names":
			if v, ok := s.names(false); ok {
				target = v
			}
		case "fallbacks":
			if v, ok := s.names(true); ok {
				fallbacks = v
			}
		default:
			if !s.skip() {
				goto out
			}
		}
		s.ws()
		if !s.eat(',') {
			break
		}
	}
out:
	if model != "" {
		m.add(model)
	}
	for _, t := range target {
		m.add(t)
	}
	for _, f := range fallbacks {
		m.add(f)
	}
}

// scanner is a minimal JSON reader over a possibly truncated document.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) done() bool { return s.i >= len(s.b) }

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a complete JSON string.
func (s *scanner) str() (string, bool) {
	if !s.eat('"') {
		return "", false
	}
	start, escaped := s.i, false
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i += 2
			continue
		case '"':
			raw := s.b[start:s.i]
			s.i++
			if !escaped {
				return string(raw), true
			}
			var out string
			if err := json.Unmarshal(s.b[start-1:s.i], &out); err != nil {
				return "", false
			}
			return out, true
		}
		s.i++
	}
	return "", false // truncated
}

// names reads a string, or a list of strings (or, with objects, of
// {"model": "..."} objects); other values are skipped and yield nothing.
func (s *scanner) names(objects bool) ([]string, bool) {
	if s.i >= len(s.b) {
		return nil, false
	}
	switch s.b[s.i] {
	case '"':
		v, ok := s.str()
		return []string{v}, ok
	case '[':
		s.i++
		var out []string
		for {
			s.ws()
			if s.eat(']') {
				return out, true
			}
			if s.done() {
				return out, false
			}
			switch {
			case s.i < len(s.b) && s.b[s.i] == '"':
				v, ok := s.str()
				if !ok {
					return out, false
				}
				out = append(out, v)
			case objects && s.i < len(s.b) && s.b[s.i] == '{':
				start := s.i
				if !s.skip() {
					return out, false
				}
				var obj struct {
					Model string `json:"model"`
				}
				if json.Unmarshal(s.b[start:s.i], &obj) == nil && obj.Model != "" {
					out = append(out, obj.Model)
				}
			default:
				if !s.skip() {
					return out, false
				}
			}
			s.ws()
			if !s.eat(',') {
				s.ws()
				return out, s.eat(']')
			}
		}
	}
	return nil, s.skip()
}

// skip passes over one JSON value; false if the document ends inside it.
func (s *scanner) skip() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, ok := s.str()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	default: // number, true, false, null
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.i > start
			}
			s.i++
		}
		return false
	}
}
