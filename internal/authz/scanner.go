package authz

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Member names that carry models. A name matches after JSON unescaping and
// under Unicode case folding (bytes.EqualFold), because Go's
// encoding/json binds struct fields case-insensitively (and folds 'K'
// U+212A to 'k' and 'ſ' U+017F to 's'), while Python's json and most others
// match exactly: checking every spelling any of them reads is a superset.
const (
	nameModel    = "model"
	nameTargets  = "target_model_names"
	nameFallback = "fallbacks"
)

// bodyModels scans a JSON request body for the models it names, without
// decoding the rest: every top-level member named "model" (any spelling
// that a parser would bind to "model", every occurrence: parsers keep the
// last, so all must be allowed), "target_model_names" and "fallbacks". A
// leading UTF-8 byte-order mark is skipped (Python's json.loads accepts one
// on bytes). The last "model" is the primary.
//
// A body that is not one JSON object (another value, UTF-16, invalid at
// the top level) is bodyNotObject; one that ends before its closing brace
// is bodyTruncated: its models cannot all be known.
func bodyModels(b []byte, m *models) {
	s := scanner{b: bytes.TrimPrefix(b, bom)}
	s.ws()
	if s.done() {
		return // whitespace only: no model
	}
	if !s.eat('{') {
		m.fail(bodyNotObject)
		return
	}
	model, target := "", ""
	first := true
	for {
		s.ws()
		if s.done() {
			m.fail(bodyTruncated)
			break
		}
		if s.eat('}') {
			break
		}
		if !first {
			if !s.eat(',') {
				m.fail(bodyNotObject)
				break
			}
			s.ws()
		}
		first = false
		key, st := s.key()
		if st != strOK {
			m.fail(st.unknown())
			break
		}
		s.ws()
		if !s.eat(':') {
			if s.done() {
				m.fail(bodyTruncated)
			} else {
				m.fail(bodyNotObject)
			}
			break
		}
		s.ws()
		var ok bool
		switch {
		case bytes.EqualFold(key, bModel):
			n := m.len()
			ok = s.names(false, m)
			if m.len() > n {
				model = m.at(n)
			}
		case bytes.EqualFold(key, bTargets):
			n := m.len()
			ok = s.names(false, m)
			if m.len() > n && target == "" {
				target = m.at(n)
			}
		case bytes.EqualFold(key, bFallback):
			ok = s.names(true, m)
		default:
			ok = s.skip()
		}
		if !ok {
			if s.done() {
				m.fail(bodyTruncated)
			} else {
				m.fail(bodyNotObject)
			}
			break
		}
	}
	m.primary = model
	if m.primary == "" {
		m.primary = target
	}
}

var (
	bom                         = []byte("\xef\xbb\xbf")
	bModel, bTargets, bFallback = []byte(nameModel), []byte(nameTargets), []byte(nameFallback)
)

// scanner is a minimal JSON reader over a possibly truncated document.
type scanner struct {
	b []byte
	i int
}

type strStatus uint8

const (
	strOK strStatus = iota
	strTruncated
	strInvalid
)

