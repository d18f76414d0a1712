package usage

// StreamOptions reports whether an OpenAI chat/completions or completions
// request body asks for a stream ("stream": true) and whether it asks for
// the final usage chunk ("stream_options": {"include_usage": true}). Without
// include_usage an OpenAI stream carries no usage at all.
func StreamOptions(body []byte) (stream, includeUsage bool) {
	s := scan{b: body}
	if !s.enter() {
		return false, false
	}
	for {
		key, ok := s.member()
		if !ok {
			return stream, includeUsage
		}
		switch string(key) {
		case "stream":
			stream = s.bool()
		case "stream_options":
			includeUsage = false
			if s.isNull() || !s.enter() {
				continue
			}
			for {
				k, ok := s.member()
				if !ok {
					break
				}
				if string(k) == "include_usage" {
					includeUsage = s.bool()
				} else if !s.skip() {
					break
				}
			}
		default:
			if !s.skip() {
				return stream, includeUsage
			}
		}
	}
}

// InjectIncludeUsage returns body with "stream_options": {"include_usage":
// true} set, as Envoy AI Gateway does, so that a stream reports its usage in
// a final chunk (whose choices are empty: clients that index choices[0]
// without checking may need to be told). Other stream_options members are
// kept. changed is false, and body is returned as is, when the body is not a
// streaming request, already asks for usage, or is not a JSON object.
func InjectIncludeUsage(body []byte) (out []byte, changed bool) {
	stream, include := StreamOptions(body)
	if !stream || include {
		return body, false
	}
	s := scan{b: body}
	if !s.enter() {
		return body, false
	}
	open := s.i // just after the top-level '{'
	for {
		key, ok := s.member()
		if !ok {
			break
		}
		if string(key) != "stream_options" {
			if !s.skip() {
				return body, false
			}
			continue
		}
		s.ws()
		vStart := s.i
		if s.peek() != '{' {
			if !s.skip() {
				return body, false
			}
			return splice(body, vStart, s.i, `{"include_usage":true}`), true
		}
		s.i++
		inner := s.i
		for {
			k, ok := s.member()
			if !ok {
				break
			}
			if string(k) == "include_usage" {
				s.ws()
				v := s.i
				if !s.skip() {
					return body, false
				}
				return splice(body, v, s.i, "true"), true
			}
			if !s.skip() {
				return body, false
			}
		}
		sep := ","
		t := scan{b: body, i: inner}
		if t.peek() == '}' {
			sep = ""
		}
		return splice(body, inner, inner, `"include_usage":true`+sep), true
	}
	return splice(body, open, open, `"stream_options":{"include_usage":true},`), true
}

func splice(b []byte, from, to int, with string) []byte {
	out := make([]byte, 0, len(b)-(to-from)+len(with))
	out = append(out, b[:from]...)
	out = append(out, with...)
	return append(out, b[to:]...)
}
