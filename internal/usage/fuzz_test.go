package usage

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// FuzzExtractor: no input panics, and any split of the body into chunks gives
// the same result as one Write.
func FuzzExtractor(f *testing.F) {
	for _, c := range extractCases(f) {
		f.Add(c.data(f), uint8(c.api), uint8(0), uint64(1), uint16(0))
	}
	f.Add([]byte("data: {\"usage\":{\"prompt_tokens\":1}}\r\n\r"), uint8(1), uint8(1), uint64(7), uint16(16))
	f.Add([]byte(`[{"usageMetadata":{"promptTokenCount":1}},{"a":"\"}"}]`), uint8(6), uint8(0), uint64(3), uint16(20))
	f.Fuzz(func(t *testing.T, body []byte, api, ctype uint8, seed uint64, max uint16) {
		cts := []string{"application/json", "text/event-stream", "application/vnd.amazon.eventstream", ""}
		ct := cts[int(ctype)%len(cts)]
		a := API(api % 9)
		m := int(max)
		get := func(split func([]byte) [][]byte) (Usage, bool, bool) {
			x := NewExtractor(a, ct, "", m)
			for _, p := range split(body) {
				_ = x.Write(p)
			}
			u, ok := x.Usage()
			return u, ok, x.Err() == nil
		}
		u1, ok1, e1 := get(whole)
		for _, split := range []func([]byte) [][]byte{bytewise, randomSplits(seed)} {
			u2, ok2, e2 := get(split)
			if u1 != u2 || ok1 != ok2 || e1 != e2 {
				t.Fatalf("split changes the result: whole %+v %v %v, split %+v %v %v", u1, ok1, e1, u2, ok2, e2)
			}
		}
		if u1.PromptTokens < 0 || u1.CachedReadTokens+u1.CacheCreationTokens+u1.AudioInputTokens > u1.PromptTokens ||
			u1.ReasoningTokens+u1.AudioOutputTokens > u1.OutputTokens {
			t.Fatalf("inconsistent usage %+v", u1)
		}
		// The request helpers see untrusted bodies too.
		if out, changed := InjectIncludeUsage(body); changed {
			if s, u := StreamOptions(out); !s || !u {
				t.Fatalf("injected body %q does not ask for usage", out)
			}
		}
	})
}

func sseStream(chunks int) [][]byte {
	var out [][]byte
	for i := range chunks - 1 {
		_ = i
		out = append(out, []byte(`data: {"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}],"usage":null}`+"\n\n"))
	}
	out = append(out, []byte(`data: {"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":1500,"completion_tokens":49,"total_tokens":1549,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}}}`+"\n\ndata: [DONE]\n\n"))
	return out
}

// TestSSEAllocs pins the steady-state allocation budget: a pooled Extractor
// reads a 50-chunk SSE stream (events split across chunks too) with no
// allocation per chunk; the one left is the model string Usage returns.
func TestSSEAllocs(t *testing.T) {
	chunks := sseStream(50)
	// Re-split so that events straddle chunk boundaries.
	all := bytes.Join(chunks, nil)
	var split [][]byte
	for len(all) > 0 {
		n := min(173, len(all))
		split = append(split, all[:n])
		all = all[n:]
	}
	for name, body := range map[string][][]byte{"event per chunk": chunks, "events across chunks": split} {
		x := NewExtractor(APIOpenAIChat, "text/event-stream", "", 0)
		read := func() {
			x.Reset(APIOpenAIChat, "text/event-stream", "")
			for _, c := range body {
				_ = x.Write(c)
			}
			if u, ok := x.Usage(); !ok || u.PromptTokens != 1500 {
				t.Fatalf("got %+v %v", u, ok)
			}
		}
		read() // warm the buffers, as a pooled Extractor is
		allocs := testing.AllocsPerRun(20, read)
		perChunk := allocs / float64(len(body))
		t.Logf("%s: %.0f allocs per %d-chunk response (%.3f per chunk)", name, allocs, len(body), perChunk)
		if allocs > 1 {
			t.Errorf("%s: %.0f allocations per response, want at most 1 (the model string)", name, allocs)
		}
	}
}

func BenchmarkExtractSSE50(b *testing.B) {
	chunks := sseStream(50)
	x := NewExtractor(APIOpenAIChat, "text/event-stream", "", 0)
	var n int
	for _, c := range chunks {
		n += len(c)
	}
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		x.Reset(APIOpenAIChat, "text/event-stream", "")
		for _, c := range chunks {
			_ = x.Write(c)
		}
		x.Usage()
	}
}

func BenchmarkExtractJSON(b *testing.B) {
	body, err := os.ReadFile(filepath.Join("testdata", "openai_chat.json"))
	if err != nil {
		b.Fatal(err)
	}
	x := NewExtractor(APIOpenAIChat, "application/json", "", 0)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		x.Reset(APIOpenAIChat, "application/json", "")
		_ = x.Write(body)
		x.Usage()
	}
}

func BenchmarkExtractGzipJSON(b *testing.B) {
	body, err := os.ReadFile(filepath.Join("testdata", "openai_chat.json"))
	if err != nil {
		b.Fatal(err)
	}
	gz := compress(b, "gzip", body)
	x := NewExtractor(APIOpenAIChat, "application/json", "gzip", 0)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		x.Reset(APIOpenAIChat, "application/json", "gzip")
		_ = x.Write(gz)
		x.Usage()
	}
}

var _ = rand.New
