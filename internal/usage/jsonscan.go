package usage

import "bytes"

// A tiny JSON walker over a byte slice. It allocates nothing: it yields byte
// spans of keys and values and skips what the caller does not ask for. It is
// lenient (it does not validate everything it skips) but never reads out of
// bounds and always makes progress, so malformed input ends the walk.

type scan struct {
	b []byte
	i int
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (s *scan) ws() {
	for s.i < len(s.b) && isSpace(s.b[s.i]) {
		s.i++
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (s *scan) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// str reads a string at s.i and returns its raw contents (escapes left as is).
func (s *scan) str() ([]byte, bool) {
	if s.peek() != '"' {
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); {
		q := bytes.IndexByte(s.b[j:], '"')
		if q < 0 {
			break
		}
		j += q
		// The quote ends the string unless an odd run of backslashes escapes it.
		bs := 0
		for k := j - 1; k >= start && s.b[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			s.i = j + 1
			return s.b[start:j], true
		}
		j++
	}
	s.i = len(s.b)
	return nil, false
}

// skip skips one value of any kind. Nested containers are skipped by counting
// brackets outside strings, so depth costs no stack.
func (s *scan) skip() bool {
	switch s.peek() {
	case 0:
		return false
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
			c := s.b[s.i]
			if c == ',' || c == '}' || c == ']' || isSpace(c) {
				break
			}
			s.i++
		}
		return s.i > start
	}
}

// enter consumes the '{' of an object; false if the value is not an object
// (the value is then skipped).
func (s *scan) enter() bool {
	if s.peek() == '{' {
		s.i++
		return true
	}
	s.skip()
	return false
}

// member reads the next key of the object being walked and the ':' after it,
// leaving s.i at the value. ok is false at the closing '}' or on bad input.
func (s *scan) member() (key []byte, ok bool) {
	c := s.peek()
	if c == ',' {
		s.i++
		c = s.peek()
	}
	if c != '"' {
		if c == '}' {
			s.i++
		}
		return nil, false
	}
	key, ok = s.str()
	if !ok || s.peek() != ':' {
		return nil, false
	}
	s.i++
	return key, true
}

// isNull reports (and consumes) a null literal.
func (s *scan) isNull() bool {
	if s.peek() == 'n' && s.i+4 <= len(s.b) && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// maxCount caps token counts so that sums cannot overflow.
const maxCount = 1 << 50

// int reads a non-negative number (a fraction is truncated; a negative or
// non-numeric value reads as absent).
func (s *scan) int() (int64, bool) {
	if s.peek() < '0' || s.peek() > '9' {
		s.skip()
		return 0, false
	}
	var n int64
	for s.i < len(s.b) {
		c := s.b[s.i]
		if c < '0' || c > '9' {
			break
		}
		if n < maxCount {
			n = n*10 + int64(c-'0')
		}
		s.i++
	}
	if s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		// 12.0 is 12; exponents are not token counts providers send.
		exp := s.b[s.i] != '.'
		s.skip()
		if exp {
			return 0, false
		}
	}
	if n > maxCount {
		n = maxCount
	}
	return n, true
}

// bool reads true (anything else, including false, is false).
func (s *scan) bool() bool {
	if s.peek() == 't' && s.i+4 <= len(s.b) && string(s.b[s.i:s.i+4]) == "true" {
		s.i += 4
		return true
	}
	s.skip()
	return false
}
