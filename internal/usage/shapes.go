package usage

// value reads one JSON document: a whole response body, one SSE event's data,
// one element of a Gemini JSON-array stream or one Bedrock event payload.
// Usage may sit at the top level (OpenAI, Anthropic, Gemini, Bedrock), under
// "message" (Anthropic message_start) or "response" (Responses API events),
// and under "amazon-bedrock-invocationMetrics" (Bedrock invoke streams).
// Counts are cumulative within a response: the largest seen wins (rawUsage.put).
func (x *Extractor) value(b []byte) {
	s := scan{b: b}
	if !s.enter() {
		return
	}
	x.object(&s, 0)
}

func (x *Extractor) object(s *scan, depth int) {
	for {
		key, ok := s.member()
		if !ok {
			return
		}
		switch string(key) {
		case "model", "modelVersion":
			if s.peek() != '"' {
				if !s.skip() {
					return
				}
			} else if m, ok := s.str(); ok && len(m) > 0 && len(m) <= maxModelLen {
				x.model = append(x.model[:0], m...)
			}
		case "usage", "usageMetadata", "amazon-bedrock-invocationMetrics":
			x.usageObject(s)
		case "message", "response":
			if depth == 0 && s.enter() {
				x.object(s, 1)
			} else if depth != 0 {
				s.skip()
			}
		case "prompt_token_count", "generation_token_count": // Meta Llama on Bedrock InvokeModel
			if depth != 0 {
				s.skip()
				continue
			}
			if n, ok := s.int(); ok {
				f := fPrompt
				if key[0] == 'g' {
					f = fOutput
				}
				x.raw.put(f, n)
				x.found = true
			}
		default:
			if !s.skip() {
				return
			}
		}
	}
}

const maxModelLen = 256

func (x *Extractor) usageObject(s *scan) {
	if s.isNull() || !s.enter() {
		return
	}
	x.found = true
	for {
		key, ok := s.member()
		if !ok {
			return
		}
		f := -1
		switch string(key) {
		case "prompt_tokens", "promptTokenCount":
			f = fPrompt
		case "input_tokens", "inputTokens", "inputTokenCount":
			f = fInput
		case "completion_tokens", "output_tokens", "outputTokens", "outputTokenCount":
			f = fOutput
		case "cache_read_input_tokens", "cacheReadInputTokens", "cacheReadInputTokenCount":
			f = fCacheRead
		case "cache_creation_input_tokens", "cacheWriteInputTokens", "cacheWriteInputTokenCount":
			f = fCacheWrite
		case "cachedContentTokenCount":
			f = fCachedIncl
		case "candidatesTokenCount":
			f = fCandidates
		case "thoughtsTokenCount":
			f = fThoughts
		case "prompt_tokens_details", "input_tokens_details":
			x.details(s, fAudioIn)
		case "completion_tokens_details", "output_tokens_details":
			x.details(s, fAudioOut)
		case "cache_creation":
			x.details(s, -1)
		case "promptTokensDetails":
			x.modalities(s, fAudioIn)
		case "candidatesTokensDetails":
			x.modalities(s, fAudioOut)
		default:
			if !s.skip() {
				return
			}
		}
		if f >= 0 {
			if n, ok := s.int(); ok {
				x.raw.put(f, n)
			}
		}
	}
}

// details reads an OpenAI *_tokens_details object or Anthropic's cache_creation.
func (x *Extractor) details(s *scan, audio int) {
	if s.isNull() || !s.enter() {
		return
	}
	for {
		key, ok := s.member()
		if !ok {
			return
		}
		f := -1
		switch string(key) {
		case "cached_tokens":
			f = fCachedIncl
		case "cache_creation_tokens", "cache_write_tokens":
			f = fCacheWriteIncl
		case "reasoning_tokens":
			f = fReasoning
		case "audio_tokens":
			f = audio
		case "ephemeral_1h_input_tokens":
			f = fCacheWrite1h
		}
		if f < 0 {
			if !s.skip() {
				return
			}
			continue
		}
		if n, ok := s.int(); ok {
			x.raw.put(f, n)
		}
	}
}

// modalities sums Gemini's [{"modality":"AUDIO","tokenCount":n}] entries for audio.
func (x *Extractor) modalities(s *scan, f int) {
	if s.peek() != '[' {
		s.skip()
		return
	}
	s.i++
	var sum int64
	for {
		c := s.peek()
		if c == ',' {
			s.i++
			continue
		}
		if c == ']' {
			s.i++
			break
		}
		if c != '{' {
			if c == 0 || !s.skip() {
				return
			}
			continue
		}
		s.i++
		var audio bool
		var n int64
		for {
			key, ok := s.member()
			if !ok {
				break
			}
			switch string(key) {
			case "modality":
				m, _ := s.str()
				audio = string(m) == "AUDIO"
			case "tokenCount":
				n, _ = s.int()
			default:
				if !s.skip() {
					return
				}
			}
		}
		if audio {
			sum += n
		}
	}
	x.raw.put(f, min(sum, maxCount))
}
