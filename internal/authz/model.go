package authz

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// models is what a request asks for: every name must be allowed.
// primary is the model the request is for (the identity header value).
type models struct {
	primary string
	small   [4]string
	names   []string
}

// add records s, a model name or a comma-separated list of them.
func (m *models) add(s string) {
	if m.names == nil {
		m.names = m.small[:0]
	}
	for s != "" {
		var part string
		part, s, _ = strings.Cut(s, ",")
		if p := strings.TrimSpace(part); p != "" {
			m.names = append(m.names, p)
		}
	}
}

// requestModels finds the models a request names, first source wins for
// the primary: the body's model (string, comma list or JSON list), then
// target_model_names, then fallbacks (each must be allowed too), then the
// Azure/Gemini/Vertex path, then the configured header. The primary is the
// first name of the last body "model", else the first target name, else the
// path's or header's model.
func (a *Authorizer) requestModels(r *Request) models {
	var m models
	bodyModels(r.Body, &m)
	if len(m.names) == 0 {
		if p := pathModel(r.Path); p != "" {
			m.add(p)
		}
	}
	if len(m.names) == 0 && a.modelHeader != "" {
		m.add(r.header(a.modelHeader))
	}
	if m.primary == "" && len(m.names) > 0 {
		m.primary = m.names[0]
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
		if i := strings.IndexAny(rest, ":/"); i >= 0 {
			return rest[:i]
		}
		return rest
	}
	return ""
}

// bodyModels scans the top-level JSON object for "model",
// "target_model_names" and "fallbacks" without decoding the rest. Every
// occurrence counts, so a body that repeats "model" (JSON parsers keep the
// last; the check must not be fooled by the first) needs all of them
// allowed; the last "model" is the primary. A truncated body yields what
// was complete before the cut; anything but a JSON object yields nothing.
func bodyModels(b []byte, m *models) {
	s := scanner{b: b}
	s.ws()
	if !s.eat('{') {
		return
	}
	model, target := "", ""
	for {
		s.ws()
		if s.eat('}') || s.done() {
			break
		}
		key, _, ok := s.raw()
		if !ok {
			break
		}
		s.ws()
		if !s.eat(':') {
			break
		}
		s.ws()
		switch string(key) {
		case "model":
			n := len(m.names)
			if !s.names(false, m) {
				goto out
			}
			if len(m.names) > n {
				model = m.names[n]
			}
		case "target_model_names":
			n := len(m.names)
			if !s.names(false, m) {
				goto out
			}
			if len(m.names) > n && target == "" {
				target = m.names[n]
			}
		case "fallbacks":
			if !s.names(true, m) {
				goto out
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
	m.primary = model
	if m.primary == "" {
		m.primary = target
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

// raw reads a complete JSON string and returns its raw bytes (escapes
// not decoded) and whether it had escapes.
func (s *scanner) raw() (raw []byte, escaped, ok bool) {
	if !s.eat('"') {
		return nil, false, false
	}
	start := s.i
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i += 2
			continue
		case '"':
			raw = s.b[start:s.i]
			s.i++
			return raw, escaped, true
		}
		s.i++
	}
	return nil, false, false // truncated
}

// str reads a complete JSON string and decodes it.
func (s *scanner) str() (string, bool) {
	start := s.i
	raw, escaped, ok := s.raw()
	if !ok {
		return "", false
	}
	if !escaped && utf8.Valid(raw) {
		return string(raw), true
	}
	// Escapes, or invalid UTF-8 (which JSON decoders, and so the upstream,
	// read as U+FFFD): decode exactly as they do.
	var out string
	if err := json.Unmarshal(s.b[start:s.i], &out); err != nil {
		return "", false
	}
	return out, true
}

// names reads a string, or a list of strings (or, with objects, of
// {"model": "..."} objects), into m; other values are skipped. It reports
// false when the document ends inside the value.
func (s *scanner) names(objects bool, m *models) bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		v, ok := s.str()
		if ok {
			m.add(v)
		}
		return ok
	case '[':
		s.i++
		for {
			s.ws()
			if s.eat(']') {
				return true
			}
			switch {
			case s.done():
				return false
			case s.b[s.i] == '"':
				v, ok := s.str()
				if !ok {
					return false
				}
				m.add(v)
			case objects && s.b[s.i] == '{':
				start := s.i
				if !s.skip() {
					return false
				}
				var obj struct {
					Model string `json:"model"`
				}
				if json.Unmarshal(s.b[start:s.i], &obj) == nil && obj.Model != "" {
					m.add(obj.Model)
				}
			default:
				if !s.skip() {
					return false
				}
			}
			s.ws()
			if !s.eat(',') {
				s.ws()
				return s.eat(']')
			}
		}
	}
	return s.skip()
}

// skip passes over one JSON value; false if the document ends inside it.
func (s *scanner) skip() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, _, ok := s.raw()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, _, ok := s.raw(); !ok {
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