func (st strStatus) unknown() unknownModel {
	if st == strTruncated {
		return bodyTruncated
	}
	return bodyNotObject
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

// raw passes over a JSON string at s.i and returns its raw content
// (escapes not decoded) and whether it has a backslash. It finds the
// closing quote with IndexByte (vectorised) and counts the backslashes
// before it.
func (s *scanner) raw() (raw []byte, escaped bool, st strStatus) {
	if !s.eat('"') {
		if s.done() {
			return nil, false, strTruncated
		}
		return nil, false, strInvalid
	}
	start := s.i
	for {
		j := bytes.IndexByte(s.b[s.i:], '"')
		if j < 0 {
			s.i = len(s.b)
			return nil, false, strTruncated
		}
		end := s.i + j
		k := end
		for k > start && s.b[k-1] == '\\' {
			k--
		}
		s.i = end + 1
		if (end-k)%2 == 0 { // an even run of backslashes: the quote closes
			raw = s.b[start:end]
			return raw, bytes.IndexByte(raw, '\\') >= 0, strOK
		}
	}
}

// str reads a complete JSON string and decodes it. A string that is not
// plain ASCII-safe UTF-8 without escapes is decoded by encoding/json (as
// upstream parsers do, invalid UTF-8 reads as U+FFFD); one it rejects is
// invalid.
func (s *scanner) str() (string, strStatus) {
	start := s.i
	raw, escaped, st := s.raw()
	if st != strOK {
		return "", st
	}
	if !escaped && utf8.Valid(raw) {
		return string(raw), strOK
	}
	var out string
	if err := json.Unmarshal(s.b[start:s.i], &out); err != nil {
		return "", strInvalid
	}
	return out, strOK
}

// key reads a member name: its raw bytes when it has no escapes and is
// valid UTF-8 (no allocation: member names are read for every member),
// else its decoded form.
func (s *scanner) key() ([]byte, strStatus) {
	start := s.i
	raw, escaped, st := s.raw()
	if st != strOK {
		return nil, st
	}
	if !escaped && utf8.Valid(raw) {
		return raw, strOK
	}
	var out string
	if err := json.Unmarshal(s.b[start:s.i], &out); err != nil {
		return nil, strInvalid
	}
	return []byte(out), strOK
}

// names reads a model value into m: a string, or a list of them (or, with
// objects, of {"model": "..."} objects). null names nothing. Any other
// value is recorded as a non-string model (LiteLLM denies it). It reports
// false when the value ends early or is invalid.
func (s *scanner) names(objects bool, m *models) bool {
	if s.done() {
		return false
	}
	switch s.b[s.i] {
	case '"':
		v, st := s.str()
		if st == strOK {
			m.add(v)
		}
		return st == strOK
	case '[':
		s.i++
		for first := true; ; first = false {
			s.ws()
			if s.eat(']') {
				return true
			}
			if !first {
				if !s.eat(',') {
					return false
				}
				s.ws()
			}
			switch {
			case s.done():
				return false
			case s.b[s.i] == '"':
				v, st := s.str()
				if st != strOK {
					return false
				}
				m.add(v)
			case objects && s.b[s.i] == '{':
				if !s.objectModels(m) {
					return false
				}
			default:
				start := s.i
				if !s.skip() {
					return false
				}
				if !objects {
					m.nonStringValue(s.b[start:s.i])
				}
			}
		}
	}
	start := s.i
	if !s.skip() {
		return false
	}
	if v := s.b[start:s.i]; !objects && string(v) != "null" {
		m.nonStringValue(v)
	}
	return true
}

func (m *models) nonStringValue(v []byte) {
	if m.nonString == "" {
		m.nonString = string(v)
		if len(m.nonString) > 64 {
			m.nonString = m.nonString[:64] + "..."
		}
	}
}

// objectModels reads the "model" members of one object (a fallbacks
// entry), skipping the rest.
func (s *scanner) objectModels(m *models) bool {
	s.i++ // '{'
	for first := true; ; first = false {
		s.ws()
		if s.eat('}') {
			return true
		}
		if !first {
			if !s.eat(',') {
				return false
			}
			s.ws()
		}
		key, st := s.key()
		if st != strOK {
			return false
		}
		s.ws()
		if !s.eat(':') {
			return false
		}
		s.ws()
		var ok bool
		if bytes.EqualFold(key, bModel) {
			ok = s.names(false, m)
		} else {
			ok = s.skip()
		}
		if !ok {
			return false
		}
	}
}

// skip passes over one JSON value; false if the document ends inside it or
// it is not a value. Containers are matched by bracket depth (strings
// skipped whole); literals are runs of the bytes numbers, true, false,
// null and Python's NaN/Infinity use.
func (s *scanner) skip() bool {
	if s.done() {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, _, st := s.raw()
		return st == strOK
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			j := indexStructural(s.b[s.i:])
			if j < 0 {
				s.i = len(s.b)
				return false
			}
			s.i += j
			switch s.b[s.i] {
			case '"':
				if _, _, st := s.raw(); st != strOK {
					return false
				}
				continue
			case '{', '[':
				depth++
			default:
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	default:
		start := s.i
		for s.i < len(s.b) && literalByte(s.b[s.i]) {
			s.i++
		}
		return s.i > start && s.i < len(s.b) // a literal at the very end may be cut
	}
}

func literalByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '+' || c == '.'
}

// structural marks the bytes skip must stop at inside a container.
var structural = [256]bool{'"': true, '{': true, '}': true, '[': true, ']': true}

// indexStructural is bytes.IndexAny(b, `"{}[]`) without building the byte
// set on every call (the Check skips every top-level value of the body).
func indexStructural(b []byte) int {
	for i, c := range b {
		if structural[c] {
			return i
		}
	}
	return -1
}
